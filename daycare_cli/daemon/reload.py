"""What a reload of config.toml changes: the keys that apply at once and those that need a
restart of the daemon (SIGHUP, `systemctl --user reload daycare`, `POST /reload`).

Most settings are read where they are used (a run reads the model, the secrets, the
retention; a webhook request the queue size; a stop the grace period), so a reload
applies them to what happens next. The daemon itself acts on a few: a new global cap
starts the runs that were waiting for it, a new default zone re-plans every task, new
webhook settings restart the listener. Only what the daemon fixes when it starts needs a
restart: `RESTART_NEEDED`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# key -> why a reload cannot apply it
RESTART_NEEDED = {
    "tasks_dir": "the tasks directory is chosen when the daemon starts",
    "socket": "the control socket is made when the daemon starts",
}


@dataclass
class ConfigChange:
    """The dotted keys a reload changed (added, removed or with another value)."""

    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)


def config_change(old: dict[str, Any], new: dict[str, Any]) -> ConfigChange:
    """Compare two parsed configs; secrets are named by key, their values never shown."""
    change = ConfigChange()
    for key in changed_keys(old, new):
        (change.restart if key in RESTART_NEEDED else change.applied).append(key)
    return change


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two TOML tables, sorted."""
    keys = []
    for name in sorted(set(old) | set(new)):
        key = f"{prefix}{name}"
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) or isinstance(b, dict):
            # A table added or removed: its keys, one by one.
            a = a if isinstance(a, dict) else {}
            b = b if isinstance(b, dict) else {}
            keys.extend(changed_keys(a, b, key + "."))
        elif a != b:
            keys.append(key)
    return keys
