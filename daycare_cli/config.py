"""config.toml: read with tomllib, written with tomlkit so comments survive `config set`.

```toml
timezone = "Europe/Berlin"        # default zone of tasks that name none
model = "gpt-4o-mini"             # default model; "none" or absent: no model
tasks_dir = "~/notes/tasks"
max_concurrent_runs = 4
failure_streak = 5

[webhook]
host = "127.0.0.1"
port = 8765                       # 0: any free port
max_connections = 512             # open connections at once; more are closed at once

[retention]
keep_runs = 100
max_age_days = 30

[sandbox]
isolation = "bubblewrap"          # or "reduced": run blocks without bubblewrap when it cannot run
bwrap = "/usr/bin/bwrap"          # which bubblewrap (default: found on PATH)
cgroup = "/sys/fs/cgroup/daycare" # a delegated cgroup v2 for run totals (default: the unit's own)
[deps]                            # Python environments of blocks (docs/task-file.md)
index_url = "https://pypi.example/simple"
extra_index_urls = []
find_links = ["/srv/wheels"]
offline = false
python_downloads = false

[secrets]
github_hook = "..."

[notify.phone]
url = "ntfy://my-topic"
```
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daycare_cli.core.errors import UsageError, UserError

DEFAULTS: dict[str, Any] = {
    "timezone": None,
    "model": None,
    "tasks_dir": None,
    "max_concurrent_runs": 4,
    "failure_streak": 5,
    "webhook.host": "127.0.0.1",
    "webhook.port": 8765,
    "webhook.queue_size": 10000,
    "webhook.max_connections": 512,
    "retention.keep_runs": 100,
    "retention.max_age_days": 30,
    "daemon.grace_period": 30,
    "daemon.state_retry_limit": 300,
    "socket": None,
    "sandbox.isolation": "bubblewrap",
    "sandbox.bwrap": None,
    "sandbox.cgroup": None,
    "deps.index_url": None,
    "deps.extra_index_urls": [],
    "deps.find_links": [],
    "deps.offline": False,
    "deps.python_downloads": False,
}
ISOLATION_CHOICES = ("bubblewrap", "reduced")


class ConfigError(UserError):
    """config.toml cannot be read or a value has the wrong type."""

    exit_code = 1


@dataclass(frozen=True)
class DepsConfig:
    """The `[deps]` table: uv's package index, extra indexes, local wheel directories
    (find-links), offline mode, and whether uv may download an interpreter."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    offline: bool = False
    python_downloads: bool = False


