"""Write the bash, zsh and fish completion scripts of `daycare` from the Typer app.

    python completions/generate.py          # rewrite the scripts
    python completions/generate.py --check  # exit 1 when a script is stale

The scripts are Typer's (click's shell completion protocol): they call
`daycare` back with `_DAYCARE_COMPLETE=complete_<shell>`, so task ids complete
dynamically from the tasks directory in use. tests/cli/test_completions.py runs --check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"bash": "daycare.bash", "zsh": "_daycare", "fish": "daycare.fish"}


def completion_script(shell: str) -> str:
    """One shell's script, as `_DAYCARE_COMPLETE=source_<shell> daycare` prints it."""
    from typer.testing import CliRunner

    from daycare_cli.cli.app import build_app

    result = CliRunner().invoke(
        build_app(), [], env={"_DAYCARE_COMPLETE": f"source_{shell}"}, prog_name="daycare"
    )
    if result.exit_code != 0 or not result.output.strip():
        raise SystemExit(f"cannot generate the {shell} script: {result.output}")
    return result.output.strip("\n") + "\n"


def main(argv: list[str]) -> int:
    """Write the scripts, or with --check report the stale ones."""
    check = "--check" in argv
    stale = []
    for shell, name in SCRIPTS.items():
        path = HERE / name
        text = completion_script(shell)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(
            f"stale completion scripts: {', '.join(stale)}; run python completions/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    os.environ.pop("_DAYCARE_COMPLETE", None)
    sys.exit(main(sys.argv[1:]))
