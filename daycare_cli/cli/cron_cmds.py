"""`daycare cron explain`: a cron expression in words, its warning and its next fires."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import get_context
from daycare_cli.cli.params import group, typed_values
from daycare_cli.core.errors import UsageError


def register(parent: typer.Typer) -> None:
    """Add the `cron` group to the root app."""
    app = group("cron", "Understand cron expressions.")
    app.command("explain")(typed_values(explain_cmd))
    parent.add_typer(app)


def parse_from(value: str | None, zone: str, now: datetime) -> datetime:
    """The instant of --from (naive times are in `zone`), else now."""
    if value is None:
        return now
    from zoneinfo import ZoneInfo

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--from wants an ISO 8601 date and time, not {value!r}",
            hint="e.g. --from 2026-03-29T00:00 or 2026-03-29T00:00+01:00",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


def explain_cmd(
    ctx: typer.Context,
    expression: Annotated[
        str, typer.Argument(metavar="EXPR", help="Cron expression; quote it: '*/15 * * * *'.")
    ],
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz", metavar="ZONE", help="IANA zone (default: config, else the system's)."
        ),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="WHEN",
            help="List fires after this ISO date and time (default: now).",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("-n", "--count", metavar="N", min=0, help="How many fires.")
    ] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Say when a cron expression fires, in words and as the next N instants."""
    from daycare_cli.core.schedule import (
        check_zone,
        explain,
        format_instant,
        frequency_warning,
        normalize_cron,
        upcoming,
    )
    from daycare_cli.core.task import CronTrigger

    cli = get_context(ctx)
    normalized = normalize_cron(expression)
    zone = tz or cli.default_zone
    check_zone(zone)
    after = parse_from(from_, zone, cli.now)
    trigger = CronTrigger(expr=normalized, source=expression, timezone=zone)
    description = explain(trigger, tz=zone)
    warning = frequency_warning(trigger, tz=zone, now=after)
    # The same function as every view of a task's fires; a bare expression has no state.
    fires = upcoming(trigger, now=after, last_slot=None, tz=zone, n=count)
    if json_:
        render.print_json(
            {
                "expression": expression,
                "normalized": normalized,
                "timezone": zone,
                "description": description,
                "warning": warning,
                "fires": [format_instant(f.at, zone) for f in fires],
                # One entry a fire: what a clock change did to it, else null.
                "fires_dst": [f.dst for f in fires],
            }
        )
        return
    from rich.text import Text

    out = render.console()
    out.print(Text.assemble((expression, "bold"), "  ", description))
    if warning:
        render.warn(warning)
    for fire in fires:
        line = Text.assemble(
            "  ", render.local_time(fire.at, zone), "  ", (render.relative(fire.at, after), "dim")
        )
        if fire.dst:
            line.append(f"  ({fire.dst})", "yellow")
        out.print(line)
