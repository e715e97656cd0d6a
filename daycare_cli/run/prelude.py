"""The Python source run before a block's code inside the sandbox (DESIGN.md §5 items 2–4).

`sandbox.py` sends `stdin_head()` followed by one call, `_daycare_main(...)`, on the
interpreter's stdin. The prelude then:

- defines `skip(reason="")`, `payload`, `task` and `run` as builtins and globals;
- compiles the block as a module named `<block>`, so tracebacks show the block's own
  line numbers, and evaluates the last statement separately when it is an expression;
- reports the outcome (error, last-expression value, skip reason) as JSON lines on a
  private pipe whose fd number it is given, never on stdout, so nothing a block prints
  can forge a result;
- with `reap` set (no pid namespace, "reduced" isolation on Linux), makes itself a child
  subreaper and kills every descendant left at exit or on SIGTERM, so a double-forked,
  setsid()ed grandchild cannot outlive the block.

The source must run on any Python >= 3.8 (the sandbox may use the system interpreter),
so it avoids newer syntax. It is a string, not imported code: the daemon never runs it.

Every block pays for it, so it is kept cheap (bench/bench_sandbox.py, DESIGN.md §10):

- it travels compiled: `marshal` data of the daemon's own compilation, as hex, run as
  such by an interpreter with the same bytecode (magic number) and compiled from the
  source that travels beside it by any other; parsing the 200 lines before each block
  cost more than the interpreter's whole start-up beyond `python -c pass`;
- its fast path loads no module from disk: `json`, `traceback` and `_json` (for a string
  that is not plain printable text) are imported only when a payload, a container value,
  such a string or an exception needs them. The AST types cost 0.7 ms, but compile()
  sets them up on its first call anyway, so finding the last statement with them is free.
"""

from __future__ import annotations

import functools
import marshal

