"""A block's spec for tests that run blocks directly (conftest's `block`, test_spare.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from daycare_cli.run.sandbox import BlockSpec


def block_spec(base: Path, code: str, **kw: Any) -> BlockSpec:
    """A block of task `t1` in the workspace under `base`, with a fresh run id;
    `kw` replaces any field."""
    ws = base / "ws"
    fields: dict[str, Any] = {
        "code": code,
        "files_dir": ws / "files",
        "artifacts_dir": ws / "runs" / "r1" / "artifacts",
        "workspace": ws,
        "timeout": 10.0,
        "task": {"id": "t1", "name": "Task one"},
        "run": {"id": f"run-{uuid.uuid4().hex}", "trigger": "manual", "slot": None},
    }
    fields.update(kw)
    return BlockSpec(**fields)
