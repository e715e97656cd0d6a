"""What a block's failure says beyond the interpreter's own words (docs/task-file.md, "Inside a
block").

`exit_error` names an exit the prelude could not report (os._exit, a signal, a limit);
`view_hint` adds, to a FileNotFoundError or PermissionError on a host path outside the
block's filesystem view, that the path exists and how to share it (`sandbox.read`).
"""

from __future__ import annotations

import ast
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path

from daycare_cli.run.bwrap import BlockPaths
from daycare_cli.run.view import homes, in_view


def view_hint(error: str, paths: BlockPaths | None, hidden: Sequence[Path]) -> str:
    """Say so when a block failed on a host path that its view leaves out (and that an
    entry could share: not one of daycare's own places, `hidden`)."""
    if paths is None or not error.startswith(("FileNotFoundError", "PermissionError")):
        return error
    found = _QUOTED_PATH.search(error)
    if found is None:
        return error
    try:
        path = Path(str(ast.literal_eval(found.group(1))))
    except (ValueError, SyntaxError):
        return error
    if not path.is_absolute() or not os.path.lexists(path):
        return error
    if in_view(path, paths.shown(), [Path("/home"), Path("/root"), *homes(), *map(Path, hidden)]):
        return error
    if any(path == h or Path(h) in path.parents for h in hidden):
        return error  # daycare's own places: no entry can share them
    key = "sandbox.write" if error.startswith("PermissionError") else "sandbox.read"
    return (
        f"{error} (the path exists on the host but is outside the block's sandbox view; "
        f"add it to `{key}` in the task file to share it)"
    )


_QUOTED_PATH = re.compile(r": ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")(?: ->|$)")


def exit_error(returncode: int | None, level: str) -> str:
    """Describe an exit the prelude did not report (os._exit, a signal, a limit)."""
    if returncode is None:
        return "Killed: the block did not exit"
    sig = -returncode if returncode < 0 else 0
    if level == "bubblewrap" and returncode > 128:
        sig = returncode - 128  # bubblewrap's init exits 128+N for a command killed by N
    if not sig:
        return f"SystemExit: {returncode}"
    why = {
        int(signal.SIGKILL): "memory or CPU limit?",
        int(signal.SIGXCPU): "CPU time limit exceeded",
        int(signal.SIGXFSZ): "file size limit exceeded",
    }.get(sig)
    if why is None:
        try:
            why = signal.Signals(sig).name
        except ValueError:
            why = "unknown signal"
    return f"Killed: signal {sig} ({why})"
