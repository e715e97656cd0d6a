"""The `python:` key and blocks' PEP 723 metadata in task files (issue 9): read, and
refused with the file, line and column where it is wrong."""

from __future__ import annotations

import pytest

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.task import PythonSpec
from daycare_cli.core.taskfile import parse_task

TASK = """\
---
name: Poll
execute: true
python:
  dependencies: ["httpx>=0.27", Pandas]
  version: "3.12"
---
The status:
<run_python>
    # /// script
    # dependencies = ["rich",
    #   "tqdm>=4"]
    # ///
    import httpx
</run_python>
"""


def test_the_python_key_is_read_and_normalised() -> None:
    task = parse_task(TASK, path="poll.md")
    assert task.python == PythonSpec(dependencies=("httpx>=0.27", "pandas"), version="==3.12.*")


def test_without_the_key_blocks_need_nothing() -> None:
    task = parse_task("---\nname: x\n---\nhi\n", path="x.md")
    assert task.python.empty


@pytest.mark.parametrize(
    ("old", "new"),
    [('  version: "3.12"\n', ""), ('  dependencies: ["httpx>=0.27", Pandas]\n', "")],
)
def test_each_python_key_is_optional(old: str, new: str) -> None:
    assert not parse_task(TASK.replace(old, new), path="poll.md").python.empty


# (replace, by, line, col, words in the message, words in the fix)
ERRORS = [
    ('"httpx>=0.27"', '"httpx>=>0.27"', 5, 24, "not a valid requirement", "PEP 508"),
    ("Pandas]", '"pandas["]', 5, 41, "not a valid requirement", "PEP 508"),
    ('"3.12"', "3.10", 6, 12, "must be a string", 'quote it: "3.10"'),
    ('"3.12"', '"3.x"', 6, 12, "not a Python version", '"3.12"'),
    ("  version:", "  requires-python:", 6, 3, "unknown python key", "`version`"),
    ("  version:", "  packages:", 6, 3, "unknown python key", "dependencies, version"),
    ('["httpx>=0.27", Pandas]', "httpx", 5, 17, "must be a list", "dependencies: ["),
    ('"tqdm>=4"', '"tqdm>=>4"', 12, 14, "not a valid requirement", "PEP 508"),
    ("    # ///\n    import", "    import", 10, 5, "not closed", "# ///"),
    ("# dependencies = [", "# deps = [", 11, 7, "unknown key `deps`", "dependencies"),
]


@pytest.mark.parametrize(("old", "new", "line", "col", "words", "fix"), ERRORS)
def test_errors_name_file_line_and_column(
    old: str, new: str, line: int, col: int, words: str, fix: str
) -> None:
    assert old in TASK
    with pytest.raises(TaskFileError) as err:
        parse_task(TASK.replace(old, new), path="tasks/poll.md")
    e = err.value
    assert (e.path, e.line, e.col) == ("tasks/poll.md", line, col), str(e)
    assert words in e.message
    assert fix in (e.hint or "")
    assert e.excerpt == TASK.replace(old, new).splitlines()[line - 1]
    assert e.exit_code == 4


def test_misplaced_keys_point_to_python() -> None:
    with pytest.raises(TaskFileError) as err:
        parse_task('---\ndependencies: ["httpx"]\n---\nx\n', path="x.md")
    assert "python:" in (err.value.hint or "")


def test_metadata_of_blocks_that_do_not_run_is_not_checked() -> None:
    text = TASK.replace("execute: true", "execute: false").replace('"tqdm>=4"', '"tqdm>=>4"')
    assert parse_task(text, path="poll.md").execute is False


def test_crlf_files_point_at_the_same_place() -> None:
    text = TASK.replace('"tqdm>=4"', '"tqdm>=>4"').replace("\n", "\r\n")
    with pytest.raises(TaskFileError) as err:
        parse_task(text, path="poll.md")
    assert (err.value.line, err.value.col) == (12, 14)
