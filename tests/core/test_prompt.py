"""Tests for core/prompt.py: finding blocks, splicing results, single-pass expansion."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from daycare_cli.core.prompt import (
    OUTPUT_CAP,
    TRUNCATION_MARKER,
    Block,
    BlockResult,
    block_timeout,
    expand_prompt,
    find_blocks,
    find_unclosed_block,
    render_result,
)


def fake_result(code: str) -> BlockResult:
    """The injected executor: a pure mapping from a block's code to its result.

    `out:TEXT` prints TEXT, `err:Type: msg` fails, `skip:REASON` skips, `big:N` prints
    N copies of "é"; anything else prints its own code.
    """
    kind, _, rest = code.partition(":")
    if kind == "out":
        return BlockResult(output=rest + "\n")
    if kind == "err":
        return BlockResult(error=rest)
    if kind == "skip":
        return BlockResult(skipped=True, skip_reason=rest)
    if kind == "big":
        return BlockResult(output="é" * int(rest))
    return BlockResult(output=code + "\n")


class Recorder:
    """Collects the code of each block it is asked to run, in order."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    async def __call__(self, block: Block) -> BlockResult:
        self.codes.append(block.code)
        return fake_result(block.code)


def expand(body: str, *, execute: bool = True) -> tuple[str, Recorder]:
    recorder = Recorder()
    expansion = asyncio.run(expand_prompt(body, recorder, execute=execute))
    return expansion.text, recorder


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("no blocks here", "no blocks here"),
        ("<run_python>out:hi</run_python>", "hi"),
        ("a <run_python>out:1</run_python> b <run_python>out:2</run_python> c", "a 1 b 2 c"),
        ("<RUN_PYTHON>out:upper</Run_Python>", "upper"),
        ("<run_python>out:spaced</run_python >", "spaced"),
        ("<run_python>out:nl</run_python\n>", "nl"),
        ('<run_python timeout="5">out:attr</run_python>', "attr"),
        ("<run_python>\n    out:indented\n</run_python>", "indented"),
        (
            "x<run_python>err:ValueError: bad</run_python>y",
            "x<exec_error>ValueError: bad</exec_error>y",
        ),
        ("<run_pythonic>out:no</run_pythonic>", "<run_pythonic>out:no</run_pythonic>"),
        ("<run_python/>out:no", "<run_python/>out:no"),
        ("<run_python>out:</run_python>", ""),
        # The first closing tag ends a block, even if the code "opens" another one.
        ("<run_python>out:a <run_python> b</run_python> tail", "a <run_python> b tail"),
        # A stray closing tag is plain text.
        ("before </run_python> after", "before </run_python> after"),
    ],
)
def test_expand_table(body: str, expected: str) -> None:
    assert expand(body)[0] == expected


def test_failing_block_does_not_stop_the_following_ones() -> None:
    body = (
        "<run_python>err:ZeroDivisionError: division by zero</run_python>"
        "|<run_python>out:after</run_python>"
    )
    text, recorder = expand(body)
    assert text == "<exec_error>ZeroDivisionError: division by zero</exec_error>|after"
    assert recorder.codes == ["err:ZeroDivisionError: division by zero", "out:after"]


def test_skip_stops_everything() -> None:
    body = (
        "<run_python>out:first</run_python>"
        "<run_python>skip:nothing new</run_python>"
        "<run_python>out:never</run_python>"
    )
    recorder = Recorder()
    expansion = asyncio.run(expand_prompt(body, recorder))
    assert recorder.codes == ["out:first", "skip:nothing new"]
    assert expansion.skipped
    assert expansion.skip_reason == "nothing new"
    assert expansion.ran == 2
    assert len(expansion.results) == 2
    # Blocks before the skip are spliced; the rest stays verbatim for the record.
    assert expansion.text == (
        "first<run_python>skip:nothing new</run_python><run_python>out:never</run_python>"
    )


def test_not_skipped_expansion_counts_blocks() -> None:
    recorder = Recorder()
    expansion = asyncio.run(
        expand_prompt("<run_python>out:a</run_python><run_python>out:b</run_python>", recorder)
    )
    assert (expansion.skipped, expansion.skip_reason, expansion.ran) == (False, "", 2)
    assert [r.output for r in expansion.results] == ["a\n", "b\n"]


