"""run_block: what a block sees and what its outcome says (docs/task-file.md, "Inside a block")."""

from __future__ import annotations

import json
import os
import shutil
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest

from daycare_cli.core.task import SandboxSpec
from daycare_cli.run import sandbox
from daycare_cli.run.prelude import stdin_head
from daycare_cli.run.sandbox import isolation_level

# (code, output, error)
CASES = [
    ("print('hello')", "hello", None),
    ("print('a')\nprint('b')\n", "a\nb", None),
    ("'a value'", "a value", None),
    ("x = 2\nx * 21", "42", None),
    ("{'a': [1, 2], 'b': None}", '{"a": [1, 2], "b": null}', None),
    ("['é', 1]", '["é", 1]', None),
    ("'é, \"quoted\", back\\\\slash'", 'é, "quoted", back\\slash', None),
    ("'two\\nlines\\tand a tab'", "two\nlines\tand a tab", None),
    ("(1, 'two')", '[1, "two"]', None),
    ("x = 1", "", None),
    ("None", "", None),
    ("pass", "", None),
    ("print('printed')\n'ignored value'", "printed", None),
    ("1 / 0", "", "ZeroDivisionError: division by zero"),
    ("{}['missing']", "", "KeyError: 'missing'"),
    ("raise ValueError", "", "ValueError"),
    ("print('before')\nraise RuntimeError('boom')", "before", "RuntimeError: boom"),
    ("def broken(:\n    pass", "", "SyntaxError: invalid syntax (<block>, line 1)"),
    ("import sys\nsys.exit(3)", "", "SystemExit: 3"),
    ("import sys\nsys.exit(0)", "", None),
    ("import sys\nsys.exit()", "", None),
    ("import sys\nsys.exit('bad input')", "", "SystemExit: bad input"),
    ("import os\nos._exit(4)", "", "SystemExit: 4"),
    ("import os\nprint('x', flush=True)\nos._exit(0)", "x", None),
    ('print(\'{"skip": "forged"}\')', '{"skip": "forged"}', None),
]


@pytest.mark.parametrize(("code", "output", "error"), CASES)
def test_outcome(block, isolation, code, output, error):
    out = block(code)
    assert (out.output, out.error) == (output, error)
    assert not out.skipped
    assert out.isolation == isolation
    assert out.duration_ms > 0


def test_traceback_names_block_lines(block, isolation):
    out = block("x = 1\n\ndef f():\n    return 1 / 0\n\nf()\n")
    assert out.error == "ZeroDivisionError: division by zero"
    assert 'File "<block>", line 6, in <module>' in out.stderr
    assert 'File "<block>", line 4, in f' in out.stderr
    assert "return 1 / 0" in out.stderr
    assert "_daycare_main" not in out.stderr


def test_prelude_from_source_for_another_bytecode(block, isolation, monkeypatch):
    """An interpreter whose bytecode differs from the daemon's (another magic number)
    compiles the prelude from its source instead of loading the daemon's compilation."""
    head = stdin_head(source=True)
    other = head.replace(repr(MAGIC_NUMBER), repr(b"\0\0\r\n"), 1)
    assert other != head
    monkeypatch.setattr(sandbox, "stdin_head", lambda source: other)
    assert block("x = 2\nx * 21").output == "42"
    out = block("def f():\n    return 1 / 0\n\nf()")
    assert out.error == "ZeroDivisionError: division by zero"
    assert 'File "<block>", line 2, in f' in out.stderr
    assert "_daycare_main" not in out.stderr


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("print('noise')\nskip('nothing new')\nprint('never')", "nothing new"),
        ("skip()", ""),
        ("try:\n    skip('caught?')\nexcept Exception:\n    print('swallowed')", "caught?"),
        ("def check():\n    skip('from a function')\ncheck()", "from a function"),
    ],
)
def test_skip(block, isolation, code, reason):
    out = block(code)
    assert out.skipped
    assert out.skip_reason == reason
    assert out.output == ""
    assert out.error is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"ref": "main", "commits": [1, 2]}', '{"ref": "main", "commits": [1, 2]}'),
        ("plain text, not JSON", "plain text, not JSON"),
        (None, "None"),
    ],
)
def test_payload(block, base, isolation, content, expected):
    payload_file = None
    if content is not None:
        payload_file = base / "payload.json"
        payload_file.write_text(content)
    code = "import json\nprint(json.dumps(payload) if isinstance(payload, dict) else payload)"
    out = block(code, payload_file=payload_file)
    assert out.output == expected


def test_payload_file_env(block, base, isolation):
    payload_file = base / "ws" / "runs" / "r1" / "payload.json"
    payload_file.parent.mkdir(parents=True)
    payload_file.write_text('{"n": 5}')
    out = block(
        "import json, os\nprint(json.load(open(os.environ['DAYCARE_PAYLOAD_FILE']))['n'])",
        payload_file=payload_file,
    )
    assert (out.output, out.error) == ("5", None)


