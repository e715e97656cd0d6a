"""Commands about what happened: `runs ls|show`, `events` (the audit ledger), `logs`."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag, RunRef, TaskFilter, complete_run_ref, group
from daycare_cli.cli.run_cmds import STATUS_STYLE, open_state

ARTIFACTS_SHOWN = 200

if TYPE_CHECKING:
    from daycare_cli.store.rows import Run


def register(app: typer.Typer) -> None:
    """Add `runs`, `events` and `logs`."""
    runs_app = group("runs", "Runs: list and inspect.")
    runs_app.command("ls")(runs_ls)
    runs_app.command("show")(runs_show)
    app.add_typer(runs_app, name="runs")
    app.command("events")(events)
    app.command("logs")(logs)


def runs_ls(
    ctx: typer.Context,
    task: TaskFilter = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only runs with this status: queued, running, succeeded, failed, skipped, "
            "timed_out, interrupted, cancelled, missed.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many runs.")
    ] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first, with their full ids (for `runs show` and `logs`)."""
    from daycare_cli.cli.render import print_json
    from daycare_cli.cli.runrefs import check_status_filter, check_task_filter

    cli = get_context(ctx)
    check_status_filter(status)
    state = open_state(cli)
    try:
        check_task_filter(cli, state, task)
        runs = state.list_runs(task=task, status=status, limit=limit)
    finally:
        state.close()
    if as_json:
        print_json([r.to_json() for r in runs])
        return
    if not runs:
        what = " ".join(f for f in (status, f"of task {task}" if task else None) if f)
        typer.echo(f"No {what + ' ' if what else ''}runs yet.")
        return
    print_runs_table(cli, runs)


def print_runs_table(cli: CliContext, runs: list[Run]) -> None:
    """The `runs ls` table: ids in full; the note gives way on a narrow terminal."""
    from daycare_cli.cli import render

    zone = cli.default_zone
    rows: list[list[render.Cell]] = []
    for r in runs:
        when = r.started_at or r.queued_at
        took = f"{r.duration_ms / 1000:.1f}s" if r.duration_ms is not None else ""
        note = render.visible(r.error or r.skip_reason or "").replace("\n", " ")
        rows.append(
            [
                (r.id, "bold"),
                (r.task, ""),
                (r.trigger, ""),
                (r.status, STATUS_STYLE.get(r.status, "")),
                (f"{render.table_time(when, zone)} ({render.ago(when, cli.now)})", ""),
                (took, ""),
                (note, "dim"),
            ]
        )
    headers = ["RUN", "TASK", "TRIGGER", "STATUS", f"STARTED ({render.zone_label(zone)})"]
    render.print_table([*headers, "TOOK", "NOTE"], rows, shrink=((6, 4),))


def runs_show(ctx: typer.Context, run_ref: RunRef, as_json: JsonFlag = False) -> None:
    """Show one run: status, blocks (exit codes, timings, what they printed), artifacts,
    the expanded prompt and the response."""
    from daycare_cli.cli.render import print_json
    from daycare_cli.cli.runrefs import resolve_run

    cli = get_context(ctx)
    state = open_state(cli)
    try:
        run = resolve_run(cli, state, run_ref)
    finally:
        state.close()
    data = run.to_json()
    blocks, artifacts = _run_details(run)
    data["blocks"] = blocks
    data["artifacts"] = artifacts
    if as_json:
        print_json(data)
    else:
        print_run(cli, run, blocks, artifacts)


