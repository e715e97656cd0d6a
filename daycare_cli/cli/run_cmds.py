"""Running a task now: `task run` (in the daemon, else here) and `task expand` (a dry run)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import TaskId, complete_task_id
from daycare_cli.core.text import shown, visible

if TYPE_CHECKING:
    from daycare_cli.client import DaemonClient
    from daycare_cli.core.prompt import Expansion
    from daycare_cli.core.task import Task
    from daycare_cli.store.state import State

STATUS_STYLE = {
    "succeeded": "green",
    "skipped": "yellow",
    "failed": "red",
    "timed_out": "red",
    "interrupted": "magenta",
    "cancelled": "magenta",
    "missed": "dim",
    "running": "cyan",
    "queued": "cyan",
}
FAILED = ("failed", "timed_out", "interrupted", "cancelled")


def open_state(cli: CliContext) -> State:
    """The state database of this home (created on first use)."""
    from daycare_cli.store.state import State

    return State.open(cli.paths.state_db)


def read_payload(value: str | None) -> bytes | None:
    """`--payload` as given: JSON or text, or `@file` to read it from a file (`@-`: stdin)."""
    if value is None:
        return None
    if value.startswith("@"):
        from daycare_cli.core.errors import UsageError

        name = value[1:]
        if name == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read payload file {name}: {exc.strerror}",
                hint="pass --payload '{\"key\": 1}' or --payload @path/to/file.json",
            ) from None
    return value.encode("utf-8")


class Progress:
    """Shows run events to a person on stderr as they happen.

    On a terminal: a Rich spinner per block with what the block prints appearing above
    it, line by line, as it prints; piped: plain lines, flushed at once. `quiet` (for
    --json) shows nothing.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.status: Any = None
        self.console: Any = None
        self.partial: dict[int, str] = {}
        if self.live:
            from daycare_cli.cli.render import console

            self.console = console(stderr=True)

    def __call__(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        event = record.get("event")
        n = int(record.get("block") or 0) + 1
        if event == "env.build":
            deps = ", ".join(record.get("dependencies") or []) or "no packages"
            version = f", Python {record['python']}" if record.get("python") else ""
            self._spin(f"building the Python environment of block {n} ({deps}{version})…")
        elif event in ("env.built", "env.failed"):
            self.stop()
            if event == "env.built":
                secs = (record.get("duration_ms") or 0) / 1000
                self._line("✓", "green", f"environment {record.get('key')} built in {secs:.1f}s")
            else:
                self._line("✗", "red", f"environment {record.get('key')} not built")
        elif event == "block.start":
            self._spin(f"block {n} (line {record.get('line', '?')}) running…")
        elif event == "block.output":
            self._output(n, str(record.get("text", "")))
        elif event == "block.end":
            self._output(n, "", final=True)
            self.stop()
            ms = record.get("duration_ms") or 0
            if record.get("skipped"):
                self._line("↷", "yellow", f"block {n} called skip ({ms} ms)")
            elif record.get("error"):
                self._line("✗", "red", f"block {n}: {record['error']} ({ms} ms)")
            else:
                cut = " (output truncated)" if record.get("truncated") else ""
                self._line("✓", "green", f"block {n} ({ms} ms){cut}")
        elif event == "model.start":
            self._spin(f"model {record.get('model')} thinking…")
        elif event == "model.end":
            self.stop()
            tokens = ""
            if record.get("input_tokens") is not None:
                tokens = f", {record.get('input_tokens')}→{record.get('output_tokens')} tokens"
            self._line(
                "◆",
                "cyan",
                f"model {record.get('model')}: {record.get('status')} "
                f"({record.get('duration_ms')} ms{tokens})",
            )
        elif event == "run.end":
            self.stop()

    def _output(self, n: int, text: str, *, final: bool = False) -> None:
        """Print the whole lines a block printed so far (and the rest at its end)."""
        from daycare_cli.cli.render import visible

        text = self.partial.pop(n, "") + text
        lines = text.split("\n")
        rest = lines.pop()
        if rest and not final:
            self.partial[n] = rest
        elif rest:
            lines.append(rest)
        for line in lines:
            shown = f"  │ {visible(line)}"
            if self.live:
                from rich.text import Text

                self.console.print(Text(shown))  # above the spinner, which keeps turning
            else:
                sys.stderr.write(shown + "\n")
                sys.stderr.flush()

    def _line(self, mark: str, style: str, text: str) -> None:
        from daycare_cli.cli.render import visible

        if self.live:
            from rich.text import Text

            self.console.print(Text.assemble((mark, style), " ", visible(text)))
        else:
            sys.stderr.write(f"{mark} {visible(text)}\n")
            sys.stderr.flush()

    def _spin(self, text: str) -> None:
        self.stop()
        if self.live:
            self.status = self.console.status(text)
            self.status.start()
        else:
            sys.stderr.write(f"… {text}\n")
            sys.stderr.flush()

    def stop(self) -> None:
        """Stop the spinner, if one turns."""
        if self.status is not None:
            self.status.stop()
            self.status = None


def print_run_result(run: dict[str, Any], *, as_json: bool) -> int:
    """The end of `task run`: status, duration, run id and the output; returns the exit code."""
    from daycare_cli.cli.render import console, print_json

    code = 1 if run.get("status") in FAILED else 0
    if as_json:
        print_json(run)
        return code
    out = console()
    style = STATUS_STYLE.get(str(run.get("status")), "")
    secs = (run.get("duration_ms") or 0) / 1000
    out.print(f"[bold {style}]{run.get('status')}[/] in {secs:.2f}s · run {run.get('id')}")
    if run.get("isolation"):
        out.print(f"[dim]isolation: {run['isolation']}[/]")
    if run.get("skip_reason"):
        out.print(f"[yellow]skipped:[/] {shown(run['skip_reason'])}")
    if run.get("error"):
        out.print(f"[red]error:[/] {shown(run['error'])}")
    text = run.get("response") or run.get("output") or ""
    if text.strip():
        out.rule(style="dim")
        out.print(visible(text.rstrip("\n")), markup=False, highlight=False)
    return code


def register_task_commands(task_app: typer.Typer) -> None:
    """Add `task run` and `task expand` to the task group."""
    task_app.command("run")(task_run)
    task_app.command("expand")(task_expand)


def task_run(
    ctx: typer.Context,
    task_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[TASK]",
            help="Task id (the file name without .md); omit it with --file.",
            autocompletion=complete_task_id,
            show_default=False,
        ),
    ] = None,
    payload: Annotated[
        str | None,
        typer.Option(
            "--payload",
            metavar="DATA",
            help="Payload as JSON or text, or @FILE (@- reads stdin), as a webhook would send.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process even if a daemon runs.")
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            help="One-shot mode: run this task file once with no daemon, home or state; "
            "the run is printed as JSON lines.",
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            metavar="DIR",
            help="With --file: copy artifacts to DIR/<task>/<run>/.",
        ),
    ] = None,
) -> None:
    """Run a task now, in the daemon when one runs, else in the foreground.

    With --file instead of an ID, run that file in the one-shot mode that
    `daycare export` uses (see docs/operations.md).
    """
    cli = get_context(ctx)
    if file is not None or artifacts is not None:  # one-shot mode: cli/oneshot.py
        from daycare_cli.cli.oneshot import run_oneshot

        raise typer.Exit(run_oneshot(cli, task_id, file, artifacts, read_payload(payload)))
    if task_id is None:
        from daycare_cli.core.errors import UsageError

        raise UsageError("give a task ID, or --file PATH", hint="e.g. daycare task run backup")
    task = cli.store.get(task_id)
    data = read_payload(payload)
    progress = Progress(quiet=as_json)
    if not local:
        from daycare_cli.client import connect

        client = connect(cli.paths)
        if client is not None:
            raise typer.Exit(_run_via_daemon(client, task.id, data, progress, as_json))
    from daycare_cli.run.runner import Runner, RunRequest

    state = open_state(cli)
    try:
        runner = Runner(cli.paths, cli.config, state, actor="cli", on_event=progress)
        run = asyncio.run(runner.run(RunRequest(task=task, trigger="manual", payload=data)))
    finally:
        progress.stop()
        state.close()
    assert run is not None
    raise typer.Exit(print_run_result(run.to_json(), as_json=as_json))


