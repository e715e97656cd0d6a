"""The CLI on a real terminal: a pseudo-terminal 80 columns wide, and tmux.

On a terminal tables fit the width by cutting names and trigger words, never ids, and
`task run` shows a spinner with each block's lines appearing as they are printed.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
import unicodedata
from pathlib import Path

import pytest

LONG_ID = "nightly-warehouse-db-backup"
THREE_BLOCKS = """\
---
name: Three blocks
execute: true
---
<run_python>
import time
print("alpha one")
time.sleep(2)
print("alpha two")
</run_python>
<run_python>
print("beta")
</run_python>
<run_python>
print("gamma")
</run_python>
"""


def daycare_argv() -> list[str]:
    script = Path(sys.executable).with_name("daycare")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daycare_cli.cli.entry"]


def cells(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def test_task_ls_on_an_80_column_terminal_cuts_names_never_ids(write, home: Path) -> None:
    write(
        LONG_ID,
        "---\nname: Back up the warehouse database every night, with a long name\n"
        "schedule: '30 2 * * *'\ntimezone: Europe/Berlin\n---\nx\n",
    )
    write("tea", "---\nname: Tea\nschedule: '0 16 * * 1-5'\n---\nx\n")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update({"DAYCARE_HOME": str(home), "TERM": "xterm", "NO_COLOR": "1", "TZ": "UTC"})
    proc = subprocess.Popen(
        [*daycare_argv(), "task", "ls"], stdout=slave, stderr=slave, stdin=slave, env=env
    )
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    lines = data.decode().replace("\r", "").splitlines()
    assert lines[0].split() == ["ID", "NAME", "TRIGGERS", "NEXT", "(UTC)", "LAST", "RUN"]
    assert all(cells(line) <= 80 for line in lines), lines
    row = next(line for line in lines if LONG_ID in line)
    assert "…" in row  # the name and the trigger words gave way, the id did not
    assert re.search(r"\d\d-\d\d \d\d:\d\d \(in \w+\)", row)


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)
def test_task_run_in_tmux_shows_the_spinner_and_live_lines(write, home: Path) -> None:
    write("three", THREE_BLOCKS)
    server = f"daycare-test-{os.getpid()}"
    tmux = ["tmux", "-L", server, "-f", "/dev/null"]
    command = " ".join(
        [
            "env",
            f"DAYCARE_HOME={home}",
            "TERM=xterm-256color",
            "NO_COLOR=1",
            *daycare_argv(),
            "task run three --local; sleep 60",
        ]
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "run", "-x", "100", "-y", "30", command], check=True
    )

    def screen() -> str:
        done = subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "run"], capture_output=True, text=True
        )
        return done.stdout

    def wait_for(pattern: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = screen()
            if re.search(pattern, text, re.MULTILINE):
                return text
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never showed:\n{screen()}")

    try:
        # While block 1 sleeps: its first line is up and the spinner turns below it.
        during = wait_for(r"│ alpha one")
        assert "alpha two" not in during
        assert re.search(r"^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] block 1 \(line 5\) running…", during, re.M), during
        after = wait_for(r"^succeeded in ")
        order = [
            "│ alpha one",
            "│ alpha two",
            "✓ block 1",
            "│ beta",
            "✓ block 2",
            "│ gamma",
            "✓ block 3",
            "succeeded in",
        ]
        positions = [after.index(mark) for mark in order]
        assert positions == sorted(positions), after
        assert "running…" not in after  # the spinner is gone once the run ended
        assert all(len(line) <= 100 for line in after.splitlines())
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
