"""`daycare deps sync|ls|prune`, `task lint` of requirements and `task run`'s build line
(issue 9), with the real uv installing wheels the test writes (find-links, offline)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "run"))  # tests/run/wheels.py
from wheels import tiny_wheels

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

POLL = """\
---
name: Poll
execute: true
python:
  dependencies: ["tinyplus>=2"]
---
<run_python>
import tinyplus
print(tinyplus.VALUE)
</run_python>
"""
DIGEST = """\
---
execute: true
---
<run_python>
# /// script
# dependencies = ["tinypkg"]
# ///
import tinypkg
print(tinypkg.VALUE)
</run_python>
"""


@pytest.fixture
def offline(home: Path, tmp_path: Path) -> Path:
    """config.toml pointing uv at wheels written by the test, offline."""
    wheels = tiny_wheels(tmp_path / "wheels")
    (home / "config.toml").write_text(f'[deps]\nfind_links = ["{wheels}"]\noffline = true\n')
    return wheels


def envs_of(home: Path) -> list[str]:
    root = home / "cache" / "envs"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_lint_points_at_a_bad_requirement(run: Any, write: Callable[[str, str], Path]) -> None:
    write("poll", POLL.replace('"tinyplus>=2"', '"tinyplus>=>2"'))
    write("digest", DIGEST.replace('"tinypkg"', '"tinypkg[x"'))
    result = run("task", "lint")
    assert result.exit_code == 4
    assert "poll.md:5:27: `tinyplus>=>2` is not a valid requirement" in result.stdout
    assert "digest.md:6:29: `tinypkg[x` is not a valid requirement" in result.stdout
    assert "fix: write a PEP 508 requirement" in result.stdout
    assert "2 files checked, 2 invalid" in result.stdout


def test_the_first_run_says_it_builds_and_the_next_does_not(
    run: Any, write: Callable[[str, str], Path], offline: Path, home: Path
) -> None:
    write("poll", POLL)
    first = run("task", "run", "poll", "--local")
    assert first.exit_code == 0, first.output
    assert "building the Python environment of block 1 (tinyplus>=2)" in first.stderr
    assert "built in" in first.stderr
    assert first.stdout.rstrip().endswith("43")
    second = run("task", "run", "poll", "--local")
    assert second.exit_code == 0
    assert "building" not in second.stderr
    assert len(envs_of(home)) == 1


def test_sync_builds_ahead_and_ls_shows_what_is_there(
    run: Any, write: Callable[[str, str], Path], offline: Path, home: Path
) -> None:
    write("poll", POLL)
    write("digest", DIGEST)
    write("plain", "---\nexecute: true\n---\n<run_python>\nprint(1)\n</run_python>\n")
    synced = run("deps", "sync")
    assert synced.exit_code == 0, synced.output
    assert "2 environments ready (2 built) for 3 tasks" in synced.stdout
    assert len(envs_of(home)) == 2
    again = run("deps", "sync", "poll", "--json")
    assert again.exit_code == 0
    records = json.loads(again.stdout)
    assert [(r["task"], r["block"], r["built"]) for r in records] == [("poll", 1, False)]

    listed = json.loads(run("deps", "ls", "--json").stdout)
    assert {tuple(e["tasks"]) for e in listed} == {("poll",), ("digest",)}
    for e in listed:
        assert e["ready"] and e["size"] > 0 and e["python_version"].startswith("3.")
        assert e["key"] in envs_of(home) and Path(e["path"]).is_dir()
    assert {tuple(e["dependencies"]) for e in listed} == {("tinyplus>=2",), ("tinypkg",)}
    table = run("deps", "ls").stdout
    assert "ENV" in table and "SIZE" in table and "tinyplus>=2" in table and "poll" in table
    built = [e for e in _ledger(run) if e["kind"] == "env.built"]
    assert sorted(e["task"] for e in built) == ["digest", "poll"]
    run_after = run("task", "run", "digest", "--local")
    assert "building" not in run_after.stderr and run_after.exit_code == 0


def _ledger(run: Any) -> list[dict[str, Any]]:
    result = run("events", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_prune_removes_what_no_task_needs(
    run: Any, write: Callable[[str, str], Path], offline: Path, home: Path
) -> None:
    write("poll", POLL)
    digest = write("digest", DIGEST)
    assert run("deps", "sync").exit_code == 0
    keys = {e["tasks"][0]: e["key"] for e in json.loads(run("deps", "ls", "--json").stdout)}
    digest.unlink()
    recent = run("deps", "prune")  # used a moment ago: kept for an hour by default
    assert recent.exit_code == 0 and "removed 0 environments" in recent.stdout
    dry = run("deps", "prune", "--min-age", "0", "--dry-run")
    assert "would remove 1 environment" in dry.stdout and len(envs_of(home)) == 2
    pruned = run("deps", "prune", "--min-age", "0", "--json")
    assert pruned.exit_code == 0
    report = json.loads(pruned.stdout)
    assert report["removed"] == [keys["digest"]] and report["freed"] > 0
    assert envs_of(home) == [keys["poll"]]
    assert run("task", "run", "poll", "--local").exit_code == 0  # the kept one still works


def test_sync_reports_a_failed_build_and_builds_the_rest(
    run: Any, write: Callable[[str, str], Path], offline: Path, home: Path
) -> None:
    write("poll", POLL)
    write("broken", POLL.replace("tinyplus>=2", "nosuchpkg"))
    result = run("deps", "sync")
    assert result.exit_code == 1
    assert "broken.md: block 1 (line 7): cannot build the environment for nosuchpkg" in (
        " ".join(result.stderr.split())
    )
    assert "fix: offline mode" in result.stderr
    assert "Traceback" not in result.output
    assert "1 environment ready (1 built) for 2 tasks" in result.stdout
    assert len(envs_of(home)) == 1


def test_bad_prune_age_is_a_usage_error(run: Any, home: Path) -> None:
    result = run("deps", "prune", "--min-age", "soon")
    assert result.exit_code == 2
    assert "--min-age" in result.stderr


def test_an_empty_cache_lists_nothing(run: Any, home: Path) -> None:
    result = run("deps", "ls")
    assert result.exit_code == 0 and "no environments" in result.stdout
    assert json.loads(run("deps", "ls", "--json").stdout) == []
