"""The keys of a task file about how its blocks run: `sandbox`, `python`, `env`, and the
PEP 723 metadata a block may carry (DESIGN.md §3, §5).

`BlockSettingsReader` adds their readers to the trigger reader; `core/taskfile.py` builds
the whole task with it. Every error names the line and column and how to fix it.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import Node, ScalarNode, SequenceNode

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.frontmatter import source_line
from daycare_cli.core.prompt import Block, find_blocks
from daycare_cli.core.requirements import (
    RequirementError,
    check_requirement,
    check_version,
    script_metadata,
)
from daycare_cli.core.task import MIB, PythonSpec, SandboxSpec
from daycare_cli.core.triggerfile import TriggerReader
from daycare_cli.core.yamlrules import is_null, is_plain, kind_of, label, suggest

SANDBOX_KEYS: tuple[str, ...] = ("network", "read", "write", "memory", "cpu", "disk")
PYTHON_KEYS: tuple[str, ...] = ("dependencies", "version")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_SIZE_UNITS: dict[str, int] = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024**2 * MIB}
MIN_MEMORY = 16 * MIB
MAX_SIZE = 1024**2 * MIB


def check_block_metadata(body: str, body_line: int, path: str, text: str) -> None:
    """Raise for a block whose PEP 723 `# /// script` metadata is malformed."""
    for block in find_blocks(body):
        try:
            script_metadata(block.code)
        except RequirementError as exc:
            line, col = _code_position(body, block, exc.line, exc.col)
            line += body_line - 1
            raise TaskFileError(
                exc.message,
                path=path,
                line=line,
                col=col,
                hint=exc.hint,
                excerpt=source_line(text, line),
            ) from None


def _code_position(body: str, block: Block, line: int, col: int) -> tuple[int, int]:
    """A 1-based (line, col) in a block's cleaned code -> (line, col) in the body.

    `core/prompt.py` dedents the code and drops blank lines at both ends: add them back.
    """
    if not line:
        return block.line, 0
    raw = body[block.code_start : block.code_end].split("\n")
    lead = next((i for i, text in enumerate(raw) if text.strip()), 0)
    first = body.count("\n", 0, block.code_start) + 1
    code_lines = block.code.split("\n")
    raw_line = raw[min(lead + line - 1, len(raw) - 1)]
    code_line = code_lines[min(line - 1, len(code_lines) - 1)]
    indent = len(raw_line) - len(code_line)
    return first + lead + line - 1, (indent + col if col else 0)


class BlockSettingsReader(TriggerReader):
    """Reads `sandbox:`, `python:` and `env:` from composed YAML nodes."""

    def sandbox(self, node: Node) -> SandboxSpec:
        values: dict[str, Any] = {}
        for name, knode, vnode in self.pairs(node, "sandbox"):
            if name not in SANDBOX_KEYS:
                raise self.error(
                    knode,
                    f"unknown sandbox key `{name}`",
                    suggest(name, SANDBOX_KEYS) or f"the keys are: {', '.join(SANDBOX_KEYS)}",
                )
            if is_null(vnode):
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
                items = self.items(vnode, f"sandbox.{name}")
                entries = [(self.path_entry(item, name), item) for item in items]
                values[name] = tuple(e for e, _ in entries)
                values[f"{name}_at"] = tuple(self.fm_line + n.start_mark.line for _, n in entries)
            elif name in ("memory", "disk"):
                values[name] = self.size(vnode, f"sandbox.{name}")
            else:
                values["cpu"] = self.duration(vnode, "sandbox.cpu", above=True)
        return SandboxSpec(**values)

    def python(self, node: Node) -> PythonSpec:
        """`python: {dependencies: [...], version: "3.12"}`, each requirement checked."""
        deps: list[str] = []
        version: str | None = None
        for name, knode, vnode in self.pairs(node, "python"):
            if name not in PYTHON_KEYS:
                hint = suggest(name, PYTHON_KEYS)
                if name in ("requires-python", "requires_python", "python"):
                    hint = "did you mean `version`?"
                raise self.error(
                    knode,
                    f"unknown python key `{name}`",
                    hint or f"the keys are: {', '.join(PYTHON_KEYS)}",
                )
            if is_null(vnode):
                continue
            if name == "dependencies":
                for item in self.items(vnode, "python.dependencies"):
                    deps.append(self.requirement(item))
            else:
                value = self.string(vnode, "python.version")
                try:
                    version = check_version(value)
                except RequirementError as exc:
                    raise self.error(vnode, exc.message, exc.hint) from None
        return PythonSpec(dependencies=tuple(dict.fromkeys(deps)), version=version)

    def requirement(self, node: Node) -> str:
        """One PEP 508 requirement; an error points at the character packaging stopped at."""
        value = self.string(node, "python.dependencies[]")
        assert isinstance(node, ScalarNode)
        try:
            return check_requirement(value)
        except RequirementError as exc:
            quoted = 0 if is_plain(node) else 1
            col0 = node.start_mark.column + (quoted + exc.col - 1 if exc.col else 0)
            raise self.error((node.start_mark.line, col0), exc.message, exc.hint) from None

    def path_entry(self, node: Node, name: str) -> str:
        """One `sandbox.read`/`sandbox.write` entry: absolute or `~/…`, no `.` or `..`.

        Relative entries were resolved against files/, which a block controls; now the
        host resolves each entry, without following symlinks, when a block starts.
        """
        key = f"sandbox.{name}[]"
        value = self.string(node, key)
        home = value == "~" or value.startswith("~/")
        if not (value.startswith("/") or home):
            raise self.error(
                node,
                f"`sandbox.{name}` entries must be absolute paths or start with `~/`, "
                f"not {value!r}",
                f"{name}: [/var/log]  (or {name}: [~/reports] for a path in your home)",
            )
        parts = value.split("/")[1:]
        if any(p in (".", "..") for p in parts) or "\0" in value:
            raise self.error(
                node,
                f"`sandbox.{name}` entry {value!r} must not contain `.` or `..`",
                f"write the path without them, e.g. {name}: [/srv/data]",
            )
        return value

    def size(self, node: Node, key: str = "sandbox.memory") -> int:
        short = key.split(".")[-1]
        value = self.scalar(node, key, "a size like 512M or 1G")
        found = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif found is not None:
            size = int(float(found[1]) * _SIZE_UNITS[found[2].lower()])
        else:
            raise self.error(
                node,
                f"{label(key)} must be a size like 512M or 1G, not {value!r}",
                "memory: 512M" if short == "memory" else "disk: 256M",
            )
        if short == "memory" and size < MIN_MEMORY:
            raise self.error(
                node,
                f"{label(key)} must be at least 16M, not {value!r}: Python cannot start with less",
                "memory: 512M (a bare number is bytes)",
            )
        if size > MAX_SIZE:
            raise self.error(
                node, f"{label(key)} must be at most 1T, not {value!r}", f"{short}: 1G"
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
            if not isinstance(vnode, ScalarNode) or is_null(vnode):
                what = "an empty value" if is_null(vnode) else kind_of(vnode)
                raise self.error(
                    vnode,
                    f"env `{name}` must be a string, not {what}",
                    f'{name}: ""' if is_null(vnode) else f'{name}: "text"',
                )
            # Numbers and booleans become the text as written: `PORT: 8080` -> "8080".
            env[name] = str(vnode.value)
        return env
