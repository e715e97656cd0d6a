"""Task, Trigger and policy types (docs/task-file.md), and the effective zone of a trigger.

These are plain immutable values. `core/taskfile.py` builds them from a file and
validates every key with precise positions; everything else only reads them.
"""

from __future__ import annotations

import marshal
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# `${secret:NAME}` in a task's `env`: NAME of a secret in config [secrets].
SECRET_REF_RE = re.compile(r"\$\{secret:([A-Za-z0-9_.-]+)\}")
TASK_ID_RULE = "lowercase letters, digits and dashes, starting with a letter or digit, at most 63"

Overlap = Literal["skip", "queue", "allow", "replace"]
CatchUp = Literal["skip", "latest", "all"]
NotifyEvent = Literal["response", "failure", "success", "skip", "recovery"]

OVERLAP_POLICIES: tuple[str, ...] = ("skip", "queue", "allow", "replace")
CATCH_UP_POLICIES: tuple[str, ...] = ("skip", "latest", "all")
NOTIFY_EVENTS: tuple[str, ...] = ("response", "failure", "success", "skip", "recovery")
SIGNATURES: tuple[str, ...] = ("github", "hmac-sha256")

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """Fires at the slots of a 5-field cron expression (or `@` macro) in a zone.

    `expr` is the normalised 5-field form (macros expanded, except `@reboot`);
    `source` is what the user wrote. `timezone` is the trigger's own zone, if any;
    the task's zone applies otherwise.
    """

    expr: str
    id: str = "cron"
    timezone: str | None = None
    source: str = ""

    @property
    def type(self) -> str:
        return "cron"

    @property
    def reboot(self) -> bool:
        """True for `@reboot`: fires once when the daemon starts, never on a clock."""
        return self.expr == "@reboot"


@dataclass(frozen=True, slots=True)
class AtTrigger:
    """Fires once at an instant (aware datetime; zone from the trigger or the task)."""

    at: datetime
    id: str = "at"
    timezone: str | None = None

    @property
    def type(self) -> str:
        return "at"


@dataclass(frozen=True, slots=True)
class EveryTrigger:
    """Fires every `seconds` from the daemon's start or the last fire (1 s minimum)."""

    seconds: float
    id: str = "every"

    @property
    def type(self) -> str:
        return "every"


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    """Fires on `POST /hooks/<token>`; optional signature check with a config secret."""

    id: str = "webhook"
    signature: str | None = None  # "github" | "hmac-sha256" | None
    secret: str | None = None  # name of a secret in config, never the secret itself

    @property
    def type(self) -> str:
        return "webhook"


Trigger = CronTrigger | AtTrigger | EveryTrigger | WebhookTrigger


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """The `sandbox:` mapping of a task.

    `read`/`write` are absolute paths or `~/…` (checked by the reader; resolved on the
    host at launch). `read_at`/`write_at` are the file lines of those entries, for
    errors found at launch (a symlink, a path inside a workspace); they do not take
    part in equality.
    """

    network: bool = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    memory: int = 512 * MIB  # bytes of address space per process; the run's total in a cgroup
    cpu: float | None = None  # CPU seconds per block; default: the block timeout + 1
    disk: int = 256 * MIB  # bytes a run may add to files/ and artifacts/
    read_at: tuple[int, ...] = field(default=(), compare=False)
    write_at: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class PythonSpec:
    """What blocks need of Python: the `python:` mapping, or a block's PEP 723 metadata.

    `dependencies` are PEP 508 requirements as normalised by `core/requirements.py`;
    `version` is a PEP 440 specifier set (`==3.12.*` for `version: "3.12"`), or None for
    the default interpreter. The empty spec means the system interpreter, no packages.
    """

    dependencies: tuple[str, ...] = ()
    version: str | None = None

    @property
    def empty(self) -> bool:
        """True when blocks need nothing beyond the standard library and any Python."""
        return not self.dependencies and self.version is None


