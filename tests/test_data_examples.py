"""Every contrast-data format has a minimal example shipped in the package, and the docs show each one."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.data import EXAMPLES, example_path, lint_path, load_any
from steerlab.errors import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-formats.md"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_shipped_example_loads_as_its_format_and_lints_clean(name):
    kind, items = load_any(example_path(name))
    assert kind == EXAMPLES[name]
    assert len(items) >= 3
    report = lint_path(example_path(name), min_items=3)
    assert report.findings == [], report.findings


def test_every_format_and_example_is_documented():
    text = DOC.read_text()
    for name in EXAMPLES:
        assert f"`{name}`" in text, name
    for key in ("positive", "prompt", "template", "answer_matching_behavior", "label", "instruction"):
        assert f"`{key}`" in text, key
    shipped = {p.name for p in example_path("pairs.jsonl").parent.iterdir()}
    assert shipped == set(EXAMPLES)  # nothing shipped that the table does not list


def test_unknown_example_is_a_clear_error():
    with pytest.raises(DataError, match="expected one of"):
        example_path("nope.jsonl")


def test_in_memory_pairs_are_counted_from_one(lm):
    import steerlab

    with pytest.raises(DataError, match=r"^pair 2: .*got ellipsis"):
        steerlab.extract(lm, [("happy", "sad"), ...])
