"""Blocks with packages (issue 9): environments built with the real uv from wheels made in
the test (find-links, offline: no network), cached, shared, read-only in the sandbox.

The home lives under the world-enterable `base` (conftest.py), so that as root the
sandbox user reaches it and what stops a block is the sandbox.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from wheels import tiny_wheels

from daycare_cli.config import Config
from daycare_cli.core.task import PythonSpec
from daycare_cli.core.taskfile import parse_task
from daycare_cli.run.envs import META, EnvCache, uv_message
from daycare_cli.run.runner import Runner, RunRequest
from daycare_cli.store.paths import Paths
from daycare_cli.store.rows import Run
from daycare_cli.store.state import State

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

TINY = """\
---
execute: true
---
<run_python>
# /// script
# dependencies = ["tinyplus"]
# ///
import sys, tinyplus
print(tinyplus.VALUE, sys.prefix)
</run_python>
"""


@dataclass
class World:
    """A home under `base` whose config points uv at the test's wheels, offline."""

    paths: Paths
    config: Config
    state: State
    events: list[dict[str, Any]] = field(default_factory=list)

    def run(self, text: str, task_id: str = "tiny") -> Run:
        path = self.paths.tasks_dir / f"{task_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        task = parse_task(text, path=str(path))
        runner = Runner(self.paths, self.config, self.state, on_event=self.events.append)
        run = asyncio.run(runner.run(RunRequest(task=task)))
        assert run is not None
        return run

    def named(self, name: str, run: Run | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name and (not run or e["run"] == run.id)]

    @property
    def cache(self) -> EnvCache:
        return EnvCache(self.paths.cache_dir, self.config.deps)


@pytest.fixture
def wheels(base: Path) -> Path:
    return tiny_wheels(base / "wheels")


