"""Regenerate the `--help` sections of docs/cli.md from the Typer app.

    python docs/generate_cli_docs.py          # rewrite docs/cli.md between the markers
    python docs/generate_cli_docs.py --check  # exit 1 when docs/cli.md is stale

Help is rendered at 100 columns without colour, so the text is the same on every
machine. tests/cli/test_docs_current.py runs --check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE / "cli.md"
BEGIN = "<!-- BEGIN GENERATED HELP: python docs/generate_cli_docs.py -->"
END = "<!-- END GENERATED HELP -->"

# Before Typer and Rich are imported: they read some of these once, at import time.
STABLE_ENV = {
    "COLUMNS": "100",
    "TERMINAL_WIDTH": "100",
    "LINES": "50",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "_TYPER_FORCE_DISABLE_TERMINAL": "1",
}
UNSET_ENV = ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "CLICOLOR_FORCE", "_DAYCARE_COMPLETE")


def stable_environment() -> None:
    """Make help output independent of the terminal and CI it runs in."""
    os.environ.update(STABLE_ENV)
    for name in UNSET_ENV:
        os.environ.pop(name, None)


def command_paths() -> list[list[str]]:
    """Every command and group of the app, depth first, in registration order."""
    import typer.main

    from daycare_cli.cli.app import build_app

    root = typer.main.get_command(build_app())
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        children = getattr(command, "commands", None) or {}
        for name, child in children.items():
            if not getattr(child, "hidden", False):
                walk(child, [*path, name])

    walk(root, [])
    return paths


def help_text(path: list[str]) -> str:
    """`daycare PATH --help`, trailing blanks removed."""
    from typer.testing import CliRunner

    from daycare_cli.cli.app import build_app

    result = CliRunner().invoke(build_app(), [*path, "--help"], prog_name="daycare")
    if result.exit_code != 0:
        raise SystemExit(f"daycare {' '.join(path)} --help failed: {result.output}")
    lines = [line.rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def generated_section() -> str:
    """The Markdown between the markers: one heading and one code block a command."""
    parts = [BEGIN, ""]
    for path in command_paths():
        title = " ".join(["daycare", *path])
        parts += [f"### `{title}`", "", "```text", help_text(path), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def render_doc(current: str) -> str:
    """docs/cli.md with its generated section replaced (appended when the markers are missing)."""
    section = generated_section()
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + section + tail
    return current.rstrip("\n") + "\n\n" + section + "\n"


def main(argv: list[str]) -> int:
    """Rewrite docs/cli.md, or with --check say whether it is current."""
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# daycare CLI reference\n"
    wanted = render_doc(current)
    if "--check" in argv:
        if wanted != current:
            print("docs/cli.md is stale; run python docs/generate_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        DOC.write_text(wanted, encoding="utf-8")
        print("wrote docs/cli.md")
    return 0


if __name__ == "__main__":
    stable_environment()
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main(sys.argv[1:]))
