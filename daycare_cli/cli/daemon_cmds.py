"""`daycare daemon run|start|stop|restart|reload|status`, `webhook url|rotate`.

`install`/`uninstall` (systemd) are in `systemd_cmds.py`, `doctor` in `doctor_cmds.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import typer

from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag, TaskId, group
from daycare_cli.cli.run_cmds import open_state
from daycare_cli.store.paths import Paths, daemon_pid, pid_alive

NOT_RUNNING = (
    "daemon not running (start it with `daycare daemon start` or `daycare daemon install`)"
)


def register(app: typer.Typer) -> None:
    """Add the `daemon` and `webhook` groups and `doctor`."""
    from daycare_cli.cli.doctor_cmds import doctor
    from daycare_cli.cli.systemd_cmds import daemon_install, daemon_uninstall

    daemon_app = group("daemon", "The daemon: run, start, stop, restart, reload, status, install.")
    daemon_app.command("run")(daemon_run)
    daemon_app.command("start")(daemon_start)
    daemon_app.command("stop")(daemon_stop)
    daemon_app.command("restart")(daemon_restart)
    daemon_app.command("reload")(daemon_reload)
    daemon_app.command("status")(daemon_status)
    daemon_app.command("install")(daemon_install)
    daemon_app.command("uninstall")(daemon_uninstall)
    app.add_typer(daemon_app, name="daemon")
    webhook_app = group("webhook", "Webhook URLs of tasks.")
    webhook_app.command("url")(webhook_url)
    webhook_app.command("rotate")(webhook_rotate)
    app.add_typer(webhook_app, name="webhook")
    app.command("doctor")(doctor)


# --- daemon ------------------------------------------------------------------------------

WaitOpt = Annotated[
    float,
    typer.Option("--wait", metavar="SECONDS", help="How long to wait for it to be ready."),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", help="How long to wait for running runs to finish."
    ),
]


def daemon_run(
    ctx: typer.Context,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (to stderr)."
        ),
    ] = "INFO",
) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from daycare_cli.daemon.service import run_daemon

    cli = get_context(ctx)
    raise typer.Exit(run_daemon(cli.paths, cli.config, log_level.upper()))


def daemon_start(ctx: typer.Context, wait: WaitOpt = 15.0) -> None:
    """Start the daemon in the background (for systems without systemd)."""
    start(get_context(ctx), wait)


def start(cli: CliContext, wait: float) -> None:
    """Start a daemon for this home unless one runs; exit 1 when it is not ready in time."""
    pid = daemon_pid(cli.paths)
    if pid is not None:
        typer.echo(f"daemon already running (pid {pid})")
        return
    proc = spawn_daemon(cli)
    if wait_ready(cli.paths, proc, wait):
        typer.echo(f"daemon started (pid {proc.pid}); log: {cli.paths.daemon_log}")
        return
    typer.echo(
        f"daemon started (pid {proc.pid}) but not ready after {wait:g}s; "
        f"see {cli.paths.daemon_log}",
        err=True,
    )
    raise typer.Exit(1)


def spawn_daemon(cli: CliContext) -> subprocess.Popen[bytes]:
    """`daycare daemon run` for this home in a new session, its output in the daemon log.

    It gets the same global options this command got, no more: given the resolved home
    instead, it would count as an overridden home and put its socket in the home while
    a plain `daycare` looks in the runtime directory.
    """
    paths = cli.paths
    paths.home.mkdir(parents=True, exist_ok=True)
    given = [
        (flag, value)
        for flag, value in (
            ("--home", cli.home),
            ("--tasks-dir", cli.tasks_dir),
            ("--config", cli.config_file),
        )
        if value is not None
    ]
    cmd = [sys.executable, "-m", "daycare_cli"]
    for flag, value in given:
        cmd += [flag, str(value.expanduser().absolute())]
    cmd += ["daemon", "run"]
    paths.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The log is the daemon's alone (0600), whatever the umask of the shell starting it.
    log_fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(log_fd, 0o600)
    with os.fdopen(log_fd, "ab") as log_file:  # the child keeps its own descriptor
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


def daemon_stop(ctx: typer.Context, timeout: TimeoutOpt = 60.0) -> None:
    """Stop the daemon: running runs get the grace period, then are marked interrupted."""
    stop(get_context(ctx), timeout)


def stop(cli: CliContext, timeout: float) -> bool:
    """Stop this home's daemon, saying which runs it waits for; False when none ran."""
    from daycare_cli.cli.render import console

    pid = daemon_pid(cli.paths)
    if pid is None:
        typer.echo("daemon not running")
        return False
    active = active_runs(cli)
    grace = cli.config.grace_period
    os.kill(pid, signal.SIGTERM)
    if active:
        names = ", ".join(f"{r['id']} ({r['task']})" for r in active)
        typer.echo(
            f"stopping daemon (pid {pid}): waiting up to {grace:g}s for "
            f"{len(active)} running run{'s' if len(active) != 1 else ''} to finish: {names}"
        )
    deadline = time.monotonic() + timeout
    err = console(stderr=True)
    waiting = (
        err.status(f"waiting for the daemon (pid {pid}) to exit…") if err.is_terminal else None
    )
    if waiting is not None:
        waiting.start()
    try:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if waiting is not None:
            waiting.stop()
    if pid_alive(pid):
        typer.echo(
            f"daemon (pid {pid}) still running after {timeout:g}s; "
            f"its runs may still be finishing (see `daycare daemon status`)",
            err=True,
        )
        raise typer.Exit(1)
    if active:
        state = open_state(cli)
        try:
            ends = [state.get_run(r["id"]) for r in active]
        finally:
            state.close()
        for run in ends:
            if run is not None:
                typer.echo(f"  run {run.id} ({run.task}): {run.status}")
    typer.echo(f"daemon stopped (pid {pid})")
    return True


