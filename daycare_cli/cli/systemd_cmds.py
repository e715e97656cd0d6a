"""`daycare daemon install|uninstall`: the systemd user unit, for the home in use.

The unit carries the home it was installed for (`Environment=DAYCARE_HOME=…`, and the
tasks directory and config file when they were given), so the daemon systemd starts and
the CLI that installed it read the same tasks and talk over the same socket. Without a
user bus (a container, ssh without a session) the unit is still written, and the
commands say so and point at `daycare daemon start`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from daycare_cli.cli.context import CliContext, get_context

UNIT_NAME = "daycare.service"
NO_BUS = (
    "no systemd user session here (no user bus), so systemd cannot run the daemon; "
    "start it with `daycare daemon start` instead"
)


def unit_path() -> Path:
    """Where the user unit goes: $XDG_CONFIG_HOME/systemd/user/daycare.service."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "systemd" / "user" / UNIT_NAME


def home_environment(cli: CliContext) -> dict[str, str]:
    """The variables that make the daemon resolve the same home as this command.

    Only what was chosen by flag or environment: a default home stays a default, so the
    daemon and a plain `daycare` agree on the socket too (it lives in the runtime dir).
    """
    paths = cli.paths
    env: dict[str, str] = {}
    if cli.home is not None or os.environ.get("DAYCARE_HOME"):
        env["DAYCARE_HOME"] = str(paths.home)
    if cli.tasks_dir is not None or os.environ.get("DAYCARE_TASKS_DIR"):
        env["DAYCARE_TASKS_DIR"] = str(paths.tasks_dir)
    if cli.config_file is not None or os.environ.get("DAYCARE_CONFIG"):
        env["DAYCARE_CONFIG"] = str(paths.config_file)
    return env


def installed_home(text: str) -> Path:
    """The home a unit file runs the daemon for: its DAYCARE_HOME, else the default."""
    from daycare_cli.daemon.unit import unit_environment

    home = unit_environment(text).get("DAYCARE_HOME")
    if home:
        return Path(home).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("daycare")).absolute()


def user_bus(systemctl: str) -> bool:
    """Whether `systemctl --user` can reach a user manager."""
    try:
        done = subprocess.run(
            [systemctl, "--user", "show-environment"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def systemctl_user(systemctl: str, *args: str) -> None:
    """Run `systemctl --user ARGS`; a failure is an error naming the command."""
    from daycare_cli.core.errors import UserError

    res = subprocess.run([systemctl, "--user", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise UserError(
            f"`systemctl --user {' '.join(args)}` failed: {res.stderr.strip() or res.returncode}",
            hint="see `journalctl --user -u daycare` and `systemctl --user status daycare`",
        )


def unit_active(systemctl: str) -> bool:
    """Whether systemd runs daycare.service now."""
    res = subprocess.run(
        [systemctl, "--user", "is-active", UNIT_NAME], capture_output=True, text=True
    )
    return res.stdout.strip() == "active"


def daemon_install(
    ctx: typer.Context,
    enable: Annotated[
        bool,
        typer.Option("--enable/--no-enable", help="Also run systemctl --user enable --now."),
    ] = True,
) -> None:
    """Install the systemd user unit for this home and start it; warns when lingering is off."""
    from daycare_cli.daemon.unit import unit_text
    from daycare_cli.store.paths import atomic_write

    cli = get_context(ctx)
    exe = shutil.which("daycare") or f"{sys.executable} -m daycare_cli"
    env = home_environment(cli)
    target = unit_path()
    atomic_write(target, unit_text(exe, env), mode=0o644)
    typer.echo(f"wrote {target}")
    typer.echo(f"  home {cli.paths.home}" + ("" if env else " (the default)"))
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        typer.echo("systemctl not found: start the daemon with `daycare daemon start`")
        return
    if not user_bus(systemctl):
        typer.echo(f"warning: {NO_BUS}", err=True)
        return
    systemctl_user(systemctl, "daemon-reload")
    if enable:
        systemctl_user(systemctl, "enable", "--now", UNIT_NAME)
        typer.echo(f"enabled and started {UNIT_NAME}")
    warn_without_linger()


def daemon_uninstall(ctx: typer.Context) -> None:
    """Stop and disable the systemd user unit and remove its file."""
    get_context(ctx)
    target = unit_path()
    if not target.exists():
        typer.echo(f"not installed: there is no {target}")
        return
    systemctl = shutil.which("systemctl")
    if systemctl is not None and user_bus(systemctl):
        systemctl_user(systemctl, "disable", "--now", UNIT_NAME)
        typer.echo(f"stopped and disabled {UNIT_NAME}")
    target.unlink()
    typer.echo(f"removed {target}")
    if systemctl is not None and user_bus(systemctl):
        systemctl_user(systemctl, "daemon-reload")


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


def unit_check(cli: CliContext) -> tuple[str, str] | None:
    """For `doctor`: (level, detail) about the installed unit, None when none is installed."""
    target = unit_path()
    if not target.exists():
        return None
    try:
        text = target.read_text("utf-8")
    except OSError as exc:
        return "warn", f"{target}: cannot read it ({exc.strerror})"
    home = installed_home(text)
    if home != cli.paths.home:
        return "warn", (
            f"{target} runs the daemon for home {home}, but this command uses "
            f"{cli.paths.home}; reinstall: daycare --home {cli.paths.home} daemon install"
        )
    return "ok", f"{target} runs the daemon for this home ({home})"
