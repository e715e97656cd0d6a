"""The daemon's log: one line an event on stderr, no tokens, no floods.

- Our loggers (`daycare.*`) and the libraries' (`asyncio`, `aiohttp`) write to stderr
  through one formatter (journald adds its own timestamps under systemd).
- A webhook token never reaches the log: `/hooks/<anything>` is written `/hooks/…` in
  every line, whoever logged it (aiohttp's error paths included).
- Floods are folded: under load the libraries repeat one message per connection or per
  request (a 1,024 open-file limit with 1,100 idle connections once wrote 208,000
  traceback lines). The same message of a library (by its template) or the very same
  warning of ours, with the same exception type, is written once per `FOLD_INTERVAL`;
  how many more there were follows in one line. Refused accepts
  (EMFILE and kin, which asyncio reports through the loop's exception handler) and
  connections over the webhook cap are counted by a `Tally` and logged the same way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

FOLD_INTERVAL = 60.0
_FOLD_KEYS = 1000  # distinct messages remembered at once
_TOKEN = re.compile(r"/hooks/[^\s/?#\"'<>]+")
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LIBRARY_LOGGERS = ("asyncio", "aiohttp")

log = logging.getLogger("daycare.daemon")


class RedactingFormatter(logging.Formatter):
    """A formatter that writes `/hooks/<token>` as `/hooks/…`, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return _TOKEN.sub("/hooks/…", super().format(record))


@dataclass
class _Seen:
    start: float
    more: int
    record: logging.LogRecord


class FoldRepeats(logging.Filter):
    """Let the first of a repeated message through per interval; count the rest."""

    def __init__(self, interval: float = FOLD_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self.seen: dict[tuple[str, int, str, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "daycare_folded", False):
            return True
        ours = record.name.startswith("daycare")
        if ours and record.levelno < logging.WARNING:
            return True  # our own lines say what happened to whom: never folded
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        # A library's message by its template (its arguments vary per connection); ours
        # only when the very same line repeats.
        text = record.getMessage() if ours else str(record.msg)
        key = (record.name, record.levelno, text, exc)
        now = time.monotonic()
        seen = self.seen.get(key)
        if seen is None or now - seen.start >= self.interval:
            if seen is not None and seen.more:
                self._summary(seen)
            if len(self.seen) >= _FOLD_KEYS:
                self.flush(force=True)
            self.seen[key] = _Seen(now, 0, record)
            return True
        seen.more += 1
        return False

    def flush(self, *, force: bool = False) -> None:
        """Write the counts of intervals that ended (all of them with `force`)."""
        now = time.monotonic()
        for key, seen in list(self.seen.items()):
            if force or now - seen.start >= self.interval:
                if seen.more:
                    self._summary(seen)
                del self.seen[key]

    def _summary(self, seen: _Seen) -> None:
        first = seen.record
        logging.getLogger(first.name).log(
            first.levelno,
            "%d more like this in %.0f s: %s",
            seen.more,
            min(self.interval, time.monotonic() - seen.start),
            first.getMessage(),
            extra={"daycare_folded": True},
        )


class Tally:
    """Count a recurring condition; log its first case at once, then a count per interval."""

    def __init__(self, what: str, interval: float = FOLD_INTERVAL) -> None:
        self.what = what
        self.interval = interval
        self.count = 0
        self.total = 0
        self.window_start: float | None = None
        self.last_detail = ""

    def note(self, detail: str) -> None:
        """One more case; `detail` says why (it ends the log line)."""
        self.total += 1
        self.last_detail = detail
        if self.window_start is None:
            self.window_start = time.monotonic()
            log.warning("%s: %s (further cases are counted, one line a minute)", self.what, detail)
            return
        self.count += 1

    def flush(self, *, force: bool = False) -> None:
        """Log the count of the interval that ended (or any count, with `force`)."""
        if self.window_start is None:
            return
        elapsed = time.monotonic() - self.window_start
        if not force and elapsed < self.interval:
            return
        if self.count:
            log.warning(
                "%s %d more times in the last %.0f s: %s",
                self.what,
                self.count,
                min(elapsed, self.interval),
                self.last_detail,
            )
            # Still going: a new interval. A quiet one ends the episode, and the next
            # case is logged at once again.
            self.window_start = None if force else time.monotonic()
        else:
            self.window_start = None
        self.count = 0


class DaemonLog:
    """The daemon's handlers, folding filter and tallies; `tick()` flushes their counts."""

    def __init__(self, level: str = "INFO") -> None:
        self.fold = FoldRepeats()
        self.accept_errors = Tally("cannot accept connections")
        self.tallies: list[Tally] = [self.accept_errors]
        handler = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM"):
            fmt = "%(levelname)s %(name)s: %(message)s"
        else:
            fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(RedactingFormatter(fmt))
        handler.addFilter(self.fold)
        for name in ("daycare", *LIBRARY_LOGGERS):
            logger = logging.getLogger(name)
            logger.handlers[:] = [handler]
            logger.propagate = False
        logging.getLogger("daycare").setLevel(level)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    def tally(self, what: str) -> Tally:
        """A new tally flushed with the others."""
        tally = Tally(what)
        self.tallies.append(tally)
        return tally

    def tick(self, *, force: bool = False) -> None:
        """Write the counts whose interval ended (every count at shutdown, with `force`)."""
        self.fold.flush(force=force)
        for tally in self.tallies:
            tally.flush(force=force)

    def handle_loop_exception(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """asyncio's exception handler: accept errors are tallied, the rest logged folded."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS:
            import resource

            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.accept_errors.note(f"{exc.strerror} (open-file limit {soft}); retrying")
            return
        loop.default_exception_handler(context)


def setup_logging(level: str = "INFO") -> DaemonLog:
    """Route the daemon's and the libraries' logs to stderr, redacted and folded."""
    return DaemonLog(level)
