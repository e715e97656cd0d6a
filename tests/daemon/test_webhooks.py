"""Webhooks against the real server (docs/operations.md): `daycare daemon run` as a subprocess.

Each daemon runs on its own temp DAYCARE_HOME with `[webhook] port = 0`; its URL is read
from `<home>/run/webhook.url`, tokens come from `daycare webhook url|rotate`, and every
test checks the HTTP status, the body and the state database afterwards.

Runs that must stay active while a test sends more requests wait in their block for a
`go` file the test writes into the task's `files/` directory (the block's cwd), so no
test depends on how fast a run happens to be.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from daycare_cli.cli.app import build_app

REPO = Path(__file__).resolve().parents[2]
READY = "daycare daemon ready"
MAX_BODY = 1024 * 1024
DONE = {"succeeded", "failed", "skipped", "timed_out", "interrupted", "cancelled", "missed"}
NOT_FOUND = {"error": "not found"}
GH_SECRET = "gh-" + "s3cret-value-0123456789"
HM_SECRET = "hm-" + "other-secret-9876543210"

# A block that shows what `payload` is: "dict:<ref>" for a JSON object, "<type>:<value>" else.
ECHO = """\
<run_python>
if isinstance(payload, dict):
    print("dict:" + payload["ref"])
else:
    print(type(payload).__name__ + ":" + str(payload))
</run_python>
"""
# A block that waits (bounded) for the test to write `go` into the task's files/ dir.
GATED = """\
<run_python>
import os, time
deadline = time.time() + 30
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.02)
print("gate open" if os.path.exists("go") else "gate timeout")
</run_python>
"""


def task_file(
    *,
    execute: bool = True,
    overlap: str = "allow",
    hook: str = "true",
    body: str = ECHO,
    **extra: str,
) -> str:
    """A task file with one webhook trigger; `hook` is the trigger's YAML value."""
    lines = ["---", "triggers:", f"  - webhook: {hook}", f"execute: {str(execute).lower()}"]
    lines.append(f"overlap: {overlap}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join([*lines, "---", body])


class DaemonProc:
    """A `daycare daemon run` subprocess on its own home, with helpers to drive and inspect it."""

    def __init__(
        self, home: Path, config: str, tasks: dict[str, str], log_level: str = "INFO"
    ) -> None:
        self.home = home
        (home / "tasks").mkdir(parents=True)
        (home / "config.toml").write_text(config)
        for task_id, text in tasks.items():
            (home / "tasks" / f"{task_id}.md").write_text(text)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
        self.env.update(DAYCARE_HOME=str(home), TZ="UTC", PYTHONPATH=str(REPO), NO_COLOR="1")
        self.log_path = home / "daemon.stderr"
        self.tokens: dict[str, str] = {}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daycare_cli", "daemon", "run", "--log-level", log_level],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            self.wait_log(READY, timeout=20)
        except BaseException:
            self.stop()
            raise
        self.base = (home / "run" / "webhook.url").read_text().strip()

    # -- process ----------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> None:
        """Wait until the daemon's stderr contains `text` (fails at once if it exited)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"daemon exited ({self.proc.returncode}) before {text!r}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} in the daemon's stderr after {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    # -- CLI and HTTP -----------------------------------------------------------------

    def cli(self, *args: str) -> Result:
        """`daycare ARGS` against this home, in-process (a subprocess costs ~0.5 s a call)."""
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DAYCARE_")}
        env.update(DAYCARE_HOME=str(self.home), TZ="UTC", NO_COLOR="1")
        res = CliRunner().invoke(build_app(), list(args), env=env, prog_name="daycare")
        assert res.exit_code == 0, res.output
        return res

    def url(self, task_id: str) -> str:
        """The task's webhook URL from `daycare webhook url` (cached per task)."""
        if task_id not in self.tokens:
            self.tokens[task_id] = self.cli("webhook", "url", task_id).stdout.strip()
        return self.tokens[task_id]

    def post(self, task_id: str, content: bytes | str = b"{}", **kw: Any) -> httpx.Response:
        return httpx.post(self.url(task_id), content=content, timeout=15, **kw)

    # -- database ---------------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.home / "state.db", timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql, params)]
        finally:
            db.close()

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM runs WHERE task = ? ORDER BY rowid", (task_id,))

    def wait_runs(
        self, run_ids: list[str], until: Callable[[str], bool] = DONE.__contains__
    ) -> dict[str, dict[str, Any]]:
        """Wait until every run's status satisfies `until` (default: finished)."""
        deadline = time.monotonic() + 40
        while True:
            marks = ",".join("?" * len(run_ids))
            rows = {
                r["id"]: r
                for r in self.query(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(run_ids))
            }
            if len(rows) == len(set(run_ids)) and all(until(r["status"]) for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                pytest.fail(f"runs not there yet: {rows}\n{self.log()}")
            time.sleep(0.02)

    def open_gate(self, task_id: str) -> None:
        files = self.home / "workspaces" / task_id / "files"
        files.mkdir(parents=True, exist_ok=True)
        (files / "go").write_text("go")


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_many(
    url: str, bodies: list[bytes], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """Send every body at once over parallel connections."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(
            await asyncio.gather(*(client.post(url, content=b, headers=headers) for b in bodies))
        )


HUB_TASKS = {
    "echo": task_file(),
    "sizes": task_file(),
    "rotating": task_file(execute=False),
    "off": task_file(execute=False, enabled="false"),
    "github": task_file(execute=False, hook="{signature: github, secret: gh_hook}"),
    "hmac": task_file(execute=False, hook="{signature: hmac-sha256, secret: hm_hook}"),
    "nosecret": task_file(execute=False, hook="{signature: github, secret: absent_hook}"),
    "dedup": task_file(execute=False),
    "dedup-other": task_file(execute=False),
    "many-allow": task_file(),
    "many-skip": task_file(overlap="skip", body=GATED),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon (debug logging) for the tests that need no special limits."""
    config = (
        "max_concurrent_runs = 8\n"
        "[webhook]\nport = 0\nqueue_size = 100\n"
        f'[secrets]\ngh_hook = "{GH_SECRET}"\nhm_hook = "{HM_SECRET}"\n'
    )
    daemon = DaemonProc(tmp_path_factory.mktemp("hub") / "home", config, HUB_TASKS, "DEBUG")
    yield daemon
    daemon.stop()


# -- a good token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b'{"ref": "refs/heads/main", "n": 1}', "application/json", "dict:refs/heads/main"),
        (b"hello world", "text/plain", "str:hello world"),
        ("grüße".encode(), "text/plain; charset=utf-8", "str:grüße"),
        (b"{not json", "application/json", "str:{not json"),
        (b"[1, 2]", "application/json", "list:[1, 2]"),
    ],
    ids=["json-object", "text", "utf8-text", "broken-json", "json-list"],
)
def test_good_token_starts_a_run_that_sees_the_payload(
    hub: DaemonProc, content: bytes, content_type: str, expected: str
) -> None:
    before = len(hub.runs("echo"))
    r = hub.post("echo", content, headers={"Content-Type": content_type})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"run"}
    run = hub.wait_runs([body["run"]])[body["run"]]
    assert (run["status"], run["trigger"], run["trigger_id"]) == ("succeeded", "webhook", "webhook")
    assert expected in run["output"]
    assert (Path(run["run_dir"]) / "payload.json").read_bytes() == content
    assert len(hub.runs("echo")) == before + 1
    fired = hub.query("SELECT actor FROM events WHERE run = ? AND kind = 'run.fired'", (run["id"],))
    assert fired == [{"actor": "webhook"}]


