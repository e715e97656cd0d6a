"""`daycare doctor`: is this installation able to run tasks, and what would fail."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag
from daycare_cli.store.paths import daemon_pid

# --- doctor ------------------------------------------------------------------------------


def doctor(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """Check the installation: Python, sandbox isolation, model, paths, daemon."""
    from daycare_cli.cli.render import console, print_json

    cli = get_context(ctx)
    checks = _doctor_checks(cli)
    if as_json:
        print_json(checks)
    else:
        out = console()
        marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}
        for c in checks:
            out.print(f"{marks[c['level']]} {c['name']}: ", end="")
            out.print(c["detail"], markup=False)
    if any(c["level"] == "fail" for c in checks):
        raise typer.Exit(1)


def _doctor_checks(cli: CliContext) -> list[dict[str, Any]]:
    """The checks of `doctor`, each `{name, level: ok|warn|fail, detail}`."""
    from daycare_cli.run.blocks import describe_sandbox

    checks: list[dict[str, Any]] = []

    def add(name: str, level: str, detail: str) -> None:
        checks.append({"name": name, "level": level, "detail": detail})

    add("python", "ok", f"{sys.version.split()[0]} at {sys.executable}")
    sandbox = describe_sandbox(cli.config)
    bwrap = cli.config.sandbox_bwrap or shutil.which("bwrap")
    add(
        "bubblewrap",
        "ok" if sandbox["isolation"] == "bubblewrap" else "warn",
        bwrap or "not found; install the bubblewrap package for full isolation",
    )
    isolation = sandbox["isolation"]
    add(
        "isolation",
        {"bubblewrap": "ok", "reduced": "warn"}.get(isolation, "fail"),
        f"{isolation} ({sandbox['reason']})",
    )
    add("seccomp", "warn" if sandbox["seccomp"].startswith("none") else "ok", sandbox["seccomp"])
    add("run totals", "ok" if sandbox["cgroup"] else "warn", sandbox["totals"])
    if os.geteuid() == 0:
        add("user", "warn", "running as root: blocks run as an unprivileged user")
    from daycare_cli.run.models import model_checks

    named = [(e.id, e.task.model) for e in cli.store.list() if e.task is not None]
    for check in model_checks(cli.config.model, named):
        add(check.name, check.level, check.detail)
    paths = cli.paths
    for label, p in (("home", paths.home), ("tasks", paths.tasks_dir)):
        add(
            label,
            "ok" if p.is_dir() else "warn",
            f"{p}" + ("" if p.is_dir() else " (does not exist yet)"),
        )
    cfg = paths.config_file
    if cfg.exists():
        mode = cfg.stat().st_mode & 0o777
        add(
            "config",
            "ok" if mode & 0o077 == 0 else "warn",
            f"{cfg} mode {mode:o}"
            + ("" if mode & 0o077 == 0 else f"; it may hold secrets: chmod 600 {cfg}"),
        )
    else:
        add("config", "ok", f"{cfg} (not created yet; defaults apply)")
    if paths.state_db.exists():
        mode = paths.state_db.stat().st_mode & 0o777
        add("state", "ok" if mode & 0o077 == 0 else "warn", f"{paths.state_db} mode {mode:o}")
    entries = cli.store.list()
    bad = [e for e in entries if e.error is not None]
    add(
        "task files",
        "ok" if not bad else "warn",
        f"{len(entries)} files, {len(bad)} invalid" + (" (run `daycare task lint`)" if bad else ""),
    )
    from daycare_cli.cli.systemd_cmds import unit_check

    unit = unit_check(cli)
    if unit is not None:
        add("systemd unit", *unit)
    pid = daemon_pid(paths)
    add(
        "daemon",
        "ok" if pid else "warn",
        f"running (pid {pid}), socket {paths.socket}" if pid else "not running",
    )
    return checks