def test_single_pass_output_is_never_rescanned() -> None:
    body = "<run_python>out:<run_python>out:inner</run_python></run_python>!"
    # The outer block ends at the first closing tag; its code holds an opening tag.
    text, recorder = expand(body)
    assert recorder.codes == ["out:<run_python>out:inner"]
    assert text == "<run_python>out:inner</run_python>!"

    async def emits_a_block(block: Block) -> BlockResult:
        calls.append(block.code)
        return BlockResult(output="<run_python>print(1)</run_python>")

    calls: list[str] = []
    expansion = asyncio.run(
        expand_prompt("A<run_python>x</run_python>B<run_python>y</run_python>C", emits_a_block)
    )
    assert calls == ["x", "y"]
    assert expansion.text == (
        "A<run_python>print(1)</run_python>B<run_python>print(1)</run_python>C"
    )


def test_execute_false_leaves_body_verbatim_and_runs_nothing() -> None:
    body = "<run_python>out:x</run_python> and <run_python>skip:no</run_python>"
    recorder = Recorder()
    expansion = asyncio.run(expand_prompt(body, recorder, execute=False))
    assert expansion.text == body
    assert recorder.codes == []
    assert (expansion.results, expansion.skipped, expansion.ran) == ([], False, 0)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("print(1)", "print(1)"),
        ("\n\n    x = 1\n    if x:\n        print(x)\n\n   \n", "x = 1\nif x:\n    print(x)"),
        ("\r\n  a = 1\r\n  b = 2\r\n", "a = 1\nb = 2"),
        ("\n\tprint('tab')\n", "print('tab')"),
        ("   \n   ", ""),
    ],
)
def test_code_is_dedented_and_trimmed(raw: str, code: str) -> None:
    (block,) = find_blocks(f"<run_python>{raw}</run_python>")
    assert block.code == code


@pytest.mark.parametrize(
    ("tag", "attrs"),
    [
        ("<run_python>", {}),
        ('<run_python timeout="10">', {"timeout": "10"}),
        ("<run_python timeout='10s'>", {"timeout": "10s"}),
        ("<run_python timeout=10>", {"timeout": "10"}),
        ('<run_python TIMEOUT = "3" name="a b">', {"timeout": "3", "name": "a b"}),
        ("<run_python\nquiet>", {"quiet": ""}),
    ],
)
def test_attrs(tag: str, attrs: dict[str, str]) -> None:
    (block,) = find_blocks(f"{tag}pass</run_python>")
    assert block.attrs == attrs


def test_block_positions_and_lines() -> None:
    body = "line 1\nline 2 <run_python>a</run_python>\n\n<run_python>\nb\n</run_python>"
    blocks = find_blocks(body)
    assert [(b.index, b.line, b.code) for b in blocks] == [(0, 2, "a"), (1, 4, "b")]
    assert body[blocks[0].start : blocks[0].end] == "<run_python>a</run_python>"
    assert body[blocks[1].end :] == ""


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("all good", None),
        ("<run_python>x</run_python>", None),
        ("<run_python>x", (1, 1)),
        ("ok\n  <run_python timeout=5>\nprint(1)\n", (2, 3)),
        ("<run_python>a</run_python>\ntext <RUN_PYTHON>b", (2, 6)),
        ("<run_python>a</run_python> <run_python>b</run_python>", None),
        # An opening tag inside a closed block is that block's code.
        ("<run_python>s = '<run_python>'</run_python>", None),
        ("</run_python> <run_python>", (1, 15)),
    ],
)
def test_find_unclosed_block(body: str, where: tuple[int, int] | None) -> None:
    assert find_unclosed_block(body) == where


# The rule blocks follow, as the regular expressions prompt.py used before its scan was
# made linear: the reference the scan is compared with on random bodies.
REF_BLOCK_RE = re.compile(r"<run_python(\s[^>]*)?>(.*?)</run_python\s*>", re.DOTALL | re.IGNORECASE)
REF_OPEN_RE = re.compile(r"<run_python(\s[^>]*)?>", re.IGNORECASE)
PIECES = [
    "<run_python>", "</run_python>", "<RUN_python a=1>", "</run_python  >", "<run_python",
    "</run_python", "<run_python\n", " ", "\n", ">", "x", "<", "/", "run_python", "\t>",
    "<run_pythonx>", "</run_python x>", "'", '"', "=",
]  # fmt: skip


def reference(body: str) -> tuple[list[tuple[int, int, str, str | None]], int | None]:
    """(start, end, raw code, raw attrs) of each block, and where the first unclosed tag is."""
    matches = list(REF_BLOCK_RE.finditer(body))
    pos = matches[-1].end() if matches else 0
    opening = REF_OPEN_RE.search(body, pos)
    spans = [(m.start(), m.end(), m.group(2), m.group(1)) for m in matches]
    return spans, opening.start() if opening else None


