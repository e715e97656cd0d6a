"""The YAML subset task files accept, and its errors in words (docs/task-file.md).

Frontmatter is composed with PyYAML's C safe loader, so every value keeps its position.
Before any value is read, the tree is checked for what different YAML tools read
differently: duplicate keys, merge keys, and plain scalars that YAML 1.1 (PyYAML) and
YAML 1.2 (most other tools) disagree on (`yes`, `0755`, `1_000`, `12:30`...).
`needs_quotes` applies the same tables when a value is written.

`NodeReader` holds the file's text and where its frontmatter starts; it turns syntax
errors into positioned `TaskFileError`s with a fix for the usual causes and reads typed
scalars, lists and mappings out of nodes. `core/taskfile.py` builds a Task on top of it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from daycare_cli.core.duration import EXAMPLES as DURATION_EXAMPLES
from daycare_cli.core.duration import format_duration, parse_duration
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.frontmatter import offset_position, source_line

# The C loader is several times faster; the pure-Python one gives the same nodes.
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TAG = "tag:yaml.org,2002:"
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

# A value that makes PyYAML fail because it starts with an indicator: `*` (alias), `@`, `` ` ``.
_RAW_VALUE_RE = re.compile(
    r"^(?P<pre>\s*(?:-\s+)?)(?P<key>[A-Za-z_][\w-]*)(?P<sep>\s*:\s+)(?P<val>.*?)\s*(?:\s#.*)?$"
)
# Keys whose value is a cron expression: always written double-quoted.
CRON_KEYS = ("schedule", "cron")
# Lists and mappings nested deeper than this are refused: a task file needs five levels,
# and PyYAML composes nesting by recursion (a 5,000-deep list raised RecursionError).
MAX_DEPTH = 32
# The pure-Python loader re-reads a broken frontmatter for a better message, and the
# quoting hints look at the offending line: both only when these are small enough to
# stay fast (the Python scanner is quadratic in `[` nesting: 1,000 levels took 0.5 s;
# the hint's regex backtracks on blanks). Settings are rarely over 2 KiB.
SLOW_RETRY_CHARS = 4 * 1024
HINT_LINE_CHARS = 500


_TOO_DEEP = (
    f"lists and mappings are nested more than {MAX_DEPTH} levels deep here",
    "a task file needs a few levels at most; check the indentation and the brackets",
)


_LONG_WORD_RE = re.compile(r"\S{80,}")


def _shorten(text: str) -> str:
    """A message with any very long value in it cut in the middle, so it stays a line."""
    return _LONG_WORD_RE.sub(lambda m: f"{m[0][:50]}…{m[0][-20:]}", text)


def _flow_too_deep(text: str, start: int, depth: int) -> int | None:
    """Offset of the first `[` or `{` after `start` that nests past MAX_DEPTH, counting
    from `depth` open collections; quoted strings and comments are skipped."""
    i = start
    while i < len(text):
        ch = text[i]
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return i
        elif ch in "]}":
            depth -= 1
        elif ch == "'":
            i = text.find("'", i + 1)  # '' inside is an escaped quote: two quotes, same scan
        elif ch == '"':
            while True:
                i = text.find('"', i + 1)
                if i < 0 or text[i - 1] != "\\" or text[i - 2] == "\\":
                    break
        elif ch == "#" and (i == 0 or text[i - 1] in " \t\n"):
            i = text.find("\n", i)
        if i < 0:
            return None
        i += 1
    return None


def _resolve(text: str) -> str:
    """The tag PyYAML (YAML 1.1) gives a plain scalar with this text."""
    tag: str = _RESOLVER.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


def needs_quotes(text: str) -> bool:
    """True when a plain YAML scalar would not read back as this exact string everywhere."""
    if _resolve(text) != TAG + "str":
        return True  # YAML 1.1 reads a bool, number, date or null
    if text in _YAML11_BOOLS or _YAML12_NUMBER_RE.fullmatch(text):
        return True  # YAML 1.2 (or the 1.1 spec) reads it differently
    return bool(re.match(r"[-+]?\d[\d_]*(:\d+)+", text))  # clock times read as base 60


def kind_of(node: Node) -> str:
    """What a YAML node is, in words: 'a string', 'a list'..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(TAG)
    return _KINDS.get(tag, f"a value tagged {node.tag}")


def is_plain(node: ScalarNode) -> bool:
    """True for an unquoted scalar."""
    # The C loader reports plain style as "", the Python one as None.
    return node.style in (None, "")