PRELUDE = r'''
import os as _os
import sys as _sys

# Error texts and skip reasons longer than this are cut here (the host cuts them to
# 4 KiB with a marker), so a block cannot push megabytes through the result channel.
TEXT_MAX = 8192


def _daycare_main(code, fd, task, run, payload_text, cap, reap):
    import builtins

    main_pid = _os.getpid()
    try:
        # Programs the block execs do not inherit the channel; forks still do, and the
        # pid check in `send` keeps them quiet.
        _os.set_inheritable(fd, False)
    except OSError:
        pass

    def send(**msg):
        if _os.getpid() != main_pid:
            return
        parts = []
        for key, val in msg.items():
            if val is None:
                val = "null"
            elif val is True:
                val = "true"
            else:
                val = _quote(str(val))
            parts.append(_quote(key) + ": " + val)
        data = ("{" + ", ".join(parts) + "}\n").encode("utf-8")
        try:
            while data:
                data = data[_os.write(fd, data):]
        except OSError:
            pass

    class Skip(BaseException):
        """Raised by skip(); a BaseException so `except Exception` does not swallow it."""

    def skip(reason=""):
        """End this block now, discard its output and skip the rest of the run."""
        send(skip=str(reason)[:TEXT_MAX])
        raise Skip(str(reason)[:TEXT_MAX])

    class Info(dict):
        """A dict whose keys also read as attributes: task["id"] or task.id."""

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    send(started=True)
    payload = None
    if payload_text is not None:
        import json

        try:
            payload = json.loads(payload_text)
        except ValueError:
            payload = payload_text

    if reap:
        _become_reaper(main_pid)

    try:
        # Line by line, as on a terminal: the live view shows each line when it is printed.
        _sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass

    predefined = {"skip": skip, "payload": payload, "task": Info(task), "run": Info(run)}
    for name, value in predefined.items():
        setattr(builtins, name, value)
    module = type(_sys)("__main__")
    module.__dict__.update(predefined)
    module.__dict__["__builtins__"] = builtins
    _sys.modules["__main__"] = module

    def describe(exc):
        name = type(exc).__name__
        try:
            text = str(exc)
        except Exception:
            text = ""
        text = text[:TEXT_MAX]
        return name + ": " + text if text else name

    def print_traceback(exc, tb):
        import linecache
        import traceback

        linecache.cache["<block>"] = (len(code), None, code.splitlines(True), "<block>")
        # Drop the prelude's own frames: the block's line numbers are what matter.
        while tb is not None and tb.tb_frame.f_code.co_filename == "<stdin>":
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)

    error = None
    value = None
    status = 0
    # compile() sets up the AST types on its first call anyway (0.7 ms), so finding the
    # last statement through the AST costs nothing more.
    import _ast

    try:
        tree = compile(code, "<block>", "exec", _ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError) as exc:
        print_traceback(exc, None)
        send(error=describe(exc), value=None)
        return 1
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    try:
        exec(compile(tree, "<block>", "exec"), module.__dict__)
        if last is not None:
            value = _render(eval(compile(last, "<block>", "eval"), module.__dict__), cap)
    except Skip:
        status = 0
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None or code_ == 0:
            status = 0
        elif isinstance(code_, int):
            error, status = "SystemExit: %d" % code_, code_ & 0xFF or 1
        else:
            text = str(code_)[:TEXT_MAX]
            print(text, file=_sys.stderr)
            error, status = "SystemExit: " + text, 1
    except BaseException as exc:
        print_traceback(exc, exc.__traceback__)
        error, status = describe(exc), 1
    if _os.getpid() != main_pid:
        # A forked child of the block reached the end of the block's code: leave
        # quietly, without the parent's epilogue or atexit handlers.
        _sys.stdout.flush()
        _os._exit(1 if error else 0)
    send(error=error, value=value)
    return status


def _quote(text):
    """`text` as a JSON string: printable text as it is, the rest through _json."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    from _json import encode_basestring_ascii

    return encode_basestring_ascii(text)


def _render(result, cap):
    """The text a last-expression value stands for: str as is, containers as JSON."""
    if result is None:
        return None
    if isinstance(result, str):
        text = result
    elif isinstance(result, (dict, list, tuple)):
        import json

        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(result)
    else:
        text = str(result)
    return text[: cap + 1]


def _become_reaper(main_pid):
    """Adopt orphaned descendants and kill them all when the block ends or is stopped."""
    import _signal
    import atexit

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        return

    def children():
        found = []
        try:
            names = _os.listdir("/proc")
        except OSError:
            return found
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == main_pid:
                found.append(int(name))
        return found

    def kill_all():
        if _os.getpid() != main_pid:
            return
        for _ in range(10000):
            kids = children()
            for pid in kids:
                try:
                    _os.kill(pid, 9)  # SIGKILL
                except OSError:
                    pass
            try:
                pid, _status = _os.waitpid(-1, 0 if kids else _os.WNOHANG)
            except ChildProcessError:
                return
            if not kids and pid == 0:
                return

    def on_term(signum, frame):
        kill_all()
        _os._exit(128 + signum)

    atexit.register(kill_all)
    _signal.signal(15, on_term)  # SIGTERM
'''


@functools.cache
def stdin_head(source: bool = True) -> str:
    """The start of a block's stdin: the prelude, compiled by this interpreter and sent
    as `marshal` data (hex: the quickest literal to parse), run as such by an
    interpreter of the same bytecode (magic number) and, with `source`, compiled from
    its source by any other (an interpreter that is this one's own binary does not need
    it). The call to `_daycare_main` follows."""
    from importlib.util import MAGIC_NUMBER

    code = compile(PRELUDE, "<stdin>", "exec", dont_inherit=True, optimize=0)
    blob = marshal.dumps(code).hex()
    head = (
        "import sys as _sys\n"
        "_magic = getattr(_sys.modules.get('_frozen_importlib_external'), 'MAGIC_NUMBER', 0)\n"
        f"if _magic == {MAGIC_NUMBER!r}:\n"
        "    import marshal as _marshal\n"
        f"    exec(_marshal.loads(bytes.fromhex({blob!r})))\n"
    )
    if source:
        head += f"else:\n    exec(compile({PRELUDE!r}, '<stdin>', 'exec'))\n"
    return head
