"""CLI -> daemon control API over the unix socket.

`connect()` returns None when no daemon answers, so every command can fall back to
doing the work in its own process. Plain `http.client` over an AF_UNIX socket: the
stdlib costs nothing to import, which keeps `daycare task ls` fast when a daemon runs.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from daycare_cli.store.paths import Paths


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a unix socket path."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("daycare", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class DaemonError(Exception):
    """The daemon answered with an HTTP error."""

    def __init__(self, status: int, data: dict[str, Any]) -> None:
        super().__init__(data.get("error") or f"HTTP {status}")
        self.status = status
        self.data = data


class DaemonClient:
    """A thin client of the control API."""

    def __init__(self, paths: Paths, timeout: float = 5.0) -> None:
        self.paths = paths
        self.timeout = timeout

    def close(self) -> None:
        """Nothing to release: every request uses its own connection."""

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float | None = -1.0,
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        conn = UnixHTTPConnection(
            str(self.paths.socket), self.timeout if timeout == -1.0 else timeout
        )
        conn.request(method, path, body=body or b"")
        return conn, conn.getresponse()

    def _json(self, method: str, path: str) -> dict[str, Any]:
        conn, resp = self._request(method, path)
        try:
            data = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status >= 400:
            raise DaemonError(resp.status, data)
        return dict(data)

    def status(self) -> dict[str, Any]:
        """Daemon status: pid, uptime, tasks, running runs, errors, next fires."""
        return self._json("GET", "/status")

    def tasks(self) -> dict[str, Any]:
        """The daemon's view of each task: next fires, active runs, errors."""
        return self._json("GET", "/tasks")

    def reload(self) -> None:
        """Re-read config and task files."""
        self._json("POST", "/reload")

    def forget_tokens(self) -> None:
        """Tell the daemon a webhook token was revoked (it remembers found tokens)."""
        self._json("POST", "/webhooks/forget")

    def _stream(
        self, method: str, path: str, body: bytes | None = None
    ) -> Iterator[dict[str, Any]]:
        conn, resp = self._request(method, path, body, timeout=None)
        try:
            if resp.status >= 400:
                data = json.loads(resp.read() or b"{}")
                yield {"event": "error", "status": resp.status, **data}
                return
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def run(self, task_id: str, payload: bytes | None = None) -> Iterator[dict[str, Any]]:
        """Run a task now in the daemon and stream its events; the last is `run.result`."""
        query = urlencode({"stream": "1", "payload": "1" if payload is not None else "0"})
        return self._stream("POST", f"/tasks/{task_id}/run?{query}", payload)

    def follow(
        self, run_id: str | None = None, task: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream run events (one run, one task's runs, or all) until interrupted."""
        query = urlencode({k: v for k, v in (("run", run_id), ("task", task)) if v})
        return self._stream("GET", f"/follow?{query}")


def connect(paths: Paths) -> DaemonClient | None:
    """A client of the running daemon of this home, or None when none answers."""
    if not paths.socket.exists():
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(paths.socket))
    except OSError:
        return None
    finally:
        probe.close()
    return DaemonClient(paths)
