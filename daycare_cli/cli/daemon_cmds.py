"""`daycare daemon run|start|stop|status|install`, `webhook url|rotate` and `doctor`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import complete_task_id
from daycare_cli.cli.run_cmds import open_state
from daycare_cli.store.paths import Paths, daemon_pid, pid_alive


def register(app: typer.Typer) -> None:
    """Add the `daemon` and `webhook` groups and `doctor`."""
    daemon_app = typer.Typer(
        help="The daemon: run, start, stop, status, install.", no_args_is_help=True
    )
    daemon_app.command("run")(daemon_run)
    daemon_app.command("start")(daemon_start)
    daemon_app.command("stop")(daemon_stop)
    daemon_app.command("status")(daemon_status)
    daemon_app.command("install")(daemon_install)
    app.add_typer(daemon_app, name="daemon")
    webhook_app = typer.Typer(help="Webhook URLs of tasks.", no_args_is_help=True)
    webhook_app.command("url")(webhook_url)
    webhook_app.command("rotate")(webhook_rotate)
    app.add_typer(webhook_app, name="webhook")
    app.command("doctor")(doctor)


# --- daemon ------------------------------------------------------------------------------


def daemon_run(
    ctx: typer.Context,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from daycare_cli.daemon.service import run_daemon

    cli = get_context(ctx)
    raise typer.Exit(run_daemon(cli.paths, cli.config, log_level.upper()))


def daemon_start(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for ready.")] = 15.0,
) -> None:
    """Start the daemon in the background (for systems without systemd)."""
    cli = get_context(ctx)
    pid = daemon_pid(cli.paths)
    if pid is not None:
        typer.echo(f"daemon already running (pid {pid})")
        return
    proc = spawn_daemon(cli.paths)
    if wait_ready(cli.paths, proc, wait):
        typer.echo(f"daemon started (pid {proc.pid}); log: {cli.paths.daemon_log}")
        return
    typer.echo(
        f"daemon started (pid {proc.pid}) but not ready after {wait:g}s; "
        f"see {cli.paths.daemon_log}",
        err=True,
    )
    raise typer.Exit(1)


def spawn_daemon(paths: Paths) -> subprocess.Popen[bytes]:
    """`daycare daemon run` for this home in a new session, its output in the daemon log."""
    paths.home.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "daycare_cli",
        "--home",
        str(paths.home),
        "--tasks-dir",
        str(paths.tasks_dir),
        "--config",
        str(paths.config_file),
        "daemon",
        "run",
    ]
    with paths.daemon_log.open("ab") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )


def wait_ready(paths: Paths, proc: subprocess.Popen[bytes], wait: float) -> bool:
    """Whether the daemon answers on its socket within `wait` s; UserError if it exits."""
    from daycare_cli.client import connect

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            from daycare_cli.core.errors import UserError

            raise UserError(
                f"the daemon exited with code {proc.returncode}",
                path=str(paths.daemon_log),
                hint="read the log above for the reason",
            )
        client = connect(paths)
        if client is not None:
            client.close()
            return True
        time.sleep(0.1)
    return False


def daemon_stop(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option("--timeout")] = 60.0,
) -> None:
    """Stop the daemon: runs get the grace period, then are marked interrupted."""
    cli = get_context(ctx)
    pid = daemon_pid(cli.paths)
    if pid is None:
        typer.echo("daemon not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        typer.echo(f"daemon (pid {pid}) still running after {timeout:g}s", err=True)
        raise typer.Exit(1)
    typer.echo(f"daemon stopped (pid {pid})")


def daemon_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Whether the daemon runs; uptime, tasks, running runs, errors and next fires."""
    from daycare_cli.cli.render import print_json
    from daycare_cli.client import connect

    cli = get_context(ctx)
    client = connect(cli.paths)
    if client is None:
        if as_json:
            print_json({"running": False})
        else:
            typer.echo(
                "daemon not running (start it with `daycare daemon start` or "
                "`daycare daemon install`)"
            )
        raise typer.Exit(1)
    try:
        status = client.status()
    finally:
        client.close()
    status["running"] = True
    if as_json:
        print_json(status)
    else:
        print_status(status)
    # A part that is down (or restarting) makes the status a failure, for scripts too.
    unhealthy = {n: p for n, p in status.get("parts", {}).items() if not p.get("healthy")}
    if unhealthy:
        if not as_json:
            for name, part in unhealthy.items():
                why = part.get("error") or part.get("detail") or "not up yet"
                typer.echo(
                    f"unhealthy: {name} since {part.get('since')} "
                    f"({part.get('restarts', 0)} restarts): {why}"
                )
        raise typer.Exit(1)


def print_status(status: dict[str, Any]) -> None:
    """`daemon status` for a person: one summary line, then runs, failing tasks, errors, fires."""
    from rich.text import Text

    from daycare_cli.cli.render import console

    out = console()
    out.print(
        f"[green]running[/] pid {status['pid']}, up {_uptime(status['uptime_s'])}, "
        f"{status['tasks']} tasks ({status['enabled']} enabled), "
        f"{status['fires']} fires"
    )
    out.print(f"webhooks: {status.get('webhook_url')}", markup=False)
    for r in status.get("active_runs", []):
        out.print(f"  running {r['id']} ({r['task']}, {r['trigger']})", markup=False)
    for task_id in status.get("flagged", []):
        out.print(
            f"[red]failing[/] {task_id}: failed repeatedly (see `daycare runs ls --task {task_id}`)"
        )
    for e in status.get("errors", []):
        stale = " (last good version still scheduled)" if e.get("stale") else ""
        out.print(Text.assemble(("error ", "red"), f"{e['error']}{stale}"))
    for n in status.get("next", [])[:5]:
        out.print(f"  next {n['at']}  {n['task']}/{n['trigger']}", markup=False)


