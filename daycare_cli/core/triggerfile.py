"""Read the `schedule:` and `triggers:` of a task file's frontmatter into Trigger values.

A cron expression is normalised by `core/schedule.py` and its errors are moved onto the
file; a naive `at` time takes the trigger's zone, else the task's; unnamed triggers get
their type as id (`cron`, `cron-2`...). `core/taskfile.py` reads the other keys.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from zoneinfo import ZoneInfo

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from daycare_cli.core import schedule
from daycare_cli.core.errors import ScheduleError, TaskFileError
from daycare_cli.core.task import (
    SIGNATURES,
    TASK_ID_RE,
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    Trigger,
    WebhookTrigger,
)
from daycare_cli.core.yamlrules import NodeReader, is_null, is_plain, kind_of, suggest

TRIGGER_TYPES: tuple[str, ...] = ("cron", "at", "every", "webhook")
_TRIGGER_KEYS: dict[str, tuple[str, ...]] = {
    "cron": ("cron", "timezone", "id"),
    "at": ("at", "timezone", "id"),
    "every": ("every", "id"),
    "webhook": ("webhook", "id"),
}
_ALL_TRIGGER_KEYS: tuple[str, ...] = (*TRIGGER_TYPES, "timezone", "id")
WEBHOOK_KEYS: tuple[str, ...] = ("signature", "secret")
# Each trigger is planned by the daemon's loop; more than this is surely a mistake and
# would cost the loop seconds (a 1 MiB file holds 75,000 `- every: 1m` lines).
MAX_TRIGGERS = 1000


class TriggerReader(NodeReader):
    """Reads triggers from frontmatter nodes; `task_zone` is the task's `timezone`, if any."""

    def __init__(self, path: str, text: str, fm_line: int) -> None:
        super().__init__(path, text, fm_line)
        self.task_zone: str | None = None

    def schedule_error(self, node: ScalarNode, exc: ScheduleError) -> TaskFileError:
        """Move a ScheduleError (column relative to the value) onto the file."""
        quoted = 0 if is_plain(node) else 1
        col0 = node.start_mark.column
        if exc.col:
            col0 += quoted + exc.col - 1
        return self.error((node.start_mark.line, col0), exc.message, exc.hint)

    def zone(self, node: Node, key: str) -> str:
        name = self.string(node, key)
        assert isinstance(node, ScalarNode)
        try:
            schedule.check_zone(name)
        except ScheduleError as exc:
            raise self.error(node, exc.message, exc.hint) from None
        return name

    def cron(self, node: Node, expr: str, zone: str | None, trigger_id: str = "cron") -> Trigger:
        assert isinstance(node, ScalarNode)
        try:
            normal = schedule.normalize_cron(expr)
        except ScheduleError as exc:
            raise self.schedule_error(node, exc) from None
        return CronTrigger(expr=normal, id=trigger_id, timezone=zone, source=expr.strip())

    def triggers(self, node: Node) -> list[tuple[Trigger, Node | None]]:
        if not isinstance(node, SequenceNode):
            raise self.error(
                node,
                f"`triggers` must be a list, not {kind_of(node)}",
                'start each trigger with "- ", e.g. triggers: [{cron: "0 9 * * *"}]',
            )
        if len(node.value) > MAX_TRIGGERS:
            raise self.error(
                node.value[MAX_TRIGGERS],
                f"a task may have at most {MAX_TRIGGERS:,} triggers",
                "split the task, or use one cron expression for many times (`0 9,12,18 * * *`)",
            )
        return [self.trigger(item) for item in node.value]

    def trigger(self, node: Node) -> tuple[Trigger, Node | None]:
        self.last = node
        if not isinstance(node, MappingNode):
            text = node.value if isinstance(node, ScalarNode) else "..."
            raise self.error(
                node,
                f"a trigger must be a mapping like `cron: EXPR`, not {kind_of(node)}",
                f'- cron: "{text}"  (or at:, every:, webhook:)',
            )
        entries = {name: (knode, vnode) for name, knode, vnode in self.pairs(node, "trigger")}
        for name, (knode, _) in entries.items():
            if name not in _ALL_TRIGGER_KEYS:
                raise self.error(
                    knode,
                    f"unknown trigger key `{name}`",
                    suggest(name, _ALL_TRIGGER_KEYS)
                    or "a trigger is one of cron, at, every, webhook",
                )
        kinds = [name for name in entries if name in TRIGGER_TYPES]
        if not kinds:
            raise self.error(
                node,
                "a trigger needs one of `cron`, `at`, `every` or `webhook`",
                '- cron: "0 9 * * *"',
            )
        if len(kinds) > 1:
            raise self.error(
                entries[kinds[1]][0],
                f"a trigger has one type, but this one has `{kinds[0]}` and `{kinds[1]}`",
                "put each in its own list item starting with `- `",
            )
        kind = kinds[0]
        for name, (knode, _) in entries.items():
            if name not in _TRIGGER_KEYS[kind]:
                raise self.error(
                    knode, f"`{name}` does not apply to {_article(kind)} `{kind}` trigger"
                )
        id_node: Node | None = None
        trigger_id = kind
        if "id" in entries:
            id_node = entries["id"][1]
            trigger_id = self.string(id_node, "id")
            if not TASK_ID_RE.fullmatch(trigger_id):
                raise self.error(
                    id_node,
                    f"trigger id `{trigger_id}` is not valid",
                    "use lowercase letters, digits and dashes, e.g. `id: morning`",
                )
        zone = None
        if "timezone" in entries and not is_null(entries["timezone"][1]):
            zone = self.zone(entries["timezone"][1], "timezone")
        vnode = entries[kind][1]
        if kind == "cron":
            expr = self.string(vnode, "cron")
            return self.cron(vnode, expr, zone, trigger_id), id_node
        if kind == "at":
            return AtTrigger(at=self.instant(vnode, zone), id=trigger_id, timezone=zone), id_node
        if kind == "every":
            seconds = self.duration(vnode, "every", minimum=1.0)
            return EveryTrigger(seconds=seconds, id=trigger_id), id_node
        return self.webhook(vnode, trigger_id), id_node

    def instant(self, node: Node, zone: str | None) -> datetime:
        """A datetime: naive times take the trigger's zone, else the task's; with neither it
        stays naive and means the default zone (config, else the system's), resolved by
        `schedule.at_instant` when the schedule is evaluated."""
        value = self.scalar(node, "at", "a date and time")
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError as exc:
                why = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
                raise self.error(
                    node,
                    f"`at` must be an ISO date and time, not {value!r}{why}",
                    'at: "2026-11-22T09:00:00"',
                ) from None
        if not isinstance(value, datetime):
            assert isinstance(node, ScalarNode)
            kind = "a date without a time" if isinstance(value, date) else kind_of(node)
            raise self.error(
                node, f"`at` must be a date and time, not {kind}", 'at: "2026-11-22T09:00:00"'
            )
        try:
            schedule.check_at(value)
        except ScheduleError as exc:
            raise self.error(node, exc.message, exc.hint) from None
        if value.tzinfo is None:
            chosen = zone or self.task_zone
            if chosen:
                value = value.replace(tzinfo=ZoneInfo(chosen))
        return value

    def webhook(self, node: Node, trigger_id: str) -> WebhookTrigger:
        if is_null(node):
            return WebhookTrigger(id=trigger_id)
        if isinstance(node, ScalarNode):
            if self.scalar(node, "webhook", "true") is True:
                return WebhookTrigger(id=trigger_id)
            raise self.error(
                node,
                f"`webhook` must be true or a mapping, not {node.value!r}",
                "webhook: true  (remove the trigger to turn the webhook off)",
            )
        values: dict[str, tuple[str, Node]] = {}
        for name, knode, vnode in self.pairs(node, "webhook"):
            if name not in WEBHOOK_KEYS:
                raise self.error(
                    knode,
                    f"unknown webhook key `{name}`",
                    suggest(name, WEBHOOK_KEYS) or "the keys are: signature, secret",
                )
            if name == "signature":
                values[name] = (self.choice(vnode, "webhook.signature", SIGNATURES), vnode)
            else:
                values[name] = (self.string(vnode, "webhook.secret"), vnode)
        signature = values.get("signature", (None, node))[0]
        secret = values.get("secret", (None, node))[0]
        if signature and not secret:
            raise self.error(
                node,
                "a webhook signature needs `secret`: the name of a secret in config",
                f"webhook: {{signature: {signature}, secret: MY_SECRET}}",
            )
        if secret and not signature:
            raise self.error(
                values["secret"][1],
                "a webhook `secret` needs `signature` (github or hmac-sha256)",
                f"webhook: {{signature: hmac-sha256, secret: {secret}}}",
            )
        return WebhookTrigger(id=trigger_id, signature=signature, secret=secret)

    def assign_ids(self, triggers: list[tuple[Trigger, Node | None]]) -> tuple[Trigger, ...]:
        """Give unnamed triggers their type as id (`cron`, `cron-2`...); reject repeated ids."""
        used: dict[str, Node] = {}
        for trigger, id_node in triggers:
            if id_node is None:
                continue
            if trigger.id in used:
                first = self.fm_line + used[trigger.id].start_mark.line
                raise self.error(
                    id_node,
                    f"duplicate trigger id `{trigger.id}`",
                    f"give each trigger its own id (`{trigger.id}` is also on line {first})",
                )
            used[trigger.id] = id_node
        taken = set(used)
        # The next suffix to try per type: each candidate is tried once, so N unnamed
        # triggers cost N steps (counting from 2 for each made it N² / 2).
        next_n: dict[str, int] = {}
        out: list[Trigger] = []
        for trigger, id_node in triggers:
            if id_node is None:
                kind = trigger.type
                n = next_n.get(kind, 1)
                candidate = kind if n == 1 else f"{kind}-{n}"
                while candidate in taken:
                    n += 1
                    candidate = f"{kind}-{n}"
                next_n[kind] = n + 1
                taken.add(candidate)
                trigger = dataclasses.replace(trigger, id=candidate)
            out.append(trigger)
        return tuple(out)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