def active_runs(cli: CliContext) -> list[dict[str, Any]]:
    """The runs the daemon is running now (empty when it does not answer)."""
    from daycare_cli.client import connect

    client = connect(cli.paths)
    if client is None:
        return []
    try:
        return list(client.status().get("active_runs", []))
    except Exception:  # a daemon too busy to answer still gets its SIGTERM
        return []
    finally:
        client.close()


def daemon_restart(ctx: typer.Context, timeout: TimeoutOpt = 60.0, wait: WaitOpt = 15.0) -> None:
    """Stop the daemon (runs get their grace period) and start it again; through systemd
    when its unit runs it."""
    import shutil

    from daycare_cli.cli.systemd_cmds import UNIT_NAME, systemctl_user, unit_active, user_bus

    cli = get_context(ctx)
    systemctl = shutil.which("systemctl")
    if systemctl is not None and user_bus(systemctl) and unit_active(systemctl):
        systemctl_user(systemctl, "restart", UNIT_NAME)
        typer.echo(f"restarted {UNIT_NAME}")
        return
    stop(cli, timeout)
    start(cli, wait)


def daemon_reload(ctx: typer.Context) -> None:
    """Re-read config.toml and every task file now (what SIGHUP does)."""
    from daycare_cli.client import connect

    cli = get_context(ctx)
    client = connect(cli.paths)
    if client is None:
        typer.echo(NOT_RUNNING, err=True)
        raise typer.Exit(1)
    try:
        client.reload()
        status = client.status()
    finally:
        client.close()
    errors = status.get("errors", [])
    typer.echo(
        f"reloaded: {status.get('tasks')} tasks, {len(errors)} invalid"
        + (" (see `daycare task lint`)" if errors else "")
    )


