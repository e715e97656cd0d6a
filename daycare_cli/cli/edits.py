"""The CLI side of changing task files: read a prompt, save a change, say what changed.

What a change means and how the new text is made is `core/taskchange.py`; here the
change is written with `TaskStore.save`, which refuses when the file changed on disk
since it was read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daycare_cli.core.errors import UsageError

if TYPE_CHECKING:
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


def save_change(store: TaskStore, entry: TaskEntry, change: Change) -> tuple[str, Task]:
    """Apply, validate and write a change; refuses when the file changed since it was read."""
    from daycare_cli.core.taskchange import apply_change

    text, task = apply_change(entry.text, change, path=str(entry.path), task_id=entry.id)
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
