"""The daemon's log without floods or tokens; config changes named; the loop's lag figure."""

from __future__ import annotations

import asyncio
import errno
import logging
import time

import pytest

from daycare_cli.daemon.daemonlog import FoldRepeats, RedactingFormatter, Tally
from daycare_cli.daemon.looplag import LoopLag
from daycare_cli.daemon.reload import changed_keys, config_change


class Lines(logging.Handler):
    """A handler that keeps the formatted lines, behind a filter under test."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Lines:
    handler = Lines()
    for name in ("test.lib", "daycare.test"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    return handler


def test_a_library_flood_is_one_line_and_a_count(lines: Lines) -> None:
    fold = FoldRepeats()
    lines.addFilter(fold)
    lib = logging.getLogger("test.lib")
    for port in range(1000):
        lib.error("socket.accept() out of system resource on port %d", port)
    lib.warning("something else")
    assert len(lines.lines) == 2
    fold.flush(force=True)
    assert len(lines.lines) == 3
    assert lines.lines[-1].startswith("ERROR test.lib: 999 more like this in ")
    assert lines.lines[-1].endswith("socket.accept() out of system resource on port 0")


def test_our_own_lines_fold_only_when_they_repeat_exactly(lines: Lines) -> None:
    fold = FoldRepeats()
    lines.addFilter(fold)
    ours = logging.getLogger("daycare.test")
    for i in range(3):
        ours.info("run %d succeeded", i)  # what happened to whom: always written
        ours.warning("run %d crashed", i)
    for _ in range(5):
        ours.warning("the same warning")
    fold.flush(force=True)
    assert len([x for x in lines.lines if "succeeded" in x]) == 3
    assert len([x for x in lines.lines if "crashed" in x]) == 3
    assert [x for x in lines.lines if "same warning" in x] == [
        "WARNING daycare.test: the same warning",
        "WARNING daycare.test: 4 more like this in 0 s: the same warning",
    ]


def test_a_webhook_token_never_reaches_the_log(lines: Lines) -> None:
    lib = logging.getLogger("test.lib")
    lib.error('Bad request "POST /hooks/dKKHbOZi2m7zIce6Bak7TY4E_O57xUhi HTTP/1.1"')
    try:
        raise ValueError("at /hooks/s3cr3tT0ken?x=1")
    except ValueError:
        lib.exception("failed")
    text = "\n".join(lines.lines)
    assert "dKKHbOZi" not in text and "s3cr3tT0ken" not in text
    assert text.count("/hooks/…") == 3  # the message, and in the traceback: source and error


def test_a_tally_logs_the_first_case_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "daycare")
    tally = Tally("cannot accept connections", interval=60)
    for _ in range(500):
        tally.note("Too many open files")
    tally.flush()  # the interval has not ended: nothing yet
    assert len(caplog.records) == 1
    tally.flush(force=True)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("cannot accept connections: Too many open files")
    assert messages[1].startswith("cannot accept connections 499 more times in the last")
    tally.flush(force=True)  # an episode logged is not logged again
    tally.note("Too many open files")  # a new episode: at once
    assert len(caplog.records) == 3 and tally.total == 501


def test_the_loop_exception_handler_tallies_accept_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from daycare_cli.daemon.daemonlog import DaemonLog

    caplog.set_level(logging.WARNING)
    # The handler alone, without installing the daemon's logging in this process.
    daemon_log = DaemonLog.__new__(DaemonLog)
    daemon_log.accept_errors = Tally("cannot accept connections")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            exc = OSError(errno.EMFILE, "Too many open files")
            context = {"message": "socket.accept() out of system resource", "exception": exc}
            daemon_log.handle_loop_exception(loop, context)

    asyncio.run(main())
    assert daemon_log.accept_errors.total == 100
    assert len(caplog.records) == 1
    assert "Too many open files (open-file limit" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("old", "new", "keys"),
    [
        ({}, {}, []),
        ({"model": "a"}, {"model": "a"}, []),
        ({"model": "a"}, {"model": "b"}, ["model"]),
        ({"model": "a"}, {}, ["model"]),
        ({}, {"webhook": {"port": 0}}, ["webhook.port"]),
        (
            {"webhook": {"port": 0, "host": "h"}},
            {"webhook": {"port": 1, "host": "h"}},
            ["webhook.port"],
        ),
        ({"secrets": {"a": "x"}}, {"secrets": {"a": "y", "b": "z"}}, ["secrets.a", "secrets.b"]),
    ],
)
def test_changed_keys(old: dict[str, object], new: dict[str, object], keys: list[str]) -> None:
    assert changed_keys(old, new) == keys


def test_keys_fixed_at_start_need_a_restart() -> None:
    change = config_change({"tasks_dir": "a", "timezone": "UTC"}, {"tasks_dir": "b"})
    assert change.applied == ["timezone"] and change.restart == ["tasks_dir"]


def test_loop_lag_percentiles() -> None:
    lag = LoopLag()
    assert lag.summary() == {"p50": 0.0, "p99": 0.0, "max": 0.0, "samples": 0}
    now = time.monotonic()
    # 1 .. 100 ms, one a second: the newest (the largest) in the last ten seconds.
    lag.samples.extend((now - 100 + i, i / 1000) for i in range(1, 101))
    assert lag.summary() == {"p50": 50.0, "p99": 99.0, "max": 100.0, "samples": 100}
    assert lag.summary(window=9.5) == {"p50": 95.0, "p99": 100.0, "max": 100.0, "samples": 10}


def test_a_busy_daemon_samples_its_loop_lag_closely_and_an_idle_one_does_not() -> None:
    async def scenario() -> tuple[bool, bool, list[float]]:
        lag = LoopLag()
        await asyncio.sleep(0.2)
        idle = lag.busy()
        end = time.process_time() + 0.1
        while time.process_time() < end:  # a tenth of a second of CPU: busy
            pass
        busy = lag.busy()
        loop = asyncio.get_running_loop()
        lag.sample_closely(loop, 0.4)
        await asyncio.sleep(0.12)
        time.sleep(0.08)  # the loop blocked for 80 ms: the sample due meanwhile shows it
        await asyncio.sleep(0.5)
        return idle, busy, [late for _, late in lag.samples]

    idle, busy, samples = asyncio.run(scenario())
    assert not idle and busy
    # One sample every 50 ms for 0.4 s, then none (the span ended).
    assert 5 <= len(samples) <= 9
    assert max(samples) >= 0.02
    assert sorted(samples)[len(samples) // 2] < 0.02