def print_run(
    cli: CliContext, run: Run, blocks: list[dict[str, Any]], artifacts: list[str]
) -> None:
    """`runs show` for a person: header, status, blocks, artifacts, prompt and response."""
    from rich.text import Text

    from daycare_cli.cli.render import console, local_time, relative, visible

    out = console()
    style = STATUS_STYLE.get(run.status, "")
    zone = cli.default_zone
    out.print(Text.assemble(("run ", "bold"), (run.id, "bold")))
    facts = [f"task {run.task}", run.trigger, f"attempt {run.attempt}"]
    if run.slot:
        facts.append(f"slot {local_time(run.slot, zone)}")
    out.print(Text(" · ".join(facts)))
    took = f" in {run.duration_ms / 1000:.2f}s" if run.duration_ms is not None else ""
    when = run.started_at or run.queued_at
    out.print(
        Text.assemble(
            "status ",
            (run.status, style),
            took,
            f" · started {local_time(when, zone)} ({relative(when, cli.now)})",
        )
    )
    for label, value in (
        ("error", run.error),
        ("skipped", run.skip_reason),
        ("model", run.model),
        ("isolation", run.isolation),
    ):
        if value:
            out.print(Text(f"{label}: {visible(value)}"))
    for b in blocks:
        mark = "✗" if b.get("error") else ("↷" if b.get("skipped") else "✓")
        error = f" · {b['error']}" if b.get("error") else ""
        out.print(
            Text(
                f"  {mark} block {int(b['block']) + 1}: exit {b.get('exit_code')}, "
                f"{b.get('duration_ms')} ms{visible(error)}"
            )
        )
        if b.get("error") and b.get("stdout"):
            # What a failing block printed before its error: often the clue.
            for line in str(b["stdout"]).rstrip("\n").splitlines()[-20:]:
                out.print(Text(f"    │ {visible(line)}"))
        if b.get("error") and b.get("stderr"):
            # The traceback tells where; the last lines are the useful ones.
            tail = "\n".join(str(b["stderr"]).rstrip().splitlines()[-12:])
            out.print(Text(visible(tail), "dim"))
    for a in artifacts[:ARTIFACTS_SHOWN]:  # names a block chose: as text, and not all of them
        out.print(Text(f"  artifact {visible(a)}"))
    if len(artifacts) > ARTIFACTS_SHOWN:
        out.print(Text(f"  … {len(artifacts) - ARTIFACTS_SHOWN} more artifacts"))
    if run.output:
        out.rule("prompt", style="dim")
        out.print(Text(visible(run.output.rstrip("\n"))))
    if run.response:
        out.rule("response", style="dim")
        out.print(Text(visible(run.response.rstrip("\n"))))