@dataclass
class Config:
    """The parsed config file; `raw` is the whole TOML document as plain data."""

    path: Path
    raw: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        """A dotted key (`webhook.port`); its default from DEFAULTS when the file lacks it.

        Callers never add a fallback of their own (`or 4`): the default lives here only.
        The typed properties below are the same values with their types.
        """
        node: Any = self.raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return DEFAULTS.get(key)
            node = node[part]
        return node

    @property
    def max_concurrent_runs(self) -> int:
        """How many runs may execute at once across all tasks."""
        return int(self.get("max_concurrent_runs"))

    @property
    def failure_streak(self) -> int:
        """Failures in a row after which a task is flagged."""
        return int(self.get("failure_streak"))

    @property
    def webhook_host(self) -> str:
        """The host webhooks listen on; an empty value means the default (loopback)."""
        return str(self.get("webhook.host") or DEFAULTS["webhook.host"])

    @property
    def webhook_port(self) -> int:
        """The port webhooks listen on (0: any free port)."""
        return int(self.get("webhook.port"))

    @property
    def webhook_queue_size(self) -> int:
        """Runs a webhook may leave waiting per task; further deliveries are refused."""
        return int(self.get("webhook.queue_size"))

    @property
    def keep_runs(self) -> int:
        """Runs kept per task by retention (the last success and failure are always kept)."""
        return int(self.get("retention.keep_runs"))

    @property
    def max_age_days(self) -> float:
        """Age in days after which retention prunes a run."""
        return float(self.get("retention.max_age_days"))

    @property
    def grace_period(self) -> float:
        """Seconds running runs get to finish when the daemon stops."""
        return float(self.get("daemon.grace_period"))

    @property
    def sandbox_isolation(self) -> str:
        """ "bubblewrap" (blocks run only under it) or "reduced" (accepted without it)."""
        return str(self.get("sandbox.isolation"))

    @property
    def sandbox_bwrap(self) -> str | None:
        """The bubblewrap to use; None: `bwrap` on PATH."""
        value = self.get("sandbox.bwrap")
        return str(value) if value else None

    @property
    def sandbox_cgroup(self) -> str | None:
        """A delegated cgroup v2 directory for run cgroups; None: the daemon's own."""
        value = self.get("sandbox.cgroup")
        return str(value) if value else None

    @property
    def deps(self) -> DepsConfig:
        """Where uv finds packages and interpreters for the environments of blocks."""
        return DepsConfig(
            index_url=self.get("deps.index_url") or None,
            extra_index_urls=tuple(self.get("deps.extra_index_urls")),
            find_links=tuple(self.get("deps.find_links")),
            offline=bool(self.get("deps.offline")),
            python_downloads=bool(self.get("deps.python_downloads")),
        )

    @property
    def state_retry_limit(self) -> float:
        """Seconds the daemon retries failing writes to state.db before it exits non-zero."""
        return float(self.get("daemon.state_retry_limit"))

    @property
    def timezone(self) -> str:
        """The default zone of tasks: config, else the system's IANA zone."""
        return self.get("timezone") or system_zone()

    @property
    def model(self) -> str | None:
        value = self.get("model")
        return str(value) if value else None

    @property
    def secrets(self) -> dict[str, str]:
        table = self.raw.get("secrets", {})
        return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}

    def secret(self, name: str) -> str | None:
        """A secret by name from `[secrets]`, else from the environment `DAYCARE_SECRET_<NAME>`."""
        if name in self.secrets:
            return self.secrets[name]
        return os.environ.get("DAYCARE_SECRET_" + name.upper().replace("-", "_"))

    def notify_target(self, name: str) -> str | None:
        """The apprise URL of a `[notify.NAME]` entry (a table with `url`, or a plain string)."""
        table = self.raw.get("notify", {})
        entry = table.get(name) if isinstance(table, dict) else None
        if isinstance(entry, dict):
            url = entry.get("url")
            return str(url) if url else None
        return str(entry) if isinstance(entry, str) else None