def is_null(node: Node) -> bool:
    """True for an empty value (`key:`, `null`, `~`)."""
    return isinstance(node, ScalarNode) and node.tag == TAG + "null"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `x`?` for the closest choice, if any is close."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean `{lowered[match[0]]}`?" if match else None


def label(key: str) -> str:
    """How a message names a key: `timeout`, or each item of `tags` for "tags[]"."""
    return f"each item of `{key[:-2]}`" if key.endswith("[]") else f"`{key}`"


class NodeReader:
    """Composes frontmatter and reads typed values from its nodes, raising positioned errors.

    `examples` maps a key to a line that shows a valid value; errors offer it as the fix.
    """

    examples: dict[str, str] = {}

    def __init__(self, path: str, text: str, fm_line: int) -> None:
        self.path = path
        self.text = text
        self.fm_line = fm_line
        self.constructor = yaml.constructor.SafeConstructor()
        self.last: Node | None = None  # the node being read, for an unforeseen failure

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
        """A TaskFileError at a 1-based line and column of the file."""
        excerpt = source_line(self.text, line)
        hint = _shorten(hint) if hint is not None else None
        return TaskFileError(_shorten(message), self.path, line, col, hint, excerpt)

    def example(self, key: str) -> str | None:
        """A valid line for `key` (an item key `tags[]` shows the list's example)."""
        return self.examples.get(key.removesuffix("[]"))

    # ---- YAML

    def compose(self, frontmatter: str) -> Node | None:
        """The node tree of the frontmatter text (None when empty); syntax errors in words."""
        try:
            root = yaml.compose(frontmatter, Loader=LOADER)
        except yaml.MarkedYAMLError as exc:
            if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit, 1,000
                raise self.too_deep(frontmatter) from None
            raise self.yaml_error(frontmatter, exc) from None
        except RecursionError:
            # Composing recurses once per level: find the first node past the limit
            # with the parser's events, which do not recurse.
            raise self.too_deep(frontmatter) from None
        except yaml.reader.ReaderError as exc:
            # The C reader reports the character as an int, the Python one as a str.
            char = exc.character
            code = ord(char) if isinstance(char, str) else int(char)
            line, col = offset_position(frontmatter, exc.position)
            raise self.error_at(
                self.fm_line + line - 1,
                col,
                f"control character U+{code:04X} is not allowed in the frontmatter",
                "remove the control character (it may be invisible in your editor)",
            ) from None
        return root

    def yaml_error(self, frontmatter: str, exc: yaml.MarkedYAMLError) -> TaskFileError:
        """A YAML syntax error in words, with a fix for the usual causes."""
        if len(frontmatter) <= SLOW_RETRY_CHARS:
            try:  # the pure-Python loader names the offending character; the C one does not
                yaml.compose(frontmatter, Loader=yaml.SafeLoader)
            except yaml.MarkedYAMLError as slow:
                exc = slow
            except (yaml.YAMLError, RecursionError):
                pass
        mark = exc.problem_mark or exc.context_mark
        assert mark is not None  # a MarkedYAMLError always has one
        fm_lines = frontmatter.replace("\r\n", "\n").split("\n")
        for candidate in (exc.problem_mark, exc.context_mark):
            if candidate is None or candidate.line >= len(fm_lines):
                continue
            raw = fm_lines[candidate.line]
            found = _RAW_VALUE_RE.match(raw) if len(raw) <= HINT_LINE_CHARS else None
            if found is None:
                continue
            key, val = found["key"], found["val"]
            col = len(found["pre"]) + len(key) + len(found["sep"]) + 1
            dash = "- " if "-" in found["pre"] else ""
            fix = f'{dash}{key}: "{val}"'
            if key in CRON_KEYS and val[:1] in ("*", "@"):
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
        raw_line = source_line(self.text, line) or ""
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

    def too_deep(self, frontmatter: str) -> TaskFileError:
        """The error for nesting past MAX_DEPTH, at the first list or mapping too deep.

        The parser's events give the place, except inside `[`/`{` nesting: there libyaml
        reads ahead to its own limit (1,000 levels) before it yields an event, so the
        brackets after the last event are counted here (a linear scan; PyYAML's Python
        parser would find it too, but in time quadratic in the nesting).
        """
        depth = 0
        offset = 0  # where the last event ended
        try:
            for event in yaml.parse(frontmatter, Loader=LOADER):
                start, end = event.start_mark, event.end_mark
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH and start is not None:
                        return self.error((start.line, start.column), *_TOO_DEEP)
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                if end is not None:
                    offset = end.index
        except yaml.MarkedYAMLError as exc:
            found = _flow_too_deep(frontmatter, offset, depth)
            if found is not None:
                line, col = offset_position(frontmatter, found)
                return self.error((line - 1, col - 1), *_TOO_DEEP)
            mark = exc.problem_mark or exc.context_mark
            if mark is not None:
                return self.error((mark.line, mark.column), *_TOO_DEEP)
        # The reader ran out of room before the limit: name where the settings start.
        return self.error((0, 0), "the frontmatter is nested too deeply to read", _TOO_DEEP[1])

    def check_tree(self, root: Node) -> None:
        """Reject duplicate keys, merge keys, YAML 1.1/1.2-ambiguous scalars and nesting
        deeper than MAX_DEPTH, in file order."""
        stack: list[tuple[Node, int]] = [(root, 1)]
        seen: set[int] = set()
        while stack:
            node, depth = stack.pop()
            if id(node) in seen:  # aliases share nodes; anchors may even loop
                continue
            seen.add(id(node))
            self.last = node
            if isinstance(node, ScalarNode):
                self.check_ambiguous(node)
                continue
            if depth > MAX_DEPTH:
                raise self.error(node, *_TOO_DEEP)
            if isinstance(node, SequenceNode):
                stack.extend((child, depth + 1) for child in reversed(node.value))
            elif isinstance(node, MappingNode):
                keys: dict[tuple[str, str], Node] = {}
                children: list[Node] = []
                for key, value in node.value:
                    if key.tag == TAG + "merge":
                        raise self.error(
                            key, "YAML merge keys (`<<`) are not supported", "write the keys out"
                        )
                    if not isinstance(key, ScalarNode):
                        raise self.error(
                            key,
                            f"a key must be a plain name, not {kind_of(key)}",
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
                stack.extend((child, depth + 1) for child in reversed(children))

    def check_ambiguous(self, node: ScalarNode) -> None:
        """Raise for a plain scalar that YAML 1.1 and YAML 1.2 read differently."""
        if not is_plain(node):
            return
        text = node.value
        tag = node.tag.removeprefix(TAG)
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

    # ---- typed values

    def scalar(self, node: Node, key: str, expected: str) -> Any:
        """The Python value of a scalar node, or an error saying what was expected."""
        self.last = node
        if not isinstance(node, ScalarNode):
            raise self.error(
                node, f"{label(key)} must be {expected}, not {kind_of(node)}", self.example(key)
            )
        if node.tag in (TAG + "str", TAG + "value"):  # `value` is PyYAML's `=`: text
            return node.value
        try:
            return self.constructor.construct_object(node)
        except (ValueError, yaml.YAMLError) as exc:
            raise self.error(
                node, f"{label(key)} has an invalid value {node.value!r}: {exc}", self.example(key)
            ) from None

    def string(self, node: Node, key: str, *, empty: bool = False) -> str:
        """A string value; dates stay as written; empty only when `empty`."""
        value = self.scalar(node, key, "a string")
        if isinstance(value, date):  # a 1.1 timestamp; the text means the same in 1.2
            return str(node.value)
        if not isinstance(value, str):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{label(key)} must be a string, not {kind_of(node)}",
                f'quote it: "{node.value}"',
            )
        if not empty and not value.strip():
            raise self.error(node, f"{label(key)} must not be empty", self.example(key))
        return value

    def boolean(self, node: Node, key: str) -> bool:
        """A true/false value."""
        value = self.scalar(node, key, "true or false")
        if not isinstance(value, bool):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{label(key)} must be true or false, not {kind_of(node)} ({node.value!r})",
                f"{key.rsplit('.', 1)[-1]}: true",
            )
        return value

    def duration(self, node: Node, key: str, *, minimum: float = 0.0, above: bool = False) -> float:
        """Seconds of a duration (`90s`, `15m`, a number of seconds), bounded below."""
        value = self.scalar(node, key, f"a duration ({DURATION_EXAMPLES})")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            assert isinstance(node, ScalarNode)
            raise self.error(
                node,
                f"{label(key)} must be a duration ({DURATION_EXAMPLES}), not {kind_of(node)}",
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
                f"{label(key)} must be {bound}, not {value}",
                self.example(key),
            )
        return seconds

    def choice(self, node: Node, key: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, with a spelling suggestion when it is none of them."""
        listed = ", ".join(choices)
        value = self.scalar(node, key, f"one of {listed}")
        if not isinstance(value, str) or value not in choices:
            shown = node.value if isinstance(node, ScalarNode) else value
            suggestion = suggest(str(shown), choices) if isinstance(shown, str) else None
            raise self.error(
                node,
                f"{label(key)} must be one of {listed}, not {shown!r}",
                suggestion or f"{key.removesuffix('[]')}: {choices[0]}",
            )
        return value

    def items(self, node: Node, key: str) -> list[Node]:
        """The item nodes of a list."""
        self.last = node
        if not isinstance(node, SequenceNode):
            raise self.error(
                node, f"{label(key)} must be a list, not {kind_of(node)}", self.example(key)
            )
        return list(node.value)

    def strings(self, node: Node, key: str) -> tuple[str, ...]:
        """A list of non-empty strings."""
        return tuple(self.string(item, f"{key}[]") for item in self.items(node, key))

    def pairs(self, node: Node, key: str) -> list[tuple[str, Node, Node]]:
        """(key text, key node, value node) of a mapping whose keys are strings."""
        self.last = node
        if not isinstance(node, MappingNode):
            raise self.error(
                node, f"{label(key)} must be a mapping, not {kind_of(node)}", self.example(key)
            )
        out = []
        for knode, vnode in node.value:
            where = "a frontmatter key" if key == "frontmatter" else f"a key of `{key}`"
            name = self.scalar(knode, where, "a name")
            if not isinstance(name, str):
                raise self.error(knode, f"{where} must be a name, not {kind_of(knode)}")
            out.append((name, knode, vnode))
        return out
