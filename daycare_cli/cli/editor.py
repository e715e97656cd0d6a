"""Editing a task file in $EDITOR the way `crontab -e` does.

The text goes to a temp copy; after the editor exits it is validated, and on an error the
person may edit again or discard. The caller writes the real file only with a valid result.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from daycare_cli.core.errors import UsageError, UserError


def editor_command() -> list[str]:
    """The editor to run: $VISUAL, else $EDITOR, else vi; split like a shell would."""
    for var in ("VISUAL", "EDITOR"):
        value = os.environ.get(var, "").strip()
        if value:
            return shlex.split(value)
    return ["vi"]


def run_editor(path: Path) -> None:
    """Run the editor on a file and wait; a missing or failing editor is a UserError."""
    command = editor_command()
    if shutil.which(command[0]) is None:
        raise UsageError(
            f"editor {command[0]!r} not found",
            hint="set $EDITOR (or $VISUAL), e.g. `export EDITOR=nano`",
        )
    status = subprocess.run([*command, str(path)], check=False).returncode
    if status != 0:
        raise UserError(f"the editor exited with status {status}; nothing was written")


def ask_again() -> bool:
    """Ask whether to edit again; no answer (no terminal, end of input) means no."""
    import typer

    try:
        return typer.confirm("Edit again?", default=True, err=True)
    except (typer.Abort, EOFError):
        typer.echo(err=True)  # end the prompt's line
        return False


def edit_until_valid(
    text: str,
    *,
    name: str,
    validate: Callable[[str], object],
    on_error: Callable[[UserError], None],
) -> str | None:
    """Edit `text` in a temp file named `name` until `validate` accepts it.

    Returns the accepted text, or None when the person gives up after an error.
    `validate` raises a UserError for invalid text.
    """
    workdir = Path(tempfile.mkdtemp(prefix="daycare-edit-"))
    path = workdir / name
    try:
        # newline="" keeps CRLF files byte for byte.
        path.write_text(text, encoding="utf-8", newline="")
        while True:
            run_editor(path)
            edited = path.read_bytes().decode("utf-8", errors="replace")
            try:
                validate(edited)
            except UserError as err:
                on_error(err)
                if ask_again():
                    continue
                return None
            return edited
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
