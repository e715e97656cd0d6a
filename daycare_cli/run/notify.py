"""Deliver run results through apprise (docs/task-file.md, "notify and notify_on").

A notification failure is logged and never fails the run; secrets are redacted from
what is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("daycare.notify")

BODY_LIMIT = 4000


@dataclass(frozen=True)
class Notification:
    """What to send: a title and a body (already short enough for a phone)."""

    title: str
    body: str


def notify_events(status: str, has_response: bool, streak_event: str | None) -> set[str]:
    """The `notify_on` events a finished run raises.

    `response` when the run produced output for a person, `failure`/`success`/`skip` by
    status, `recovery` when a flagged failure streak ended.
    """
    events: set[str] = set()
    if status == "succeeded":
        events.add("success")
        if has_response:
            events.add("response")
    elif status == "skipped":
        events.add("skip")
    elif status in ("failed", "timed_out", "interrupted"):
        events.add("failure")
    if streak_event == "recovery":
        events.add("recovery")
    return events


def should_notify(
    notify_on: Iterable[str], events: set[str], streak_event: str | None, flagged: bool
) -> bool:
    """Whether to send: an event the task asked for, with failures collapsed during a streak.

    Once a failure streak has been announced (`failure-streak`), further failures stay
    quiet until the recovery, so a broken task does not page every 15 minutes.
    """
    wanted = set(notify_on) & events
    return bool(wanted) and not (wanted == {"failure"} and flagged and streak_event is None)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (of 4+ characters) in text by `[redacted]`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def redact_values(value: Any, secrets: Iterable[str]) -> Any:
    """`redact` applied to every string inside dicts, lists and tuples (keys included)."""
    secrets = list(secrets)
    if not any(s and len(s) >= 4 for s in secrets):
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_values(k, secrets): redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, secrets) for v in value]
    return value


def resolve_targets(names: Iterable[str], lookup: dict[str, str | None]) -> list[str]:
    """Apprise URLs for a task's `notify` list: URLs as they are, names through config."""
    urls: list[str] = []
    for name in names:
        if "://" in name:
            urls.append(name)
        elif lookup.get(name):
            urls.append(str(lookup[name]))
        else:
            log.warning("notify target %r is not a URL and not a [notify.%s] entry", name, name)
    return urls


async def send(urls: list[str], note: Notification, secrets: Iterable[str] = ()) -> list[str]:
    """Send to every URL; return one error line per failed target (never raises)."""
    if not urls:
        return []
    secrets = list(secrets)
    title = redact(note.title, secrets)
    body = redact(note.body, secrets)
    if len(body) > BODY_LIMIT:
        body = body[:BODY_LIMIT] + "\n[…]"

    def deliver() -> list[str]:
        try:
            import apprise
        except Exception as exc:  # a broken install must not fail the run either
            return [f"apprise could not be loaded: {type(exc).__name__}: {exc}"]

        errors: list[str] = []
        for url in urls:
            shown = redact(url.split("://", 1)[0] + "://…", secrets)
            app = apprise.Apprise()
            if not app.add(url):
                errors.append(f"{shown}: not a valid apprise URL")
                continue
            try:
                ok = app.notify(title=title, body=body)
            except Exception as exc:  # apprise plugins raise anything; never fail the run
                errors.append(f"{shown}: {type(exc).__name__}: {exc}")
                continue
            if not ok:
                errors.append(f"{shown}: delivery failed")
        return errors

    errors = await asyncio.to_thread(deliver)
    for line in errors:
        log.warning("notification failed: %s", line)
    return errors