def test_listener_is_bound_to_loopback_only(hub: DaemonProc) -> None:
    parts = urlsplit(hub.base)
    assert parts.hostname == "127.0.0.1"
    assert parts.port and hub.url("echo").startswith(hub.base + "/hooks/")
    port_hex = f"{parts.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if local.endswith(":" + port_hex) and state == "0A":  # 0A: LISTEN
                listening.append((table, local))
    assert listening == [("/proc/net/tcp", "0100007F:" + port_hex)]


# -- unknown and revoked tokens ----------------------------------------------------------


def _unknown_tokens(hub: DaemonProc) -> list[str]:
    real = hub.url("echo").rsplit("/", 1)[1]
    return [
        secrets.token_urlsafe(24),  # well-formed, never issued
        real[:-1] + ("A" if real[-1] != "A" else "B"),  # one character off a real one
        "x",
        "a" * 2000,
        hub.url("off").rsplit("/", 1)[1],  # a real token of a disabled task
    ]


def test_unknown_token_is_404_and_starts_nothing(hub: DaemonProc) -> None:
    total = len(hub.query("SELECT id FROM runs"))
    bodies = set()
    for token in _unknown_tokens(hub):
        r = httpx.post(f"{hub.base}/hooks/{token}", content=b"{}", timeout=15)
        assert r.status_code == 404, (token, r.text)
        assert r.json() == NOT_FOUND
        bodies.add((r.content, r.headers["content-type"]))
    assert len(bodies) == 1  # nothing tells one kind of bad token from another
    assert len(hub.query("SELECT id FROM runs")) == total


