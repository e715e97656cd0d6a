"""Parse a task file into a validated Task, with precise errors (DESIGN.md §3).

One reader for the daemon and the CLI: `parse_task` turns the bytes of a file into a
validated `Task` or raises one `TaskFileError` that names the file, line and column of
the offending key or value and says how to fix it.

The file is split by `core/frontmatter.py`; its frontmatter is composed and checked
against the YAML subset of `core/yamlrules.py`, so every value keeps its position;
values are then checked and built by hand from the nodes. Writing and editing task
files is `core/taskedit.py`.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import MappingNode, Node

from daycare_cli.core.blocksettings import BlockSettingsReader, check_block_metadata
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.frontmatter import decode, source_line, split_file
from daycare_cli.core.prompt import find_unclosed_block
from daycare_cli.core.task import (
    CATCH_UP_POLICIES,
    MIB,
    NOTIFY_EVENTS,
    OVERLAP_POLICIES,
    Task,
    Trigger,
    valid_task_id,
)
from daycare_cli.core.yamlrules import is_null, kind_of, suggest

# Frontmatter keys in the order `render_task` writes them.
KEYS: tuple[str, ...] = (
    "name",
    "description",
    "schedule",
    "triggers",
    "timezone",
    "enabled",
    "execute",
    "delete_after_run",
    "model",
    "system",
    "redact_model_input",
    "timeout",
    "run_timeout",
    "overlap",
    "catch_up",
    "catch_up_window",
    "retries",
    "retry_delay",
    "jitter",
    "python",
    "sandbox",
    "env",
    "notify",
    "notify_on",
    "tags",
)


def _camel(key: str) -> str:
    first, *rest = key.split("_")
    return first + "".join(part.title() for part in rest)


# Every accepted spelling -> the canonical key. camelCase is what the original system wrote.
ALIASES: dict[str, str] = {
    **{key: key for key in KEYS},
    **{_camel(key): key for key in KEYS},
    "once": "delete_after_run",
}

# Keys people reach for that live elsewhere: a better hint than a spelling suggestion.
_MISPLACED: dict[str, str] = {
    "cron": 'the cron expression goes in `schedule: "0 9 * * *"` or under `triggers:`',
    "every": "interval triggers go under `triggers:`, e.g. `triggers: [{every: 15m}]`",
    "at": 'one-off times go under `triggers:`, e.g. `triggers: [{at: "2026-11-22T09:00"}]`',
    "webhook": "webhooks go under `triggers:`, e.g. `triggers: [{webhook: true}]`",
    "tz": "did you mean `timezone`?",
    "time_zone": "did you mean `timezone`?",
    "network": "network access is a sandbox setting: `sandbox: {network: true}`",
    "dependencies": 'packages go under `python:`, e.g. `python: {dependencies: ["httpx"]}`',
    "requires_python": 'the Python version goes under `python:`, e.g. `python: {version: "3.12"}`',
    "memory": "memory is a sandbox setting: `sandbox: {memory: 512M}`",
    "title": "did you mean `name`?",
    "disabled": "write `enabled: false`",
}

MINIMAL_TEMPLATE = '---\nname: My task\nschedule: "0 9 * * *"\n---\nWhat the task should do.\n'

# A valid line for each key, offered as the fix when its value is wrong.
_EXAMPLES: dict[str, str] = {
    "name": "name: Error monitor",
    "description": "description: What this task is for",
    "schedule": 'schedule: "0 9 * * *"',
    "timezone": "timezone: Europe/Berlin",
    "model": "model: gpt-4o-mini  (or none)",
    "system": "system: Answer in one short paragraph.",
    "redact_model_input": "redact_model_input: false",
    "timeout": "timeout: 60s",
    "run_timeout": "run_timeout: 15m",
    "retry_delay": "retry_delay: 30s",
    "jitter": "jitter: 2m",
    "catch_up_window": "catch_up_window: 6h",
    "every": "every: 15m",
    "sandbox": "sandbox:\n  network: false\n  memory: 512M",
    "python": 'python:\n  dependencies: ["httpx>=0.27"]\n  version: "3.12"',
    "python.dependencies": 'dependencies: ["httpx>=0.27", "pandas"]',
    "python.version": 'version: "3.12"  (or ">=3.11")',
    "sandbox.cpu": "cpu: 30",
    "sandbox.read": "read: [/var/log]",
    "sandbox.write": "write: [~/reports]",
    "sandbox.disk": "disk: 256M",
    "env": 'env:\n  API_URL: "https://example.com"',
    "notify": 'notify: ["mailto://me@example.com"]',
    "notify_on": "notify_on: [response, failure]",
    "tags": "tags: [ops, daily]",
    "triggers": 'triggers:\n  - cron: "0 9 * * *"',
}

MAX_RETRIES = 100
MAX_FILE_BYTES = MIB  # DESIGN.md §6: read with a size cap
# YAML costs far more per byte than the body: 600 KB of triggers took 1-3 s to compose.
# 128 KiB holds 1,000 triggers of the long form and reads in a fraction of a second.
MAX_FRONTMATTER_CHARS = 128 * 1024


def parse_task(data: bytes | str, *, path: str, task_id: str | None = None) -> Task:
    """Read a task file into a validated Task.

    `task_id` defaults to the file name without `.md`. Raises TaskFileError (file, line,
    column, hint, source line) for the first problem found, and for nothing else: a file
    over MAX_FILE_BYTES, nesting too deep, or a value the reader cannot handle (an
    OverflowError, a RecursionError, a bug) is a TaskFileError at the line being read.
    """
    where = _Where()
    try:
        return _parse(data, path, task_id, where)
    except TaskFileError:
        raise
    except RecursionError:
        raise where.error(path, "this file is nested too deeply to read", _DEEP_HINT) from None
    except MemoryError:
        raise where.error(path, "this file needs more memory to read than there is", None) from None
    except Exception as exc:  # a value no check foresaw: still an error about the file
        what = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise where.error(
            path,
            f"this line cannot be read ({what})",
            "check the value on this line; if it looks right, report this as a daycare bug",
        ) from exc


class _Where:
    """The line being read, for an error no check foresaw: the stage's, or the node's."""

    def __init__(self) -> None:
        self.line = 1
        self.text: str | None = None
        self.reader: _Reader | None = None

    def error(self, path: str, message: str, hint: str | None) -> TaskFileError:
        line, col = self.line, 0
        node = self.reader.last if self.reader is not None else None
        if node is not None and self.reader is not None:
            line = self.reader.fm_line + node.start_mark.line
            col = node.start_mark.column + 1
        excerpt = source_line(self.text, line) if self.text is not None else None
        if excerpt is not None and len(excerpt) > 500:
            excerpt = None  # a line too long to show
        return TaskFileError(message, path, line, col, hint, excerpt)


_DEEP_HINT = "check the indentation and the brackets: a task file needs a few levels at most"


def _parse(data: bytes | str, path: str, task_id: str | None, where: _Where) -> Task:
    _check_size(data, path)
    text = decode(data, path)
    if text.startswith("\ufeff"):
        text = text[1:]
    where.text = text
    if not text.strip():
        raise TaskFileError(
            "empty task file",
            path=path,
            line=1,
            excerpt=source_line(text, 1),
            # Indented to line up under the text after "  fix: " when the CLI prints it.
            hint="start from this minimal task file:\n"
            + "".join(f"       {line}\n" for line in MINIMAL_TEMPLATE.splitlines()).rstrip("\n"),
        )
    ident = _task_id(path, task_id)
    split = split_file(text, path)
    if split.frontmatter is None:
        # Without it a note or a README would silently become a task run by hand.
        first = text.splitlines()[0] if text.splitlines() else ""
        raise TaskFileError(
            "no frontmatter: a task file starts with a `---` line, then its keys, then `---`",
            path=path,
            line=1,
            col=1,
            excerpt=first,
            hint="add at least:\n"
            + "".join(f"       {line}\n" for line in ("---", "name: My task", "---")).rstrip("\n"),
        )
    if len(split.frontmatter) > MAX_FRONTMATTER_CHARS:
        line = split.fm_line + split.frontmatter.count("\n", 0, MAX_FRONTMATTER_CHARS)
        raise TaskFileError(
            f"the frontmatter is over {MAX_FRONTMATTER_CHARS // 1024} KiB, the limit for settings",
            path=path,
            line=line,
            hint="settings take a few KiB; long text belongs in the body, after the `---` line",
        )
    reader = _Reader(path, text, split.fm_line)
    where.reader = reader
    fields = reader.read(split.frontmatter)
    where.reader, where.line = None, split.body_line
    body = split.body.replace("\r\n", "\n")
    _check_blocks(body, split.body_line, path, text)
    if fields.get("execute"):
        check_block_metadata(body, split.body_line, path, text)
    name = fields.pop("name", None) or ident
    return Task(id=ident, name=name, body=body, path=path, body_line=split.body_line, **fields)


def _check_size(data: bytes | str, path: str) -> None:
    """Refuse a file over MAX_FILE_BYTES, at the line where it crosses the limit."""
    if len(data) <= MAX_FILE_BYTES // 4:
        return  # even at 4 bytes a character, a str this short is under the limit
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if len(raw) <= MAX_FILE_BYTES:
        return
    raise TaskFileError(
        f"the file is over {MAX_FILE_BYTES // MIB} MiB, the limit for a task file",
        path=path,
        line=raw.count(b"\n", 0, MAX_FILE_BYTES) + 1,
        hint="keep large data out of the task file: read it in a <run_python> block instead",
    )


def _task_id(path: str, task_id: str | None) -> str:
    if task_id is None:
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        task_id = base[:-3] if base.endswith(".md") else base
    if valid_task_id(task_id):
        return task_id
    slug = re.sub(r"[^a-z0-9]+", "-", task_id.lower()).strip("-")[:63] or "my-task"
    raise TaskFileError(
        f"`{task_id}` is not a valid task id: ids are the file name without `.md`",
        path=path,
        hint=f"use lowercase letters, digits and dashes (at most 63), e.g. `{slug}.md`",
    )


def _check_blocks(body: str, body_line: int, path: str, text: str) -> None:
    """Raise for a `<run_python>` with no later `</run_python>` (the rule prompt.py runs by)."""
    found = find_unclosed_block(body)
    if found is not None:
        line, col = found[0] + body_line - 1, found[1]
        raise TaskFileError(
            "unclosed <run_python> block",
            path=path,
            line=line,
            col=col,
            hint="add a line `</run_python>` after the block's code",
            excerpt=source_line(text, line),
        )


class _Reader(BlockSettingsReader):
    """Builds Task fields from composed YAML nodes, raising positioned errors."""

    examples = _EXAMPLES

    def read(self, frontmatter: str) -> dict[str, Any]:
        """Validate the frontmatter text and return Task keyword arguments."""
        root = self.compose(frontmatter)
        if root is None:
            return {}
        if not isinstance(root, MappingNode):
            raise self.error(
                root,
                f"the frontmatter must be a mapping of `key: value` lines, not {kind_of(root)}",
                "write one setting per line, e.g. `name: My task`",
            )
        self.check_tree(root)
        return self.fields(root)

    # ---- the frontmatter mapping

    def fields(self, root: MappingNode) -> dict[str, Any]:
        found: dict[str, tuple[str, Node, Node]] = {}
        for spelled, knode, vnode in self.pairs(root, "frontmatter"):
            canonical = ALIASES.get(spelled)
            if canonical is None:
                hint = _MISPLACED.get(spelled) or suggest(spelled, ALIASES)
                raise self.error(
                    knode,
                    f"unknown key `{spelled}`",
                    hint or f"the keys are: {', '.join(KEYS)}",
                )
            if canonical in found:
                first, first_node, _ = found[canonical]
                raise self.error(
                    knode,
                    f"`{spelled}` and `{first}` are the same setting",
                    f"keep one of them (the other is on line "
                    f"{self.fm_line + first_node.start_mark.line})",
                )
            found[canonical] = (spelled, knode, vnode)

        # The task zone first: `at` triggers without a zone of their own use it.
        if "timezone" in found and not is_null(found["timezone"][2]):
            self.task_zone = self.zone(found["timezone"][2], "timezone")

        fields: dict[str, Any] = {}
        cron: list[tuple[Trigger, Node | None]] = []
        listed: list[tuple[Trigger, Node | None]] = []
        for canonical, (_, _, vnode) in found.items():
            self.last = vnode
            if is_null(vnode):
                continue  # `key:` with no value means the default
            if canonical == "schedule":
                expr = self.string(vnode, "schedule")
                cron = [(self.cron(vnode, expr, None), None)]
            elif canonical == "triggers":
                listed = self.triggers(vnode)
            elif canonical == "timezone":
                fields["timezone"] = self.task_zone
            else:
                fields[canonical] = self.simple(canonical, vnode)
        fields["triggers"] = self.assign_ids(cron + listed)
        return fields

    def simple(self, key: str, node: Node) -> Any:
        """The value of a key that is not a trigger or the zone."""
        if key in ("name", "description", "system", "model"):
            return self.string(node, key, empty=key in ("description", "system", "model"))
        if key in ("enabled", "execute", "delete_after_run", "redact_model_input"):
            return self.boolean(node, key)
        if key in ("timeout", "run_timeout"):
            return self.duration(node, key, above=True)
        if key in ("retry_delay", "jitter", "catch_up_window"):
            return self.duration(node, key)
        if key == "retries":
            value = self.scalar(node, key, "a whole number")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.error(
                    node, f"`retries` must be a whole number from 0, not {value!r}", "retries: 2"
                )
            if value > MAX_RETRIES:
                raise self.error(node, f"`retries` must be at most {MAX_RETRIES}", "retries: 3")
            return value
        if key == "overlap":
            return self.choice(node, key, OVERLAP_POLICIES)
        if key == "catch_up":
            return self.choice(node, key, CATCH_UP_POLICIES)
        if key == "sandbox":
            return self.sandbox(node)
        if key == "python":
            return self.python(node)
        if key == "env":
            return self.env(node)
        if key == "notify":
            return self.strings(node, key)
        if key == "notify_on":
            events: list[str] = []
            for item in self.items(node, key):
                event = self.choice(item, "notify_on[]", NOTIFY_EVENTS)
                if event not in events:
                    events.append(event)
            return tuple(events)
        if key == "tags":
            return self.strings(node, key)
        raise AssertionError(f"no reader for {key}")  # KEYS and this method disagree
