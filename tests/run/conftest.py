"""Fixtures for running real sandboxed blocks.

The workspace lives in a fresh directory under /var/tmp that every user may enter, so
that when the tests run as root (CI does) the unprivileged sandbox user can reach it
and what stops a block is the sandbox, not a 0700 pytest directory. Tests that need a
path the block must not reach keep it outside /tmp too: bubblewrap gives every block a
private /tmp, which would hide a /tmp path whether or not the rule under test works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockspec import block_spec
from inbox import Inbox
from openai_fake import FakeOpenAI
from runhome import Home

from daycare_cli.run.sandbox import BlockOutcome, isolation_level, run_block
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

HAVE_BWRAP = isolation_level()[0] == "bubblewrap"


@pytest.fixture
def require_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip (with the reason) where bubblewrap isolation is unavailable."""
    if not HAVE_BWRAP:
        pytest.skip(f"bubblewrap isolation unavailable: {isolation_level()[1]}")
    monkeypatch.delenv("DAYCARE_SANDBOX", raising=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A world-enterable scratch directory outside /tmp, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="daycare-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["bubblewrap", "reduced"])
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once under bubblewrap (when available) and once reduced."""
    if request.param == "reduced":
        monkeypatch.setenv("DAYCARE_SANDBOX", "reduced")
    elif not HAVE_BWRAP:
        pytest.skip(f"bubblewrap isolation unavailable: {isolation_level()[1]}")
    else:
        monkeypatch.delenv("DAYCARE_SANDBOX", raising=False)
    return str(request.param)


Runner = Callable[..., BlockOutcome]


@pytest.fixture
def block(base: Path) -> Runner:
    """`block(code, **spec_fields)`: run one block in the task workspace under `base`."""

    def run(code: str, **kw: Any) -> BlockOutcome:
        return asyncio.run(run_block(block_spec(base, code, **kw)))

    return run


@pytest.fixture
def alive_with() -> Callable[[str], list[int]]:
    """`alive_with(marker)`: live processes whose environment holds `marker`."""
    return _alive_with


def _alive_with(marker: str) -> list[int]:
    # Zombies have no environment left, so only processes still running match.
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """A loopback HTTP server collecting notifications (apprise json://)."""
    box = Inbox()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A temp daycare home (state database open) with llm's user dir in `tmp_path/llm`."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    for name in ("DAYCARE_CONFIG", "DAYCARE_TASKS_DIR"):
        monkeypatch.delenv(name, raising=False)
    paths = Paths.resolve(home=tmp_path / "home")
    paths.home.mkdir()
    state = State.open(paths.state_db)
    try:
        yield Home(paths, state)
    finally:
        state.close()


@pytest.fixture
def fake_openai(tmp_path: Path) -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, its models installed in `tmp_path/llm` (the home's llm dir)."""
    server = FakeOpenAI()
    server.install(tmp_path / "llm")
    try:
        yield server
    finally:
        server.close()
