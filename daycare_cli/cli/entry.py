"""The `daycare` console script.

Two hot paths answer without Typer: `daycare --version`, and `daycare task ls` (with
only --json, --tag and the global options), which status bars and scripts call often.
Typer's parameter handling imports pydantic, which alone costs more than the 150 ms
its goal allows the whole listing. Everything else, `--help` included, goes
through the Typer app; both paths run the same `summary.list_tasks`.

User errors are rendered without a traceback and exit with their documented code
(0 ok, 1 failure, 2 usage, 3 not found, 4 invalid task file).
"""

from __future__ import annotations

import sys
from pathlib import Path

GLOBAL_OPTIONS = {"--home": "home", "--tasks-dir": "tasks_dir", "--config": "config_file"}


def parse_fast_ls(args: list[str]) -> tuple[dict[str, Path], bool, list[str]] | None:
    """`task ls` arguments as (global options, --json, tags), or None for anything else.

    Accepts exactly what the Typer command accepts here; anything unusual (help, unknown
    options, a missing value) returns None so Typer handles and reports it.
    """
    paths: dict[str, Path] = {}
    as_json = False
    tags: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in GLOBAL_OPTIONS or (name == "--tag" and words == ["task", "ls"]):
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if not value:
                return None
            if name == "--tag":
                tags.append(value)
            else:
                paths[GLOBAL_OPTIONS[name]] = Path(value)
        elif arg == "--json" and words == ["task", "ls"]:
            as_json = True
        elif arg.startswith("-"):
            return None
        else:
            words.append(arg)
        i += 1
    return (paths, as_json, tags) if words == ["task", "ls"] else None


def run_fast_ls(parsed: tuple[dict[str, Path], bool, list[str]]) -> None:
    """`daycare task ls` without Typer."""
    from daycare_cli.cli.context import CliContext
    from daycare_cli.cli.summary import list_tasks

    paths, as_json, tags = parsed
    cli = CliContext(
        home=paths.get("home"),
        tasks_dir=paths.get("tasks_dir"),
        config_file=paths.get("config_file"),
    )
    list_tasks(cli, as_json=as_json, tags=tags)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with `argv` (default: the process arguments) and exit."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        from daycare_cli import __version__

        sys.stdout.write(f"daycare {__version__}\n")
        sys.exit(0)

    from daycare_cli.core.errors import UserError

    try:
        fast = parse_fast_ls(args)
        if fast is not None:
            run_fast_ls(fast)
            sys.exit(0)
        from daycare_cli.cli.app import build_app

        build_app()(args=args, prog_name="daycare")
    except UserError as err:  # the fast path, or an error while building the app
        from daycare_cli.cli.render import render_error

        render_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `daycare task ls | head`: the reader left; flushing at exit must not complain.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