def task_expand(
    ctx: typer.Context,
    task_id: TaskId,
    payload: Annotated[
        str | None,
        typer.Option(
            "--payload", metavar="DATA", help="Payload as JSON or text, or @FILE (@- reads stdin)."
        ),
    ] = None,
) -> None:
    """Show the expanded prompt: blocks run, no model, no run recorded (a dry run)."""
    cli = get_context(ctx)
    task = cli.store.get(task_id)
    expansion = expand_task(cli, task, read_payload(payload), Progress(quiet=False))
    if expansion.skipped:
        reason = visible(expansion.skip_reason or "no reason")
        typer.echo(f"(a block called skip: {reason})", err=True)
    text = visible(expansion.text)  # block output: no terminal control gets through
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def expand_task(cli: CliContext, task: Task, data: bytes | None, progress: Progress) -> Expansion:
    """Run the blocks of a task's prompt in its workspace and splice their outputs in.

    The blocks get the launch plan of a real run (run/blocks.py): the same view, masks,
    isolation policy and secrets. Artifacts and the payload go to a temporary directory
    that is removed afterwards.
    """
    import tempfile

    from daycare_cli.core.errors import SandboxError, UserError
    from daycare_cli.core.prompt import Expansion
    from daycare_cli.run.blocks import RunBlocks, RunRefused, resolve_env
    from daycare_cli.run.envs import EnvCache, prepare_envs
    from daycare_cli.run.sandbox import REFUSED_HINT

    if not task.execute:
        return Expansion(text=task.body, results=[])
    try:
        env, _ = resolve_env(task, cli.config)
    except LookupError as exc:
        raise UserError(str(exc), path=task.path) from None
    files = cli.paths.workspace(task.id) / "files"
    files.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="daycare-expand-") as tmp:
        os.chmod(tmp, 0o755)  # the sandbox user (as root) reaches artifacts/ through it
        artifacts = Path(tmp) / "artifacts"
        artifacts.mkdir()
        payload_file = None
        if data is not None:
            payload_file = Path(tmp) / "payload.json"
            payload_file.write_bytes(data)
            payload_file.chmod(0o644)
        envs = {}
        if task.execute:
            cache = EnvCache(cli.paths.cache_dir, cli.config.deps)
            emit = lambda event, **f: progress({"event": event, **f})  # noqa: E731
            envs = asyncio.run(prepare_envs(cache, task, emit))
        blocks = RunBlocks(
            paths=cli.paths,
            config=cli.config,
            task=task,
            run={"id": "expand", "trigger": "manual", "slot": None},
            files_dir=files,
            artifacts_dir=artifacts,
            payload_file=payload_file,
            env=env,
            emit=lambda event, **fields: progress({"event": event, **fields}),
            envs=envs,
        )
        try:
            expansion = asyncio.run(blocks.expand())
        except RunRefused as exc:
            raise SandboxError(
                f"blocks of this task do not run: bubblewrap cannot run here ({exc.reason})",
                path=task.path,
                hint=REFUSED_HINT,
            ) from None
        finally:
            progress.stop()
    return expansion


def _run_via_daemon(
    client: DaemonClient, task_id: str, payload: bytes | None, progress: Progress, as_json: bool
) -> int:
    from daycare_cli.core.errors import NotFoundError, TaskFileError, UserError

    result: dict[str, Any] | None = None
    try:
        for record in client.run(task_id, payload):
            if record.get("event") == "error":
                code = int(record.get("code") or 1)
                cls = {3: NotFoundError, 4: TaskFileError}.get(code, UserError)
                raise cls(str(record.get("error")))
            if record.get("event") == "run.result":
                result = record.get("result")
            else:
                progress(record)
    finally:
        progress.stop()
        client.close()
    if result is None:
        raise UserError("the daemon ended the run without a result", hint="see `daycare logs`")
    return print_run_result(result, as_json=as_json)
