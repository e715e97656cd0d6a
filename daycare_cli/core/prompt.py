"""Find `<run_python>` blocks in a prompt body and splice their outputs (docs/task-file.md, "Inside
a block").

Pure: running a block is the caller's business, injected as `run_block`. Expansion is
single-pass: each block's text is replaced by its rendered result by position, and the
inserted output is never scanned for blocks again.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daycare_cli.core.duration import parse_duration

# Where a tag may start: `<run_python` or `</run_python`, any case. What follows is
# checked by hand (see `_scan`) so that the work stays linear in the body's length.
TAG_START_RE = re.compile(r"<(/?)run_python", re.IGNORECASE)
CLOSE_TAIL_RE = re.compile(r"\s*>")
# key="value", key='value', key=value, or a bare key (value "").
ATTR_RE = re.compile(
    r"""([A-Za-z_][\w.-]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""",
)

OUTPUT_CAP = 64 * 1024
TRUNCATION_MARKER = "\n[output truncated at 64 KiB]"


@dataclass(frozen=True)
class Block:
    """One `<run_python>` block: its span in the body, its code and its attributes.

    `start`/`end` index the whole tag pair in the body; `line` is the 1-based line of
    the opening tag; `code` is dedented with leading and trailing blank lines removed;
    `code_start`/`code_end` index the code as written, between the tags.
    """

    index: int
    start: int
    end: int
    code: str
    attrs: dict[str, str] = field(default_factory=dict)
    line: int = 1
    code_start: int = 0
    code_end: int = 0


@dataclass(frozen=True)
class BlockResult:
    """What running a block gave: its output, or an error `Type: message`, or a skip."""

    output: str = ""
    error: str | None = None
    truncated: bool = False
    skipped: bool = False
    skip_reason: str = ""


@dataclass
class Expansion:
    """The expanded prompt and what each block that ran gave.

    When a block skipped, `text` has the blocks before it spliced and the rest verbatim;
    the run ends skipped and the text is only kept for the record.
    """

    text: str
    results: list[BlockResult]
    skipped: bool = False
    skip_reason: str = ""
    ran: int = 0


def parse_attrs(raw: str | None) -> dict[str, str]:
    """Attributes of an opening tag: `key="v"`, `key='v'`, `key=v`; keys lower-cased."""
    attrs: dict[str, str] = {}
    for m in ATTR_RE.finditer(raw or ""):
        value = next((g for g in m.groups()[1:] if g is not None), "")
        attrs[m.group(1).lower()] = value
    return attrs


def _clean_code(raw: str) -> str:
    """Dedent, then drop blank lines at both ends (keeping inner indentation intact)."""
    # CRLF task files: a lone "\r" line would otherwise count as text and block dedent.
    lines = textwrap.dedent(raw.replace("\r\n", "\n")).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


@dataclass(frozen=True)
class _Scan:
    """The closed blocks of a body as spans, and the first opening tag left unclosed.

    Each span is (start, attrs, code start, code end, end): `attrs` is the opening tag's
    text after `<run_python` (None for a bare `<run_python>`).
    """

    spans: list[tuple[int, str | None, int, int, int]]
    unclosed: int | None


def _scan(body: str) -> _Scan:
    """Pair opening and closing tags in one pass over the body.

    The rule is the regular expression `<run_python(\\s[^>]*)?>(.*?)</run_python\\s*>`
    applied left to right (what a reader of the prompt expects): a block runs from an
    opening tag to the first closing tag after it, and tags inside it are its code. Here it
    is applied without backtracking: with that regex, each opening tag without a closing
    tag after it scanned to the end of the body again, and 20,000 of them took minutes.
    """
    opens: list[tuple[int, int, str | None]] = []  # (start, end, attrs)
    closes: list[tuple[int, int]] = []  # (start, end)
    gt = -2  # the next ">" at or after the last opening tag looked at; -1: none left
    for m in TAG_START_RE.finditer(body):
        tail = m.end()
        if m.group(1):
            close = CLOSE_TAIL_RE.match(body, tail)
            if close is not None:
                closes.append((m.start(), close.end()))
            continue
        if body.startswith(">", tail):
            opens.append((m.start(), tail + 1, None))
        elif tail < len(body) and body[tail].isspace():
            if gt != -1 and gt < tail:
                gt = body.find(">", tail)
            if gt >= 0:  # attributes run to the first ">" (the regex's `[^>]*`)
                opens.append((m.start(), gt + 1, body[tail:gt]))
    spans: list[tuple[int, str | None, int, int, int]] = []
    pos = 0
    i = 0
    for start, end, attrs in opens:
        if start < pos:
            continue  # inside the previous block: its code
        while i < len(closes) and closes[i][0] < end:
            i += 1
        if i == len(closes):
            return _Scan(spans, start)
        close_start, close_end = closes[i]
        spans.append((start, attrs, end, close_start, close_end))
        pos = close_end
    return _Scan(spans, None)


def find_blocks(body: str) -> list[Block]:
    """All closed `<run_python>` blocks of a prompt body, in order."""
    blocks: list[Block] = []
    line, counted = 1, 0  # lines are counted forward only, once over the body
    for i, (start, attrs, code_start, code_end, end) in enumerate(_scan(body).spans):
        line += body.count("\n", counted, start)
        counted = start
        blocks.append(
            Block(
                index=i,
                start=start,
                end=end,
                code=_clean_code(body[code_start:code_end]),
                attrs=parse_attrs(attrs),
                line=line,
                code_start=code_start,
                code_end=code_end,
            )
        )
    return blocks


def find_unclosed_block(body: str) -> tuple[int, int] | None:
    """(line, col), 1-based, of the first opening tag that has no closing tag, else None.

    An opening tag inside a closed block's code belongs to that block's code. Linear in
    the length of the body, whatever its tags.
    """
    start = _scan(body).unclosed
    if start is None:
        return None
    line = body.count("\n", 0, start) + 1
    col = start - (body.rfind("\n", 0, start) + 1) + 1
    return line, col


def block_timeout(block: Block, default: float) -> float:
    """The block's `timeout` attribute in seconds (`10`, `10s`, `2m`), else `default`.

    Raises whatever `parse_duration` raises for a malformed value.
    """
    raw = block.attrs.get("timeout")
    if raw is None or not raw.strip():
        return default
    return parse_duration(raw.strip())


def _cap(text: str, cap: int = OUTPUT_CAP) -> tuple[str, bool]:
    """Cut `text` to at most `cap` UTF-8 bytes without splitting a character."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= cap:
        return text, False
    # errors="ignore" drops only the partial character the byte cut left at the end.
    return data[:cap].decode("utf-8", errors="ignore"), True


def render_result(result: BlockResult) -> str:
    """The text that replaces a block: its output, then `<exec_error>Type: message</exec_error>`
    when it failed (what it printed before the error is kept: it is often the clue).

    One trailing newline of the output is removed (a `print` adds it); output past
    OUTPUT_CAP bytes is cut at a character boundary and marked, as is output the
    executor already cut (`truncated`).
    """
    if result.error is not None:
        message, _ = _cap(result.error)
        error = f"<exec_error>{message}</exec_error>"
        if not result.output:
            return error
        return render_result(BlockResult(result.output, truncated=result.truncated)) + "\n" + error
    output = result.output
    if output.endswith("\r\n"):
        output = output[:-2]
    elif output.endswith("\n"):
        output = output[:-1]
    output, cut = _cap(output)
    if cut or result.truncated:
        output += TRUNCATION_MARKER
    return output


async def expand_prompt(
    body: str,
    run_block: Callable[[Block], Awaitable[BlockResult]],
    *,
    execute: bool = True,
) -> Expansion:
    """Run the body's blocks in order and splice each one's rendered result in its place.

    A failing block becomes `<exec_error>` and the following blocks still run; a skipped
    block stops everything (no further block runs). With `execute=False` the body is
    returned verbatim and `run_block` is never called. Exceptions from `run_block`
    propagate: they mean the executor itself failed, not the block.
    """
    if not execute:
        return Expansion(text=body, results=[])
    pieces: list[str] = []
    results: list[BlockResult] = []
    last = 0
    for block in find_blocks(body):
        result = await run_block(block)
        results.append(result)
        if result.skipped:
            pieces.append(body[last:])
            return Expansion(
                text="".join(pieces),
                results=results,
                skipped=True,
                skip_reason=result.skip_reason,
                ran=len(results),
            )
        pieces.append(body[last : block.start])
        pieces.append(render_result(result))
        last = block.end
    pieces.append(body[last:])
    return Expansion(text="".join(pieces), results=results, ran=len(results))
