"""TEST-ONLY fault injection: make a part of the daemon raise where a bug would.

The daemon's supervision (docs/operations.md, "Faults") is proven by tests against the real
daemon process, which need a part to fail on demand. Reproducing a bug needs a bug, so
the tests use this hook instead: with `DAYCARE_TEST_FAULT=<file>` in the daemon's
environment, each `fault_point(name)` raises `InjectedFault` while that file lists
`name` (one name a line), and does nothing once the name is gone. Without the variable
(every real daemon) a fault point is one comparison with None. The names and where they
sit:

- `scheduler`: `Scheduler.handle`, after a due fire was taken off the heap (so a failure
  loses that fire, as a bug in handling it would);
- `plan`: `Plan.apply_entry`, the planning of a task file (the watcher, a rescan, a reload);
- `webhooks`, `control`: the servers' periodic health check.
"""

from __future__ import annotations

import os
from pathlib import Path

_FAULT_FILE = os.environ.get("DAYCARE_TEST_FAULT") or None


class InjectedFault(RuntimeError):
    """A failure a test asked for through DAYCARE_TEST_FAULT."""


def fault_point(name: str) -> None:
    """Raise `InjectedFault` while the test's fault file names `name`; else nothing."""
    if _FAULT_FILE is None:
        return
    try:
        names = Path(_FAULT_FILE).read_text().split()
    except OSError:
        return
    if name in names:
        raise InjectedFault(f"injected fault in {name} (DAYCARE_TEST_FAULT)")
