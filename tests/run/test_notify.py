"""Tests for run/notify.py: which events a run raises, when to send, redaction, targets."""

from __future__ import annotations

import asyncio

import pytest
from inbox import Inbox

from daycare_cli.run.notify import (
    BODY_LIMIT,
    Notification,
    notify_events,
    redact,
    resolve_targets,
    send,
    should_notify,
)

# apprise imports the stdlib's imghdr, deprecated since Python 3.11: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")


@pytest.mark.parametrize(
    ("status", "has_response", "streak_event", "expected"),
    [
        ("succeeded", True, None, {"success", "response"}),
        ("succeeded", False, None, {"success"}),
        ("succeeded", True, "recovery", {"success", "response", "recovery"}),
        ("skipped", False, "recovery", {"skip", "recovery"}),
        ("skipped", True, None, {"skip"}),
        ("failed", True, None, {"failure"}),
        ("timed_out", False, "failure-streak", {"failure"}),
        ("interrupted", False, None, {"failure"}),
        ("cancelled", False, None, set()),
        ("missed", False, None, set()),
    ],
)
def test_notify_events(
    status: str, has_response: bool, streak_event: str | None, expected: set[str]
) -> None:
    assert notify_events(status, has_response, streak_event) == expected


@pytest.mark.parametrize(
    ("notify_on", "events", "streak_event", "flagged", "send_it"),
    [
        (("response", "failure"), {"success", "response"}, None, False, True),
        (("failure",), {"success", "response"}, None, False, False),
        (("failure",), {"failure"}, None, False, True),
        # The streak is announced once; later failures of a flagged task stay quiet.
        (("failure",), {"failure"}, "failure-streak", True, True),
        (("failure",), {"failure"}, None, True, False),
        (("failure", "skip"), {"failure"}, None, True, False),
        (("recovery",), {"success", "recovery"}, "recovery", False, True),
        (("failure",), {"success", "recovery"}, "recovery", False, False),
        (("skip",), {"skip"}, None, False, True),
        ((), {"failure"}, None, False, False),
    ],
)
def test_should_notify(
    notify_on: tuple[str, ...],
    events: set[str],
    streak_event: str | None,
    flagged: bool,
    send_it: bool,
) -> None:
    assert should_notify(notify_on, events, streak_event, flagged) is send_it


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("token abcd1234 here", ["abcd1234"], "token [redacted] here"),
        ("abcd1234abcd1234", ["abcd1234"], "[redacted][redacted]"),
        # Longer secrets first, so one containing another is redacted whole.
        ("key=abcd1234xyz", ["abcd1234", "abcd1234xyz"], "key=[redacted]"),
        # Secrets shorter than 4 characters would redact ordinary words.
        ("the cat sat", ["cat", ""], "the cat sat"),
        ("nothing", [], "nothing"),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_resolve_targets_keeps_urls_and_looks_names_up() -> None:
    lookup: dict[str, str | None] = {"phone": "ntfy://topic", "empty": None}
    names = ["json://localhost/", "phone", "empty", "unknown"]
    assert resolve_targets(names, lookup) == ["json://localhost/", "ntfy://topic"]


def test_send_posts_redacted_and_bounded_text(inbox: Inbox) -> None:
    body = "secret=hunter2hunter2 " + "x" * (2 * BODY_LIMIT)
    errors = asyncio.run(
        send([inbox.url], Notification("run of hunter2hunter2", body), ["hunter2hunter2"])
    )
    assert errors == []
    [message] = inbox.messages
    assert message["title"] == "run of [redacted]"
    assert message["message"].startswith("secret=[redacted] xxx")
    assert message["message"].endswith("[…]")
    assert len(message["message"]) <= BODY_LIMIT + 4


def test_send_reports_each_failed_target_and_never_raises(inbox: Inbox) -> None:
    urls = ["not-a-url://", inbox.url, "json://127.0.0.1:1/"]
    errors = asyncio.run(send(urls, Notification("t", "b")))
    assert errors == ["not-a-url://…: not a valid apprise URL", "json://…: delivery failed"]
    assert len(inbox.messages) == 1


def test_send_to_no_target_does_nothing() -> None:
    assert asyncio.run(send([], Notification("t", "b"))) == []