def test_rotate_revokes_the_old_url_with_the_same_404(hub: DaemonProc) -> None:
    def rotations() -> int:
        return len(hub.query("SELECT id FROM events WHERE kind = 'webhook.rotated'"))

    old, rotated, before = hub.url("rotating"), rotations(), len(hub.runs("rotating"))
    assert hub.post("rotating").status_code == 202
    res = hub.cli("webhook", "rotate", "rotating")
    new = res.stdout.strip()
    assert "revoked" in res.stderr
    assert new != old and new.startswith(hub.base + "/hooks/")
    hub.tokens["rotating"] = new

    revoked = httpx.post(old, content=b"{}", timeout=15)
    unknown = httpx.post(f"{hub.base}/hooks/{secrets.token_urlsafe(24)}", content=b"{}", timeout=15)
    assert revoked.status_code == unknown.status_code == 404
    assert revoked.content == unknown.content
    assert revoked.headers["content-type"] == unknown.headers["content-type"]

    r = httpx.post(new, content=b"{}", timeout=15)
    assert r.status_code == 202
    assert hub.cli("webhook", "url", "rotating").stdout.strip() == new  # stable until rotated
    runs = hub.runs("rotating")
    assert len(runs) == before + 2 and runs[-1]["id"] == r.json()["run"]
    assert rotations() == rotated + 1


# -- signatures --------------------------------------------------------------------------

SIGNED = b'{"ref": "refs/heads/signed"}'

BAD_SIG = {"error": "bad signature"}
NO_SECRET = {"error": "signature secret not configured"}


def gh(secret: str, body: bytes = SIGNED, upper: bool = False) -> dict[str, str]:
    """GitHub's header: `X-Hub-Signature-256: sha256=<hex>`."""
    digest = sign(secret, body)
    return {"X-Hub-Signature-256": "sha256=" + (digest.upper() if upper else digest)}


def hm(secret: str, body: bytes = SIGNED) -> dict[str, str]:
    """The plain `hmac-sha256` header: `X-Signature-256: <hex>`."""
    return {"X-Signature-256": sign(secret, body)}


SIGNATURE_CASES: list[tuple[str, str, dict[str, str], int, dict[str, str] | None]] = [
    # (id, task, headers, status, body; None = a run id)
    ("gh-ok", "github", gh(GH_SECRET), 202, None),
    ("gh-upper-hex", "github", gh(GH_SECRET, upper=True), 202, None),
    ("gh-wrong-secret", "github", gh("nope"), 401, BAD_SIG),
    ("gh-other-body", "github", gh(GH_SECRET, b"{}"), 401, BAD_SIG),
    ("gh-missing", "github", {}, 401, BAD_SIG),
    ("gh-empty", "github", {"X-Hub-Signature-256": ""}, 401, BAD_SIG),
    ("gh-wrong-header", "github", hm(GH_SECRET), 401, BAD_SIG),
    ("hm-ok", "hmac", hm(HM_SECRET), 202, None),
    ("hm-ok-prefixed", "hmac", {"X-Signature-256": "sha256=" + sign(HM_SECRET, SIGNED)}, 202, None),
    ("hm-daycare-header", "hmac", {"X-Daycare-Signature": sign(HM_SECRET, SIGNED)}, 202, None),
    ("hm-wrong-secret", "hmac", hm(GH_SECRET), 401, BAD_SIG),
    ("hm-truncated", "hmac", {"X-Signature-256": sign(HM_SECRET, SIGNED)[:-2]}, 401, BAD_SIG),
    ("hm-missing", "hmac", {}, 401, BAD_SIG),
    ("hm-wrong-header", "hmac", gh(HM_SECRET), 401, BAD_SIG),
    ("no-secret-signed", "nosecret", gh(""), 403, NO_SECRET),
    ("no-secret-unsigned", "nosecret", {}, 403, NO_SECRET),
]


@pytest.mark.parametrize(
    ("task", "headers", "status", "expected"),
    [c[1:] for c in SIGNATURE_CASES],
    ids=[c[0] for c in SIGNATURE_CASES],
)
def test_signature(
    hub: DaemonProc,
    task: str,
    headers: dict[str, str],
    status: int,
    expected: dict[str, Any] | None,
) -> None:
    def bad_signature_events() -> int:
        sql = "SELECT id FROM events WHERE kind = 'webhook.bad_signature' AND task = ?"
        return len(hub.query(sql, (task,)))

    runs, events = len(hub.runs(task)), bad_signature_events()
    r = hub.post(task, SIGNED, headers=headers)
    assert r.status_code == status, r.text
    if expected is None:
        run_id = r.json()["run"]
        run = hub.wait_runs([run_id])[run_id]
        assert run["status"] == "succeeded"
        assert (Path(run["run_dir"]) / "payload.json").read_bytes() == SIGNED
        assert len(hub.runs(task)) == runs + 1
    else:
        assert r.json() == expected
        assert len(hub.runs(task)) == runs  # refused before any run row
    assert bad_signature_events() == events + (status == 401)


