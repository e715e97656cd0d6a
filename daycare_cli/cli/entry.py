"""The `daycare` console script.

Three hot paths answer without Typer: `daycare --version`; `daycare task ls` (with
only --json, --tag and the global options), which status bars and scripts call often;
and `daycare daemon run` (with only --log-level and the global options), whose start
and memory are counted (a daemon would keep Typer's modules for good). Typer's
parameter handling imports pydantic, which alone costs more than the 150 ms its goal
allows the whole listing. Everything else, `--help` included, goes through the Typer
app; both paths of a command run the same function (`summary.list_tasks`,
`service.run_daemon`).

User errors are rendered without a traceback and exit with their documented code
(0 ok, 1 failure, 2 usage, 3 not found, 4 invalid task file).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext

GLOBAL_OPTIONS = {"--home": "home", "--tasks-dir": "tasks_dir", "--config": "config_file"}


def parse_fast(
    args: list[str], command: list[str], options: tuple[str, ...], flags: tuple[str, ...] = ()
) -> tuple[dict[str, Path], dict[str, list[str]], set[str]] | None:
    """`args` of `command` as (global options, its options' values, its flags given), or
    None for anything else.

    Accepts exactly what the Typer command accepts here; anything unusual (help, unknown
    options, a missing value) returns None so Typer handles and reports it.
    """
    paths: dict[str, Path] = {}
    values: dict[str, list[str]] = {}
    given: set[str] = set()
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in GLOBAL_OPTIONS or (name in options and words == command):
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if not value:
                return None
            if name in options:
                values.setdefault(name, []).append(value)
            else:
                paths[GLOBAL_OPTIONS[name]] = Path(value)
        elif arg in flags and words == command:
            given.add(arg)
        elif arg.startswith("-"):
            return None
        else:
            words.append(arg)
        i += 1
    return (paths, values, given) if words == command else None


def parse_fast_ls(args: list[str]) -> tuple[dict[str, Path], bool, list[str]] | None:
    """`task ls` arguments as (global options, --json, tags), or None for anything else."""
    parsed = parse_fast(args, ["task", "ls"], ("--tag",), ("--json",))
    if parsed is None:
        return None
    paths, values, given = parsed
    return paths, "--json" in given, values.get("--tag", [])


def parse_fast_daemon_run(args: list[str]) -> tuple[dict[str, Path], str] | None:
    """`daemon run` arguments as (global options, log level), or None for anything else.

    The daemon's start does not wait for Typer, its parameters and every command module
    (~40 ms of CPU and 1.5 MB it would keep for good).
    """
    parsed = parse_fast(args, ["daemon", "run"], ("--log-level",))
    if parsed is None:
        return None
    paths, values, _ = parsed
    return paths, values.get("--log-level", ["INFO"])[-1]


def context(paths: dict[str, Path]) -> CliContext:
    """The invocation's context from the global options a fast path parsed."""
    from daycare_cli.cli.context import CliContext

    return CliContext(
        home=paths.get("home"),
        tasks_dir=paths.get("tasks_dir"),
        config_file=paths.get("config_file"),
    )


def run_fast_ls(parsed: tuple[dict[str, Path], bool, list[str]]) -> None:
    """`daycare task ls` without Typer."""
    from daycare_cli.cli.summary import list_tasks

    paths, as_json, tags = parsed
    list_tasks(context(paths), as_json=as_json, tags=tags)


def run_fast_daemon(parsed: tuple[dict[str, Path], str]) -> int:
    """`daycare daemon run` without Typer: the same call as `daemon_cmds.daemon_run`."""
    from daycare_cli.daemon.service import run_daemon

    paths, level = parsed
    cli = context(paths)
    return run_daemon(cli.paths, cli.config, level.upper())


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
        daemon = parse_fast_daemon_run(args)
        if daemon is not None:
            sys.exit(run_fast_daemon(daemon))
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
