"""Commands about what happened: `runs ls|show`, `events` (the audit ledger), `logs`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import complete_task_id
from daycare_cli.cli.run_cmds import STATUS_STYLE, open_state
from daycare_cli.core.text import shown, visible

ARTIFACTS_SHOWN = 200

if TYPE_CHECKING:
    from daycare_cli.store.rows import Run


def register(app: typer.Typer) -> None:
    """Add `runs`, `events` and `logs`."""
    runs_app = typer.Typer(help="Runs: list and inspect.", no_args_is_help=True)
    runs_app.command("ls")(runs_ls)
    runs_app.command("show")(runs_show)
    app.add_typer(runs_app, name="runs")
    app.command("events")(events)
    app.command("logs")(logs)


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
        # Block-controlled text: shown as text, never as markup or terminal controls.
        status = f"[{style}]{r.status}[/]"
        table.add_row(r.id, r.task, r.trigger, status, ago, dur, shown(note[:60]))
    out = console()
    if not runs:
        out.print("no runs yet")
    else:
        out.print(table)


def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one run: prompt, response, blocks with exit codes and timings, artifacts."""
    from daycare_cli.cli.render import print_json
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
    else:
        print_run(run, blocks, artifacts)


def print_run(run: Run, blocks: list[dict[str, Any]], artifacts: list[str]) -> None:
    """`runs show` for a person: header, status, blocks, artifacts, prompt and response."""
    from daycare_cli.cli.render import console

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
            out.print(f"{label}: {visible(value)}", markup=False)
    for b in blocks:
        mark = "✗" if b.get("error") else ("↷" if b.get("skipped") else "✓")
        out.print(
            f"  {mark} block {b['block'] + 1}: exit {b.get('exit_code')}, "
            f"{b.get('duration_ms')} ms{' · ' + visible(b['error']) if b.get('error') else ''}",
            markup=False,
        )
        if b.get("error") and b.get("stderr"):
            # The traceback tells where; the last lines are the useful ones.
            tail = "\n".join(str(b["stderr"]).rstrip().splitlines()[-12:])
            out.print(visible(tail), markup=False, style="dim")
    for a in artifacts[:ARTIFACTS_SHOWN]:  # names a block chose: as text, and not all of them
        out.print(f"  artifact {visible(a)}", markup=False)
    if len(artifacts) > ARTIFACTS_SHOWN:
        out.print(f"  … {len(artifacts) - ARTIFACTS_SHOWN} more artifacts", markup=False)
    if run.output:
        out.rule("prompt", style="dim")
        out.print(visible(run.output.rstrip("\n")), markup=False)
    if run.response:
        out.rule("response", style="dim")
        out.print(visible(run.response.rstrip("\n")), markup=False)


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
            f"{at}  {e.actor:<8} {e.kind:<18} {e.task or '-':<20} {e.run or ''} {visible(detail)}",
            markup=False,
        )


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
    if follow:
        follow_logs(cli, task)


def follow_logs(cli: CliContext, task: str | None) -> None:
    """`logs -f`: the daemon's live events until it stops, else the polled audit ledger."""
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
    typer.echo(visible(f"{at} {record.get('run', '')} {event} {fields}".rstrip()))


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
