"""Running a task now: `task run` (in the daemon, else here) and `task expand` (a dry run)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import complete_task_id
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
    """Renders run events for a person: a spinner per block, then a line per finished block."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status: Any = None
        self.console: Any = None
        if not quiet:
            from daycare_cli.cli.render import console

            self.console = console(stderr=True)

    def __call__(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        event = record.get("event")
        if event == "block.start":
            n = int(record.get("block", 0)) + 1
            self._spin(f"block {n} (line {record.get('line', '?')}) running…")
        elif event == "block.end":
            self.stop()
            n = int(record.get("block", 0)) + 1
            ms = record.get("duration_ms") or 0
            if record.get("skipped"):
                self.console.print(f"[yellow]↷[/] block {n} called skip ({ms} ms)")
            elif record.get("error"):
                self.console.print(f"[red]✗[/] block {n}: {shown(record['error'])} ({ms} ms)")
            else:
                extra = " [dim](output truncated)[/]" if record.get("truncated") else ""
                self.console.print(f"[green]✓[/] block {n} ({ms} ms){extra}")
        elif event == "model.start":
            self._spin(f"model {record.get('model')} thinking…")
        elif event == "model.end":
            self.stop()
            tokens = ""
            if record.get("input_tokens") is not None:
                tokens = f", {record.get('input_tokens')}→{record.get('output_tokens')} tokens"
            self.console.print(
                f"[cyan]◆[/] model {record.get('model')}: {record.get('status')} "
                f"({record.get('duration_ms')} ms{tokens})"
            )
        elif event == "run.end":
            self.stop()

    def _spin(self, text: str) -> None:
        self.stop()
        self.status = self.console.status(text)
        self.status.start()

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
    task_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)],
    payload: Annotated[
        str | None,
        typer.Option("--payload", help="Payload as JSON/text, or @file (@- for stdin)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process even if a daemon runs.")
    ] = False,
) -> None:
    """Run a task now, in the daemon when one runs, else in the foreground."""
    cli = get_context(ctx)
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
    task_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)],
    payload: Annotated[
        str | None, typer.Option("--payload", help="Payload as JSON/text, or @file.")
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
