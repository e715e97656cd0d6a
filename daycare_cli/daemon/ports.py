"""Who holds a TCP port: the words of the webhook listener's "port in use" error.

The kernel knows which process listens on a port; psutil asks it (through /proc) for
the processes this user may see. A daycare daemon holds its home's `state.db` open, so
the home is the directory of that open file: no registry of homes to keep in step,
nothing a crashed daemon could leave behind.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def port_holder(port: int) -> str:
    """Who listens on `port`: "the daycare daemon of HOME (pid N)", "NAME (pid N)", or
    "another program" when the holder is not visible to this user."""
    pid = None
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                pid = conn.pid
                if pid is not None:
                    break
    except (psutil.Error, OSError):
        pass
    if pid is None:
        return "another program"
    try:
        proc = psutil.Process(pid)
        home = daycare_home(proc)
        if home is not None:
            return f"the daycare daemon of {home} (pid {pid})"
        return f"{proc.name()} (pid {pid})"
    except psutil.Error:
        return f"process {pid}"


def daycare_home(proc: psutil.Process) -> Path | None:
    """The home of a daycare daemon process (where its open `state.db` is), else None."""
    try:
        if not any("daycare" in part for part in proc.cmdline()):
            return None
        for f in proc.open_files():
            path = Path(f.path)
            if path.name == "state.db":
                return path.parent
    except psutil.Error:
        return None
    return None