@pytest.mark.parametrize("seed", range(40))
def test_the_linear_scan_finds_what_the_regular_expressions_found(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        body = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        spans, unclosed = reference(body)
        blocks = find_blocks(body)
        assert [(b.start, b.end) for b in blocks] == [(s, e) for s, e, _, _ in spans], body
        for block, (_, _, code, attrs) in zip(blocks, spans, strict=True):
            assert block.code == find_blocks(f"<run_python>{code}</run_python>")[0].code
            assert block.attrs == find_blocks(f"<run_python{attrs or ''}>x</run_python>")[0].attrs
            assert block.line == body.count("\n", 0, block.start) + 1
        where = find_unclosed_block(body)
        if unclosed is None:
            assert where is None, body
        else:
            line = body.count("\n", 0, unclosed) + 1
            assert where == (line, unclosed - (body.rfind("\n", 0, unclosed) + 1) + 1), body


def test_twenty_thousand_unclosed_tags() -> None:
    # Each used to rescan the rest of the body: 49 s for this body (bench_taskfiles.py).
    body = "intro\n" + "<run_python>\n" * 20_000
    assert find_unclosed_block(body) == (2, 1)
    assert find_blocks(body) == []
    spaced = "<run_python " * 20_000  # attributes never closed by a `>`: not tags at all
    assert find_unclosed_block(spaced) is None


def test_twenty_thousand_blocks_keep_their_lines() -> None:
    body = "<run_python>\nprint(1)\n</run_python>\n" * 20_000
    blocks = find_blocks(body)
    assert len(blocks) == 20_000
    assert [b.line for b in blocks[:3]] == [1, 4, 7]
    assert blocks[-1].line == 3 * 19_999 + 1
    assert find_unclosed_block(body + "<run_python>") == (60_001, 1)


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (BlockResult(output="hello\n"), "hello"),
        (BlockResult(output="hello\r\n"), "hello"),
        (BlockResult(output="two\n\n"), "two\n"),
        (BlockResult(output="no newline"), "no newline"),
        (BlockResult(output=""), ""),
        (
            BlockResult(error="TimeoutError: block exceeded 60s"),
            "<exec_error>TimeoutError: block exceeded 60s</exec_error>",
        ),
        (
            # What a failing block printed stays, before its error (issue 8).
            BlockResult(error="SystemExit: 3", output="partial\n"),
            "partial\n<exec_error>SystemExit: 3</exec_error>",
        ),
        (
            BlockResult(error="SystemExit: 3", output="cut", truncated=True),
            "cut" + TRUNCATION_MARKER + "\n<exec_error>SystemExit: 3</exec_error>",
        ),
        (
            BlockResult(output="cut by executor", truncated=True),
            "cut by executor" + TRUNCATION_MARKER,
        ),
    ],
)
def test_render_result(result: BlockResult, text: str) -> None:
    assert render_result(result) == text


def test_truncation_marker_and_cap() -> None:
    rendered = render_result(BlockResult(output="x" * (OUTPUT_CAP + 10)))
    assert rendered == "x" * OUTPUT_CAP + TRUNCATION_MARKER
    assert "64 KiB" in TRUNCATION_MARKER
    exact = render_result(BlockResult(output="y" * OUTPUT_CAP))
    assert exact == "y" * OUTPUT_CAP


@pytest.mark.parametrize("prefix", [0, 1, 2, 3])
def test_truncation_is_utf8_safe(prefix: int) -> None:
    # Shift a stream of 2-byte and 4-byte characters so the cap falls inside one.
    output = "a" * prefix + "é🙂" * OUTPUT_CAP
    rendered = render_result(BlockResult(output=output))
    assert rendered.endswith(TRUNCATION_MARKER)
    kept = rendered[: -len(TRUNCATION_MARKER)]
    data = kept.encode("utf-8")
    assert OUTPUT_CAP - 4 < len(data) <= OUTPUT_CAP
    assert output.startswith(kept)


def test_truncation_through_expansion() -> None:
    text, _ = expand(f"[<run_python>big:{OUTPUT_CAP}</run_python>]")
    assert text.startswith("[éé")
    assert text.endswith(TRUNCATION_MARKER + "]")
    assert len(text.encode("utf-8")) == OUTPUT_CAP + len(TRUNCATION_MARKER) + 2


@pytest.mark.parametrize(
    ("tag", "seconds"),
    [
        ("<run_python>", 60.0),
        ('<run_python timeout="10">', 10.0),
        ('<run_python timeout="10s">', 10.0),
        ("<run_python timeout=2m>", 120.0),
        ('<run_python timeout="">', 60.0),
    ],
)
def test_block_timeout(tag: str, seconds: float) -> None:
    (block,) = find_blocks(f"{tag}pass</run_python>")
    assert block_timeout(block, 60.0) == seconds
