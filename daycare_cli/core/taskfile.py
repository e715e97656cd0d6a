"""Split, parse, render and edit task files (DESIGN.md §3).

One reader for the daemon and the CLI: `parse_task` turns the bytes of a file into a
validated `Task` or raises one `TaskFileError` that names the file, line and column of
the offending key or value and says how to fix it.

The frontmatter is read with PyYAML's C safe loader through `compose`, so every value
keeps its position; values are then checked and built by hand from the nodes. Edits go
through ruamel.yaml's round-trip loader only to locate keys, and splice just the lines
of the keys that change, so comments, order, quoting and blank lines survive byte for
byte.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from daycare_cli.core import schedule
from daycare_cli.core.duration import EXAMPLES as DURATION_EXAMPLES
from daycare_cli.core.duration import format_duration, parse_duration
from daycare_cli.core.errors import ScheduleError, TaskFileError
from daycare_cli.core.prompt import BLOCK_RE, find_unclosed_block
from daycare_cli.core.task import (
    CATCH_UP_POLICIES,
    MIB,
    NOTIFY_EVENTS,
    OVERLAP_POLICIES,
    SIGNATURES,
    TASK_ID_RE,
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    SandboxSpec,
    Task,
    Trigger,
    WebhookTrigger,
)

# The C loader is several times faster; the pure-Python one gives the same nodes.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
    "timeout",
    "run_timeout",
    "overlap",
    "catch_up",
    "catch_up_window",
    "retries",
    "retry_delay",
    "jitter",
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
    "memory": "memory is a sandbox setting: `sandbox: {memory: 512M}`",
    "title": "did you mean `name`?",
    "disabled": "write `enabled: false`",
}

SANDBOX_KEYS: tuple[str, ...] = ("network", "read", "write", "memory", "cpu")
TRIGGER_TYPES: tuple[str, ...] = ("cron", "at", "every", "webhook")
_TRIGGER_KEYS: dict[str, tuple[str, ...]] = {
    "cron": ("cron", "timezone", "id"),
    "at": ("at", "timezone", "id"),
    "every": ("every", "id"),
    "webhook": ("webhook", "id"),
}
_ALL_TRIGGER_KEYS: tuple[str, ...] = (*TRIGGER_TYPES, "timezone", "id")
WEBHOOK_KEYS: tuple[str, ...] = ("signature", "secret")

MINIMAL_TEMPLATE = '---\nname: My task\nschedule: "0 9 * * *"\n---\nWhat the task should do.\n'

_TAG = "tag:yaml.org,2002:"
_KINDS: dict[str, str] = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "an empty value",
    "timestamp": "a date",
    "binary": "binary data",
    "set": "a set",
    "omap": "an ordered map",
    "pairs": "a list of pairs",
}

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_SIZE_UNITS: dict[str, int] = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024**2 * MIB}
MIN_MEMORY = 16 * MIB
MAX_RETRIES = 100

# Plain scalars that YAML 1.1 (PyYAML) and YAML 1.2 (most other tools) read differently.
_YAML11_BOOLS: dict[str, bool] = {
    word: value
    for words, value in (("yes on y", True), ("no off n", False))
    for base in words.split()
    for word in (base, base.title(), base.upper())
}
_YAML11_OCTAL_RE = re.compile(r"[-+]?0[0-7_]+|[-+]?0b[01_]+")
_YAML12_NUMBER_RE = re.compile(
    r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_NUMBER_STARTS = frozenset("0123456789+-.")
_RESOLVER = yaml.resolver.Resolver()


def _resolve(text: str) -> str:
    """The tag PyYAML (YAML 1.1) gives a plain scalar with this text."""
    tag: str = _RESOLVER.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


# A value that makes PyYAML fail because it starts with an indicator: `*` (alias), `@`, `` ` ``.
_RAW_VALUE_RE = re.compile(
    r"^(?P<pre>\s*(?:-\s+)?)(?P<key>[A-Za-z_][\w-]*)(?P<sep>\s*:\s+)(?P<val>.*?)\s*(?:\s#.*)?$"
)
_CRON_KEYS = ("schedule", "cron")


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class SplitFile:
    """A task file cut into frontmatter and body.

    `frontmatter` is the raw text between the delimiters (None when the file has none),
    `body` the raw text after the closing delimiter (the whole file without one). Both
    keep the file's newlines. `fm_line` is the 1-based line of the first frontmatter line
    (0 without frontmatter), `body_line` that of the first body line.
    """

    frontmatter: str | None
    body: str
    fm_line: int
    body_line: int
    newline: str
    bom: bool


def _is_delimiter(line: str, marks: tuple[str, ...]) -> bool:
    # Trailing blanks are forgiven: an editor's stray space must not turn the
    # frontmatter into body text silently.
    return line.rstrip("\r\n").rstrip(" \t") in marks


def split_file(text: str, path: str) -> SplitFile:
    """Cut a task file into frontmatter and body (DESIGN.md §3 parsing rules).

    Frontmatter exists only if line 1 (after a BOM) is `---`; it ends at the first later
    line that is `---` or `...`; everything after is the body, more `---` lines included.
    Raises TaskFileError for an opening `---` without a close.
    """
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    first_end = text.find("\n")
    newline = "\r\n" if first_end > 0 and text[first_end - 1] == "\r" else "\n"
    first = text if first_end < 0 else text[:first_end]
    if not _is_delimiter(first, ("---",)):
        return SplitFile(None, text, 0, 1, newline, bom)
    # Walk the lines after the opening one; only "\n" breaks lines (not \v, \u2028...).
    start = pos = len(text) if first_end < 0 else first_end + 1
    line = 2
    while pos < len(text):
        end = text.find("\n", pos)
        stop = len(text) if end < 0 else end + 1
        if _is_delimiter(text[pos:stop], ("---", "...")):
            return SplitFile(text[start:pos], text[stop:], 2, line + 1, newline, bom)
        pos, line = stop, line + 1
    raise TaskFileError(
        "frontmatter is not closed: line 1 is `---` but no later line is `---`",
        path=path,
        line=1,
        col=1,
        hint="add a line `---` after the settings, before the prompt text",
        excerpt=first.rstrip("\r"),
    )


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes | str, path: str) -> str:
    """UTF-8 text of a file, with a positioned error for binary or mis-encoded input."""
    if isinstance(data, str):
        nul = data.find("\x00")
        if nul >= 0:
            line, col = _offset_position(data, nul)
            raise TaskFileError(
                "not a text file: it contains a NUL character",
                path=path,
                line=line,
                col=col,
                hint="task files are UTF-8 Markdown; check that this is the file you meant",
            )
        return data
    nul_byte = data.find(b"\x00")
    if nul_byte >= 0:
        line = data.count(b"\n", 0, nul_byte) + 1
        col = nul_byte - (data.rfind(b"\n", 0, nul_byte) + 1) + 1
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise TaskFileError(
            "not a text file: it contains a NUL byte",
            path=path,
            line=line,
            col=col,
            hint="re-save the file as UTF-8"
            if utf16
            else "task files are UTF-8 Markdown; check that this is the file you meant",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
        line = data.count(b"\n", 0, bad) + 1
        line_start = data.rfind(b"\n", 0, bad) + 1
        line_end = data.find(b"\n", bad)
        raw_line = data[line_start : line_end if line_end >= 0 else len(data)]
        prefix = data[line_start:bad].decode("utf-8", errors="replace")
        raise TaskFileError(
            f"not valid UTF-8: byte 0x{data[bad]:02x} cannot be decoded",
            path=path,
            line=line,
            col=len(prefix) + 1,
            hint="re-save the file with UTF-8 encoding",
            excerpt=raw_line.decode("utf-8", errors="replace").rstrip("\r"),
        ) from None


def _source_line(text: str, line: int) -> str | None:
    """Line `line` (1-based) of the text without its newline, for error excerpts."""
    lines = text.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else None


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, col) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


# --------------------------------------------------------------------------- parsing


def parse_task(data: bytes | str, *, path: str, task_id: str | None = None) -> Task:
    """Read a task file into a validated Task.

    `task_id` defaults to the file name without `.md`. Raises TaskFileError (file, line,
    column, hint, source line) for the first problem found.
    """
    text = _decode(data, path)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise TaskFileError(
            "empty task file",
            path=path,
            # Indented to line up under the text after "  fix: " when the CLI prints it.
            hint="start from this minimal task file:\n"
            + "".join(f"       {line}\n" for line in MINIMAL_TEMPLATE.splitlines()).rstrip("\n"),
        )
    ident = _task_id(path, task_id)
    split = split_file(text, path)
    reader = _Reader(path, text, split.fm_line)
    fields = reader.read(split.frontmatter) if split.frontmatter is not None else {}
    body = split.body.replace("\r\n", "\n")
    _check_blocks(body, split.body_line, path, text)
    name = fields.pop("name", None) or ident
    return Task(id=ident, name=name, body=body, path=path, body_line=split.body_line, **fields)


def _task_id(path: str, task_id: str | None) -> str:
    if task_id is None:
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        task_id = base[:-3] if base.endswith(".md") else base
    if TASK_ID_RE.match(task_id):
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
            excerpt=_source_line(text, line),
        )


def _kind(node: Node) -> str:
    """What a YAML node is, in words: 'a string', 'a list'..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(_TAG)
    return _KINDS.get(tag, f"a value tagged {node.tag}")


