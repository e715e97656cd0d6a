"""Task ids from names: transliterated, stable, valid."""

from __future__ import annotations

import pytest

from daycare_cli.core.task import TASK_ID_RE
from daycare_cli.core.taskid import slugify


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Water plants", "water-plants"),
        ("Über Café", "uber-cafe"),
        ("Crème brûlée at 9", "creme-brulee-at-9"),
        ("Straße", "strasse"),
        ("Øresund Łódź", "oresund-lodz"),
        ("ﬁle report", "file-report"),  # a ligature, by NFKD
        ("Москва", "moskva"),
        ("Αθήνα", "athina"),
        ("  --Hello--  ", "hello"),
        ("x" * 80, "x" * 63),
        ("a" * 62 + " b", "a" * 62),  # no trailing dash after the cut
    ],
)
def test_slugify(name: str, expected: str) -> None:
    assert slugify(name) == expected


@pytest.mark.parametrize("name", ["!!!", "", "   ", "---"])
def test_names_with_nothing_to_spell_get_a_stable_hash_id(name: str) -> None:
    first = slugify(name)
    assert first.startswith("task-") and TASK_ID_RE.match(first)
    assert slugify(name) == first  # the same name, the same id


def test_different_unspellable_names_get_different_ids() -> None:
    assert slugify("!!!") != slugify("???")


@pytest.mark.parametrize("name", ["東京 タワー", "مرحبا", "😀 party", "Ünïcödé 名前"])
def test_every_script_gives_a_valid_id(name: str) -> None:
    assert TASK_ID_RE.match(slugify(name))
