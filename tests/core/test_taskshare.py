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


def test_pickled_tasks_come_back_equal_with_their_settings_shared() -> None:
    import dataclasses
    import pickle

    from daycare_cli.core.task import TASK_OWN, TASK_SETTINGS, Task

    # Every field is pickled, once: a field added to Task must be added to one of them.
    names = [f.name for f in dataclasses.fields(Task)]
    assert sorted(names) == sorted(TASK_OWN + TASK_SETTINGS)
    text = (
        "---\nname: {n}\ndescription: d\nschedule: '5 9 * * 1-5'\ntimezone: Asia/Tokyo\n"
        "model: echo\nsystem: be brief\ntimeout: 12s\nrun_timeout: 5m\noverlap: queue\n"
        "catch_up: all\ncatch_up_window: 2h\nretries: 2\nretry_delay: 7s\njitter: 3s\n"
        "enabled: false\nexecute: true\ndelete_after_run: true\nenv:\n  A: '1'\n"
        "tags: [x]\nnotify: [mailto://a@b.c]\nnotify_on: [success]\n"
        "python:\n  dependencies: [requests]\n---\nBody {n}\n"
    )
    tasks = [parse(text.format(n=n), n) for n in ("a", "b")]
    again = pickle.loads(pickle.dumps(tasks))
    assert again == tasks
    for field in names:  # not only equal: each value as it was (no default crept in)
        assert getattr(again[0], field) == getattr(tasks[0], field), field
    assert again[0].timeout is again[1].timeout  # one object, not one per task
    assert again[0].jitter is again[1].jitter and again[0].name != again[1].name
