"""Commands about runs: `task run`, `task expand`, `runs ls|show`, `events`, `logs`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import complete_task_id

if TYPE_CHECKING:
    from daycare_cli.store.rows import Run
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
            self._stop()
            n = int(record.get("block", 0)) + 1
            ms = record.get("duration_ms") or 0
            if record.get("skipped"):
                self.console.print(f"[yellow]↷[/] block {n} called skip ({ms} ms)")
            elif record.get("error"):
                self.console.print(f"[red]✗[/] block {n}: {record['error']} ({ms} ms)")
            else:
                extra = " [dim](output truncated)[/]" if record.get("truncated") else ""
                self.console.print(f"[green]✓[/] block {n} ({ms} ms){extra}")
        elif event == "model.start":
            self._spin(f"model {record.get('model')} thinking…")
        elif event == "model.end":
            self._stop()
            tokens = ""
            if record.get("input_tokens") is not None:
                tokens = f", {record.get('input_tokens')}→{record.get('output_tokens')} tokens"
            self.console.print(
                f"[cyan]◆[/] model {record.get('model')}: {record.get('status')} "
                f"({record.get('duration_ms')} ms{tokens})"
            )
        elif event == "run.end":
            self._stop()

    def _spin(self, text: str) -> None:
        self._stop()
        self.status = self.console.status(text)
        self.status.start()

    def _stop(self) -> None:
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
    if run.get("skip_reason"):
        out.print(f"[yellow]skipped:[/] {run['skip_reason']}")
    if run.get("error"):
        out.print(f"[red]error:[/] {run['error']}")
    text = run.get("response") or run.get("output") or ""
    if text.strip():
        out.rule(style="dim")
        out.print(text.rstrip("\n"), markup=False, highlight=False)
    return code


def register_task_commands(task_app: typer.Typer) -> None:
    """Add `task run` and `task expand` to the task group."""

    @task_app.command("run")
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
            progress._stop()
            state.close()
        assert run is not None
        raise typer.Exit(print_run_result(run.to_json(), as_json=as_json))

    @task_app.command("expand")
    def task_expand(
        ctx: typer.Context,
        task_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)],
        payload: Annotated[
            str | None, typer.Option("--payload", help="Payload as JSON/text, or @file.")
        ] = None,
    ) -> None:
        """Show the expanded prompt: blocks run, no model, no run recorded (a dry run)."""
        import tempfile

        from daycare_cli.core.prompt import Block, BlockResult, block_timeout, expand_prompt
        from daycare_cli.run.sandbox import BlockSpec, run_block

        cli = get_context(ctx)
        task = cli.store.get(task_id)
        data = read_payload(payload)
        progress = Progress(quiet=False)
        workspace = cli.paths.workspace(task.id)
        files = workspace / "files"
        files.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="daycare-expand-") as tmp:
            artifacts = Path(tmp) / "artifacts"
            artifacts.mkdir()
            payload_file = None
            if data is not None:
                payload_file = Path(tmp) / "payload.json"
                payload_file.write_bytes(data)

            async def one(block: Block) -> BlockResult:
                progress({"event": "block.start", "block": block.index, "line": block.line})
                res = await run_block(
                    BlockSpec(
                        code=block.code,
                        files_dir=files,
                        artifacts_dir=artifacts,
                        workspace=workspace,
                        timeout=block_timeout(block, task.timeout),
                        sandbox=task.sandbox,
                        env=dict(task.env),
                        task={"id": task.id, "name": task.name},
                        run={"id": "expand", "trigger": "manual", "slot": None},
                        payload_file=payload_file,
                    )
                )
                progress(
                    {
                        "event": "block.end",
                        "block": block.index,
                        "duration_ms": res.duration_ms,
                        "error": res.error,
                        "skipped": res.skipped,
                        "truncated": res.truncated,
                    }
                )
                return BlockResult(
                    res.output, res.error, res.truncated, res.skipped, res.skip_reason
                )

            expansion = asyncio.run(expand_prompt(task.body, one, execute=task.execute))
            progress._stop()
        if expansion.skipped:
            typer.echo(f"(a block called skip: {expansion.skip_reason or 'no reason'})", err=True)
        sys.stdout.write(expansion.text if expansion.text.endswith("\n") else expansion.text + "\n")


def _run_via_daemon(
    client: Any, task_id: str, payload: bytes | None, progress: Progress, as_json: bool
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
        progress._stop()
        client.close()
    if result is None:
        raise UserError("the daemon ended the run without a result", hint="see `daycare logs`")
    return print_run_result(result, as_json=as_json)


def register(app: typer.Typer) -> None:
    """Add `runs`, `events` and `logs`."""
    runs_app = typer.Typer(help="Runs: list and inspect.", no_args_is_help=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.command("ls")
    def runs_ls(
        ctx: typer.Context,
        task: Annotated[str | None, typer.Option("--task", autocompletion=complete_task_id)] = None,
        status: Annotated[str | None, typer.Option("--status")] = None,
        limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List runs, newest first."""
        from daycare_cli.cli.render import console, print_json, relative

        cli = get_context(ctx)
        state = open_state(cli)
        try:
            runs = state.list_runs(task=task, status=status, limit=limit)
        finally:
            state.close()
        if as_json:
            print_json([r.to_json() for r in runs])
            return
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for col in ("run", "task", "trigger", "status", "when", "duration", "note"):
            table.add_column(col)
        for r in runs:
            when = r.started_at or r.queued_at
            ago = relative(when, cli.now) if when else ""
            dur = f"{(r.duration_ms or 0) / 1000:.1f}s" if r.duration_ms is not None else ""
            note = r.error or r.skip_reason or ""
            style = STATUS_STYLE.get(r.status, "")
            table.add_row(r.id, r.task, r.trigger, f"[{style}]{r.status}[/]", ago, dur, note[:60])
        out = console()
        if not runs:
            out.print("no runs yet")
        else:
            out.print(table)

    @runs_app.command("show")
    def runs_show(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(metavar="RUN")],
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Show one run: prompt, response, blocks with exit codes and timings, artifacts."""
        from daycare_cli.cli.render import console, print_json
        from daycare_cli.core.errors import NotFoundError

        cli = get_context(ctx)
        state = open_state(cli)
        try:
            run = state.get_run(run_id)
        finally:
            state.close()
        if run is None:
            raise NotFoundError(f"no run {run_id!r}", hint="list runs with `daycare runs ls`")
        data = run.to_json()
        blocks, artifacts = _run_details(run)
        data["blocks"] = blocks
        data["artifacts"] = artifacts
        if as_json:
            print_json(data)
            return
        out = console()
        style = STATUS_STYLE.get(run.status, "")
        slot = f" · slot {run.slot.isoformat()}" if run.slot else ""
        out.print(
            f"[bold]run {run.id}[/] · task {run.task} · {run.trigger}{slot} · attempt {run.attempt}"
        )
        out.print(
            f"status [{style}]{run.status}[/]"
            f"{f' in {run.duration_ms / 1000:.2f}s' if run.duration_ms is not None else ''}"
        )
        for label, value in (
            ("error", run.error),
            ("skipped", run.skip_reason),
            ("model", run.model),
            ("isolation", run.isolation),
        ):
            if value:
                out.print(f"{label}: {value}", markup=False)
        for b in blocks:
            mark = "✗" if b.get("error") else ("↷" if b.get("skipped") else "✓")
            out.print(
                f"  {mark} block {b['block'] + 1}: exit {b.get('exit_code')}, "
                f"{b.get('duration_ms')} ms{' · ' + b['error'] if b.get('error') else ''}",
                markup=False,
            )
            if b.get("error") and b.get("stderr"):
                # The traceback tells where; the last lines are the useful ones.
                tail = "\n".join(str(b["stderr"]).rstrip().splitlines()[-12:])
                out.print(tail, markup=False, style="dim")
        for a in artifacts:
            out.print(f"  artifact {a}", markup=False)
        if run.output:
            out.rule("prompt", style="dim")
            out.print(run.output.rstrip("\n"), markup=False)
        if run.response:
            out.rule("response", style="dim")
            out.print(run.response.rstrip("\n"), markup=False)

    @app.command("events")
    def events(
        ctx: typer.Context,
        task: Annotated[str | None, typer.Option("--task")] = None,
        limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The audit ledger: who changed or fired what, and when."""
        from daycare_cli.cli.render import console, print_json

        cli = get_context(ctx)
        state = open_state(cli)
        try:
            rows = state.list_events(task=task, limit=limit)
        finally:
            state.close()
        if as_json:
            print_json([e.to_json() for e in rows])
            return
        out = console()
        for e in rows:
            detail = json.dumps(e.detail, ensure_ascii=False) if e.detail else ""
            at = e.at.astimezone().isoformat(timespec="seconds")
            out.print(
                f"{at}  {e.actor:<8} {e.kind:<18} {e.task or '-':<20} {e.run or ''} {detail}",
                markup=False,
            )

    @app.command("logs")
    def logs(
        ctx: typer.Context,
        task: Annotated[
            str | None, typer.Argument(metavar="[TASK]", autocompletion=complete_task_id)
        ] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
        limit: Annotated[int, typer.Option("--limit", "-n", help="Runs to show.")] = 3,
    ) -> None:
        """Run logs: the events of the latest runs; with -f, follow new ones."""
        cli = get_context(ctx)
        state = open_state(cli)
        try:
            runs = list(reversed(state.list_runs(task=task, limit=limit)))
        finally:
            state.close()
        for r in runs:
            if r.run_dir:
                log_path = Path(r.run_dir) / "log.jsonl"
                if log_path.exists():
                    for line in log_path.read_text("utf-8").splitlines():
                        _print_log_line(json.loads(line), r.task)
        if not follow:
            return
        from daycare_cli.client import connect

        client = connect(cli.paths)
        try:
            if client is not None:
                for record in client.follow(task=task):
                    _print_log_line(record, task)
                typer.echo("the daemon stopped: no more events to follow", err=True)
            else:
                _poll_events(cli, task)
        except KeyboardInterrupt:
            pass
        finally:
            if client is not None:
                client.close()


