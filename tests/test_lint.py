"""The data linter: each defect is caught on a hand-built set, and clean sets pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.data import (
    ABItem,
    ContrastPair,
    Finding,
    LabelledExample,
    LintReport,
    demo_pairs,
    lint,
    lint_path,
    render,
)
from steerlab.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOPICS = [
    "the garden",
    "a train",
    "the market",
    "my desk",
    "the river",
    "a museum",
    "the bakery",
    "our street",
    "a library",
    "the harbour",
]


def clean_pairs(n: int = 10) -> list[ContrastPair]:
    return [ContrastPair(f"Be cheerful. Describe {t}.", f"Be gloomy. Describe {t}.") for t in TOPICS[:n]]


def finding(report: LintReport, code: str) -> Finding:
    matches = [f for f in report.findings if f.code == code]
    assert len(matches) == 1, f"expected one {code!r} finding, found {report.findings}"
    return matches[0]


def test_clean_pairs_pass() -> None:
    report = lint(clean_pairs())
    assert report.findings == []
    assert report.exit_code == 0
    assert (report.kind, report.n_items) == ("pairs", 10)


def test_demo_data_is_clean() -> None:
    report = lint(demo_pairs(), strict=True)
    assert report.findings == [] and report.exit_code == 0


def test_empty_item_is_error() -> None:
    pairs = [*clean_pairs(), ContrastPair("Be cheerful.", "  ")]
    f = finding(lint(pairs), "empty")
    assert (f.level, f.items) == ("error", [10])
    assert lint(pairs).exit_code == 1


def test_empty_prompt_is_error() -> None:
    pairs = [*clean_pairs(), ContrastPair("(A", "(B", prompt="")]
    assert finding(lint(pairs), "empty").items == [10]


def test_identical_pair_is_error() -> None:
    pairs = clean_pairs()
    pairs[3] = ContrastPair("Same text.", "Same  text. ")  # whitespace differences do not make a contrast
    f = finding(lint(pairs), "identical")
    assert (f.level, f.items) == ("error", [3])


def test_duplicate_pair_is_warning() -> None:
    pairs = [*clean_pairs(), clean_pairs()[2]]
    report = lint(pairs)
    f = finding(report, "duplicate-pair")
    assert (f.level, f.items) == ("warning", [10])
    assert "duplicate-item" not in report.codes()  # a repeated pair is reported once, not also per side
    assert report.exit_code == 0
    assert lint(pairs, strict=True).exit_code == 1


def test_duplicate_item_is_warning() -> None:
    pairs = clean_pairs()
    pairs[5] = ContrastPair(pairs[1].positive, "Be gloomy. Describe the weather.")
    f = finding(lint(pairs), "duplicate-item")
    assert (f.level, f.items) == ("warning", [1, 5])


def test_same_continuation_under_different_prompts_is_not_duplicate() -> None:
    pairs = [
        ContrastPair("(A" if i % 2 else "(B", "(B" if i % 2 else "(A", prompt=f"Question {i}?")
        for i in range(10)
    ]
    assert lint(pairs).findings == []


def test_leakage_is_error() -> None:
    pairs = clean_pairs()
    pairs[7] = ContrastPair(pairs[2].negative, "Be gloomy. Describe the weather.")
    f = finding(lint(pairs), "leakage")
    assert (f.level, f.items) == ("error", [2, 7])
    assert "Be gloomy. Describe the market." in f.message


def test_length_skew_is_warning() -> None:
    pairs = [
        ContrastPair(
            f"Be cheerful and tell me at length about {t} and everything near it.", f"Be gloomy: {t}."
        )
        for t in TOPICS
    ]
    f = finding(lint(pairs), "length-skew")
    assert f.level == "warning"
    assert "ratio" in f.message and "> 1.5" in f.message
    assert "length-skew" not in lint(pairs, max_length_ratio=5.0).codes()


def test_marker_prefix_is_warning() -> None:
    pairs = [ContrastPair(f"Sure, here is {t}.", f"Here is {t}.") for t in TOPICS]
    f = finding(lint(pairs), "marker-prefix")
    assert f.level == "warning"
    assert f.items == list(range(10))
    assert "'sure'" in f.message and "positive" in f.message


def test_marker_suffix_catches_unbalanced_ab_letters() -> None:
    items = [ABItem(f"Q{i}?\n (A) yes\n (B) no", "(A)", "(B)") for i in range(10)]
    report = lint(items)
    assert report.kind == "ab"
    f = finding(report, "marker-suffix")
    assert "'a'" in f.message
    assert (
        "marker-prefix" not in report.codes()
    )  # "(A" is one word: reported once, as the suffix the reader sees
    balanced = [ABItem(f"Q{i}?", *(("(A)", "(B)") if i % 2 else ("(B)", "(A)"))) for i in range(10)]
    assert lint(balanced).findings == []


def test_shared_marker_on_both_sides_is_fine() -> None:
    # every text starts with "be" on both sides: that word cannot separate them
    assert "marker-prefix" not in lint(clean_pairs()).codes()


def test_too_few() -> None:
    f = finding(lint(clean_pairs(4)), "too-few")
    assert f.level == "warning" and "at least 8" in f.message
    f = finding(lint(clean_pairs(1)), "too-few")
    assert f.level == "error"
    assert finding(lint([]), "too-few").level == "error"
    assert "too-few" not in lint(clean_pairs(4), min_items=4).codes()


# -------------------------------------------------------------------------------------------------- labelled


def labelled(texts_pos: list[str], texts_neg: list[str]) -> list[LabelledExample]:
    return [LabelledExample(t, 1) for t in texts_pos] + [LabelledExample(t, 0) for t in texts_neg]


POS = [f"I liked {t}." for t in TOPICS]
NEG = [f"I disliked {t}." for t in TOPICS]


def test_clean_labelled_pass() -> None:
    report = lint(labelled(POS, NEG))
    assert (report.kind, report.findings) == ("labelled", [])


def test_labelled_leakage_and_duplicates() -> None:
    report = lint(labelled([*POS, NEG[0], POS[1]], NEG))
    assert finding(report, "leakage").items == [10, 12]
    assert finding(report, "duplicate-item").items == [1, 11]


def test_labelled_imbalance_and_too_few() -> None:
    report = lint(labelled(POS, NEG[:2]))
    assert "imbalance" in report.codes()
    assert finding(report, "too-few").level == "warning"
    report = lint(labelled(POS, NEG[:1]))
    assert finding(report, "too-few").level == "error"
    one_class = lint([LabelledExample(t, "x") for t in POS])
    assert "expected at least 2 labels" in finding(one_class, "too-few").message


def test_labelled_empty() -> None:
    assert finding(lint(labelled([*POS, ""], NEG)), "empty").items == [10]


def test_instructions() -> None:
    texts = [f"Describe {t}." for t in TOPICS]
    assert lint(texts).findings == []
    report = lint([*texts, texts[0], " "])
    assert finding(report, "duplicate-item").items == [0, 10]
    assert finding(report, "empty").items == [11]


def test_mixed_item_types_refused() -> None:
    with pytest.raises(DataError, match="expected a list of one item type"):
        lint([ContrastPair("a", "b"), "c"])


# ---------------------------------------------------------------------------------------------- files, render


def test_lint_path_and_render(tmp_path: Path) -> None:
    pairs = [*clean_pairs(), clean_pairs()[0], ContrastPair("Same.", "Same.")]
    path = tmp_path / "p.jsonl"
    path.write_text(
        "".join(json.dumps({"positive": p.positive, "negative": p.negative}) + "\n" for p in pairs)
    )
    report = lint_path(path)
    assert (report.kind, report.n_items, report.source) == ("pairs", 12, str(path))
    assert report.codes() == {"identical", "duplicate-pair"}
    assert report.findings[0].level == "error"  # errors come first
    text = render(report)
    lines = text.splitlines()
    assert lines[0] == f"{path}: 12 items (pairs), 1 error(s), 1 warning(s): FAIL"
    # 1-based file lines, as the loaders report them (items 11 and 10 sit on lines 12 and 11)
    assert lines[1].split()[:2] == ["error", "identical"] and "[lines 12]" in lines[1]
    assert lines[2].split()[:2] == ["warning", "duplicate-pair"] and "[lines 11]" in lines[2]
    assert report.findings[0].items == [11]  # the API keeps 0-based indices into the list


def test_lint_path_points_at_lines_of_a_pretty_printed_json_file(tmp_path: Path) -> None:
    pairs = [*clean_pairs(), ContrastPair("Same.", "Same.")]
    path = tmp_path / "p.json"
    rows = [{"positive": p.positive, "negative": p.negative} for p in pairs]
    path.write_text(json.dumps(rows, indent=2))  # 4 lines per object, after the opening "["
    report = lint_path(path)
    assert f"[lines {2 + 4 * 10}]" in render(report)


def test_render_truncates_long_item_lists() -> None:
    report = LintReport("pairs", 20, [Finding("warning", "x", "msg", list(range(20)))])
    assert render(report).splitlines()[1].endswith("[items 1, 2, 3, 4, 5, 6, 7, 8 +12 more]")  # 1-based


def test_lint_path_reports_unloadable_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json}\n")
    report = lint_path(path)
    f = finding(report, "load")
    assert f.level == "error" and "bad.jsonl:1: invalid JSON line" in f.message
    assert report.exit_code == 1


@pytest.mark.parametrize(
    ("rel", "codes"),
    [
        ("bench/persona_pairs_64.json", set()),
        ("caa/sycophancy/generate.jsonl", set()),
        ("refusal_direction/harmful_train.jsonl", set()),
        ("sentiment_labelled_sentences/sentences.jsonl", {"duplicate-item"}),
    ],
)
def test_lint_real_files(rel: str, codes: set[str]) -> None:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    report = lint_path(path)
    assert report.codes() == codes
    assert report.exit_code == 0
