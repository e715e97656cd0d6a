"""`daycare daemon install|start|stop` and the shipped systemd unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from daycare_cli.daemon.unit import UNIT, unit_text
from daycare_cli.daemon.watcher import watch_filter
from daycare_cli.store.paths import Paths, daemon_pid, pid_alive

REPO = Path(__file__).resolve().parents[2]


def daycare(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DAYCARE_HOME": str(home), **(env or {})}
    full.pop("DAYCARE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "daycare_cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )


def test_shipped_unit_matches_the_one_install_writes() -> None:
    assert (REPO / "daemon" / "daycare.service").read_text() == UNIT
    text = unit_text("/opt/bin/daycare")
    assert "ExecStart=/opt/bin/daycare daemon run" in text
    assert "Type=notify" in text and "WatchdogSec=" in text


def test_install_writes_the_user_unit(tmp_path: Path) -> None:
    config_home = tmp_path / "xdg"
    # An empty PATH apart from the interpreter's dir: no systemctl, no loginctl.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    res = daycare(
        tmp_path / "home",
        "daemon",
        "install",
        env={"XDG_CONFIG_HOME": str(config_home), "PATH": str(bindir)},
    )
    assert res.returncode == 0, res.stderr
    unit = config_home / "systemd" / "user" / "daycare.service"
    assert unit.exists()
    assert "daemon run" in unit.read_text()
    assert "systemctl not found" in res.stdout


def test_start_status_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[webhook]\nport = 0\n")
    res = daycare(home, "daemon", "start")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "daemon started" in res.stdout
    paths = Paths.resolve(home=home)
    pid = daemon_pid(paths)
    assert pid is not None and pid_alive(pid)
    again = daycare(home, "daemon", "start")
    assert "already running" in again.stdout
    status = daycare(home, "daemon", "status", "--json")
    assert status.returncode == 0 and '"running": true' in status.stdout
    stop = daycare(home, "daemon", "stop")
    assert stop.returncode == 0 and "daemon stopped" in stop.stdout
    assert not pid_alive(pid)
    after = daycare(home, "daemon", "status")
    assert after.returncode == 1 and "not running" in after.stdout
    assert "daycare daemon ready" in (home / "daemon.log").read_text()


def test_watch_filter_ignores_editor_files_and_archive(tmp_path: Path) -> None:
    accept = watch_filter(tmp_path)
    cases = {
        "backup.md": True,
        ".backup.md.swp": False,
        "backup.md~": False,
        ".#backup.md": False,
        "4913": False,
        ".hidden.md": False,
        "notes.txt": False,
        "#backup.md#": False,
    }
    for name, expected in cases.items():
        assert accept(None, str(tmp_path / name)) is expected, name
    assert accept(None, str(tmp_path / ".archive" / "old.md")) is False


def test_task_ls_tells_a_stale_version_from_a_never_valid_file(tmp_path: Path) -> None:
    import json
    import time

    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text("[webhook]\nport = 0\n")
    (home / "tasks" / "never.md").write_text("---\nschedule: */5 * * * *\n---\nx\n")
    (home / "tasks" / "good.md").write_text("---\nschedule: '0 9 * * *'\n---\nx\n")
    assert daycare(home, "daemon", "start").returncode == 0
    try:
        (home / "tasks" / "good.md").write_text("---\nschedule: '0 99 * * *'\n---\nx\n")
        deadline = time.monotonic() + 10
        while True:
            rows = {r["id"]: r for r in json.loads(daycare(home, "task", "ls", "--json").stdout)}
            if rows["good"]["error"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # The daemon saw the broken edit when its status lists it as stale.
        while time.monotonic() < deadline:
            status = json.loads(daycare(home, "daemon", "status", "--json").stdout)
            if any(e.get("stale") for e in status["errors"]):
                break
            time.sleep(0.1)
        rows = {r["id"]: r for r in json.loads(daycare(home, "task", "ls", "--json").stdout)}
        assert rows["good"]["error"] and rows["good"]["daemon"]["stale"] is True
        assert rows["never"]["error"] and rows["never"]["daemon"]["stale"] is False
        text = daycare(home, "task", "ls").stdout
        stale_lines = [line for line in text.splitlines() if "last good version" in line]
        assert len(stale_lines) == 1 and " good " in stale_lines[0]
    finally:
        daycare(home, "daemon", "stop")


def test_logs_shows_recent_runs_and_follows_new_ones(tmp_path: Path) -> None:
    import select
    import time

    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text("[webhook]\nport = 0\n")
    (home / "tasks" / "tick.md").write_text(
        "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n<run_python>\nprint('t')\n"
        "</run_python>\n"
    )
    (home / "tasks" / "other.md").write_text("---\ntriggers:\n  - every: 1s\n---\nx\n")
    assert daycare(home, "daemon", "start").returncode == 0
    try:
        env = {**os.environ, "DAYCARE_HOME": str(home)}
        follow = subprocess.Popen(
            [sys.executable, "-m", "daycare_cli", "logs", "-f", "-n", "0", "tick"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        seen: list[str] = []
        deadline = time.monotonic() + 15
        assert follow.stdout is not None
        while time.monotonic() < deadline and sum("run.end" in x for x in seen) < 2:
            ready, _, _ = select.select([follow.stdout], [], [], 0.5)
            if ready:
                seen.append(follow.stdout.readline())
        follow.terminate()
        follow.wait(timeout=5)
        follow.stdout.close()
        # Streamed from the daemon: block and run events of `tick` only, as they happen.
        assert sum("run.end status=succeeded" in x for x in seen) >= 2, seen
        assert any("block.end" in x for x in seen)
        run_ids = {x.split()[1] for x in seen if x.strip()}
        other = {r for r in run_ids if r in daycare(home, "runs", "ls", "--task", "other").stdout}
        assert not other
        # The newest run may still be going: of the last two, at least one has ended.
        past = daycare(home, "logs", "tick", "-n", "2")
        assert past.returncode == 0 and "run.start" in past.stdout and "run.end" in past.stdout
    finally:
        daycare(home, "daemon", "stop")


def test_stop_is_prompt_while_followers_are_attached(tmp_path: Path) -> None:
    """`daemon stop` with idle `logs -f` followers attached: they get end-of-stream and
    the daemon exits within its grace period, not after aiohttp's 60 s shutdown wait."""
    import time

    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text("[webhook]\nport = 0\n[daemon]\ngrace_period = 1\n")
    (home / "tasks" / "idle.md").write_text("---\nschedule: '0 0 1 1 *'\n---\nx\n")
    assert daycare(home, "daemon", "start").returncode == 0
    env = {**os.environ, "DAYCARE_HOME": str(home)}
    followers = [
        subprocess.Popen(
            [sys.executable, "-m", "daycare_cli", "logs", "-f", "-n", "0", *task],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for task in ([], ["idle"])
    ]
    try:
        time.sleep(1.0)  # both followers connected and waiting
        pid = daemon_pid(Paths.resolve(home=home))
        assert pid is not None
        started = time.monotonic()
        stopped = daycare(home, "daemon", "stop")
        took = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stderr
        assert took < 1 + 2 + 2, f"daemon stop took {took:.1f}s"
        assert not pid_alive(pid)
        for f in followers:
            _out, err = f.communicate(timeout=5)
            assert f.returncode == 0
            assert "the daemon stopped" in err
    finally:
        for f in followers:
            f.kill()
            f.communicate()


def test_start_without_a_home_flag_uses_the_socket_the_cli_looks_for(tmp_path: Path) -> None:
    """No DAYCARE_HOME, a runtime dir: the daemon `daemon start` spawns puts its socket in
    $XDG_RUNTIME_DIR/daycare, where a plain `daycare` looks for it (issue 8)."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {
        "HOME": str(tmp_path / "user"),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    (tmp_path / "config" / "daycare").mkdir(parents=True)
    (tmp_path / "config" / "daycare" / "config.toml").write_text("[webhook]\nport = 0\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    full.update(env)

    def plain(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daycare_cli", *args],
            capture_output=True,
            text=True,
            env=full,
            timeout=60,
        )

    started = plain("daemon", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert (runtime / "daycare" / "daycare.sock").exists()
        status = plain("daemon", "status", "--json")
        assert status.returncode == 0, status.stdout
        assert '"home": "' + str(tmp_path / "data" / "daycare") + '"' in status.stdout
    finally:
        stopped = plain("daemon", "stop")
    assert stopped.returncode == 0 and "daemon stopped" in stopped.stdout


def test_a_configured_socket_is_where_the_daemon_listens_and_the_cli_looks(
    tmp_path: Path,
) -> None:
    """Config `socket` moves the control socket (relative to the home); the daemon makes
    it 0600 there, every command finds it, and a stop removes it."""
    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text('socket = "sockets/control.sock"\n[webhook]\nport = 0\n')
    sock = home / "sockets" / "control.sock"
    started = daycare(home, "daemon", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o600
        assert not (home / "run" / "daycare.sock").exists()
        status = daycare(home, "daemon", "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"running": true' in status.stdout
    finally:
        stopped = daycare(home, "daemon", "stop")
    assert stopped.returncode == 0 and "daemon stopped" in stopped.stdout
    assert not sock.exists()


def test_install_writes_the_home_and_doctor_checks_it(tmp_path: Path) -> None:
    config_home = tmp_path / "xdg"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    home = tmp_path / "my home"
    home.mkdir()
    env = {"XDG_CONFIG_HOME": str(config_home), "PATH": str(bindir)}
    res = daycare(home, "daemon", "install", env=env)
    assert res.returncode == 0, res.stderr
    unit = (config_home / "systemd" / "user" / "daycare.service").read_text()
    assert f'Environment="DAYCARE_HOME={home}"' in unit
    same = json.loads(daycare(home, "doctor", "--json", env=env).stdout)
    check = next(c for c in same if c["name"] == "systemd unit")
    assert check["level"] == "ok" and str(home) in check["detail"]
    other = tmp_path / "other"
    other.mkdir()
    differs = json.loads(daycare(other, "doctor", "--json", env=env).stdout)
    check = next(c for c in differs if c["name"] == "systemd unit")
    assert check["level"] == "warn" and "daemon install" in check["detail"]
    gone = daycare(home, "daemon", "uninstall", env=env)
    assert gone.returncode == 0 and "removed" in gone.stdout
    assert not (config_home / "systemd" / "user" / "daycare.service").exists()
    again = daycare(home, "daemon", "uninstall", env=env)
    assert again.returncode == 0 and "not installed" in again.stdout


def test_install_without_a_user_bus_says_so(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"  # a systemctl that cannot reach a user manager
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    fake.chmod(0o755)
    res = daycare(
        tmp_path / "home",
        "daemon",
        "install",
        env={"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": f"{bindir}:/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    assert "no user bus" in res.stderr and "daycare daemon start" in res.stderr


SLOW = (
    "---\nexecute: true\n---\n<run_python>\nimport time\nprint('before the nap')\n"
    "time.sleep(2)\nprint('after the nap')\n</run_python>\n"
)


def test_run_through_the_daemon_streams_output_to_task_run_and_logs_f(tmp_path: Path) -> None:
    import time

    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text("[webhook]\nport = 0\n[daemon]\ngrace_period = 5\n")
    (home / "tasks" / "slow.md").write_text(SLOW)
    assert daycare(home, "daemon", "start").returncode == 0
    env = {**os.environ, "DAYCARE_HOME": str(home)}

    def popen(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "daycare_cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def lines(proc: subprocess.Popen[str], stream: str) -> list[tuple[float, str]]:
        pipe = proc.stdout if stream == "out" else proc.stderr
        assert pipe is not None
        return [(time.monotonic(), line.rstrip("\n")) for line in pipe]

    try:
        follower = popen("logs", "-f", "-n", "0", "slow")
        time.sleep(1.0)  # connected
        runner = popen("task", "run", "slow")
        ran = lines(runner, "err")
        runner.communicate(timeout=30)  # closes the pipes
        assert runner.returncode == 0
        first = next(t for t, line in ran if line == "  │ before the nap")
        last = next(t for t, line in ran if line == "  │ after the nap")
        assert last - first >= 1.5, ran  # streamed from the daemon as printed
        time.sleep(0.5)  # the last events reach the follower
        follower.terminate()
        followed, _ = follower.communicate(timeout=10)
        assert "│ before the nap" in followed and "│ after the nap" in followed
        assert followed.index("│ before the nap") < followed.index("block.end")
        # `logs -f RUN` of a finished run: its log, then says there is nothing to follow.
        done = daycare(home, "logs", "-f", "last")
        assert done.returncode == 0 and "│ after the nap" in done.stdout
        assert "has finished" in done.stderr
    finally:
        stopped = daycare(home, "daemon", "stop")
    assert stopped.returncode == 0


def test_stop_names_the_runs_it_waits_for(tmp_path: Path) -> None:
    import time

    home = tmp_path / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text("[webhook]\nport = 0\n[daemon]\ngrace_period = 10\n")
    (home / "tasks" / "slow.md").write_text(SLOW)
    assert daycare(home, "daemon", "start").returncode == 0
    env = {**os.environ, "DAYCARE_HOME": str(home)}
    runner = subprocess.Popen(
        [sys.executable, "-m", "daycare_cli", "task", "run", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = json.loads(daycare(home, "daemon", "status", "--json").stdout)
            if status["active_runs"]:
                break
            time.sleep(0.1)
        human = daycare(home, "daemon", "status")
        assert "running 2" in human.stdout and "(slow, manual" in human.stdout
        stopped = daycare(home, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "waiting up to 10s for 1 running run to finish" in stopped.stdout
        assert "(slow): succeeded" in stopped.stdout
    finally:
        runner.wait(timeout=30)
