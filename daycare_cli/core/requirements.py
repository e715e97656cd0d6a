"""What a block requires of Python: PEP 723 inline metadata, PEP 508 requirements, the
interpreter version, and the key of the environment that satisfies them (issue 9).

A block may start with the inline metadata that `uv run` and `pipx run` read:

    # /// script
    # requires-python = ">=3.11"
    # dependencies = ["httpx>=0.27"]
    # ///

and a task may set `python: {dependencies: [...], version: "3.12"}` for all its blocks.
Requirements are checked with `packaging`, the reference implementation of PEP 508 that
pip and the PyPA tools share (a hand-written grammar would drift from it; asking uv
means a subprocess, so no positions and no pure lint). Errors carry the line and column
inside the text they were read from; `core/taskfile.py` moves them onto the file.

Pure: no I/O. The platform that goes into an environment's key is an argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daycare_cli.core.prompt import Block, find_blocks
from daycare_cli.core.task import PythonSpec, Task

if TYPE_CHECKING:
    from packaging.requirements import InvalidRequirement

# packaging and tomllib are imported where used: every task file is read by this module's
# callers, most without a `python:` key or metadata, and `task ls` stays fast (26 ms).

# PEP 723's reference expression, verbatim.
SCRIPT_RE = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_OPENING_RE = re.compile(r"(?m)^# /// script\s*$")
_BARE_VERSION_RE = re.compile(r"\d+(\.\d+){0,2}")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
SCRIPT_KEYS: tuple[str, ...] = ("dependencies", "requires-python", "tool")
KEY_VERSION = 1  # bump when what an environment holds for the same key changes


@dataclass
class RequirementError(ValueError):
    """A malformed requirement, version or metadata block.

    `line` and `col` are 1-based within the text read (0: unknown).
    """

    message: str
    line: int = 0
    col: int = 0
    hint: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)


def check_requirement(text: str) -> str:
    """A PEP 508 requirement, normalised (`HTTPX >= 0.27` -> `httpx>=0.27`).

    Raises RequirementError whose `col` points into `text`.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        reason, col = _requirement_problem(exc)
        raise RequirementError(
            f"`{text}` is not a valid requirement: {reason}",
            col=col,
            hint='write a PEP 508 requirement, e.g. "httpx>=0.27" or "pandas[excel]==2.2.*"',
        ) from None
    req.name = canonicalize_name(req.name)
    return str(req)


def _requirement_problem(exc: InvalidRequirement) -> tuple[str, int]:
    """packaging's first line and the 1-based column its caret points at."""
    lines = str(exc).splitlines()
    reason = lines[0] if lines else "cannot be parsed"
    span = getattr(exc.__cause__, "span", None)  # packaging >= 22: (start, end) in the text
    if isinstance(span, tuple) and len(span) == 2 and isinstance(span[1], int):
        return reason, span[1] + 1
    caret = lines[-1] if len(lines) >= 3 else ""
    # The caret line is indented 4 spaces like the quoted text above it.
    return reason, (caret.index("^") - 3 if "^" in caret else 0)


