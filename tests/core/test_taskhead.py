"""`TaskHead`: what the daemon's plan holds of a task (its settings; the rest packed)."""

from __future__ import annotations

import io
import pickle

from daycare_cli.core.task import TASK_SETTINGS, Task
from daycare_cli.core.taskfile import parse_task
from daycare_cli.core.taskhead import TaskHead
from daycare_cli.store.taskcache import PackedUnpickler

TEXT = (
    "---\nname: {n}\ndescription: d\ntriggers:\n  - cron: '5 9 * * 1-5'\n"
    "  - at: 2030-01-01T09:00:00\n  - webhook:\n      signature: github\n"
    "      secret: gh\ntimezone: Asia/Tokyo\nmodel: echo\nsystem: be brief\ntimeout: 12s\n"
    "run_timeout: 5m\noverlap: queue\ncatch_up: all\ncatch_up_window: 2h\nretries: 2\n"
    "retry_delay: 7s\njitter: 3s\nenabled: false\nexecute: true\ndelete_after_run: true\n"
    "env:\n  A: '1'\ntags: [x]\nnotify: [mailto://a@b.c]\nnotify_on: [success]\n"
    "python:\n  dependencies: [requests]\n---\nBody {n}\n"
)


def parse(n: str) -> Task:
    return parse_task(TEXT.format(n=n).encode(), path=f"/t/{n}.md", task_id=n)


def test_a_head_reads_every_setting_it_has_as_the_task_does_and_unpacks_whole() -> None:
    task = parse("a")
    head = TaskHead.of(task)
    names = [n for n in dir(TaskHead) if isinstance(getattr(TaskHead, n), property)]
    assert {"timezone", "triggers", "enabled", "jitter", "catch_up", "overlap"} <= set(names)
    for name in names:  # a reordered TASK_SETTINGS would show here
        assert name in TASK_SETTINGS or name == "once"
        assert getattr(head, name) == getattr(task, name), name
    for trigger in task.triggers:
        assert head.trigger(trigger.id) is trigger
    assert head.trigger("nope") is None
    whole = head.unpacked()
    assert whole == task and whole.body == "Body a\n" and whole.env == {"A": "1"}
    assert head == TaskHead.of(parse("a")) and head != TaskHead.of(parse("b"))


def test_the_parse_cache_reads_a_pickled_task_as_a_head_and_a_head_pickles_as_the_task() -> None:
    a, b = parse("a"), parse("b")
    data = pickle.dumps([a, b])
    heads = PackedUnpickler(io.BytesIO(data)).load()
    assert heads == [TaskHead.of(a), TaskHead.of(b)]
    assert heads[0].settings is heads[1].settings  # equal settings: one tuple for both
    assert pickle.loads(pickle.dumps(heads)) == [a, b]