def events(
    ctx: typer.Context,
    task: TaskFilter = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many events.")
    ] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The audit ledger: who changed or fired what, and when."""
    from daycare_cli.cli import render
    from daycare_cli.cli.runrefs import check_task_filter

    cli = get_context(ctx)
    state = open_state(cli)
    try:
        check_task_filter(cli, state, task)
        rows = state.list_events(task=task, limit=limit)
    finally:
        state.close()
    if as_json:
        render.print_json([e.to_json() for e in rows])
        return
    if not rows:
        typer.echo("No events yet.")
        return
    zone = cli.default_zone
    table: list[list[render.Cell]] = []
    for e in rows:
        detail = json.dumps(e.detail, ensure_ascii=False) if e.detail else ""
        table.append(
            [
                (render.table_time(e.at, zone), ""),
                (e.actor, ""),
                (e.kind, "bold"),
                (e.task or "-", ""),
                (e.run or "", ""),
                (render.visible(detail), "dim"),
            ]
        )
    headers = [f"AT ({render.zone_label(zone)})", "ACTOR", "EVENT", "TASK", "RUN", "DETAIL"]
    render.print_table(headers, table, shrink=((5, 4),))


def logs(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[TASK|RUN]",
            help="A task id (its latest runs), or one run: an id, a unique prefix, `last`.",
            autocompletion=complete_run_ref,
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new events and block output as they happen."
        ),
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", metavar="N", min=0, help="How many past runs to show (0: none)."
        ),
    ] = 3,
) -> None:
    """Run logs: block starts and ends, what blocks print, the model; -f follows live."""
    from daycare_cli.cli.runrefs import resolve_run, task_known

    cli = get_context(ctx)
    state = open_state(cli)
    task: str | None = None
    run_id: str | None = None
    try:
        if ref is None:
            runs = list(reversed(state.list_runs(limit=limit)))
        elif ref != "last" and task_known(cli, state, ref):
            task = ref
            runs = list(reversed(state.list_runs(task=task, limit=limit)))
        else:
            one = resolve_run(cli, state, ref)
            run_id = one.id
            runs = [one]
    finally:
        state.close()
    printer = LogPrinter(cli)
    for r in runs:
        if r.run_dir:
            log_path = Path(r.run_dir) / "log.jsonl"
            if log_path.exists():
                for line in log_path.read_text("utf-8").splitlines():
                    with contextlib.suppress(ValueError):
                        printer(json.loads(line))
    printer.flush()
    if follow:
        if run_id is not None and runs[0].finished_at is not None:
            typer.echo(f"run {run_id} has finished: nothing more to follow", err=True)
            return
        follow_logs(cli, task, run_id, printer)


def follow_logs(cli: CliContext, task: str | None, run_id: str | None, printer: LogPrinter) -> None:
    """`logs -f`: the daemon's live events until it stops, else the polled audit ledger."""
    from daycare_cli.client import connect

    client = connect(cli.paths)
    try:
        if client is not None:
            for record in client.follow(run_id=run_id, task=task):
                printer(record)
                if run_id is not None and record.get("event") == "run.end":
                    printer.flush()
                    return
            printer.flush()
            typer.echo("the daemon stopped: no more events to follow", err=True)
        else:
            _poll_events(cli, task)
    except KeyboardInterrupt:
        pass
    finally:
        if client is not None:
            client.close()


class LogPrinter:
    """Prints run events one a line, and what blocks print as `│ text` lines, as they come."""

    def __init__(self, cli: CliContext) -> None:
        self.zone = cli.default_zone
        self.partial: dict[tuple[str, int], str] = {}

    def clock(self, record: dict[str, Any]) -> str:
        """The record's time in the table zone: `23:18:30.123`."""
        from datetime import datetime
        from zoneinfo import ZoneInfo

        try:
            at = datetime.fromisoformat(str(record.get("at")))
        except ValueError:
            return " " * 12
        return at.astimezone(ZoneInfo(self.zone)).strftime("%H:%M:%S.%f")[:12]

    def __call__(self, record: dict[str, Any]) -> None:
        from daycare_cli.cli.render import visible

        event = str(record.get("event", ""))
        run = str(record.get("run", ""))
        if event == "block.output":
            key = (run, int(record.get("block") or 0))
            text = self.partial.pop(key, "") + str(record.get("text", ""))
            lines = text.split("\n")
            if lines[-1]:
                self.partial[key] = lines[-1]
            for line in lines[:-1]:
                typer.echo(f"{self.clock(record)} {run} │ {visible(line)}")
            return
        if event == "block.end":
            self.flush(run)
        rest = {
            k: v
            for k, v in record.items()
            if k not in ("at", "event", "run", "stdout", "stderr") and v not in (None, "", False)
        }
        if "block" in rest:
            rest["block"] = int(rest["block"]) + 1
        fields = " ".join(f"{k}={v}" for k, v in rest.items())
        typer.echo(visible(f"{self.clock(record)} {run} {event} {fields}".rstrip()))

    def flush(self, run: str | None = None) -> None:
        """Print lines a block left unfinished (no newline yet)."""
        from daycare_cli.cli.render import visible

        for key in [k for k in self.partial if run is None or k[0] == run]:
            typer.echo(f"{' ' * 12} {key[0]} │ {visible(self.partial.pop(key))}")


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
                            "stdout",
                        )
                    }
                )
    art = run_dir / "artifacts"
    if art.is_dir():
        artifacts = sorted(str(p.relative_to(art)) for p in art.rglob("*") if p.is_file())
    return blocks, artifacts