def _is_plain(node: ScalarNode) -> bool:
    # The C loader reports plain style as "", the Python one as None.
    return node.style in (None, "")


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `x`?` for the closest choice, if any is close."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean `{lowered[match[0]]}`?" if match else None


class _Reader:
    """Builds Task fields from composed YAML nodes, raising positioned errors."""

    def __init__(self, path: str, text: str, fm_line: int) -> None:
        self.path = path
        self.text = text
        self.fm_line = fm_line
        self.constructor = yaml.constructor.SafeConstructor()
        self.task_zone: str | None = None

    # ---- errors and positions

    def error(
        self, where: Node | tuple[int, int], message: str, hint: str | None = None
    ) -> TaskFileError:
        """A TaskFileError at a node (or a frontmatter-relative 0-based (line, col))."""
        if isinstance(where, Node):
            line0, col0 = where.start_mark.line, where.start_mark.column
        else:
            line0, col0 = where
        line = self.fm_line + line0
        return self.error_at(line, col0 + 1, message, hint)

    def error_at(self, line: int, col: int, message: str, hint: str | None) -> TaskFileError:
        excerpt = _source_line(self.text, line)
        return TaskFileError(message, self.path, line, col, hint, excerpt)

    def schedule_error(self, node: ScalarNode, exc: ScheduleError) -> TaskFileError:
        """Move a ScheduleError (column relative to the value) onto the file."""
        quoted = 0 if _is_plain(node) else 1
        col0 = node.start_mark.column
        if exc.col:
            col0 += quoted + exc.col - 1
        return self.error((node.start_mark.line, col0), exc.message, exc.hint)

    # ---- YAML

    def read(self, frontmatter: str) -> dict[str, Any]:
        """Validate the frontmatter text and return Task keyword arguments."""
        try:
            root = yaml.compose(frontmatter, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            raise self.yaml_error(frontmatter, exc) from None
        except yaml.reader.ReaderError as exc:
            # The C reader reports the character as an int, the Python one as a str.
            char = exc.character
            code = ord(char) if isinstance(char, str) else int(char)
            line, col = _offset_position(frontmatter, exc.position)
            raise self.error_at(
                self.fm_line + line - 1,
                col,
                f"control character U+{code:04X} is not allowed in the frontmatter",
                "remove the control character (it may be invisible in your editor)",
            ) from None
        if root is None:
            return {}
        if not isinstance(root, MappingNode):
            raise self.error(
                root,
                f"the frontmatter must be a mapping of `key: value` lines, not {_kind(root)}",
                "write one setting per line, e.g. `name: My task`",
            )
        self.check_tree(root)
        return self.fields(root)

    def yaml_error(self, frontmatter: str, exc: yaml.MarkedYAMLError) -> TaskFileError:
        """A YAML syntax error in words, with a fix for the usual causes."""
        try:  # the pure-Python loader names the offending character; the C one does not
            yaml.compose(frontmatter, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as slow:
            exc = slow
        except yaml.YAMLError:
            pass
        mark = exc.problem_mark or exc.context_mark
        assert mark is not None  # a MarkedYAMLError always has one
        fm_lines = frontmatter.replace("\r\n", "\n").split("\n")
        for candidate in (exc.problem_mark, exc.context_mark):
            if candidate is None or candidate.line >= len(fm_lines):
                continue
            raw = fm_lines[candidate.line]
            found = _RAW_VALUE_RE.match(raw)
            if found is None:
                continue
            key, val = found["key"], found["val"]
            col = len(found["pre"]) + len(key) + len(found["sep"]) + 1
            dash = "- " if "-" in found["pre"] else ""
            fix = f'{dash}{key}: "{val}"'
            if key in _CRON_KEYS and val[:1] in ("*", "@"):
                why = "an alias" if val[0] == "*" else "a reserved character"
                return self.error_at(
                    self.fm_line + candidate.line,
                    col,
                    f"cron expression must be quoted (YAML reads a leading `{val[0]}` as {why})",
                    fix,
                )
            if val[:1] in ("*", "@", "`", "%"):
                return self.error_at(
                    self.fm_line + candidate.line,
                    col,
                    f"a value starting with `{val[0]}` must be quoted",
                    fix,
                )
        line = self.fm_line + mark.line
        raw_line = _source_line(self.text, line) or ""
        problem = exc.problem or "invalid YAML"
        if "\t" in problem or "\t" in raw_line[: len(raw_line) - len(raw_line.lstrip())]:
            return self.error_at(
                line,
                mark.column + 1,
                "tab character in the YAML frontmatter",
                "indent with spaces; YAML does not allow tabs",
            )
        context = exc.context or ""
        opened = exc.context_mark
        if opened is not None and ("flow" in context or "quoted scalar" in context):
            # Point at what was opened and never closed, not where the parser gave up.
            what = "quoted string" if "quoted" in context else "`[` or `{`"
            return self.error(
                (opened.line, opened.column),
                f"unclosed {what}",
                "close it on the same line, or quote the whole value"
                if "flow" in context
                else "add the closing quote",
            )
        message = f"invalid YAML: {problem}"
        if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
            message += f" ({exc.context} started at line {self.fm_line + exc.context_mark.line})"
        if "mapping values are not allowed" in problem:
            hint = 'a value that contains ": " must be quoted, e.g. description: "Note: ..."'
        elif "could not find expected ':'" in problem:
            hint = "write each setting as `key: value`; continue a long value with indented lines"
        elif "alias" in problem or "anchor" in problem:
            hint = "quote values that start with `*` or `&`"
        else:
            hint = "check the YAML syntax here; quote values that contain special characters"
        return self.error_at(line, mark.column + 1, message, hint)

    def check_tree(self, root: Node) -> None:
        """Reject duplicate keys, merge keys and YAML 1.1/1.2-ambiguous scalars, in file order."""
        stack: list[Node] = [root]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen:  # aliases share nodes; anchors may even loop
                continue
            seen.add(id(node))
            if isinstance(node, ScalarNode):
                self.check_ambiguous(node)
            elif isinstance(node, SequenceNode):
                stack.extend(reversed(node.value))
            elif isinstance(node, MappingNode):
                keys: dict[tuple[str, str], Node] = {}
                children: list[Node] = []
                for key, value in node.value:
                    if key.tag == _TAG + "merge":
                        raise self.error(
                            key, "YAML merge keys (`<<`) are not supported", "write the keys out"
                        )
                    if not isinstance(key, ScalarNode):
                        raise self.error(
                            key,
                            f"a key must be a plain name, not {_kind(key)}",
                            "write `name: value`",
                        )
                    ident = (key.tag, key.value)
                    if ident in keys:
                        first = self.fm_line + keys[ident].start_mark.line
                        raise self.error(
                            key,
                            f"duplicate key `{key.value}`",
                            f"remove one of them (the first is on line {first})",
                        )
                    keys[ident] = key
                    children += [key, value]
                stack.extend(reversed(children))

    def check_ambiguous(self, node: ScalarNode) -> None:
        if not _is_plain(node):
            return
        text = node.value
        tag = node.tag.removeprefix(_TAG)
        if tag == "str" and not (text[:1] in _NUMBER_STARTS or text in _YAML11_BOOLS):
            return  # the common case, decided without the resolver's regexes
        reading: str | None = None
        hint = f'quote it: "{text}"'
        if text in _YAML11_BOOLS:
            word = "true" if _YAML11_BOOLS[text] else "false"
            reading = f"as {word}, YAML 1.2 as the string {text!r}"
            hint = f'write {word} for a yes/no setting, or quote it ("{text}") for text'
        elif tag in ("int", "float") and ":" in text:
            value = self.constructor.construct_object(node)
            reading = f"as the base-60 number {value}, YAML 1.2 as the string {text!r}"
        elif tag == "int" and _YAML11_OCTAL_RE.fullmatch(text):
            value = self.constructor.construct_object(node)
            reading = f"as {value} (octal or binary), YAML 1.2 differently"
            hint = f'quote it ("{text}") or write the number without leading zeros'
        elif tag in ("int", "float") and "_" in text:
            value = self.constructor.construct_object(node)
            reading = f"as the number {value}, YAML 1.2 as the string {text!r}"
            hint = f'quote it ("{text}") or write the number without underscores'
        elif tag == "str" and _YAML12_NUMBER_RE.fullmatch(text):
            reading = "as a string, YAML 1.2 as a number"
            hint = f'quote it ("{text}") if you mean text, or write a plain decimal number'
        if reading is not None and _resolve(text) == node.tag:  # else an explicit `!!str yes`
            raise self.error(node, f"`{text}` is ambiguous: YAML 1.1 reads it {reading}", hint)

    # ---- scalar values

    def scalar(self, node: Node, key: str, expected: str) -> Any:
        """The Python value of a scalar node, or an error saying what was expected."""
        if not isinstance(node, ScalarNode):
            raise self.error(
                node, f"{_label(key)} must be {expected}, not {_kind(node)}", self.example(key)
            )
        if node.tag in (_TAG + "str", _TAG + "value"):  # `value` is PyYAML's `=`: text
            return node.value
        try:
            return self.constructor.construct_object(node)
        except (ValueError, yaml.YAMLError) as exc:
            raise self.error(
                node, f"{_label(key)} has an invalid value {node.value!r}: {exc}", self.example(key)
            ) from None

    def example(self, key: str) -> str | None:
        return _EXAMPLES.get(key.removesuffix("[]"))

    def string(self, node: Node, key: str, *, empty: bool = False) -> str:
        value = self.scalar(node, key, "a string")
        if isinstance(value, date):  # a 1.1 timestamp; the text means the same in 1.2
            return str(node.value)
        if not isinstance(value, str):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{_label(key)} must be a string, not {_kind(node)}",
                f'quote it: "{node.value}"',
            )
        if not empty and not value.strip():
            raise self.error(node, f"{_label(key)} must not be empty", self.example(key))
        return value

    def boolean(self, node: Node, key: str) -> bool:
        value = self.scalar(node, key, "true or false")
        if not isinstance(value, bool):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{_label(key)} must be true or false, not {_kind(node)} ({node.value!r})",
                f"{key.rsplit('.', 1)[-1]}: true",
            )
        return value

    def duration(self, node: Node, key: str, *, minimum: float = 0.0, above: bool = False) -> float:
        value = self.scalar(node, key, f"a duration ({DURATION_EXAMPLES})")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{_label(key)} must be a duration ({DURATION_EXAMPLES}), not {_kind(node)}",
                self.example(key),
            )
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(node, f"`{key}`: {exc}", self.example(key)) from None
        if seconds < minimum or (above and seconds <= minimum):
            bound = f"{'more than' if above else 'at least'} {format_duration(minimum)}"
            raise self.error(
                node,
                f"{_label(key)} must be {bound}, not {value}",
                self.example(key),
            )
        return seconds

    def choice(self, node: Node, key: str, choices: tuple[str, ...]) -> str:
        listed = ", ".join(choices)
        value = self.scalar(node, key, f"one of {listed}")
        if not isinstance(value, str) or value not in choices:
            shown = node.value if isinstance(node, ScalarNode) else value
            suggestion = _suggest(str(shown), choices) if isinstance(shown, str) else None
            raise self.error(
                node,
                f"{_label(key)} must be one of {listed}, not {shown!r}",
                suggestion or f"{key.removesuffix('[]')}: {choices[0]}",
            )
        return value

    def items(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(
                node, f"{_label(key)} must be a list, not {_kind(node)}", self.example(key)
            )
        return list(node.value)

    def strings(self, node: Node, key: str) -> tuple[str, ...]:
        return tuple(self.string(item, f"{key}[]") for item in self.items(node, key))

    def pairs(self, node: Node, key: str) -> list[tuple[str, Node, Node]]:
        """(key text, key node, value node) of a mapping whose keys are strings."""
        if not isinstance(node, MappingNode):
            raise self.error(
                node, f"{_label(key)} must be a mapping, not {_kind(node)}", self.example(key)
            )
        out = []
        for knode, vnode in node.value:
            label = "a frontmatter key" if key == "frontmatter" else f"a key of `{key}`"
            name = self.scalar(knode, label, "a name")
            if not isinstance(name, str):
                raise self.error(knode, f"{label} must be a name, not {_kind(knode)}")
            out.append((name, knode, vnode))
        return out

    # ---- the frontmatter mapping

    def fields(self, root: MappingNode) -> dict[str, Any]:
        found: dict[str, tuple[str, Node, Node]] = {}
        for spelled, knode, vnode in self.pairs(root, "frontmatter"):
            canonical = ALIASES.get(spelled)
            if canonical is None:
                hint = _MISPLACED.get(spelled) or _suggest(spelled, ALIASES)
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
        if "timezone" in found and not _is_null(found["timezone"][2]):
            self.task_zone = self.zone(found["timezone"][2], "timezone")

        fields: dict[str, Any] = {}
        cron: list[tuple[Trigger, Node | None]] = []
        listed: list[tuple[Trigger, Node | None]] = []
        for canonical, (_, _, vnode) in found.items():
            if _is_null(vnode):
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
        if key in ("enabled", "execute", "delete_after_run"):
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

    def zone(self, node: Node, key: str) -> str:
        name = self.string(node, key)
        assert isinstance(node, ScalarNode)
        try:
            schedule.check_zone(name)
        except ScheduleError as exc:
            raise self.error(node, exc.message, exc.hint) from None
        return name

    def cron(self, node: Node, expr: str, zone: str | None, trigger_id: str = "cron") -> Trigger:
        assert isinstance(node, ScalarNode)
        try:
            normal = schedule.normalize_cron(expr)
        except ScheduleError as exc:
            raise self.schedule_error(node, exc) from None
        return CronTrigger(expr=normal, id=trigger_id, timezone=zone, source=expr.strip())

    def sandbox(self, node: Node) -> SandboxSpec:
        values: dict[str, Any] = {}
        for name, knode, vnode in self.pairs(node, "sandbox"):
            if name not in SANDBOX_KEYS:
                raise self.error(
                    knode,
                    f"unknown sandbox key `{name}`",
                    _suggest(name, SANDBOX_KEYS) or f"the keys are: {', '.join(SANDBOX_KEYS)}",
                )
            if _is_null(vnode):
                continue
            if name == "network":
                if isinstance(vnode, SequenceNode):
                    raise self.error(
                        vnode,
                        "network allow-lists are not supported yet",
                        "sandbox.network: true allows all network access",
                    )
                values["network"] = self.boolean(vnode, "sandbox.network")
            elif name in ("read", "write"):
                values[name] = self.strings(vnode, f"sandbox.{name}")
            elif name == "memory":
                values["memory"] = self.size(vnode)
            else:
                values["cpu"] = self.duration(vnode, "sandbox.cpu", above=True)
        return SandboxSpec(**values)

    def size(self, node: Node) -> int:
        key = "sandbox.memory"
        value = self.scalar(node, key, "a size like 512M or 1G")
        found = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif found is not None:
            size = int(float(found[1]) * _SIZE_UNITS[found[2].lower()])
        else:
            raise self.error(
                node,
                f"{_label(key)} must be a size like 512M or 1G, not {value!r}",
                "memory: 512M",
            )
        if size < MIN_MEMORY:
            raise self.error(
                node,
                f"{_label(key)} must be at least 16M, not {value!r}: Python cannot start with less",
                "memory: 512M (a bare number is bytes)",
            )
        return size

    def env(self, node: Node) -> dict[str, str]:
        env: dict[str, str] = {}
        for name, knode, vnode in self.pairs(node, "env"):
            if not _ENV_NAME_RE.fullmatch(name):
                raise self.error(
                    knode,
                    f"`{name}` is not a valid environment variable name",
                    "use letters, digits and underscores, not starting with a digit",
                )
            if name.startswith("DAYCARE_"):
                raise self.error(knode, f"`{name}` is set by daycare itself", "choose another name")
            if not isinstance(vnode, ScalarNode) or _is_null(vnode):
                what = "an empty value" if _is_null(vnode) else _kind(vnode)
                raise self.error(
                    vnode,
                    f"env `{name}` must be a string, not {what}",
                    f'{name}: ""' if _is_null(vnode) else f'{name}: "text"',
                )
            # Numbers and booleans become the text as written: `PORT: 8080` -> "8080".
            env[name] = str(vnode.value)
        return env

    # ---- triggers

    def triggers(self, node: Node) -> list[tuple[Trigger, Node | None]]:
        if not isinstance(node, SequenceNode):
            raise self.error(
                node,
                f"`triggers` must be a list, not {_kind(node)}",
                'start each trigger with "- ", e.g. triggers: [{cron: "0 9 * * *"}]',
            )
        return [self.trigger(item) for item in node.value]

    def trigger(self, node: Node) -> tuple[Trigger, Node | None]:
        if not isinstance(node, MappingNode):
            text = node.value if isinstance(node, ScalarNode) else "..."
            raise self.error(
                node,
                f"a trigger must be a mapping like `cron: EXPR`, not {_kind(node)}",
                f'- cron: "{text}"  (or at:, every:, webhook:)',
            )
        entries = {name: (knode, vnode) for name, knode, vnode in self.pairs(node, "trigger")}
        for name, (knode, _) in entries.items():
            if name not in _ALL_TRIGGER_KEYS:
                raise self.error(
                    knode,
                    f"unknown trigger key `{name}`",
                    _suggest(name, _ALL_TRIGGER_KEYS)
                    or "a trigger is one of cron, at, every, webhook",
                )
        kinds = [name for name in entries if name in TRIGGER_TYPES]
        if not kinds:
            raise self.error(
                node,
                "a trigger needs one of `cron`, `at`, `every` or `webhook`",
                '- cron: "0 9 * * *"',
            )
        if len(kinds) > 1:
            raise self.error(
                entries[kinds[1]][0],
                f"a trigger has one type, but this one has `{kinds[0]}` and `{kinds[1]}`",
                "put each in its own list item starting with `- `",
            )
        kind = kinds[0]
        for name, (knode, _) in entries.items():
            if name not in _TRIGGER_KEYS[kind]:
                raise self.error(
                    knode, f"`{name}` does not apply to {_article(kind)} `{kind}` trigger"
                )
        id_node: Node | None = None
        trigger_id = kind
        if "id" in entries:
            id_node = entries["id"][1]
            trigger_id = self.string(id_node, "id")
            if not TASK_ID_RE.match(trigger_id):
                raise self.error(
                    id_node,
                    f"trigger id `{trigger_id}` is not valid",
                    "use lowercase letters, digits and dashes, e.g. `id: morning`",
                )
        zone = None
        if "timezone" in entries and not _is_null(entries["timezone"][1]):
            zone = self.zone(entries["timezone"][1], "timezone")
        vnode = entries[kind][1]
        if kind == "cron":
            expr = self.string(vnode, "cron")
            return self.cron(vnode, expr, zone, trigger_id), id_node
        if kind == "at":
            return AtTrigger(at=self.instant(vnode, zone), id=trigger_id, timezone=zone), id_node
        if kind == "every":
            seconds = self.duration(vnode, "every", minimum=1.0)
            return EveryTrigger(seconds=seconds, id=trigger_id), id_node
        return self.webhook(vnode, trigger_id), id_node

    def instant(self, node: Node, zone: str | None) -> datetime:
        """A datetime: naive times take the trigger's zone, else the task's; with neither it
        stays naive and means the default zone (config, else the system's), resolved by
        `schedule.at_instant` when the schedule is evaluated."""
        value = self.scalar(node, "at", "a date and time")
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError as exc:
                why = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
                raise self.error(
                    node,
                    f"`at` must be an ISO date and time, not {value!r}{why}",
                    'at: "2026-11-22T09:00:00"',
                ) from None
        if not isinstance(value, datetime):
            assert isinstance(node, ScalarNode)
            kind = "a date without a time" if isinstance(value, date) else _kind(node)
            raise self.error(
                node, f"`at` must be a date and time, not {kind}", 'at: "2026-11-22T09:00:00"'
            )
        try:
            schedule.check_at(value)
        except ScheduleError as exc:
            raise self.error(node, exc.message, exc.hint) from None
        if value.tzinfo is None:
            chosen = zone or self.task_zone
            if chosen:
                value = value.replace(tzinfo=ZoneInfo(chosen))
        return value

    def webhook(self, node: Node, trigger_id: str) -> WebhookTrigger:
        if _is_null(node):
            return WebhookTrigger(id=trigger_id)
        if isinstance(node, ScalarNode):
            if self.scalar(node, "webhook", "true") is True:
                return WebhookTrigger(id=trigger_id)
            raise self.error(
                node,
                f"`webhook` must be true or a mapping, not {node.value!r}",
                "webhook: true  (remove the trigger to turn the webhook off)",
            )
        values: dict[str, tuple[str, Node]] = {}
        for name, knode, vnode in self.pairs(node, "webhook"):
            if name not in WEBHOOK_KEYS:
                raise self.error(
                    knode,
                    f"unknown webhook key `{name}`",
                    _suggest(name, WEBHOOK_KEYS) or "the keys are: signature, secret",
                )
            if name == "signature":
                values[name] = (self.choice(vnode, "webhook.signature", SIGNATURES), vnode)
            else:
                values[name] = (self.string(vnode, "webhook.secret"), vnode)
        signature = values.get("signature", (None, node))[0]
        secret = values.get("secret", (None, node))[0]
        if signature and not secret:
            raise self.error(
                node,
                "a webhook signature needs `secret`: the name of a secret in config",
                f"webhook: {{signature: {signature}, secret: MY_SECRET}}",
            )
        if secret and not signature:
            raise self.error(
                values["secret"][1],
                "a webhook `secret` needs `signature` (github or hmac-sha256)",
                f"webhook: {{signature: hmac-sha256, secret: {secret}}}",
            )
        return WebhookTrigger(id=trigger_id, signature=signature, secret=secret)

    def assign_ids(self, triggers: list[tuple[Trigger, Node | None]]) -> tuple[Trigger, ...]:
        """Give unnamed triggers their type as id (`cron`, `cron-2`...); reject repeated ids."""
        used: dict[str, Node] = {}
        for trigger, id_node in triggers:
            if id_node is None:
                continue
            if trigger.id in used:
                first = self.fm_line + used[trigger.id].start_mark.line
                raise self.error(
                    id_node,
                    f"duplicate trigger id `{trigger.id}`",
                    f"give each trigger its own id (`{trigger.id}` is also on line {first})",
                )
            used[trigger.id] = id_node
        taken = set(used)
        out: list[Trigger] = []
        for trigger, id_node in triggers:
            if id_node is None:
                candidate, n = trigger.type, 2
                while candidate in taken:
                    candidate, n = f"{trigger.type}-{n}", n + 1
                taken.add(candidate)
                trigger = dataclasses.replace(trigger, id=candidate)
            out.append(trigger)
        return tuple(out)


def _label(key: str) -> str:
    """How a message names a key: `timeout`, or each item of `tags` for "tags[]"."""
    return f"each item of `{key[:-2]}`" if key.endswith("[]") else f"`{key}`"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


_EXAMPLES: dict[str, str] = {
    "name": "name: Error monitor",
    "description": "description: What this task is for",
    "schedule": 'schedule: "0 9 * * *"',
    "timezone": "timezone: Europe/Berlin",
    "model": "model: gpt-4o-mini  (or none)",
    "system": "system: Answer in one short paragraph.",
    "timeout": "timeout: 60s",
    "run_timeout": "run_timeout: 15m",
    "retry_delay": "retry_delay: 30s",
    "jitter": "jitter: 2m",
    "catch_up_window": "catch_up_window: 6h",
    "every": "every: 15m",
    "sandbox": "sandbox:\n  network: false\n  memory: 512M",
    "sandbox.cpu": "cpu: 30",
    "sandbox.read": "read: [/var/log]",
    "sandbox.write": "write: [~/reports]",
    "env": 'env:\n  API_URL: "https://example.com"',
    "notify": 'notify: ["mailto://me@example.com"]',
    "notify_on": "notify_on: [response, failure]",
    "tags": "tags: [ops, daily]",
    "triggers": 'triggers:\n  - cron: "0 9 * * *"',
}


# --------------------------------------------------------------------------- lint


def lint_warnings(task: Task) -> list[str]:
    """Things that are allowed but probably not what the author meant."""
    warnings: list[str] = []
    blocks = BLOCK_RE.findall(task.body)
    if blocks and not task.execute:
        warnings.append(
            f"the body has {len(blocks)} <run_python> block(s) but `execute` is false: "
            "they are sent as text; set `execute: true` to run them"
        )
    if task.execute and not blocks:
        warnings.append("`execute` is true but the body has no <run_python> blocks")
    if not task.execute and (task.sandbox != SandboxSpec() or task.env):
        warnings.append("`sandbox` and `env` have no effect without `execute: true`")
    for trigger in task.triggers:
        if (
            isinstance(trigger, AtTrigger)
            and trigger.timezone is None
            and task.timezone is None
            and trigger.at.tzinfo is None
        ):
            warnings.append(
                f"trigger {trigger.id}: {trigger.at:%Y-%m-%d %H:%M} is read in the default zone "
                "(config `timezone`, else the system's); add `timezone:` to pin it"
            )
    if not task.body.strip():
        warnings.append("the prompt body is empty: a run has nothing to say")
    return warnings


# --------------------------------------------------------------------------- rendering


def _needs_quotes(text: str) -> bool:
    """True when a plain YAML scalar would not read back as this exact string everywhere."""
    if _resolve(text) != _TAG + "str":
        return True  # YAML 1.1 reads a bool, number, date or null
    if text in _YAML11_BOOLS or _YAML12_NUMBER_RE.fullmatch(text):
        return True  # YAML 1.2 (or the 1.1 spec) reads it differently
    return bool(re.match(r"[-+]?\d[\d_]*(:\d+)+", text))  # clock times read as base 60


def trigger_to_dict(trigger: Trigger) -> dict[str, Any]:
    """The frontmatter form of a trigger, for `render_task` and `update_frontmatter`."""
    out: dict[str, Any]
    if isinstance(trigger, CronTrigger):
        out = {"cron": trigger.source or trigger.expr}
    elif isinstance(trigger, AtTrigger):
        when = trigger.at
        if trigger.timezone:  # wall-clock time in the trigger's zone, as a person writes it
            when = when.astimezone(ZoneInfo(trigger.timezone)).replace(tzinfo=None)
        out = {"at": when.isoformat()}
    elif isinstance(trigger, EveryTrigger):
        out = {"every": format_duration(trigger.seconds)}
    elif trigger.signature:
        out = {"webhook": {"signature": trigger.signature, "secret": trigger.secret}}
    else:
        out = {"webhook": True}
    if getattr(trigger, "timezone", None):
        out["timezone"] = getattr(trigger, "timezone", None)
    if not re.fullmatch(rf"{trigger.type}(-\d+)?", trigger.id):
        out["id"] = trigger.id
    return out


def _to_yaml(value: Any, key: str) -> Any:
    """Plain Python values -> ruamel round-trip objects with daycare's quoting rules."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

    if isinstance(value, CronTrigger | AtTrigger | EveryTrigger | WebhookTrigger):
        value = trigger_to_dict(value)
    if isinstance(value, dict):
        mapping = CommentedMap()
        for k, v in value.items():
            if v is not None:
                mapping[str(k)] = _to_yaml(v, str(k))
        return mapping
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_to_yaml(v, key) for v in value)
        scalars = all(isinstance(v, str | int | float | bool) for v in value)
        if scalars and sum(len(str(v)) + 2 for v in value) <= 60:
            seq.fa.set_flow_style()  # short lists of words read best inline: [ops, daily]
        return seq
    if isinstance(value, datetime | date):
        return DoubleQuotedScalarString(value.isoformat())
    if isinstance(value, str):
        if "\n" in value:
            return LiteralScalarString(value)
        if key in _CRON_KEYS or _needs_quotes(value):
            return DoubleQuotedScalarString(value)
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"cannot write {type(value).__name__} to a task file ({key})")


def _dump_lines(mapping: dict[str, Any]) -> list[str]:
    """YAML lines (without newlines) for a mapping, in daycare's house style."""
    if not mapping:
        return []
    from ruamel.yaml import YAML

    yaml_rt = YAML(typ="rt")
    yaml_rt.indent(mapping=2, sequence=4, offset=2)
    yaml_rt.width = 4096  # never fold long values onto a second line
    buffer = io.StringIO()
    yaml_rt.dump(_to_yaml(mapping, ""), buffer)
    return buffer.getvalue().rstrip("\n").split("\n")


def _canonical(key: str) -> str:
    return ALIASES.get(key, key)


def render_task(fields: dict[str, Any], body: str) -> str:
    """The text of a new task file: frontmatter in a stable order, then the body.

    `fields` uses frontmatter keys (aliases are written under their snake_case name) and
    plain values; None values are left out; Trigger objects are accepted in `triggers`.
    Cron expressions are always double-quoted.
    """
    order = {key: index for index, key in enumerate(KEYS)}
    ordered = sorted(
        ((_canonical(k), v) for k, v in fields.items() if v is not None),
        key=lambda item: order.get(item[0], len(KEYS)),
    )
    lines = _dump_lines(dict(ordered))
    text = "---\n" + "".join(line + "\n" for line in lines) + "---\n"
    if body and not body.endswith("\n"):
        body += "\n"
    return text + body


# --------------------------------------------------------------------------- editing


def update_frontmatter(
    text: str,
    set_keys: dict[str, Any],
    unset: Iterable[str] = (),
    *,
    path: str | None = None,
) -> str:
    """Set and remove frontmatter keys, changing only the lines of those keys.

    A key that exists (under any alias spelling) is rewritten in place; a new key is
    appended at the end of the frontmatter; an unset key's lines, nested block included,
    are removed. A None value unsets. Comments, order, quoting, blank lines, CRLF and a
    BOM survive byte for byte. A file without frontmatter gets one.
    """
    # ruamel is imported here only: reading task files (`task ls`, the daemon) never needs it.
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError as RuamelYAMLError

    where = path or "<task file>"
    split = split_file(text, where)
    nl = split.newline
    bom = "\ufeff" if split.bom else ""
    changes = {_canonical(k): v for k, v in set_keys.items() if v is not None}
    removals = {_canonical(k) for k in unset} | {
        _canonical(k) for k, v in set_keys.items() if v is None
    }
    if split.frontmatter is None:
        new = _dump_lines(changes)
        if not new:
            return text
        head = "---" + nl + "".join(line + nl for line in new) + "---" + nl
        return bom + head + split.body

    lines = (text[1:] if split.bom else text).split("\n")
    # lines[i] keeps its "\r" if any; the frontmatter is lines[1 : close]
    start = split.fm_line - 1
    close = split.body_line - 2
    fm_text = "\n".join(line.rstrip("\r") for line in lines[start:close]) + "\n"
    try:
        data = YAML(typ="rt").load(fm_text)
    except RuamelYAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = split.fm_line + mark.line if mark is not None else 0
        raise TaskFileError(
            "cannot edit the frontmatter: it is not valid YAML",
            where,
            line,
            (mark.column + 1) if mark is not None else 0,
            "fix the file first (`daycare task lint` shows where)",
        ) from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap) or data.fa.flow_style():
        raise TaskFileError(
            "cannot edit the frontmatter: it is not a block of `key: value` lines",
            where,
            split.fm_line,
            1,
            "write one setting per line, e.g. `name: My task`",
        )

    keys = list(data.keys())
    # (first line index, last line index, replacement lines) in file line indexes
    edits: list[tuple[int, int, list[str]]] = []
    done: set[str] = set()
    for position, key in enumerate(keys):
        canonical = _canonical(str(key))
        if canonical not in changes and canonical not in removals:
            continue
        if canonical in done:  # a second spelling of the same key: drop it
            replacement: list[str] | None = []
        elif canonical in changes:
            replacement = None
        else:
            replacement = []
        key_line, key_col = data.lc.key(key)
        first = start + key_line
        after = start + data.lc.key(keys[position + 1])[0] if position + 1 < len(keys) else close
        last = _last_line_of_key(lines, first, after, key_col)
        if replacement is None:
            if _plain(data[key]) == _plain(changes[canonical]):
                done.add(canonical)
                continue  # unchanged value: leave its formatting alone
            replacement = _key_lines(str(key), changes[canonical], key_col)
            if first == last and len(replacement) == 1:
                replacement[0] += _trailing_comment(lines[first].rstrip("\r"))
        edits.append((first, last, replacement))
        done.add(canonical)
    appended: list[str] = []
    for canonical, value in changes.items():
        if canonical not in done:
            appended += _key_lines(canonical, value, 0)
    if appended:
        edits.append((close, close - 1, appended))

    crlf = nl == "\r\n"
    for first, last, new in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[first : last + 1] = [line + "\r" if crlf else line for line in new]
    return bom + "\n".join(lines)