def check_version(text: str) -> str:
    """A Python version request as a specifier set: `3.12` -> `==3.12.*`, `3.12.1` ->
    `==3.12.1`, `>=3.11,<3.14` as written (normalised). Raises RequirementError."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    value = text.strip()
    if _BARE_VERSION_RE.fullmatch(value):
        parts = value.split(".")
        if len(parts) == 1:
            return f"=={value}.*"
        return f"=={value}.*" if len(parts) == 2 else f"=={value}"
    try:
        spec = SpecifierSet(value)
    except InvalidSpecifier:
        raise RequirementError(
            f"`{text}` is not a Python version",
            hint='write a version like "3.12", or a range like ">=3.11,<3.14"',
        ) from None
    if not str(spec):
        raise RequirementError("the Python version must not be empty", hint='e.g. "3.12"')
    return str(spec)


def script_metadata(code: str) -> PythonSpec | None:
    """The PEP 723 `script` metadata of a block's code, or None when it has none.

    Raises RequirementError (line and column within `code`) for a malformed block.
    """
    found = [m for m in SCRIPT_RE.finditer(code) if m.group("type") == "script"]
    if not found:
        opening = _OPENING_RE.search(code)
        if opening is not None:
            raise RequirementError(
                "the `# /// script` metadata block is not closed",
                line=_line_of(code, opening.start()),
                col=1,
                hint="end it with a line `# ///`; every line between starts with `#`",
            )
        return None
    if len(found) > 1:
        raise RequirementError(
            "a block has more than one `# /// script` metadata block",
            line=_line_of(code, found[1].start()),
            col=1,
            hint="merge them into one",
        )
    import tomllib

    match = found[0]
    first = _line_of(code, match.start("content"))  # line of the first content line
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in match.group("content").splitlines(keepends=True)
    )
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        pos = _TOML_POS_RE.search(str(exc))
        line, col = (int(pos[1]), int(pos[2])) if pos else (1, 0)
        reason = _TOML_POS_RE.sub("", str(exc)).strip()
        raise RequirementError(
            f"the `# /// script` metadata is not valid TOML: {reason}",
            line=first + line - 1,
            col=col + 2 if col else 0,
            hint='write TOML after "# ", e.g. # dependencies = ["httpx>=0.27"]',
        ) from None
    return _spec_of(data, code, match.start("content"), first)


def _spec_of(data: dict[str, object], code: str, start: int, first: int) -> PythonSpec:
    """Check the keys and values of the metadata table; positions point into `code`."""
    for key in data:
        if key not in SCRIPT_KEYS:
            raise RequirementError(
                f"unknown key `{key}` in the `# /// script` metadata",
                line=_find_line(code, start, key, first),
                col=3,
                hint=f"the keys are: {', '.join(SCRIPT_KEYS)}",
            )
    deps = data.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise RequirementError(
            "`dependencies` must be a list of strings",
            line=_find_line(code, start, "dependencies", first),
            col=3,
            hint='# dependencies = ["httpx>=0.27"]',
        )
    normal: list[str] = []
    for dep in deps:
        try:
            normal.append(check_requirement(dep))
        except RequirementError as exc:
            line, col = _find_literal(code, start, dep, first)
            exc.line, exc.col = line, (col + exc.col - 1 if col and exc.col else col)
            raise
    version = None
    if "requires-python" in data:
        raw = data["requires-python"]
        line = _find_line(code, start, "requires-python", first)
        if not isinstance(raw, str):
            raise RequirementError(
                "`requires-python` must be a string",
                line=line,
                col=3,
                hint='# requires-python = ">=3.11"',
            )
        try:
            version = check_version(raw)
        except RequirementError as exc:
            exc.line, exc.col = line, 3
            raise
    return PythonSpec(dependencies=_unique(normal), version=version)


def merge(task: PythonSpec, block: PythonSpec | None) -> PythonSpec:
    """The task's `python:` and a block's own metadata together: the dependencies of
    both, and both version constraints."""
    if block is None:
        return task
    versions = [v for v in (task.version, block.version) if v]
    return PythonSpec(
        dependencies=_unique([*task.dependencies, *block.dependencies]),
        version=",".join(versions) if versions else None,
    )


def block_python(task: PythonSpec, code: str) -> PythonSpec:
    """What one block needs: the task's `python:` plus the block's metadata."""
    return merge(task, script_metadata(code))


def task_needs(task: Task) -> list[tuple[Block, PythonSpec]]:
    """Each block of an `execute: true` task that needs an environment, with what it needs.

    Blocks that need nothing (no `python:` in the task, no metadata) are left out: they
    run on the system interpreter as before. Raises RequirementError for bad metadata
    (never for a task `core/taskfile.py` accepted).
    """
    if not task.execute:
        return []
    out = []
    for block in find_blocks(task.body):
        spec = block_python(task.python, block.code)
        if not spec.empty:
            out.append((block, spec))
    return out


def env_key(spec: PythonSpec, platform: str) -> str:
    """The content address of the environment for `spec` on `platform` (16 hex digits).

    The same requirements in any order and spelling give the same key.
    """
    import hashlib
    import json

    from packaging.specifiers import SpecifierSet

    version = str(SpecifierSet(spec.version)) if spec.version else None
    doc = {
        "v": KEY_VERSION,
        "dependencies": sorted(set(spec.dependencies)),
        "python": version,
        "platform": platform,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:16]


def describe(spec: PythonSpec) -> str:
    """A short line for people: `httpx>=0.27, pandas (Python ==3.12.*)`."""
    text = ", ".join(spec.dependencies) or "no packages"
    return f"{text} (Python {spec.version})" if spec.version else text


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _find_line(code: str, start: int, word: str, default: int) -> int:
    """The line of the first metadata line from `start` that mentions `word`."""
    pos = code.find(word, start)
    return _line_of(code, pos) if pos >= 0 else default


def _find_literal(code: str, start: int, value: str, default: int) -> tuple[int, int]:
    """(line, 1-based column of the value's first character) of a quoted TOML string."""
    for quote in ('"', "'"):
        pos = code.find(quote + value + quote, start)
        if pos >= 0:
            return _line_of(code, pos), pos - (code.rfind("\n", 0, pos) + 1) + 2
    return default, 0