@dataclass(frozen=True, slots=True)
class Task:
    """A validated task file. Defaults follow docs/task-file.md.

    `timezone` is the zone the file names (None: config default, else the system's).
    `model` is None when the file does not name one (config default applies) and the
    string "none" when the file turns the model off.
    """

    id: str
    name: str
    body: str = ""
    description: str | None = None
    timezone: str | None = None
    triggers: tuple[Trigger, ...] = ()
    enabled: bool = True
    delete_after_run: bool = False
    execute: bool = False
    model: str | None = None
    system: str | None = None
    redact_model_input: bool = True  # mask config secrets in what the model is sent
    timeout: float = 60.0
    run_timeout: float = 900.0
    overlap: str = "skip"
    catch_up: str = "latest"
    catch_up_window: float | None = None  # None: one period, capped at 24 h
    retries: int = 0
    retry_delay: float = 30.0
    jitter: float = 0.0
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)
    python: PythonSpec = field(default_factory=PythonSpec)
    env: dict[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
    notify_on: tuple[str, ...] = ("response", "failure")
    tags: tuple[str, ...] = ()
    path: str | None = None
    body_line: int = 1  # 1-based line of the file where the body starts

    @property
    def once(self) -> bool:
        """True when the task is archived after its first run (`delete_after_run` or `at`)."""
        return self.delete_after_run or any(isinstance(t, AtTrigger) for t in self.triggers)

    def trigger(self, trigger_id: str) -> Trigger | None:
        """The trigger with that id, if any."""
        for t in self.triggers:
            if t.id == trigger_id:
                return t
        return None

    def model_enabled(self, default: str | None) -> str | None:
        """The model this task sends its prompt to, given the config default, or None."""
        chosen = self.model if self.model is not None else default
        if chosen is None or chosen.strip().lower() in ("", "none"):
            return None
        return chosen

    def packed_own(self) -> bytes:
        """Its own values but its id (TASK_PACKED), packed in one bytes object (marshal)."""
        return marshal.dumps(tuple([getattr(self, name) for name in TASK_PACKED]))

    def shared_settings(self) -> tuple[Any, ...]:
        """Its settings (TASK_SETTINGS) as one tuple, the same object for equal settings
        of other tasks (while they are recent)."""
        settings = tuple([getattr(self, name) for name in TASK_SETTINGS])
        try:
            if len(_SETTINGS) > 4096:  # edits over months: the pool only needs the recent
                _SETTINGS.clear()
            settings = _SETTINGS.setdefault(settings, settings)
        except TypeError:  # an unhashable value: this task's settings are its own
            pass
        return settings

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (the parse cache) as its id, its own values packed (marshal) and one
        tuple of the settings many tasks share: a restart of 10,000 tasks loads them in
        half the time of the field-by-field state of a slotted dataclass, their numbers
        are shared objects, not one copy per task, and the daemon takes them packed as
        they are (`core/taskhead.py`)."""
        return (rebuild_task, (self.id, self.packed_own(), self.shared_settings()))


# The fields of `Task.__reduce__`'s shared tuple, in order; the others are a task's own.
TASK_SETTINGS = (
    "timezone",
    "triggers",
    "enabled",
    "delete_after_run",
    "execute",
    "model",
    "system",
    "redact_model_input",
    "timeout",
    "run_timeout",
    "overlap",
    "catch_up",
    "catch_up_window",
    "retries",
    "retry_delay",
    "jitter",
    "sandbox",
    "python",
    "notify",
    "notify_on",
    "tags",
)
TASK_OWN = ("id", "name", "body", "description", "env", "path", "body_line")
# A task's own values but its id, in the order `Task.own` packs them.
TASK_PACKED = ("name", "body", "description", "env", "path", "body_line")
_SETTINGS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def rebuild_task(id: str, own: bytes, s: tuple[Any, ...]) -> Task:
    """A whole task from `Task.__reduce__`'s values (its id, `packed_own()` and
    `shared_settings()`)."""
    name, body, description, env, path, body_line = marshal.loads(own)
    return Task(
        id, name, body, description, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
        s[9], s[10], s[11], s[12], s[13], s[14], s[15], s[16], s[17], env, s[18], s[19],
        s[20], path, body_line,
    )  # fmt: skip


def valid_task_id(text: str) -> bool:
    """The one rule for task ids at every entry: command line, control API, webhook path.

    A task id is a file name in the tasks directory, so anything else (`..`, `/`, `%2F`
    once decoded, upper case, a trailing newline) is refused before any path is built.
    """
    return TASK_ID_RE.fullmatch(text) is not None


class Zoned(Protocol):
    """What has a zone of its own, or none: a task (or the plan's `TaskHead`)."""

    @property
    def timezone(self) -> str | None: ...


def effective_zone(task: Zoned, trigger: Trigger | None, default: str) -> str:
    """The zone a trigger is evaluated in: its own, else the task's, else `default`.

    `default` is config `timezone`, else the system's zone; the caller passes it. With
    no trigger, the zone of the task's triggers that name none.
    """
    own = getattr(trigger, "timezone", None) if trigger is not None else None
    return own or task.timezone or default
