"""The main deployment: the daemon and the CLI run as an ordinary user, with that user's
secrets in the home and daycare's files in their default places (~/.local/share/daycare,
~/.config/daycare). A block sees none of it, through the daemon or `task expand`, and a
link a block plants cannot widen the next run's view; a normal block still works.

The tests switch to the user `daycare-tester` (`.ci/run` creates it; created here when
root and missing) with setpriv, using the system's Python of the same minor version with
this checkout and its venv's packages on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import daycare_cli

USER = "daycare-tester"
REPO = Path(daycare_cli.__file__).resolve().parent.parent
SECRETS = {
    ".config/gh/hosts.yml": "github.com:\n  oauth_token: gho_userSECRET1\n",
    ".npmrc": "//registry.npmjs.org/:_authToken=npm_userSECRET2\n",
    ".vault-token": "hvs.userSECRET3",
    ".bash_history": "export AWS_SECRET_ACCESS_KEY=userSECRET4\n",
    ".ssh/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY----- userSECRET5\n",
}
CONFIG_SECRET = "userSECRET6-config"


def _python() -> str:
    """The system's interpreter of our minor version (pyenv's may sit in a 0700 /root)."""
    exe = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{exe} not installed: the user needs a Python like ours")
    return exe


def _user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("not root: cannot switch to the user daycare-tester")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("no user daycare-tester and no useradd to create it")
    subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
    return pwd.getpwnam(USER)


@dataclass
class User:
    """daycare as `daycare-tester`: its home, environment and a daemon to start."""

    pw: pwd.struct_passwd
    python: str
    env: dict[str, str]
    daemon: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread = field(default_factory=threading.Thread)

    @property
    def home(self) -> Path:
        return Path(self.pw.pw_dir)

    @property
    def data(self) -> Path:
        return self.home / ".local" / "share" / "daycare"

    def as_user(self, *argv: str) -> list[str]:
        ids = [f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}", "--init-groups"]
        return ["setpriv", *ids, *argv]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.as_user(self.python, "-m", "daycare_cli", *args),
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def write_task(self, task_id: str, text: str) -> None:
        tasks = self.data / "tasks"
        path = tasks / f"{task_id}.md"
        path.write_text(text)
        os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def start(self) -> None:
        self.daemon = subprocess.Popen(
            self.as_user(self.python, "-m", "daycare_cli", "daemon", "run"),
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc = self.daemon

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 30
        while not any(line.startswith("daycare daemon ready") for line in self.lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("daemon did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.daemon is not None and self.daemon.stdout is not None:
            self.reader.join(5)
            self.daemon.stdout.close()


@pytest.fixture
def user() -> Iterator[User]:
    pw = _user()
    python = _python()
    packages = site.getsitepackages()[0]
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--init-groups",
            "test",
            "-r",
            str(REPO / "daycare_cli" / "__init__.py"),
            "-a",
            "-r",
            packages,
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"{USER} cannot read this checkout or its venv ({REPO})")
    home = Path(pw.pw_dir)
    # A fresh user state each time: the home as a person's, with their secrets in it.
    for rel in (
        ".local",
        ".config",
        ".cache",
        "shared",
        ".ssh",
        ".vault-token",
        ".npmrc",
        ".bash_history",
        ".bashrc",
    ):
        target = home / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for rel, text in SECRETS.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
    (home / ".bashrc").write_text("# the user's own\n")
    config = home / ".config" / "daycare" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[secrets]\napi = "{CONFIG_SECRET}"\n')
    config.chmod(0o600)
    (home / ".local" / "share" / "daycare" / "tasks").mkdir(parents=True)
    (home / "shared").mkdir()
    subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
    env = {
        "HOME": str(home),
        "USER": USER,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "NO_COLOR": "1",
        "PYTHONPATH": f"{REPO}:{packages}",
    }
    u = User(pw, python, env)
    try:
        yield u
    finally:
        u.stop()


SPY = """---
execute: true
---
<run_python>
import os
home = os.path.expanduser({home!r})
for rel in {paths!r}:
    try:
        print(rel, open(os.path.join(home, rel), errors="replace").read().replace("\\n", " "))
    except OSError as exc:
        print(rel, type(exc).__name__)
