"""Start `daycare daemon run` for a benchmark: shared by bench_lateness and bench_webhooks."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAYCARE = ROOT / ".venv" / "bin" / "daycare"
READY = "daycare daemon ready"


def start_daemon(home: Path) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    """`daycare daemon run` on `home`; a thread drains stderr (it logs every run) and flags
    the ready line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    env["DAYCARE_HOME"] = str(home)
    proc = subprocess.Popen(
        [str(DAYCARE), "daemon", "run"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                ready.set()
        ready.set()  # exited: let the waiter look at the return code

    threading.Thread(target=drain, daemon=True).start()
    return proc, lines, ready
