"""Parts many tasks share are held once (daemon memory with 10,000 tasks)."""

from __future__ import annotations

from daycare_cli.core.taskfile import parse_task
from daycare_cli.core.taskshare import SharedParts


def parse(text: str, task_id: str) -> object:
    return parse_task(text.encode(), path=f"/t/{task_id}.md", task_id=task_id)


CRON = (
    '---\nname: {n}\nschedule: "5 9 * * 1-5"\ntimezone: Europe/Berlin\nmodel: none\n---\nBody {n}\n'
)


def test_equal_parts_of_two_tasks_become_one_object_and_the_tasks_stay_equal() -> None:
    shared = SharedParts()
    a0, b0 = parse(CRON.format(n="a"), "a"), parse(CRON.format(n="b"), "b")
    a, b = shared.task(a0), shared.task(b0)  # type: ignore[arg-type]
    assert (a, b) == (a0, b0)
    assert a.triggers is b.triggers and a.triggers[0] is b.triggers[0]
    assert a.timezone is b.timezone and a.sandbox is b.sandbox and a.notify_on is b.notify_on
    assert a.timeout is b.timeout and a.python is b.python
    assert a.name != b.name and a.body != b.body  # never shared: they differ by task


def test_at_triggers_and_sandboxes_with_line_positions_keep_their_own() -> None:
    shared = SharedParts()
    text = (
        "---\nname: x\ntriggers:\n  - at: 2030-01-01T09:00:00+01:00\n"
        "sandbox:\n  read:\n    - /etc\n---\nx\n"
    )
    a, b = shared.task(parse(text, "a")), shared.task(parse(text, "b"))  # type: ignore[arg-type]
    assert a == parse(text, "a")
    assert a.triggers[0] is not b.triggers[0]
    assert a.sandbox.read_at and a.sandbox is not b.sandbox


def test_a_number_never_stands_for_an_equal_one_of_another_type() -> None:
    shared = SharedParts()
    assert shared.one(1.0) == 1.0 and type(shared.one(1)) is int and type(shared.one(1.0)) is float