# -- body size ---------------------------------------------------------------------------


def _json_of_size(size: int) -> bytes:
    head = b'{"ref": "big", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 64 * 1024):
        yield data[i : i + 64 * 1024]


@pytest.mark.parametrize(
    ("size", "chunked", "status"),
    [
        (MAX_BODY, False, 202),
        (MAX_BODY, True, 202),
        (MAX_BODY + 1, False, 413),
        (MAX_BODY + 1, True, 413),
        (4 * MAX_BODY, False, 413),
    ],
    ids=["1MiB", "1MiB-chunked", "1MiB+1", "1MiB+1-chunked", "4MiB"],
)
def test_body_size_limit(hub: DaemonProc, size: int, chunked: bool, status: int) -> None:
    data = _json_of_size(size)
    assert len(data) == size
    before = len(hub.runs("sizes"))
    r = hub.post("sizes", _chunks(data) if chunked else data)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    if status == 413:
        assert r.json() == {"error": "payload larger than 1 MiB"}
        assert len(hub.runs("sizes")) == before
        return
    run_id = r.json()["run"]
    run = hub.wait_runs([run_id])[run_id]
    assert run["status"] == "succeeded" and "dict:big" in run["output"]
    assert (Path(run["run_dir"]) / "payload.json").stat().st_size == MAX_BODY
    assert len(hub.runs("sizes")) == before + 1


# -- delivery ids ------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-GitHub-Delivery", "Idempotency-Key"])
def test_repeated_delivery_id_starts_one_run(hub: DaemonProc, header: str) -> None:
    delivery = f"{header}-{secrets.token_hex(8)}"
    before = len(hub.runs("dedup"))
    first = hub.post("dedup", b'{"n": 1}', headers={header: delivery})
    assert first.status_code == 202 and set(first.json()) == {"run"}
    run_id = first.json()["run"]
    again = hub.post("dedup", b'{"n": 2}', headers={header: delivery})
    assert again.status_code == 202
    assert again.json() == {"run": run_id, "duplicate": True}
    assert len(hub.runs("dedup")) == before + 1
    run = hub.wait_runs([run_id])[run_id]
    assert (Path(run["run_dir"]) / "payload.json").read_bytes() == b'{"n": 1}'

    # Sent at once, the same delivery still starts one run.
    burst = f"burst-{secrets.token_hex(8)}"
    responses = asyncio.run(post_many(hub.url("dedup"), [b"{}"] * 10, {header: burst}))
    assert [r.status_code for r in responses] == [202] * 10
    ids = {r.json()["run"] for r in responses}
    assert len(ids) == 1
    assert sum(bool(r.json().get("duplicate")) for r in responses) == 9
    assert len(hub.runs("dedup")) == before + 2

    # Delivery ids belong to a task: another task's delivery with that id is new.
    other = hub.post("dedup-other", b"{}", headers={header: delivery})
    assert other.status_code == 202 and set(other.json()) == {"run"}
    assert other.json()["run"] != run_id
    known = hub.query("SELECT task, run_id FROM deliveries WHERE delivery_id = ?", (delivery,))
    assert sorted(known, key=lambda d: d["task"]) == [
        {"task": "dedup", "run_id": run_id},
        {"task": "dedup-other", "run_id": other.json()["run"]},
    ]


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_requests_with_overlap_allow(hub: DaemonProc) -> None:
    bodies = [json.dumps({"ref": f"r{i}"}).encode() for i in range(50)]
    responses = asyncio.run(post_many(hub.url("many-allow"), bodies))
    assert [r.status_code for r in responses] == [202] * 50
    ids = [r.json()["run"] for r in responses]
    assert len(set(ids)) == 50
    rows = hub.wait_runs(ids)
    assert sorted(r["id"] for r in hub.runs("many-allow")) == sorted(ids)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    # Each run saw its own request's payload.
    for run_id, body in zip(ids, bodies, strict=True):
        assert f"dict:{json.loads(body)['ref']}" in rows[run_id]["output"]