print("listing", sorted(os.listdir(home)) if os.path.isdir(home) else "absent")
</run_python>
"""
SPIED = [
    *SECRETS,
    ".config/daycare/config.toml",
    ".local/share/daycare/state.db",
    ".local/share/daycare/tasks/spy.md",
    ".local/share/daycare/workspaces/other/files/notes.txt",
]


def _no_secrets(text: str) -> None:
    for secret in [*SECRETS.values(), CONFIG_SECRET]:
        assert secret.strip().split()[-1] not in text


def test_blocks_see_nothing_of_the_users_home(user: User) -> None:
    user.write_task("spy", SPY.format(home=str(user.home), paths=SPIED))
    user.write_task(
        "other",
        "---\nexecute: true\n---\n<run_python>\nopen('notes.txt', 'w').write('x')\n</run_python>\n",
    )
    user.write_task(
        "fine", "---\nexecute: true\n---\n<run_python>\nprint('still fine')\n</run_python>\n"
    )
    doctor = user.cli("doctor", "--json")
    isolation = {c["name"]: c for c in json.loads(doctor.stdout)}["isolation"]
    assert isolation["detail"].startswith("bubblewrap"), isolation
    user.start()
    assert user.cli("task", "run", "other", "--json").returncode == 0

    through_daemon = user.cli("task", "run", "spy", "--json")
    assert through_daemon.returncode == 0, through_daemon.stderr
    run = json.loads(through_daemon.stdout)
    expanded = user.cli("task", "expand", "spy")
    assert expanded.returncode == 0, expanded.stderr
    for output in (run["output"], expanded.stdout):
        for rel in SPIED:
            assert f"{rel} FileNotFoundError" in output, output
        # Only the path down to its own files/ (mount points in an empty tmpfs).
        assert "listing ['.local']" in output
        _no_secrets(output)
    assert run["status"] == "succeeded"
    fine = json.loads(user.cli("task", "run", "fine", "--json").stdout)
    assert (fine["status"], fine["output"].strip()) == ("succeeded", "still fine")
    user.stop()
    _no_secrets("\n".join(user.lines))


def test_a_planted_link_does_not_move_the_next_runs_mounts(user: User) -> None:
    """The attack of the report: a block plants a link where a later run's
    `sandbox.write` entry goes through it, to get the tasks directory writable, add an
    `execute: true` task and have that task append to ~/.bashrc."""
    tasks = user.data / "tasks"
    user.write_task(
        "planter",
        "---\nexecute: true\nsandbox:\n  write: [~/shared]\n---\n<run_python>\n"
        f"import os\nos.symlink({str(tasks)!r}, {str(user.home / 'shared' / 'link')!r})\n"
        "print('planted')\n</run_python>\n",
    )
    user.write_task(
        "victim",
        "---\nexecute: true\nsandbox:\n  write: [~/shared/link]\n---\n<run_python>\n"
        f"open({str(user.home / 'shared' / 'link' / 'evil.md')!r}, 'w').write('x')\n"
        "</run_python>\n",
    )
    user.write_task("relative", "---\nexecute: true\nsandbox:\n  write: [link]\n---\nx\n")
    planted = json.loads(user.cli("task", "run", "planter", "--json").stdout)
    assert planted["status"] == "succeeded", planted["error"]
    assert (user.home / "shared" / "link").is_symlink()
    victim = user.cli("task", "run", "victim", "--json")
    result = json.loads(victim.stdout)
    assert result["status"] == "failed"
    assert "symlinks are not followed" in result["error"]
    assert "victim.md:4" in result["error"]
    assert not (tasks / "evil.md").exists()
    assert (user.home / ".bashrc").read_text() == "# the user's own\n"
    relative = user.cli("task", "run", "relative")
    assert relative.returncode == 4
    assert "relative.md:4" in relative.stderr and "must be absolute paths" in relative.stderr
    user.write_task("fine", "---\nexecute: true\n---\n<run_python>\nprint('ok')\n</run_python>\n")
    fine = json.loads(user.cli("task", "run", "fine", "--json").stdout)
    assert fine["status"] == "succeeded"


def test_reduced_mode_as_a_user_is_refused_unless_allowed(user: User) -> Any:
    config = user.home / ".config" / "daycare" / "config.toml"
    config.write_text(config.read_text() + '[sandbox]\nbwrap = "/nonexistent/bwrap"\n')
    user.write_task("fine", "---\nexecute: true\n---\n<run_python>\nprint('ok')\n</run_python>\n")
    refused = json.loads(user.cli("task", "run", "fine", "--json").stdout)
    assert refused["status"] == "failed" and "bubblewrap cannot run here" in refused["error"]
    ls = user.cli("task", "ls", "--json")
    assert {t["id"]: t.get("isolation") for t in json.loads(ls.stdout)}["fine"] == "none"
    config.write_text(config.read_text() + 'isolation = "reduced"\n')
    allowed = json.loads(user.cli("task", "run", "fine", "--json").stdout)
    assert (allowed["status"], allowed["output"].strip()) == ("succeeded", "ok")
    ls = user.cli("task", "ls", "--json")
    assert {t["id"]: t.get("isolation") for t in json.loads(ls.stdout)}["fine"] == "reduced"


LIMITS = r"""
import asyncio, json, os, sys, tempfile
from pathlib import Path
from daycare_cli.run import blockplan, sandbox
from daycare_cli.run.identity import sandbox_python