def daemon_install(
    ctx: typer.Context,
    enable: Annotated[
        bool, typer.Option("--enable/--no-enable", help="Run systemctl --user enable --now.")
    ] = True,
) -> None:
    """Install the systemd user unit and enable it; warns when lingering is off."""
    from daycare_cli.daemon.unit import unit_text

    exe = shutil.which("daycare") or f"{sys.executable} -m daycare_cli"
    unit_dir = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    target = unit_dir / "daycare.service"
    target.write_text(unit_text(exe))
    typer.echo(f"wrote {target}")
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        typer.echo("systemctl not found: start the daemon with `daycare daemon start`")
        return
    if enable:
        enable_unit(systemctl)
    warn_without_linger()


def enable_unit(systemctl: str) -> None:
    """Reload systemd's user units and enable and start daycare.service."""
    for args in (["daemon-reload"], ["enable", "--now", "daycare.service"]):
        res = subprocess.run([systemctl, "--user", *args], capture_output=True, text=True)
        if res.returncode != 0:
            typer.echo(f"systemctl --user {' '.join(args)} failed: {res.stderr.strip()}", err=True)
            raise typer.Exit(1)
    typer.echo("enabled and started daycare.service")


def warn_without_linger() -> None:
    """Warn when the user's services stop at logout (systemd lingering off)."""
    user = os.environ.get("USER") or ""
    linger = (
        subprocess.run(
            ["loginctl", "show-user", user, "-p", "Linger"], capture_output=True, text=True
        )
        if shutil.which("loginctl")
        else None
    )
    if linger is None or "Linger=yes" not in linger.stdout:
        typer.echo(
            f"warning: lingering is off, so the daemon stops when you log out; "
            f"fix: loginctl enable-linger {user}",
            err=True,
        )


# --- webhook -----------------------------------------------------------------------------


def webhook_url(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)],
    trigger: Annotated[str | None, typer.Option("--trigger")] = None,
) -> None:
    """Print the webhook URL of a task (a token is made on first use)."""
    print_webhook_url(get_context(ctx), task_id, trigger, rotate=False)


def webhook_rotate(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)],
    trigger: Annotated[str | None, typer.Option("--trigger")] = None,
) -> None:
    """Replace a task's webhook token; the old URL stops working at once."""
    print_webhook_url(get_context(ctx), task_id, trigger, rotate=True)


def print_webhook_url(cli: CliContext, task_id: str, trigger: str | None, rotate: bool) -> None:
    """The URL of a task's (first, or named) webhook trigger, with a new token if `rotate`."""
    from daycare_cli.core.errors import NotFoundError
    from daycare_cli.core.task import WebhookTrigger

    task = cli.store.get(task_id)
    hooks = [t for t in task.triggers if isinstance(t, WebhookTrigger)]
    if trigger is not None:
        hooks = [t for t in hooks if t.id == trigger]
    if not hooks:
        raise NotFoundError(
            f"task {task_id!r} has no webhook trigger{f' {trigger!r}' if trigger else ''}",
            hint=f"add one with `daycare task trigger add {task_id} --webhook`",
        )
    hook = hooks[0]
    state = open_state(cli)
    try:
        if rotate:
            token = state.rotate_token(task.id, hook.id)
            state.add_event("cli", "webhook.rotated", task=task.id, detail={"trigger": hook.id})
        else:
            token = state.issue_token(task.id, hook.id)
    finally:
        state.close()
    base = _webhook_base(cli)
    typer.echo(f"{base}/hooks/{token}")
    if rotate:
        typer.echo("the previous URL is revoked", err=True)


# --- doctor ------------------------------------------------------------------------------


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
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
    from daycare_cli.run.sandbox import isolation_level

    checks: list[dict[str, Any]] = []

    def add(name: str, level: str, detail: str) -> None:
        checks.append({"name": name, "level": level, "detail": detail})

    add("python", "ok", f"{sys.version.split()[0]} at {sys.executable}")
    level, reason = isolation_level()
    bwrap = shutil.which("bwrap")
    add(
        "bubblewrap",
        "ok" if bwrap else "warn",
        bwrap or "not found; install the bubblewrap package for full isolation",
    )
    add(
        "isolation",
        "ok" if level == "bubblewrap" else "warn",
        f"{level}" + (f" ({reason})" if reason else ""),
    )
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
    pid = daemon_pid(paths)
    add(
        "daemon",
        "ok" if pid else "warn",
        f"running (pid {pid}), socket {paths.socket}" if pid else "not running",
    )
    return checks


def _webhook_base(cli: CliContext) -> str:
    """The daemon's published webhook address when it runs, else the configured one."""
    published = cli.paths.runtime_dir / "webhook.url"
    if published.exists() and daemon_pid(cli.paths):
        return published.read_text().strip()
    return f"http://{cli.config.webhook_host}:{cli.config.webhook_port}"


def _uptime(seconds: int) -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m}m" if h else (f"{m}m {s}s" if m else f"{s}s")
