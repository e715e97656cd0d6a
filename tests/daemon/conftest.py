"""Start `daycare daemon run` as a real subprocess on a temp home, and look at what it did.

The daemon is never mocked: tests write task files, start the process, and assert on the
rows of `state.db` and on files. Synchronisation is by polling (`wait_for`) the database,
files or the daemon's output, never by a fixed sleep; the only sleeps are downtimes that
are themselves the scenario (a daemon that is down for 3 s).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import daycare_cli

REPO = Path(daycare_cli.__file__).resolve().parent.parent
READY = "daycare daemon ready"
CONFIG = "[webhook]\nport = 0\n\n[daemon]\ngrace_period = 5\n"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` every 20 ms until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def holds_for(predicate: Callable[[], Any], seconds: float, what: str = "condition") -> None:
    """Assert `predicate` stays truthy for `seconds` (checking that nothing more happens)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(0.05)
    assert predicate(), f"{what} stopped holding"


def utc(text: str | None) -> datetime:
    """A stored time (ISO 8601 with offset) as an aware datetime."""
    assert text is not None
    return datetime.fromisoformat(text)


def iso_in(seconds: float) -> str:
    """The instant `seconds` from now, as an ISO string for an `at:` trigger."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


class DaemonHome:
    """A temp DAYCARE_HOME with helpers to write tasks, run the daemon and read its state.

    Test modules reach the helpers through this class (`daemon.wait_for(...)`,
    `DaemonHome.CONFIG`), since a conftest is not importable as a module.
    """

    CONFIG = CONFIG
    wait_for = staticmethod(wait_for)
    holds_for = staticmethod(holds_for)
    utc = staticmethod(utc)
    iso_in = staticmethod(iso_in)

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.tasks = self.home / "tasks"
        self.tasks.mkdir(parents=True)
        self.config = self.home / "config.toml"
        self.config.write_text(CONFIG)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []  # every line the daemon printed, across restarts
        self._reader: threading.Thread | None = None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAYCARE_", "NOTIFY_"))},
            "DAYCARE_HOME": str(self.home),
            "PYTHONPATH": str(REPO),
            "TZ": "UTC",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        self.env.pop("WATCHDOG_USEC", None)

    # -- files ----------------------------------------------------------------------------

    def write(self, task_id: str, text: str) -> Path:
        """Write a task file by hand, as a person's editor would (in place)."""
        path = self.tasks / f"{task_id}.md"
        path.write_text(text)
        return path

    # -- the process ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, env: dict[str, str] | None = None, timeout: float = 15.0) -> str:
        """Start the daemon and return its readiness line (it fails if the process exits)."""
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        first = len(self.lines)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daycare_cli", "daemon", "run"],
            env={**self.env, **(env or {})},
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc = self.proc

        def read() -> None:
            # Drain the pipe at all times so the daemon never blocks on a full pipe.
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

        def ready() -> str | None:
            for line in self.lines[first:]:
                if line.startswith(READY):
                    return line
            if proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {proc.returncode} before ready:\n" + self.output(first)
                )
            return None

        return str(wait_for(ready, timeout, "the daemon's readiness line"))

    def output(self, first: int = 0) -> str:
        return "\n".join(self.lines[first:])

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit code; SIGKILL if it does not stop in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored SIGTERM for {timeout:g}s") from None
        finally:
            self._close()
        return code

    def kill(self) -> None:
        """SIGKILL: the daemon dies mid-whatever, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close()

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                self._close()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    # -- the CLI --------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """`daycare ARGS` in its own process against this home (it finds the daemon)."""
        return subprocess.run(
            [sys.executable, "-m", "daycare_cli", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_json(self, *args: str) -> Any:
        res = self.cli(*args, "--json")
        assert res.returncode == 0, f"daycare {' '.join(args)}: {res.returncode}\n{res.stderr}"
        return json.loads(res.stdout)

    # -- the database ---------------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read query on state.db ([] before the daemon has created it)."""
        if not (self.home / "state.db").exists():
            return []
        db = sqlite3.connect(self.home / "state.db", timeout=5)
        try:
            db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created but not migrated yet
                return []
            raise
        finally:
            db.close()

    def runs(self, task: str | None = None, **where: Any) -> list[sqlite3.Row]:
        """Run rows (of one task, with column filters), oldest first."""
        clauses = ["1"]
        params: list[Any] = []
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        for column, value in where.items():
            clauses.append(f"{column} = ?")
            params.append(value)
        sql = f"SELECT * FROM runs WHERE {' AND '.join(clauses)} ORDER BY queued_at, slot, id"
        return self.query(sql, tuple(params))

    def events(self, kind: str, task: str | None = None) -> list[sqlite3.Row]:
        if task is None:
            return self.query("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,))
        return self.query(
            "SELECT * FROM events WHERE kind = ? AND task = ? ORDER BY id", (kind, task)
        )

    def duplicate_slots(self) -> list[tuple[Any, ...]]:
        """(task, trigger_id, slot, attempt, count) of every scheduled key stored twice."""
        rows = self.query(
            "SELECT task, trigger_id, slot, attempt, COUNT(*) AS n FROM runs "
            "WHERE slot IS NOT NULL GROUP BY task, trigger_id, slot, attempt HAVING n > 1"
        )
        return [tuple(r) for r in rows]


def _teardown(home: DaemonHome) -> None:
    try:
        if home.proc is not None and home.proc.poll() is None:
            home.stop()
    finally:
        home._close()
        # Shown by pytest only when a test failed: what the daemon said.
        print(f"--- daemon output ({home.home}) ---\n{home.output()}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonHome]:
    """A temp home (config: webhook port 0, grace 5 s); the daemon is stopped at teardown."""
    home = DaemonHome(tmp_path)
    try:
        yield home
    finally:
        _teardown(home)


@pytest.fixture(scope="module")
def module_homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], DaemonHome]]:
    """`module_homes()` makes a home shared by a module's tests; all stop after the module.

    For a costly scenario checked by several tests, or one daemon whose tasks (one per
    test, by id) run side by side instead of one test after the other.
    """
    homes: list[DaemonHome] = []

    def make() -> DaemonHome:
        homes.append(DaemonHome(tmp_path_factory.mktemp("daemon")))
        return homes[-1]

    try:
        yield make
    finally:
        for home in homes:
            _teardown(home)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[float, str]]]]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: (address, messages)."""
    address = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            messages.append((time.monotonic(), data.decode()))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield address, messages
    finally:
        done.set()
        thread.join(2)
        sock.close()