def _last_line_of_key(lines: list[str], first: int, after: int, key_col: int) -> int:
    """The last line index of a key's value: trailing blank lines and comments at the
    key's own indentation belong to the next key, deeper-indented comments to this one."""
    for index in range(after - 1, first, -1):
        stripped = lines[index].rstrip("\r")
        content = stripped.lstrip(" ")
        if not content.strip():
            continue
        if content.startswith("#") and len(stripped) - len(content) <= key_col:
            continue
        return index
    return first


def _key_lines(key: str, value: Any, indent: int) -> list[str]:
    lines = _dump_lines({key: value})
    return [" " * indent + line for line in lines]


def _trailing_comment(line: str) -> str:
    """The `  # comment` at the end of a `key: value` line, if any (quotes respected)."""
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            if char == quote and not (quote == '"' and line[index - 1] == "\\"):
                quote = None
        elif char in "'\"" and (index == 0 or line[index - 1] in " :[{,"):
            quote = char
        elif char == "#" and index > 0 and line[index - 1] in " \t":
            end = index - 1
            while end > 0 and line[end - 1] in " \t":
                end -= 1
            return line[end:]
    return ""


def _plain(value: Any) -> Any:
    """ruamel's round-trip objects -> plain Python values, for comparison."""
    if isinstance(value, CronTrigger | AtTrigger | EveryTrigger | WebhookTrigger):
        value = trigger_to_dict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value