def daemon_status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Whether the daemon runs; uptime, isolation, tasks, runs, errors and next fires."""
    from daycare_cli.cli.render import print_json
    from daycare_cli.client import connect

    cli = get_context(ctx)
    client = connect(cli.paths)
    if client is None:
        if as_json:
            print_json({"running": False})
        else:
            typer.echo(NOT_RUNNING)
        raise typer.Exit(1)
    try:
        status = client.status()
    finally:
        client.close()
    status["running"] = True
    if as_json:
        print_json(status)
    else:
        print_status(cli, status)
    unhealthy = [
        name for name, part in (status.get("parts") or {}).items() if not part.get("healthy", True)
    ]
    if unhealthy:
        raise typer.Exit(1)


def print_status(cli: CliContext, status: dict[str, Any]) -> None:
    """`daemon status` for a person: a summary, then health, runs, errors and next fires.

    Isolation, loop lag and the parts' health are shown when the daemon reports them.
    """
    from rich.text import Text

    from daycare_cli.cli.render import ago, console, local_time, table_time, visible, zone_label

    out = console()
    zone = cli.default_zone
    started = status.get("started_at")
    since = ""
    if started:
        when = datetime.fromisoformat(started)
        since = f" since {local_time(when, zone)} ({ago(when, cli.now)})"
    out.print(
        Text.assemble(
            ("running", "green"),
            f" pid {status['pid']}, up {_uptime(status['uptime_s'])}{since}",
        )
    )
    out.print(
        Text(
            f"{status['tasks']} tasks ({status['enabled']} enabled), {status['fires']} fires "
            f"so far, {len(status.get('active_runs', []))} running, "
            f"{status.get('pending', 0)} queued"
        )
    )
    if status.get("home"):
        out.print(Text(f"home {status['home']}"))
    sandbox = status.get("sandbox") or {}
    if sandbox:
        out.print(
            Text(
                f"sandbox {sandbox.get('isolation')} ({sandbox.get('reason')}); "
                f"seccomp: {sandbox.get('seccomp')}; totals: {sandbox.get('totals')}"
            )
        )
    lag = status.get("loop_lag_ms")
    if isinstance(lag, dict) and lag:
        out.print(Text(f"loop lag p50 {lag.get('p50')} ms, p99 {lag.get('p99')} ms"))
    for name, part in sorted((status.get("parts") or {}).items()):
        restarts = part.get("restarts") or 0
        again = f", restarted {restarts}×" if restarts else ""
        if part.get("healthy", True):
            out.print(Text.assemble(("  ✓ ", "green"), f"{name}{again}"))
        else:
            why = visible(str(part.get("error") or part.get("detail") or "not up yet"))
            since = part.get("since") or "?"
            out.print(
                Text.assemble(
                    ("  ✗ ", "red"), f"unhealthy: {name} since {since} ({restarts} restarts): {why}"
                )
            )
    out.print(Text(f"webhooks {status.get('webhook_url')}"))
    for r in status.get("active_runs", []):
        began = r.get("started_at") or r.get("queued_at")
        running_for = f", {ago(datetime.fromisoformat(began), cli.now)}" if began else ""
        out.print(Text(f"  running {r['id']} ({r['task']}, {r['trigger']}{running_for})"))
    for task_id in status.get("flagged", []):
        out.print(
            Text.assemble(
                ("failing", "red"),
                f" {task_id}: failed repeatedly (see `daycare runs ls --task {task_id}`)",
            )
        )
    for e in status.get("errors", []):
        stale = " (last good version still scheduled)" if e.get("stale") else ""
        out.print(Text.assemble(("error ", "red"), f"{visible(str(e['error']))}{stale}"))
    upcoming = status.get("next", [])[:5]
    if upcoming:
        out.print(Text(f"next fires ({zone_label(zone)})", "bold"))
    for n in upcoming:
        when = datetime.fromisoformat(n["at"])
        out.print(
            Text(f"  {table_time(when, zone)}  {ago(when, cli.now):>8}  {n['task']}/{n['trigger']}")
        )


# --- webhook -----------------------------------------------------------------------------


WebhookTriggerOpt = Annotated[
    str | None,
    typer.Option(
        "--trigger", metavar="TRIGGER", help="Which webhook trigger (default: the first)."
    ),
]


def webhook_url(
    ctx: typer.Context,
    task_id: TaskId,
    trigger: WebhookTriggerOpt = None,
) -> None:
    """Print the webhook URL of a task (a token is made on first use)."""
    print_webhook_url(get_context(ctx), task_id, trigger, rotate=False)


def webhook_rotate(
    ctx: typer.Context,
    task_id: TaskId,
    trigger: WebhookTriggerOpt = None,
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
    if rotate:
        _daemon_forgets_tokens(cli)
    base = _webhook_base(cli)
    typer.echo(f"{base}/hooks/{token}")
    if rotate:
        typer.echo("the previous URL is revoked", err=True)


def _daemon_forgets_tokens(cli: CliContext) -> None:
    """A running daemon remembers the tokens it found for a second; a revoked one must
    stop working now. Unreachable (stopped or stuck): it trusts its copy a second at most."""
    from daycare_cli.client import DaemonError, connect

    client = connect(cli.paths)
    if client is None:
        return
    try:
        client.forget_tokens()
    except (OSError, DaemonError) as exc:
        typer.echo(
            f"the running daemon was not told ({exc}); the old URL works for 1 s more", err=True
        )


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