def _print_log_line(record: dict[str, Any], task: str | None) -> None:
    at = str(record.get("at", ""))[11:23]
    event = record.get("event", "")
    rest = {
        k: v
        for k, v in record.items()
        if k not in ("at", "event", "run") and v not in (None, "", False)
    }
    fields = " ".join(f"{k}={v}" for k, v in rest.items())
    typer.echo(f"{at} {record.get('run', '')} {event} {fields}".rstrip())


def _poll_events(cli: CliContext, task: str | None) -> None:
    """Without a daemon: follow the audit ledger by polling the database."""
    state = open_state(cli)
    try:
        last = state.list_events(task=task, limit=1)
        since = last[-1].id if last else 0
        while True:
            for e in state.list_events(task=task, limit=200, since_id=since):
                since = max(since, e.id)
                at = e.at.astimezone().isoformat(timespec="seconds")
                typer.echo(f"{at} {e.actor} {e.kind} {e.task or ''} {e.run or ''}")
            time.sleep(0.5)
    finally:
        state.close()


def _run_details(run: Run) -> tuple[list[dict[str, Any]], list[str]]:
    blocks: list[dict[str, Any]] = []
    artifacts: list[str] = []
    if not run.run_dir:
        return blocks, artifacts
    run_dir = Path(run.run_dir)
    log_path = run_dir / "log.jsonl"
    if log_path.exists():
        for line in log_path.read_text("utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "block.end":
                blocks.append(
                    {
                        k: rec.get(k)
                        for k in (
                            "block",
                            "exit_code",
                            "duration_ms",
                            "error",
                            "skipped",
                            "truncated",
                            "isolation",
                            "stderr",
                        )
                    }
                )
    art = run_dir / "artifacts"
    if art.is_dir():
        artifacts = sorted(str(p.relative_to(art)) for p in art.rglob("*") if p.is_file())
    return blocks, artifacts