def load_config(path: Path) -> Config:
    """Read config.toml; a missing file is an empty config."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=str(path)) from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config is not valid TOML: {exc}",
            path=str(path),
            hint="fix the file, or move it away to start from defaults",
        ) from None
    check_config(raw, str(path))
    return Config(path, raw)


# Known keys: (type, minimum) for numbers, a type for the rest. Tables of free-form names.
SCHEMA: dict[str, Any] = {
    "timezone": str,
    "model": str,
    "tasks_dir": str,
    "socket": str,
    "max_concurrent_runs": (int, 1),
    "failure_streak": (int, 1),
    "webhook.host": str,
    "webhook.port": (int, 0),
    "webhook.queue_size": (int, 1),
    "webhook.max_connections": (int, 1),
    "retention.keep_runs": (int, 0),
    "retention.max_age_days": (float, 0),
    "daemon.grace_period": (float, 0),
    "sandbox.isolation": str,
    "sandbox.bwrap": str,
    "sandbox.cgroup": str,
    "deps.index_url": str,
    "deps.extra_index_urls": list,
    "deps.find_links": list,
    "deps.offline": bool,
    "deps.python_downloads": bool,
    "daemon.state_retry_limit": (float, 0),
}
FREE_TABLES = ("secrets", "notify")


def check_key(key: str) -> None:
    """Refuse a dotted key that is no setting (NotFoundError, exit 3, with a close match).

    Settings are the keys of SCHEMA, the tables they sit in (`webhook`), and entries of
    the free tables: `secrets.NAME`, `notify.NAME`, `notify.NAME.url`.
    """
    import difflib

    from daycare_cli.core.errors import NotFoundError

    parts = key.split(".")
    if key in SCHEMA or key in {k.split(".")[0] for k in SCHEMA if "." in k}:
        return
    if parts[0] in FREE_TABLES and all(parts) and len(parts) <= (3 if parts[0] == "notify" else 2):
        return
    names = sorted([*SCHEMA, "secrets.NAME", "notify.NAME.url"])
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    raise NotFoundError(f"{key!r} is not a config key", hint=f"{hint}keys: {', '.join(names)}")


def check_config(raw: dict[str, Any], path: str) -> None:
    """Refuse unknown keys and values of the wrong type, naming the key and the fix."""
    import difflib

    known = set(SCHEMA) | {k.split(".")[0] for k in SCHEMA} | set(FREE_TABLES)

    def fail(key: str, message: str, hint: str) -> None:
        raise ConfigError(f"config `{key}`: {message}", path=path, hint=hint)

    def walk(table: dict[str, Any], prefix: str) -> None:
        for name, value in table.items():
            key = f"{prefix}{name}"
            if prefix == "" and name in FREE_TABLES:
                if not isinstance(value, dict):
                    fail(key, "must be a table", f"write it as [{name}] with entries below")
                continue
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean `{close[0]}`?" if close else "remove it"
                fail(key, "is not a known setting", hint)
            if isinstance(value, dict):
                walk(value, key + ".")
                continue
            spec = SCHEMA.get(key)
            if spec is None:
                fail(key, "must be a table", f"write it as [{key}]")
            kind, minimum = spec if isinstance(spec, tuple) else (spec, None)
            if kind is bool and not isinstance(value, bool):
                fail(key, f"must be true or false, not {value!r}", f"daycare config set {key} true")
            if kind is list and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                fail(
                    key,
                    f"must be a list of strings, not {value!r}",
                    f"""daycare config set {key} '["VALUE"]'""",
                )
            if kind in (bool, list):
                continue
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if isinstance(value, bool) or not ok:
                fail(
                    key,
                    f"must be {'a number' if kind is not str else 'a string'}, not {value!r}",
                    f"daycare config set {key} VALUE",
                )
            if minimum is not None and value < minimum:
                fail(
                    key,
                    f"must be at least {minimum}, not {value!r}",
                    f"daycare config set {key} {max(minimum, 1)}",
                )

    walk(raw, "")
    sandbox = raw.get("sandbox")
    isolation = sandbox.get("isolation") if isinstance(sandbox, dict) else None
    if isolation is not None and isolation not in ISOLATION_CHOICES:
        fail(
            "sandbox.isolation",
            f"must be one of {', '.join(ISOLATION_CHOICES)}, not {isolation!r}",
            "daycare config set sandbox.isolation reduced",
        )
    zone = raw.get("timezone")
    if isinstance(zone, str):
        from daycare_cli.core.errors import ScheduleError
        from daycare_cli.core.schedule import check_zone

        try:
            check_zone(zone)
        except ScheduleError as exc:
            fail("timezone", exc.message, exc.hint or "use an IANA name like Europe/Berlin")


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (`4`, `true`, `"x"`); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_config_value(path: Path, key: str, value: Any) -> None:
    """Set a dotted key in config.toml, keeping comments and layout; the file stays 0600."""
    import tomlkit

    from daycare_cli.store.paths import atomic_write

    if not key or any(not part for part in key.split(".")):
        raise UsageError(f"bad config key {key!r}", hint="use a dotted name like webhook.port")
    try:
        doc = tomlkit.parse(path.read_text("utf-8")) if path.exists() else tomlkit.document()
    except Exception as exc:  # tomlkit raises several parse error types
        raise ConfigError(f"config is not valid TOML: {exc}", path=str(path)) from None
    node: Any = doc
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node:
            node[part] = tomlkit.table()
        node = node[part]
        if not isinstance(node, dict):
            raise UsageError(f"config key {part!r} is not a table", path=str(path))
    node[parts[-1]] = value
    text = tomlkit.dumps(doc)
    check_config(tomllib.loads(text), str(path))  # refuse to write a config nothing can load
    atomic_write(path, text, mode=0o600)


@functools.cache
def system_zone() -> str:
    """The system's IANA zone name: $TZ, /etc/timezone, the /etc/localtime link, else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if (tz and "/" in tz) or tz == "UTC":
        return tz
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target:
            return target.split(marker, 1)[1]
    except OSError:
        pass
    return "UTC"
