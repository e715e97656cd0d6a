"""core/requirements.py: PEP 723 metadata, PEP 508 requirements, versions, keys (issue 9)."""

from __future__ import annotations

import pytest

from daycare_cli.core.requirements import (
    RequirementError,
    block_python,
    check_requirement,
    check_version,
    env_key,
    merge,
    script_metadata,
    task_needs,
)
from daycare_cli.core.task import PythonSpec, Task

# (written, normalised)
REQUIREMENTS = [
    ("httpx", "httpx"),
    ("httpx>=0.27", "httpx>=0.27"),
    ("HTTPX >= 0.27", "httpx>=0.27"),
    ("Pandas[Excel]==2.2.*", "pandas[Excel]==2.2.*"),
    ("requests ; python_version >= '3.8'", 'requests; python_version >= "3.8"'),
    ("tinypkg @ file:///srv/wheels/tinypkg-1.0-py3-none-any.whl", None),
    ("zope.interface>=5,<7", "zope-interface<7,>=5"),
]


@pytest.mark.parametrize(("text", "normal"), REQUIREMENTS)
def test_requirements_are_normalised(text: str, normal: str | None) -> None:
    assert check_requirement(text) == (normal or text)


# (written, column packaging stops at, words of the reason)
BAD_REQUIREMENTS = [
    ("httpx>=>0.27", 6, "Expected semicolon"),
    ("pandas[", 8, "RIGHT_BRACKET"),
    ("-e foo", 1, "package name"),
    ("foo>=1 bar", 8, "Expected comma"),
    ("requests; bad marker", 11, "marker"),
    ("", 1, "package name"),
]


@pytest.mark.parametrize(("text", "col", "words"), BAD_REQUIREMENTS)
def test_a_bad_requirement_says_where_and_how_to_fix(text: str, col: int, words: str) -> None:
    with pytest.raises(RequirementError) as err:
        check_requirement(text)
    assert err.value.col == col
    assert words in err.value.message and f"`{text}`" in err.value.message
    assert err.value.hint and "PEP 508" in err.value.hint


VERSIONS = [
    ("3", "==3.*"),
    ("3.12", "==3.12.*"),
    (" 3.12 ", "==3.12.*"),
    ("3.12.1", "==3.12.1"),
    (">=3.11", ">=3.11"),
    (">=3.11, <3.14", "<3.14,>=3.11"),
    ("~=3.11", "~=3.11"),
]


@pytest.mark.parametrize(("text", "spec"), VERSIONS)
def test_versions_become_specifier_sets(text: str, spec: str) -> None:
    assert check_version(text) == spec


@pytest.mark.parametrize("text", ["3.x", "python3.12", ">=", "latest", "3.12,"])
def test_a_bad_version_is_refused(text: str) -> None:
    with pytest.raises(RequirementError) as err:
        check_version(text)
    assert "3.12" in (err.value.hint or "")


META = """\
# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "httpx>=0.27",
#   "Pandas",
# ]
# ///
import httpx
"""


def test_pep723_metadata_is_read() -> None:
    spec = script_metadata(META)
    assert spec == PythonSpec(dependencies=("httpx>=0.27", "pandas"), version=">=3.11")


@pytest.mark.parametrize(
    "code",
    [
        "print(1)",
        "# a comment\n# /// not-script\n# x = 1\n# ///\n",
        "s = '# /// script'",  # not at the start of a line
    ],
)
def test_code_without_script_metadata_has_none(code: str) -> None:
    assert script_metadata(code) is None


def test_a_tool_table_is_allowed_and_ignored() -> None:
    code = '# /// script\n# dependencies = ["rich"]\n# [tool.uv]\n# exclude-newer = "2024"\n# ///\n'
    assert script_metadata(code) == PythonSpec(dependencies=("rich",))


# (code, line, col, words): positions inside the block's code
BAD_METADATA = [
    (META.replace('"httpx>=0.27"', '"httpx>=>0.27"'), 4, 11, "not a valid requirement"),
    (META.replace("# ///\nimport", "import"), 1, 1, "not closed"),
    (META + META, 9, 1, "more than one"),
    (META.replace("requires-python", "requires_python"), 2, 3, "unknown key `requires_python`"),
    (META.replace('">=3.11"', '">=3.x"'), 2, 3, "not a Python version"),
    (META.replace('">=3.11"', "3.11"), 2, 3, "must be a string"),
    (META.replace('"Pandas",', "7,"), 3, 3, "list of strings"),
    (META.replace('requires-python = ">=3.11"', "requires-python = >=3.11"), 2, 21, "TOML"),
]


@pytest.mark.parametrize(("code", "line", "col", "words"), BAD_METADATA)
def test_bad_metadata_says_where(code: str, line: int, col: int, words: str) -> None:
    with pytest.raises(RequirementError) as err:
        script_metadata(code)
    assert (err.value.line, err.value.col) == (line, col)
    assert words in err.value.message
    assert err.value.hint


def test_a_block_adds_to_the_task_and_both_versions_apply() -> None:
    task = PythonSpec(dependencies=("httpx>=0.27", "rich"), version="==3.12.*")
    block = PythonSpec(dependencies=("rich", "pandas"), version=">=3.11")
    assert merge(task, block) == PythonSpec(
        dependencies=("httpx>=0.27", "rich", "pandas"), version="==3.12.*,>=3.11"
    )
    assert merge(task, None) == task
    assert block_python(task, "print(1)") == task


def test_the_key_ignores_order_and_spelling_but_not_what_matters() -> None:
    linux = "linux-x86_64"
    a = env_key(PythonSpec(("httpx>=0.27", "rich")), linux)
    assert a == env_key(PythonSpec(("rich", "httpx>=0.27")), linux)
    assert a == env_key(PythonSpec(("rich", "httpx>=0.27", "rich")), linux)
    assert len(a) == 16 and int(a, 16) >= 0
    others = {
        env_key(PythonSpec(("httpx>=0.28", "rich")), linux),
        env_key(PythonSpec(("httpx>=0.27", "rich"), "==3.12.*"), linux),
        env_key(PythonSpec(("httpx>=0.27", "rich")), "linux-aarch64"),
        env_key(PythonSpec(("httpx>=0.27",)), linux),
    }
    assert a not in others and len(others) == 4


def test_task_needs_lists_only_blocks_that_need_an_environment() -> None:
    body = (
        "<run_python>\nprint(1)\n</run_python>\n"
        '<run_python>\n# /// script\n# dependencies = ["rich"]\n# ///\nimport rich\n</run_python>\n'
    )
    plain = Task(id="t", name="t", body=body, execute=True)
    needs = task_needs(plain)
    assert [(b.index, s) for b, s in needs] == [(1, PythonSpec(dependencies=("rich",)))]
    shared = Task(id="t", name="t", body=body, execute=True, python=PythonSpec(("httpx",)))
    assert [s.dependencies for _, s in task_needs(shared)] == [("httpx",), ("httpx", "rich")]
    assert task_needs(Task(id="t", name="t", body=body, execute=False)) == []
