"""Fixtures of the store's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from daycare_cli.store.state import State


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A state.db made by `State.open`, closed again (test_state.py has its own)."""
    path = tmp_path / "state.db"
    State.open(path).close()
    return path