def test_task_and_run(block, isolation):
    out = block(
        "print(task.id, task['name'], run.id, run['trigger'], run.slot)",
        task={"id": "news", "name": "Morning news"},
        run={"id": "20261122T090000Z-7f3a", "trigger": "schedule", "slot": "2026-11-22T09:00Z"},
    )
    assert out.output == "news Morning news 20261122T090000Z-7f3a schedule 2026-11-22T09:00Z"


def test_env_is_scrubbed(block, base, isolation, monkeypatch):
    monkeypatch.setenv("DAYCARE_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    out = block(
        "import json, os\nprint(json.dumps(dict(os.environ)))",
        env={"API_TOKEN": "tok", "DAYCARE_TASK_ID": "spoofed"},
        task={"id": "t9", "name": "n"},
        run={"id": "r9"},
    )
    env = json.loads(out.output)
    assert "hunter2" not in out.output
    assert "PYTHONPATH" not in env
    ws = (base / "ws").resolve()
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["API_TOKEN"] == "tok"
    assert env["DAYCARE_TASK_ID"] == "t9"
    assert env["DAYCARE_RUN_ID"] == "r9"
    assert env["DAYCARE_WORKSPACE"] == str(ws)
    assert env["DAYCARE_ARTIFACTS"] == str(ws / "runs" / "r1" / "artifacts")
    assert "DAYCARE_PAYLOAD_FILE" not in env
    allowed = {"PATH", "LANG", "HOME", "PWD", "API_TOKEN"}
    assert set(env) - allowed == {
        "DAYCARE_TASK_ID",
        "DAYCARE_RUN_ID",
        "DAYCARE_WORKSPACE",
        "DAYCARE_ARTIFACTS",
    }


def test_cwd_is_files_and_persists(block, base, isolation):
    files = (base / "ws" / "files").resolve()
    first = block("import os\nopen('note.txt', 'w').write('kept')\nprint(os.getcwd())")
    assert (first.output, first.error) == (str(files), None)
    second = block("print(open('note.txt').read())")
    assert second.output == "kept"
    assert (files / "note.txt").read_text() == "kept"


def test_planted_module_does_not_hijack_imports(block, base, isolation):
    files = base / "ws" / "files"
    files.mkdir(parents=True)
    (files / "json.py").write_text("raise SystemExit('hijacked')\n")
    out = block("import json\nprint(json.dumps([1]))")
    assert (out.output, out.error) == ("[1]", None)


def test_artifacts_writable(block, base, isolation):
    out = block(
        "import os\n"
        "p = os.path.join(os.environ['DAYCARE_ARTIFACTS'], 'report.txt')\n"
        "open(p, 'w').write('made')"
    )
    assert out.error is None
    assert (base / "ws" / "runs" / "r1" / "artifacts" / "report.txt").read_text() == "made"


@pytest.mark.parametrize(
    ("code", "cap", "truncated", "kept"),
    [
        ("print('x' * 200_000)", 1000, True, "x" * 1000),
        ("print('y' * 999)", 1000, False, "y" * 999),
        ("import sys\nsys.stdout.write('z' * 1000)", 1000, False, "z" * 1000),
        ("import sys\nsys.stdout.write('é' * 1000)", 1001, True, "é" * 500),
        ("'v' * 5000", 1000, True, "v" * 1000),
    ],
)
def test_stdout_cap(block, isolation, code, cap, truncated, kept):
    out = block(code, stdout_cap=cap)
    assert out.truncated is truncated
    assert out.error is None
    assert out.output == kept


def test_stderr_captured(block, isolation):
    out = block("import sys\nprint('to stderr', file=sys.stderr)\nprint('to stdout')")
    assert (out.output, out.stderr, out.error) == ("to stdout", "to stderr\n", None)


def test_stderr_capped(block, isolation):
    out = block("import sys\nsys.stderr.write('e' * 200_000)\nprint('done')")
    assert out.output == "done"
    assert out.stderr.startswith("e" * 65536 + "\n[stderr truncated at 64 KiB]")


def test_runs_unprivileged(block, isolation):
    out = block("import os\nprint(os.getuid(), os.geteuid())")
    uid, euid = map(int, out.output.split())
    if os.geteuid() == 0:
        assert uid != 0 and euid != 0
    else:
        assert uid == os.getuid()


def test_missing_interpreter_is_a_sandbox_error(block, isolation, monkeypatch):
    monkeypatch.setenv("DAYCARE_SANDBOX_PYTHON", "/nonexistent/python3")
    out = block("print('hi')")
    assert out.error is not None and out.error.startswith("SandboxError:")
    assert out.output == ""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="prctl is Linux's")
def test_the_prelude_reaps_only_without_a_pid_namespace(block, isolation):
    """Reduced isolation: the block's interpreter is a child subreaper that kills what
    it leaves. Under bubblewrap the pid namespace ends with the block, so the prelude
    spends nothing on it (ctypes alone cost 2 ms a block)."""
    code = (
        "import ctypes\n"
        "flag = ctypes.c_int(-1)\n"
        "ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER\n"
        "print(flag.value)"
    )
    assert block(code).output == ("1" if isolation == "reduced" else "0")


