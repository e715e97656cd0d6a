"""Start `daycare daemon run` for a benchmark: shared by bench_lateness and bench_webhooks."""

from __future__ import annotations

import os
import pwd
import site
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DAYCARE = ROOT / ".venv" / "bin" / "daycare"
READY = "daycare daemon ready"


def user_env(home: Path) -> dict[str, str]:
    """The environment a user's daycare runs in, on `home`: none of ours (DAYCARE_*), and
    bytecode caches allowed: a harness's PYTHONDONTWRITEBYTECODE would make every start
    compile daycare's modules from source (~0.09 s of a daemon's start)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAYCARE_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["DAYCARE_HOME"] = str(home)
    return env


def as_user_argv(
    user: str, script: list[str], env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """argv and environment (`env`, by default ours) that run `python <script...>` as the
    ordinary `user` (root only): setpriv, the system's Python of our minor version (the
    venv's may sit in a 0700 /root) with this checkout and the venv's packages on
    PYTHONPATH."""
    pw = pwd.getpwnam(user)
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = dict(env)
    env.update(HOME=pw.pw_dir, USER=user, PYTHONPATH=f"{ROOT}:{site.getsitepackages()[0]}")
    argv = [
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--init-groups",
        python,
        *script,
    ]
    return argv, env


def start_daemon(
    home: Path, user: str | None = None
) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    """`daycare daemon run` on `home`; a thread drains stderr (it logs every run) and flags
    the ready line.

    With `user` (root only), the daemon runs as that ordinary user, as a systemd user
    service would (`as_user_argv`); `home` is handed to the user first.
    """
    env = user_env(home)
    argv = [str(DAYCARE), "daemon", "run"]
    if user is not None:
        pw = pwd.getpwnam(user)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
        argv, env = as_user_argv(user, ["-m", "daycare_cli", "daemon", "run"], env)
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                ready.set()
        ready.set()  # exited: let the waiter look at the return code

    threading.Thread(target=drain, daemon=True).start()
    return proc, lines, ready


def ordinary_user(wanted: str | None) -> str | None:
    """The user a root benchmark runs the daemon as (the main deployment is a user's
    daemon): `wanted`, else `daycare-tester` when it exists; None when not root or "-"."""
    if os.geteuid() != 0 or wanted == "-":
        return None
    name = wanted or "daycare-tester"
    try:
        pwd.getpwnam(name)
    except KeyError:
        if wanted:
            sys.exit(f"no user {wanted!r}: create it (useradd -m {wanted}) or pass --user -")
        return None
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return name if os.access(python, os.X_OK) else None


def loop_lag(home: Path, seconds: float) -> dict[str, Any]:
    """The daemon's event-loop lag over the last `seconds` (its control API)."""
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(home / "run" / "daycare.sock")),
        base_url="http://daycare",
        timeout=30,
    ) as client:
        lag: dict[str, Any] = client.get("/status", params={"lag_window": seconds}).json()[
            "loop_lag_ms"
        ]
    return lag
