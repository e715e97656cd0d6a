"""Overviews across all tasks: `daycare topology` and `daycare next`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag

if TYPE_CHECKING:
    from daycare_cli.core.task import Task

GROUPS = ("cron", "at", "every", "webhook", "manual")
GROUP_TITLES = {
    "cron": "cron schedules",
    "at": "one-off (at)",
    "every": "intervals (every)",
    "webhook": "webhooks",
    "manual": "manual only",
}


def register(parent: typer.Typer) -> None:
    """Add `topology` and `next` to the root app."""
    parent.command("topology")(topology)
    parent.command("next")(next_fires_cmd)


def task_overview(cli: CliContext, task: Task, kind: str) -> dict[str, Any]:
    """One task in one topology group."""
    from daycare_cli.cli.summary import describe

    return {
        "id": task.id,
        "name": task.name,
        "enabled": task.enabled,
        "model": task.model_enabled(cli.config.model),
        "execute": task.execute,
        "notify": list(task.notify),
        "tags": list(task.tags),
        "triggers": [describe(cli, task, t) for t in task.triggers if t.type == kind],
    }


def topology(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Tasks grouped by how they fire, with their model, execute flag, notify targets and tags."""
    cli = get_context(ctx)
    groups: dict[str, list[dict[str, Any]]] = {kind: [] for kind in GROUPS}
    invalid: list[dict[str, Any]] = []
    for entry in cli.store.list():
        task = entry.task
        if task is None:
            assert entry.error is not None
            invalid.append(
                {"id": entry.id, "path": str(entry.path), "error": render.error_text(entry.error)}
            )
            continue
        kinds = sorted({t.type for t in task.triggers}, key=GROUPS.index) or ["manual"]
        for kind in kinds:
            groups[kind].append(task_overview(cli, task, kind))
    if json_:
        render.print_json({**groups, "invalid": invalid})
        return
    print_tree(cli, groups, invalid)


def print_tree(
    cli: CliContext, groups: dict[str, list[dict[str, Any]]], invalid: list[dict[str, Any]]
) -> None:
    """The topology as a Rich tree."""
    from rich.text import Text
    from rich.tree import Tree

    tree = Tree(Text(f"tasks in {render.display_path(cli.store.dir)}", "bold"))
    for kind in GROUPS:
        members = groups[kind]
        if not members:
            continue
        branch = tree.add(Text(f"{GROUP_TITLES[kind]} ({len(members)})", "bold cyan"))
        for item in members:
            facts = [f"model {item['model']}" if item["model"] else "no model"]
            if item["execute"]:
                facts.append("execute")
            if item["notify"]:
                facts.append("notify " + ", ".join(item["notify"]))
            if item["tags"]:
                facts.append("tags " + ", ".join(item["tags"]))
            if not item["enabled"]:
                facts.append("disabled")
            label = Text.assemble(
                (item["id"], "bold"), f"  {item['name']}  ", (" · ".join(facts), "dim")
            )
            node = branch.add(label)
            for words in item["triggers"]:
                node.add(Text(words))
    if invalid:
        branch = tree.add(Text(f"invalid files ({len(invalid)})", "bold red"))
        for item in invalid:
            branch.add(Text(f"{item['id']}  {item['error']}", "red"))
    render.console().print(tree, soft_wrap=False)


def next_fires_cmd(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option("-n", "--count", metavar="N", min=1, help="How many fires.")
    ] = 10,
    json_: JsonFlag = False,
) -> None:
    """The next fires across all enabled tasks, soonest first."""
    from daycare_cli.cli.summary import iso, stored_slots, task_fires

    cli = get_context(ctx)
    fires = []
    skipped = 0
    entries = cli.store.list()
    stored_slots(cli, [e.task for e in entries if e.task is not None])
    for entry in entries:
        if entry.task is None:
            skipped += 1
            continue
        fires.extend(task_fires(cli, entry.task, count))
    fires.sort(key=lambda f: (f.when.timestamp(), f.task.id))
    fires = fires[:count]
    if skipped:
        render.warn(f"{skipped} invalid task file(s) left out; see `daycare task lint`")
    if json_:
        render.print_json(
            [
                {
                    "task": f.task.id,
                    "name": f.task.name,
                    "trigger": f.trigger.id,
                    "type": f.trigger.type,
                    "slot": iso(f),
                    "timezone": f.zone,
                }
                for f in fires
            ]
        )
        return
    if not fires:
        typer.echo("Nothing is scheduled to fire.")
        return
    zone = cli.default_zone
    rows: list[list[render.Cell]] = [
        [
            (render.table_time(f.when, zone), ""),
            (render.relative(f.when, cli.now), "dim"),
            (f.task.id, "bold"),
            (f.trigger.id, ""),
        ]
        for f in fires
    ]
    headers = [f"WHEN ({render.zone_label(zone)})", "IN", "TASK", "TRIGGER"]
    render.print_table(headers, rows)
