"""The CLI side of changing task files: read a prompt, save a change, say what changed.

What a change means and how the new text is made is `core/taskchange.py`; here the
change is written with `TaskStore.save`, which refuses when the file changed on disk
since it was read.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daycare_cli.core.errors import ScheduleError, TaskFileError, UsageError, as_usage

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.core.task import Task
    from daycare_cli.core.taskchange import Change
    from daycare_cli.store.tasks import TaskEntry, TaskStore


def read_prompt(prompt: str | None, prompt_file: str | None) -> str | None:
    """The prompt body from `--prompt` or `--prompt-file` (`-` reads stdin), if either is given."""
    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        return prompt
    if prompt_file is None:
        return None
    if prompt_file == "-":
        return sys.stdin.read()
    try:
        return Path(prompt_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no such prompt file: {prompt_file}", path=prompt_file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the prompt file: {exc}", path=prompt_file) from None


@contextmanager
def given_on_command_line() -> Iterator[None]:
    """Turn schedule and task-file errors about values typed in options into usage errors
    (exit 2): exit 4 is for task files on disk (or from the editor) that do not parse."""
    try:
        yield
    except (ScheduleError, TaskFileError) as err:
        raise as_usage(err) from None


def save_change(store: TaskStore, entry: TaskEntry, change: Change) -> tuple[str, Task]:
    """Apply, validate and write a change; refuses when the file changed since it was read.

    When the file was valid, an invalid result is the options' fault (exit 2); when it
    was already invalid and still is, the file's error stands (exit 4).
    """
    from daycare_cli.core.taskchange import apply_change

    try:
        text, task = apply_change(entry.text, change, path=str(entry.path), task_id=entry.id)
    except TaskFileError as err:
        if entry.error is None:
            raise as_usage(err) from None
        raise
    if text != entry.text:
        store.save(entry, text)
    return text, task


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines saying which frontmatter keys a change set, changed or removed."""
    lines: list[str] = []
    for key in after:
        if key not in before:
            lines.append(f"+ {key}: {short(after[key])}")
        elif before[key] != after[key]:
            lines.append(f"~ {key}: {short(before[key])} -> {short(after[key])}")
    lines.extend(f"- {key}" for key in before if key not in after)
    return lines


def short(value: Any) -> str:
    """A frontmatter value in one short line, JSON-like."""
    import json

    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_at(cli: CliContext, value: str, zone: str, *, force: bool) -> str:
    """The `at:` value to write for `--at`: ISO as typed, a phrase (`tomorrow 09:00`) as
    the absolute time it means in `zone`. Says which time it is; refuses a past one
    unless `force`."""
    from daycare_cli.cli import render
    from daycare_cli.core.attime import format_at, parse_at

    with given_on_command_line():
        at = parse_at(value, now=cli.now, zone=zone)
    when = at.when
    if when <= cli.now and not force:
        raise UsageError(
            f"--at {value!r} is {render.local_time(when, zone)}, "
            f"{render.relative(when, cli.now)}: the time has passed",
            hint="give a later time (e.g. --at 'tomorrow 09:00'), or add --force to write it "
            "anyway (the daemon will record it missed)",
        )
    written = value.strip() if at.iso else format_at(when)
    render.console(stderr=True).print(
        f"--at {value!r} is {render.local_time(when, zone)} ({zone}), "
        f"{render.relative(when, cli.now)}",
        markup=False,
        highlight=False,
    )
    return written


def check_model(model: str | None) -> None:
    """Refuse a `--model` that llm does not know (aliases count); `none` is no model."""
    if model is None or model.strip().lower() == "none":
        return
    problem = unknown_model(model)
    if problem:
        raise UsageError(problem, hint="`llm models` lists them; install the plugin that adds it")


@functools.cache
def unknown_model(model: str) -> str | None:
    """Why llm's registry does not know `model`, or None when it does."""
    import llm

    try:
        llm.get_async_model(model)
        return None
    except llm.UnknownModelError:
        pass
    except Exception as exc:  # a broken plugin: say so rather than crash
        return f"llm could not load its models: {exc}"
    try:
        llm.get_model(model)
        return None
    except llm.UnknownModelError:
        return f"unknown model {model!r}: llm has no model or alias of that name"
    except Exception as exc:
        return f"llm could not load its models: {exc}"
