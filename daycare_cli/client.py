"""CLI -> daemon control API over the unix socket.

`connect()` returns None when no daemon answers, so every command can fall back to
doing the work in its own process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from daycare_cli.store.paths import Paths


class DaemonClient:
    """A thin client of the control API (httpx over a unix socket)."""

    def __init__(self, paths: Paths, timeout: float = 5.0) -> None:
        import httpx

        self.paths = paths
        transport = httpx.HTTPTransport(uds=str(paths.socket))
        self.http = httpx.Client(transport=transport, base_url="http://daycare", timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def status(self) -> dict[str, Any]:
        """Daemon status: pid, uptime, tasks, running runs, errors, next fires."""
        resp = self.http.get("/status")
        resp.raise_for_status()
        return dict(resp.json())

    def tasks(self) -> dict[str, Any]:
        """The daemon's view of each task: next fires, active runs, errors."""
        resp = self.http.get("/tasks")
        resp.raise_for_status()
        return dict(resp.json())

    def reload(self) -> None:
        self.http.post("/reload").raise_for_status()

    def run(self, task_id: str, payload: bytes | None = None) -> Iterator[dict[str, Any]]:
        """Run a task now in the daemon and stream its events; the last is `run.result`."""
        params = {"stream": "1", "payload": "1" if payload is not None else "0"}
        with self.http.stream(
            "POST", f"/tasks/{task_id}/run", params=params, content=payload or b"", timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                data = resp.json()
                yield {"event": "error", "status": resp.status_code, **data}
                return
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def follow(
        self, run_id: str | None = None, task: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream run events (one run, one task's runs, or all) until interrupted."""
        params = {k: v for k, v in (("run", run_id), ("task", task)) if v}
        with self.http.stream("GET", "/follow", params=params, timeout=None) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)


def connect(paths: Paths) -> DaemonClient | None:
    """A client of the running daemon of this home, or None when none answers."""
    if not paths.socket.exists():
        return None
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(paths.socket))
    except OSError:
        return None
    finally:
        probe.close()
    return DaemonClient(paths)