@pytest.fixture
def world(base: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("DAYCARE_CACHE_DIR", raising=False)
    paths = Paths.resolve(home=base / "home")
    paths.home.mkdir()
    raw = {"deps": {"find_links": [str(wheels)], "offline": True}}
    state = State.open(paths.state_db)
    try:
        yield World(paths, Config(paths.config_file, raw), state)
    finally:
        state.close()


def test_first_run_builds_the_environment_and_the_second_reuses_it(
    world: World, isolation: str
) -> None:
    first = world.run(TINY)
    assert first.status == "succeeded", first.error
    value, prefix = (first.output or "").split()
    assert value == "43"  # tinyplus imported tinypkg: a dependency of a dependency
    env = Path(prefix)
    assert env.parent == world.paths.cache_dir / "envs"
    built = world.named("env.build", first)
    assert len(built) == 1 and built[0]["dependencies"] == ["tinyplus"]
    assert len(world.named("env.built", first)) == 1
    meta = json.loads((env / META).read_text())
    inode = (env / "bin").stat().st_ino

    second = world.run(TINY)
    assert second.status == "succeeded", second.error
    assert second.output == first.output
    assert world.named("env.build", second) == [] and world.named("env.built", second) == []
    assert json.loads((env / META).read_text())["built_at"] == meta["built_at"]
    assert (env / "bin").stat().st_ino == inode  # the same directory, not a rebuilt one
    assert [i.key for i in world.cache.infos()] == [env.name]
    ledger = [e.kind for e in world.state.list_events(limit=50)]
    assert ledger.count("env.built") == 1


def test_the_base_interpreter_is_one_blocks_can_see(world: World) -> None:
    run = world.run(TINY)
    assert run.status == "succeeded", run.error
    meta = json.loads(next(world.cache.root.glob(f"*/{META}")).read_text())
    # Not daycare's own interpreter when that lives in a home (pyenv under /root): a venv
    # links to its base, and the sandbox hides homes.
    homes = ("/root/", "/home/", os.path.expanduser("~") + "/")
    assert not meta["base"].startswith(homes), meta["base"]
    assert meta["python_version"].count(".") == 2


def test_the_task_python_key_serves_every_block(world: World) -> None:
    text = (
        "---\nexecute: true\npython:\n  dependencies: [tinypkg]\n---\n"
        "<run_python>\nimport tinypkg\nprint(tinypkg.VALUE)\n</run_python>\n"
        "<run_python>\nimport sys, tinypkg\nprint(tinypkg.VALUE + 1)\n</run_python>\n"
    )
    run = world.run(text, "shared")
    assert run.status == "succeeded", run.error
    assert run.output == "42\n43\n"
    assert len(world.named("env.built", run)) == 1  # both blocks, one environment


def test_blocks_that_need_nothing_keep_the_system_interpreter(world: World) -> None:
    text = TINY + "<run_python>\nimport sys\nprint(sys.prefix)\n</run_python>\n"
    run = world.run(text)
    assert run.status == "succeeded", run.error
    env_line, plain = (run.output or "").strip().splitlines()
    assert env_line.split()[1] != plain
    assert not plain.startswith(str(world.paths.cache_dir))


def test_concurrent_builds_of_one_environment_build_it_once(world: World) -> None:
    spec = PythonSpec(dependencies=("tinyplus",))
    cache = world.cache
    events: list[str] = []

    async def both() -> list[tuple[Any, bool]]:
        return await asyncio.gather(
            cache.ensure(spec, lambda e, **f: events.append(e)),
            cache.ensure(spec, lambda e, **f: events.append(e)),
        )

    (env_a, built_a), (env_b, built_b) = asyncio.run(both())
    assert sorted([built_a, built_b]) == [False, True]
    assert env_a == env_b
    assert events == ["env.build", "env.built"]


def test_two_processes_waiting_on_one_build_build_once(
    world: World, base: Path, wheels: Path
) -> None:
    (world.paths.home / "config.toml").write_text(
        f'[deps]\nfind_links = ["{wheels}"]\noffline = true\n'
    )
    tasks = world.paths.tasks_dir
    tasks.mkdir(parents=True, exist_ok=True)
    for name in ("one", "two"):
        (tasks / f"{name}.md").write_text(TINY)
    key = world.cache.key(PythonSpec(dependencies=("tinyplus",)))
    lock_path = world.cache.root / ".locks" / f"{key}.lock"
    lock_path.parent.mkdir(parents=True)
    env = {**os.environ, "DAYCARE_HOME": str(world.paths.home)}
    env.pop("DAYCARE_CACHE_DIR", None)
    # Hold the build lock so that both runs are waiting for it before either builds.
    with lock_path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "daycare_cli", "task", "run", name, "--local", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name in ("one", "two")
        ]
        deadline = time.monotonic() + 30
        while not all(_holds_open(p.pid, lock_path) for p in procs):
            assert time.monotonic() < deadline, "the runs never waited on the lock"
            assert all(p.poll() is None for p in procs)
            time.sleep(0.05)
        fcntl.flock(held, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert json.loads(out)["output"].startswith("43 ")
    ledger = [e.kind for e in world.state.list_events(limit=50)]
    assert ledger.count("env.built") == 1
    assert ledger.count("run.finished") == 2


def _holds_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:
        return False


def test_an_unresolvable_requirement_is_a_clean_run_error(world: World) -> None:
    text = TINY.replace('"tinyplus"', '"nosuchpkg>=1"')
    run = world.run(text, "unbuildable")
    assert run.status == "failed"
    error = run.error or ""
    assert error.startswith("block 1 (line 4): cannot build the environment for nosuchpkg>=1")
    assert "No solution found" in error and "nosuchpkg" in error  # uv's own words
    assert "fix: offline mode" in error
    assert "Traceback" not in error
    assert world.named("block.start", run) == []  # no block ran on a broken environment
    assert len(world.named("env.failed", run)) == 1
    assert [i for i in world.cache.infos()] == []  # nothing half-built is left
    assert "env.failed" in [e.kind for e in world.state.list_events(limit=20)]


def test_a_missing_interpreter_says_how_to_get_one(world: World) -> None:
    text = TINY.replace("# dependencies", '# requires-python = "==3.99.*"\n# dependencies')
    run = world.run(text, "future")
    assert run.status == "failed"
    assert "No interpreter found for Python ==3.99" in (run.error or "")
    assert "fix: install a Python matching ==3.99.* system-wide" in (run.error or "")
    assert "deps.python_downloads true" in (run.error or "")


def test_the_environment_is_read_only_inside_the_sandbox(world: World, isolation: str) -> None:
    code = """\
# /// script
# dependencies = ["tinypkg"]
# ///
import os, pathlib, sys, tinypkg
pkg = pathlib.Path(tinypkg.__file__)
for what, act in [
    ("edit", lambda: pkg.write_text("VALUE = 0")),
    ("add", lambda: (pkg.parent / "evil.py").write_text("x = 1")),
    ("site", lambda: pathlib.Path(sys.prefix, "lib", "planted.pth").write_text("")),
    ("chmod", lambda: os.chmod(pkg, 0o666)),
]:
    try:
        act()
        print(what, "WRITTEN")
    except OSError as exc:
        print(what, "refused", exc.errno)
"""
    text = f"---\nexecute: true\n---\n<run_python>\n{code}</run_python>\n"
    run = world.run(text, "tamper")
    assert run.status == "succeeded", run.error
    lines = (run.output or "").splitlines()
    assert [line.split()[:2] for line in lines if line.split()[0] != "chmod"] == [
        ["edit", "refused"],
        ["add", "refused"],
        ["site", "refused"],
    ]
    if isolation == "bubblewrap" or os.geteuid() == 0:
        assert "chmod refused" in run.output or ""
    env = next(world.cache.root.glob(f"*/{META}")).parent
    assert "evil.py" not in os.listdir(next(env.glob("lib/python*/site-packages/tinypkg")))


def test_the_block_still_cannot_see_the_home(world: World, require_bwrap: None) -> None:
    other = world.run(TINY.replace('"tinyplus"', '"tinypkg", "tinyplus"'), "other")
    assert other.status == "succeeded", other.error
    home = world.paths.home
    hidden = [
        str(home / "config.toml"),
        str(home / "tasks"),
        str(home / "cache" / "uv"),
        str(world.paths.workspaces / "other"),
    ]
    db, envs_dir = str(home / "state.db"), str(world.cache.root)
    code = f"""\
# /// script
# dependencies = ["tinyplus"]
# ///
import os, sys
for p in {hidden!r}:
    print(p, os.path.exists(p))
try:  # a hidden file is /dev/null in the view
    with open({db!r}, "rb") as db:
        print("db", db.read(6) == b"SQLite")
except OSError:
    print("db", False)
print("envs", sorted(os.listdir({envs_dir!r})))
print("mine", sys.prefix)
"""
    (home / "config.toml").write_text("# the daemon's config\n")
    run = world.run(f"---\nexecute: true\n---\n<run_python>\n{code}</run_python>\n", "peek")
    assert run.status == "succeeded", run.error
    lines = dict(line.split(" ", 1) for line in (run.output or "").splitlines())
    mine = Path(lines.pop("mine"))
    envs = lines.pop("envs")
    assert all(seen == "False" for seen in lines.values()), lines
    assert os.path.exists(home / "cache" / "uv") and os.path.exists(home / "tasks")
    # Only its own environment: not the other task's, nor the locks.
    assert envs == repr([mine.name])


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: blocks run as daycare-sandbox")
def test_an_environment_below_a_private_directory_still_runs(
    base: Path, wheels: Path, require_bwrap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = base / "private"
    private.mkdir(mode=0o700)  # like /root: the sandbox user cannot enter it
    monkeypatch.setenv("DAYCARE_CACHE_DIR", str(private / "cache"))
    paths = Paths.resolve(home=base / "home")
    paths.home.mkdir()
    assert paths.cache_dir == private / "cache"
    state = State.open(paths.state_db)
    try:
        raw = {"deps": {"find_links": [str(wheels)], "offline": True}}
        world = World(paths, Config(paths.config_file, raw), state)
        run = world.run(
            TINY.replace("print(tinyplus.VALUE, sys.prefix)", "print(os.getuid())").replace(
                "import sys, tinyplus", "import os, sys, tinyplus"
            )
        )
    finally:
        state.close()
    assert run.status == "succeeded", run.error
    assert run.output != "0"  # not root: the sandbox user reached it through the stage


def test_uv_messages_keep_the_error_and_drop_progress_lines() -> None:
    out = (
        "Using Python 3.11.2 environment at: /x\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nosuchpkg was not found\n\n"
        "hint: Packages were unavailable\n"
    )
    assert uv_message(out) == (
        "No solution found when resolving dependencies cause: Because nosuchpkg was not found "
        "hint: Packages were unavailable"
    )
    assert uv_message("") == "uv failed without a message"
    assert uv_message("error: " + "x" * 5000).endswith("…")
