"""The systemd user unit `daycare daemon install` writes (a copy of daemon/daycare.service)."""

from __future__ import annotations

from collections.abc import Mapping

UNIT = """\
# systemd user unit for the daycare daemon.
# Install with `daycare daemon install` (writes ~/.config/systemd/user/daycare.service),
# or copy by hand and run: systemctl --user daemon-reload && systemctl --user enable --now daycare
# Keep it running while logged out: loginctl enable-linger "$USER"
[Unit]
Description=daycare task daemon
Documentation=file://%h/.local/share/daycare
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=%h/.local/bin/daycare daemon run
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
WatchdogSec=60s
TimeoutStopSec=45s
KillMode=mixed
# Each run gets a cgroup of its own below the daemon's (memory, process and CPU totals).
Delegate=yes
# Everything the daemon writes is the user's alone.
UMask=0077
# Runs get a grace period on SIGTERM (daemon.grace_period, 30s) before they are marked interrupted.
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=default.target
"""


def unit_text(executable: str, environment: Mapping[str, str] | None = None) -> str:
    """The unit with ExecStart pointing at this installation's `daycare`, and an
    `Environment=` line for each of `environment` (the home it was installed for)."""
    text = UNIT.replace("%h/.local/bin/daycare", executable)
    lines = "".join(f"{environment_line(k, v)}\n" for k, v in (environment or {}).items())
    anchor = "Environment=PYTHONUNBUFFERED=1\n"
    return text.replace(anchor, anchor + lines)


def environment_line(name: str, value: str) -> str:
    """`Environment="NAME=value"`, quoted and escaped for systemd (`%` is a specifier)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{name}={escaped}"'


def unit_environment(text: str) -> dict[str, str]:
    """The `Environment=` assignments of a unit file (what `daemon install` wrote)."""
    import shlex

    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("Environment="):
            continue
        for word in shlex.split(line[len("Environment=") :]):
            name, sep, value = word.partition("=")
            if sep:
                found[name] = value.replace("%%", "%")
    return found
