"""Connections cannot hold the daemon: timeouts, a connection cap, file-descriptor
exhaustion, and a stop that does not wait for clients.

Every test runs the real daemon and talks to it over real sockets: raw ones where a
client must misbehave (a slowloris sending its head a byte at a time, a body that never
comes, a thousand idle connections), the CLI where a person would be.
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import DaemonHome

EVERY = (
    "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n<run_python>\nprint('t')\n</run_python>\n"
)
HOOK = "---\ntriggers:\n  - webhook: true\n---\nhooked\n"
SLOW = "---\nexecute: true\n---\n<run_python>\nimport time\ntime.sleep(30)\n</run_python>\n"
HEADER_TIMEOUT = 10.0  # daycare_cli/daemon/server.py
FLOOD = 1100


def address(daemon: DaemonHome) -> tuple[str, int]:
    url = (daemon.home / "run" / "webhook.url").read_text().strip()
    host, port = url.rsplit("/", 1)[1].split(":")
    return host, int(port)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other side closed the connection (EOF or reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


class Slowloris:
    """A client that sends a request head one byte every 0.2 s, never finishing it."""

    def __init__(self, where: tuple[str, int]) -> None:
        self.sock = socket.create_connection(where, timeout=5)
        self.done = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        head = b"POST /hooks/x HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 10_000
        for byte in head:
            if self.done.wait(0.2):
                return
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return
            self.sent += 1

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)
        self.sock.close()


def keep_alive(where: tuple[str, int]) -> socket.socket:
    """A connection that made one request and stays open, idle (HTTP/1.1 keep-alive)."""
    sock = socket.create_connection(where, timeout=5)
    sock.sendall(b"POST /hooks/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 404"), reply
    return sock


def slow_body(where: tuple[str, int]) -> socket.socket:
    """A request whose head is complete and whose body never arrives in full."""
    sock = socket.create_connection(where, timeout=5)
    sock.sendall(b"POST /hooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    return sock


@pytest.fixture
def many_files() -> Iterator[None]:
    """Let the test process hold the flood's connections (soft limit up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 500:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to open {FLOOD} connections")
    wanted = FLOOD + 500 if soft == resource.RLIM_INFINITY else max(soft, FLOOD + 500)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(where: tuple[str, int], n: int = FLOOD) -> list[socket.socket]:
    """Open `n` idle connections (ten threads, 3 s to connect each); the ones that opened."""
    socks: list[socket.socket] = []

    def opener(count: int) -> None:
        for _ in range(count):
            try:
                socks.append(socket.create_connection(where, timeout=3))
            except OSError:
                pass

    threads = [threading.Thread(target=opener, args=(n // 10,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return socks


def after_ready(daemon: DaemonHome) -> list[str]:
    first = next(i for i, line in enumerate(daemon.lines) if line.startswith("daycare daemon"))
    return daemon.lines[first + 1 :]


def test_the_daemon_raises_its_open_file_limit_at_start(daemon: DaemonHome) -> None:
    daemon.write("hook", HOOK)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"needs a finite hard open-file limit above 256 (it is {hard})")
    # Started with a soft limit of 256, as a service manager might start it.
    cmd = f"ulimit -Sn 256 && exec {sys.executable} -m daycare_cli daemon run"
    proc = subprocess.Popen(
        ["sh", "-c", cmd],
        env=daemon.env,
        cwd=daemon.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("daycare daemon ready"):
                break
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(x for x in limits.splitlines() if x.startswith("Max open files")).split()
        assert int(row[3]) == hard, row
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert f"open-file limit raised from 256 to {hard}" in "".join(seen) + out


def test_slow_and_idle_clients_are_closed_after_the_header_timeout(daemon: DaemonHome) -> None:
    import httpx

    daemon.write("hook", HOOK)
    daemon.start()
    where = address(daemon)
    opened = time.monotonic()
    loris, idle, body = Slowloris(where), keep_alive(where), slow_body(where)
    try:
        # Meanwhile the server answers others.
        res = httpx.post(f"http://{where[0]}:{where[1]}/hooks/unknown", content=b"{}", timeout=5)
        assert res.status_code == 404
        daemon.wait_for(lambda: closed_by_peer(loris.sock), HEADER_TIMEOUT + 5, "the slowloris")
        took = time.monotonic() - opened
        assert HEADER_TIMEOUT - 1 < took < HEADER_TIMEOUT + 5, took
        assert loris.sent > 10  # it kept sending: data does not extend the deadline
        daemon.wait_for(lambda: closed_by_peer(idle), 5, "the idle keep-alive connection")
        body.settimeout(5)
        reply = body.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"not received in time" in reply
    finally:
        loris.close()
        idle.close()
        body.close()


def test_connections_over_the_cap_are_closed_and_counted_while_scheduling_goes_on(
    daemon: DaemonHome, many_files: None
) -> None:
    daemon.config.write_text(
        daemon.CONFIG.replace("port = 0\n", "port = 0\nmax_connections = 100\n")
    )
    daemon.write("tick", EVERY)
    daemon.write("hook", HOOK)
    daemon.start()
    socks = flood(address(daemon), 300)
    try:
        started = datetime.now(UTC)
        daemon.wait_for(
            lambda: (
                sum(
                    daemon.utc(r["queued_at"]) > started
                    for r in daemon.runs("tick", status="succeeded")
                )
                >= 2
            ),
            10,
            "runs during the flood",
        )
        open_now = sum(not closed_by_peer(s) for s in socks)
        assert open_now <= 100, open_now
    finally:
        for s in socks:
            s.close()
    assert daemon.stop() == 0
    lines = after_ready(daemon)
    refusing = [x for x in lines if "refusing webhook connections" in x]
    # One line at once, then one count (here: at the stop), never one line a connection.
    assert len(refusing) == 2, refusing
    assert "100 connections are open" in refusing[0] and "more times" in refusing[1]


def test_fd_exhaustion_with_1100_idle_connections_leaves_a_bounded_log(
    daemon: DaemonHome, many_files: None
) -> None:
    # A cap above the limit, so that the flood does exhaust the daemon's descriptors.
    daemon.config.write_text(
        daemon.CONFIG.replace("port = 0\n", "port = 0\nmax_connections = 5000\n")
    )
    daemon.write("tick", EVERY)
    daemon.write("hook", HOOK)
    daemon.start()
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    flooded = datetime.now(UTC)
    socks = flood(address(daemon))
    try:
        daemon.wait_for(
            lambda: any(
                "cannot accept connections: Too many open files" in x for x in daemon.lines
            ),
            10,
            "the accept error",
        )
        # The idle connections are dropped after the header timeout; scheduling resumes.
        daemon.wait_for(
            lambda: any(
                daemon.utc(r["queued_at"]) > flooded
                for r in daemon.runs("tick", status="succeeded")
            ),
            HEADER_TIMEOUT + 15,
            "a run after the flood",
        )
    finally:
        for s in socks:
            s.close()
    assert daemon.stop() == 0
    lines = after_ready(daemon)
    accept = [x for x in lines if "cannot accept connections" in x]
    assert 1 <= len(accept) <= 2, accept  # the first at once, then a count
    assert not [x for x in lines if "Traceback" in x]
    # Bounded: about a line a second (runs, crashed runs), never one per connection.
    assert len(lines) < 100, "\n".join(lines[:40])
    # Nothing was left running by the runs that could not open their files.
    assert not daemon.runs("tick", status="running")


# --- stopping --------------------------------------------------------------------------


def test_sigterm_stops_in_time_whatever_clients_are_connected(daemon: DaemonHome) -> None:
    daemon.config.write_text(daemon.CONFIG.replace("grace_period = 5", "grace_period = 1"))
    daemon.write("hook", HOOK)
    daemon.write("slow", SLOW)
    daemon.start()
    where = address(daemon)
    env = {**daemon.env}
    follower = subprocess.Popen(
        [sys.executable, "-m", "daycare_cli", "logs", "-f", "-n", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "daycare_cli", "task", "run", "slow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    loris, idle = Slowloris(where), keep_alive(where)
    try:
        daemon.wait_for(lambda: daemon.runs("slow", status="running"), 10, "the streamed run")
        time.sleep(0.5)  # every client connected and waiting
        termed = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(15) == 0
        took = time.monotonic() - termed
        assert took < 1 + 2, f"stopped {took:.1f} s after SIGTERM (grace 1 s)"
        # Every client was let go: streams ended, sockets closed.
        _out, err = follower.communicate(timeout=5)
        assert follower.returncode == 0 and "the daemon stopped" in err
        out, err = runner.communicate(timeout=5)
        # The streamed run ends as its row does: interrupted by the stop, with why.
        assert runner.returncode != 0 and "interrupted" in out + err, out + err
        assert "daemon stopped before the run finished" in out + err, out + err
        assert closed_by_peer(loris.sock) and closed_by_peer(idle)
        (row,) = daemon.runs("slow")
        assert row["status"] == "interrupted"
    finally:
        for p in (follower, runner):
            p.kill()
            p.communicate()
        loris.close()
        idle.close()