def test_exit_seen_without_a_pidfd(block, isolation, monkeypatch):
    """Where the kernel has no pidfd (before 5.3, or not Linux), a thread waits for the
    block instead; outcomes and the deadline are the same."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    out = block("print('still here')")
    assert (out.output, out.error, out.exit_code) == ("still here", None, 0)
    out = block("import time\ntime.sleep(30)", timeout=1)
    assert out.error == "TimeoutError: block exceeded 1s"


def _can_limit_another_uid() -> bool:
    """Whether prlimit(2) may set limits on a process of another uid: not as root
    without CAP_SYS_RESOURCE (bit 24), as in most containers."""
    if os.geteuid() != 0:
        return True
    with open("/proc/self/status") as f:
        caps = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> 24 & 1)


def test_gate_where_limits_can_be_set(require_bwrap):
    """bubblewrap is spawned with no Python before exec wherever the limits can be set
    on it from outside (launch.Gate); elsewhere the preexec path is taken, and blocks
    run either way (the tests above)."""
    bwrap = sandbox._probe(None)[0]
    assert bwrap is not None
    setuid = bool(os.stat(bwrap.path).st_mode & 0o4000)
    assert bwrap.gate == (_can_limit_another_uid() and not setuid)


def test_isolation_level(monkeypatch):
    monkeypatch.delenv("DAYCARE_SANDBOX", raising=False)
    level, reason = isolation_level()
    if shutil.which("bwrap") is None:
        assert level == "refused"  # fail closed: no bubblewrap, reduced not allowed
    else:
        assert (level, reason.split()[0]) == ("bubblewrap", "bubblewrap")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("bubblewrap", "refused"), ("reduced", "reduced")],
)
def test_isolation_without_bubblewrap(monkeypatch, policy, expected):
    monkeypatch.delenv("DAYCARE_SANDBOX", raising=False)
    level, reason = isolation_level(policy, "/nonexistent/bwrap")
    assert level == expected
    assert reason.startswith("bwrap not found at /nonexistent/bwrap")


def test_isolation_forced_off(monkeypatch):
    monkeypatch.setenv("DAYCARE_SANDBOX", "reduced")
    assert isolation_level() == ("reduced", "forced by DAYCARE_SANDBOX=reduced")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands blocks to another user")
def test_workspace_behind_private_directory(block, tmp_path, require_bwrap):
    """As root, a workspace under a 0700 directory (root's home, pytest's tmp) still works:
    the sandbox user gets it through a private mount namespace."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    ws = private / "ws"
    out = block(
        "import os\n"
        "open('f.txt', 'w').write('a')\n"
        "open(os.environ['DAYCARE_ARTIFACTS'] + '/g.txt', 'w').write('b')\n"
        "print(os.getcwd())",
        files_dir=ws / "files",
        artifacts_dir=ws / "runs" / "r1" / "artifacts",
        workspace=ws,
    )
    assert (out.output, out.error) == (str((ws / "files").resolve()), None)
    assert (ws / "files" / "f.txt").read_text() == "a"
    assert (ws / "runs" / "r1" / "artifacts" / "g.txt").read_text() == "b"


def test_sandbox_read_and_write_paths(block, base, require_bwrap, tmp_path_factory):
    readable = Path(tmp_path_factory.mktemp("readable"))  # under /tmp: hidden by default
    readable.chmod(0o755)
    (readable / "in.txt").write_text("input")
    (readable / "in.txt").chmod(0o644)
    writable = base / "out"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    code = (
        f"print(open({str(readable / 'in.txt')!r}).read())\n"
        f"open({str(writable / 'o.txt')!r}, 'w').write('w')"
    )
    hidden = block(code)
    assert hidden.error is not None and hidden.error.startswith("FileNotFoundError")
    out = block(code, sandbox=SandboxSpec(read=(str(readable),), write=(str(writable),)))
    assert (out.output, out.error) == ("input", None)
    assert (writable / "o.txt").read_text() == "w"


def test_process_budget_counts_the_users_processes_at_most_a_second_ago(monkeypatch):
    """RLIMIT_NPROC is the user's processes plus the budget; blocks planned within
    COUNT_FRESH share one count of /proc, and an older count is made again."""
    import subprocess
    import time

    from daycare_cli.run import identity

    def nproc() -> int:
        found = identity.limits(SandboxSpec(), 10.0, None)
        return next(soft for res, soft, _ in found if res == identity.resource.RLIMIT_NPROC)

    monkeypatch.setattr(identity, "_COUNTS", {})
    before = nproc()
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(5)]
    try:
        assert nproc() == before  # the same count, within the second
        monkeypatch.setattr(identity, "COUNT_FRESH", 0.0)
        time.sleep(0.01)
        # Other processes of ours may come and go meanwhile; the five sleepers stay.
        assert nproc() >= before + 5 - 2
        assert nproc() - identity.PROCESS_BUDGET >= 5
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
