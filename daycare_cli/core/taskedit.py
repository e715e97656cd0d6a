"""Write task files: render a new one, and edit frontmatter and body in place.

`render_task` writes a new file in daycare's house style. `update_frontmatter` goes
through ruamel.yaml's round-trip loader only to locate keys, and splices just the lines
of the keys that change, so comments, order, quoting and blank lines survive byte for
byte. `replace_body` swaps the prompt and keeps the frontmatter's bytes. What a CLI edit
means (a `Change`) is `core/taskchange.py`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from daycare_cli.core.duration import format_duration
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.frontmatter import split_file
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Trigger, WebhookTrigger
from daycare_cli.core.taskfile import ALIASES, KEYS
from daycare_cli.core.yamlrules import CRON_KEYS, needs_quotes


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
        if key in CRON_KEYS or needs_quotes(value):
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


def replace_body(text: str, path: str, body: str) -> str:
    """`text` with its body (everything after the frontmatter) replaced by `body`."""
    split = split_file(text, path)
    newline = split.newline
    if split.frontmatter is None:
        prefix = "\ufeff" if split.bom else ""
    else:
        # Task files break lines on "\n" only (see split_file); a CRLF line keeps its "\r".
        prefix = "\n".join(text.split("\n")[: split.body_line - 1])
        prefix += "\n" if prefix.endswith("\r") or newline == "\n" else "\r\n"
    body = with_newlines(body, newline)
    if body and not body.endswith(newline):
        body += newline
    return prefix + body


def with_newlines(text: str, newline: str) -> str:
    """`text` with its line endings made `newline`."""
    plain = text.replace("\r\n", "\n")
    return plain.replace("\n", newline) if newline != "\n" else plain