def test_concurrent_requests_with_overlap_skip(hub: DaemonProc) -> None:
    responses = asyncio.run(post_many(hub.url("many-skip"), [b"{}"] * 50))
    assert [r.status_code for r in responses] == [202] * 50
    ids = [r.json()["run"] for r in responses]
    assert len(set(ids)) == 50
    assert sorted(r["id"] for r in hub.runs("many-skip")) == sorted(ids)
    # The first run holds the gate; every other request found it active.
    hub.wait_runs(ids, until=lambda s: s in ("running", "skipped"))
    hub.open_gate("many-skip")
    rows = hub.wait_runs(ids)
    statuses = sorted(r["status"] for r in rows.values())
    assert statuses == ["skipped"] * 49 + ["succeeded"]
    assert all(
        "overlap: skip" in r["skip_reason"] for r in rows.values() if r["status"] == "skipped"
    )


# -- a full queue ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """A daemon that runs one run at a time and lets one more wait per task."""
    config = "max_concurrent_runs = 1\n[webhook]\nport = 0\nqueue_size = 1\n"
    tasks = {f"q-{p}": task_file(overlap=p, body=GATED) for p in ("queue", "allow")}
    daemon = DaemonProc(tmp_path_factory.mktemp("tight") / "home", config, tasks)
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("overlap", ["queue", "allow"])
def test_full_queue_is_429(tight: DaemonProc, overlap: str) -> None:
    task = f"q-{overlap}"
    first = tight.post(task)
    assert first.status_code == 202
    first_id = first.json()["run"]
    tight.wait_runs([first_id], until=lambda s: s == "running")
    # One more may wait (queue_size = 1); of five sent at once exactly one gets in.
    responses = asyncio.run(post_many(tight.url(task), [b"{}"] * 5))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202, 429, 429, 429, 429]
    for r in responses:
        if r.status_code == 429:
            assert r.json() == {"error": "queue full, try again later"}
    waiting = next(r.json()["run"] for r in responses if r.status_code == 202)
    assert [r["id"] for r in tight.runs(task)] == [first_id, waiting]
    assert tight.runs(task)[1]["status"] == "queued"

    tight.open_gate(task)
    rows = tight.wait_runs([first_id, waiting])
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    # The queue drained: the task accepts again.
    again = tight.post(task)
    assert again.status_code == 202
    tight.wait_runs([again.json()["run"]])
    assert len(tight.runs(task)) == 3


# -- stopping ----------------------------------------------------------------------------


def test_503_while_stopping(tmp_path: Path) -> None:
    config = "[webhook]\nport = 0\n[daemon]\ngrace_period = 5\n"
    daemon = DaemonProc(tmp_path / "home", config, {"long": task_file(body=GATED)})
    try:
        url = daemon.url("long")
        r = daemon.post("long")
        assert r.status_code == 202
        run_id = r.json()["run"]
        daemon.wait_runs([run_id], until=lambda s: s == "running")
        daemon.proc.send_signal(signal.SIGTERM)
        # The daemon refuses new work before it starts waiting for the active run.
        daemon.wait_log("stopping: no new runs")
        refused = httpx.post(url, content=b"{}", timeout=15)
        assert refused.status_code == 503
        assert refused.json() == {"error": "daemon is stopping"}
        assert [row["id"] for row in daemon.runs("long")] == [run_id]
        # The active run finishes within the grace period and the daemon exits cleanly.
        daemon.open_gate("long")
        assert daemon.proc.wait(timeout=20) == 0
        assert daemon.runs("long")[0]["status"] == "succeeded"
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, content=b"{}", timeout=5)
    finally:
        daemon.stop()


# -- no token in logs --------------------------------------------------------------------


def test_tokens_never_logged(hub: DaemonProc) -> None:
    # Exercise the paths that log or record events: success, bad signature, unknown, revoked.
    assert hub.post("echo", b'{"ref": "x"}').status_code == 202
    bad = {"X-Hub-Signature-256": "sha256=00"}
    assert hub.post("github", b"{}", headers=bad).status_code == 401
    assert hub.post("nosecret", b"{}").status_code == 403
    old = hub.url("rotating")
    hub.tokens["rotating"] = hub.cli("webhook", "rotate", "rotating").stdout.strip()
    assert httpx.post(old, content=b"{}", timeout=15).status_code == 404
    assert hub.post("rotating").status_code == 202

    tokens = [r["token"] for r in hub.query("SELECT token FROM webhook_tokens")]
    assert len(tokens) >= len(hub.tokens) + 1  # the active ones and at least one revoked
    log = hub.log()
    assert "DEBUG" in log or "INFO" in log  # the log is not trivially empty
    events = json.dumps(hub.query("SELECT * FROM events"))
    for token in tokens:
        assert token not in log
        assert token not in events