CODE = '''
import json, os
limits = {}
for line in open("/proc/self/limits").read().splitlines()[1:]:
    name = line[:26].strip()
    limits[name] = line[26:].split()[:2]
old = os.umask(0)
print(json.dumps({"limits": limits, "umask": old}))
'''
base = Path(tempfile.mkdtemp(dir="/var/tmp"))
out = {"gate": sandbox._probe(None)[0].gate}
# Bound 200 times: bubblewrap's options no longer fit in one pipe write, so that launch
# takes the preexec path.
for name, dirs in (("gated", ()), ("preexec", (Path("/usr/share"),) * 200)):
    spec = sandbox.BlockSpec(code=CODE, files_dir=base / "f", artifacts_dir=base / "a",
                             workspace=base, run={"id": "r"}, env_dirs=dirs)
    ran = asyncio.run(sandbox.run_block(spec))
    bwrap = sandbox._probe(None)[0]
    paths = blockplan.prepare_dirs(spec, None, (), sandbox_python(None), True)
    launch = blockplan.launch_plan(spec, paths, bwrap, None, ["python3"], None, None)
    out[name] = {"error": ran.error, "seen": json.loads(ran.output or "{}"),
                 "gated": launch.gate is not None and launch.preexec is None}
print(json.dumps(out))
"""


def test_a_users_blocks_get_the_same_limits_without_python_before_exec(user: User) -> None:
    """As a user, bubblewrap is spawned with no Python between fork and exec (a vfork):
    it waits at its gate for the limits (launch.Gate). A block sees the same limits and
    umask through the gate as through the preexec path (taken when the options do not
    fit in one pipe write)."""
    done = subprocess.run(
        user.as_user(user.python, "-c", LIMITS),
        env=user.env,
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["gate"] is True
    gated, preexec = out["gated"], out["preexec"]
    assert (gated["gated"], preexec["gated"]) == (True, False)
    assert gated["error"] is None and preexec["error"] is None, (gated, preexec)
    seen = gated["seen"]["limits"]
    assert seen["Max address space"] == [str(512 * 1024 * 1024)] * 2
    assert seen["Max file size"] == [str(64 * 1024 * 1024)] * 2
    assert seen["Max open files"] == ["256", "256"]
    assert seen["Max core file size"] == ["0", "0"]
    assert seen["Max cpu time"] == ["61", "62"]  # timeout 60 s + 1, SIGKILL a second later
    assert 128 <= int(seen["Max processes"][0]) < 128 + 4096
    assert gated["seen"]["umask"] == preexec["seen"]["umask"] == 0o077
    for name in ("Max address space", "Max file size", "Max open files", "Max cpu time"):
        assert preexec["seen"]["limits"][name] == seen[name]
