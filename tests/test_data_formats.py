"""Loaders, conversions, split/hash and chat formatting of steerlab.data (no model needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from steerlab.data import (
    ABItem,
    ContrastPair,
    LabelledExample,
    ab_letter,
    ab_to_pairs,
    data_hash,
    demo_pairs,
    format_user,
    labelled_to_pairs,
    load_ab,
    load_any,
    load_instructions,
    load_labelled,
    load_pairs,
    neutral_prompts,
    pair_texts,
    persona_pairs,
    plain_format,
    split,
)
from steerlab.errors import DataError, SteerlabError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


PAIRS = [
    {"positive": "I love it", "negative": "I hate it"},
    {"positive": "Great day", "negative": "Awful day"},
]
AB = [
    {
        "question": "Q1?\n (A) yes\n (B) no",
        "answer_matching_behavior": "(A)",
        "answer_not_matching_behavior": "(B)",
    },
    {
        "question": "Q2?\n (A) yes\n (B) no",
        "answer_matching_behavior": " (B)",
        "answer_not_matching_behavior": "(A)",
    },
]
LABELLED = [
    {"text": t, "label": lab} for t, lab in [("good", 1), ("fine", 1), ("bad", 0), ("poor", 0), ("ok", 1)]
]


# ------------------------------------------------------------------------------------------------ pairs


def test_load_pairs_jsonl_with_optional_prompt(tmp_path: Path) -> None:
    rows = [*PAIRS, {"positive": "(A", "negative": "(B", "prompt": "Pick one"}]
    pairs = load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert pairs == [
        ContrastPair("I love it", "I hate it"),
        ContrastPair("Great day", "Awful day"),
        ContrastPair("(A", "(B", prompt="Pick one"),
    ]


def test_load_pairs_json_list_and_pairs_object(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps(PAIRS, indent=2))
    (tmp_path / "obj.json").write_text(json.dumps({"description": "x", "pairs": PAIRS}, indent=1))
    expected = [ContrastPair("I love it", "I hate it"), ContrastPair("Great day", "Awful day")]
    assert load_pairs(tmp_path / "list.json") == expected
    assert load_pairs(tmp_path / "obj.json") == expected


def test_load_pairs_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n" + json.dumps(PAIRS[0]) + "\n\n" + json.dumps(PAIRS[1]) + "\n\n")
    assert len(load_pairs(path)) == 2


def test_load_pairs_persona_spec_file(tmp_path: Path) -> None:
    spec = {"template": "Be {persona}.", "positive": "calm", "negative": "angry", "suffixes": ["Hi.", "Go."]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert load_pairs(tmp_path / "spec.json") == [
        ContrastPair("Be calm. Hi.", "Be angry. Hi."),
        ContrastPair("Be calm. Go.", "Be angry. Go."),
    ]


def test_load_pairs_real_bench_file() -> None:
    pairs = load_pairs(shared("bench/persona_pairs_64.json"))
    assert len(pairs) == 64
    assert pairs[0].prompt is None
    assert "Act as if you are extremely happy. Describe your morning routine." in pairs[0].positive
    assert "Act as if you are extremely sad. Describe your morning routine." in pairs[0].negative


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            '{"positive": "a", "negative": "b"}\n{"positive": "c", "negative": \n',
            r"p\.jsonl:2: invalid JSON line",
        ),
        (
            '{"positive": "a", "negative": "b"}\n{"positive": "c"}\n',
            r"p\.jsonl:2: missing key 'negative'.*found keys \['positive'\]",
        ),
        (
            '{"positive": "a", "negative": "b"}\n{"positive": 3, "negative": "d"}\n',
            r"p\.jsonl:2: expected 'positive' to be a string, found a number 3",
        ),
        (
            '{"positive": "a", "negative": "b"}\n{"positive": "c", "negative": "  "}\n',
            r"p\.jsonl:2: expected 'negative' to be a non-empty string",
        ),
        (
            '{"positive": "a", "negative": "b", "prompt": ""}\n{"positive": "c", "negative": "d"}\n',
            r"p\.jsonl:1: expected 'prompt' to be a non-empty",
        ),
        (
            '{"positive": "a", "negative": "b"}\n["c", "d"]\n',
            r"p\.jsonl:2: expected a JSON object, found a list",
        ),
        ('{"positive": "a", "negative": "b"}\n', r"p\.jsonl: expected at least 2 pairs, found 1"),
        ("", r"p\.jsonl: expected at least 2 pairs, found 0"),
    ],
)
def test_load_pairs_refusals(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_pairs(path)


def test_json_list_errors_name_the_element_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([PAIRS[0], PAIRS[1], {"positive": "x", "negative": 5}], indent=2))
    line = path.read_text().splitlines().index("  {", 8) + 1  # the third element's opening brace
    with pytest.raises(
        DataError, match=rf"p\.json:{line}: expected 'negative' to be a string, found a number 5"
    ):
        load_pairs(path)


def test_invalid_json_document_names_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[\n  {"positive": "a", "negative": "b"},\n  {"positive": "a" "negative": "b"}\n]\n')
    with pytest.raises(DataError, match=r"p\.json:3: invalid JSON"):
        load_pairs(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.jsonl: cannot read: expected an existing file"):
        load_pairs(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match=r"cannot read: expected a file, found a directory"):
        load_pairs(tmp_path)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"bin\.jsonl: cannot read: expected UTF-8 text"):
        load_pairs(tmp_path / "bin.jsonl")


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, SteerlabError)
    assert issubclass(DataError, ValueError)


def test_persona_pairs() -> None:
    pairs = persona_pairs(
        "Act as if you are extremely {persona}.", "happy", "sad", ["Describe a tree.", "Count."]
    )
    assert pairs[1] == ContrastPair(
        "Act as if you are extremely happy. Count.", "Act as if you are extremely sad. Count."
    )
    assert all(p.prompt is None for p in pairs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("Be nice.", "a", "b", ["x", "y"]), r"expected a '\{persona\}' placeholder"),
        (("Be {persona}.", "", "b", ["x", "y"]), r"expected a non-empty positive persona"),
        (("Be {persona}.", "a", "b", ["x"]), r"expected at least 2 suffixes, found 1"),
        (("Be {persona}.", "a", "b", ["x", " "]), r"suffix 2: expected a non-empty string"),
    ],
)
def test_persona_pairs_refusals(args: tuple, match: str) -> None:
    with pytest.raises(DataError, match=match):
        persona_pairs(*args)


# --------------------------------------------------------------------------------------------------- A/B


@pytest.mark.parametrize(("answer", "letter"), [("(A)", "A"), (" (B)", "B"), ("C", "C"), ("(H) ", "H")])
def test_ab_letter(answer: str, letter: str) -> None:
    assert ab_letter(answer) == letter


@pytest.mark.parametrize("answer", ["", "(AB)", "yes", "(a)"])
def test_ab_letter_refuses(answer: str) -> None:
    with pytest.raises(DataError, match="expected an answer letter"):
        ab_letter(answer)


def test_load_ab_original_and_normalised_keys(tmp_path: Path) -> None:
    items = load_ab(write_jsonl(tmp_path / "ab.jsonl", AB))
    assert items[1] == ABItem("Q2?\n (A) yes\n (B) no", " (B)", "(A)")
    normalised = [
        {
            "question": r["question"],
            "positive_answer": r["answer_matching_behavior"],
            "negative_answer": r["answer_not_matching_behavior"],
        }
        for r in AB
    ]
    assert load_ab(write_jsonl(tmp_path / "n.jsonl", normalised)) == items


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            {"question": "Q", "answer_matching_behavior": "(A)"},
            r"ab\.jsonl:2: missing key 'answer_not_matching_behavior' or 'negative_answer'",
        ),
        (
            {"question": "Q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "maybe"},
            r"ab\.jsonl:2: expected an answer letter.*found \"maybe\"",
        ),
        (
            {"question": "Q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": " (A)"},
            r"ab\.jsonl:2: expected two different answer letters, found 'A'",
        ),
        (
            {"question": "", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"},
            r"ab\.jsonl:2: expected 'question' to be a non-empty",
        ),
    ],
)
def test_load_ab_refusals(tmp_path: Path, row: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_ab(write_jsonl(tmp_path / "ab.jsonl", [AB[0], row]))


def test_ab_to_pairs_ends_at_answer_letter() -> None:
    items = [ABItem("Q1", "(A)", "(B)"), ABItem("Q2", " (B)", "(A)")]
    assert ab_to_pairs(items) == [
        ContrastPair("(A", "(B", prompt="Q1"),
        ContrastPair("(B", "(A", prompt="Q2"),
    ]
    rendered = ab_to_pairs(items, chat_formatter=lambda user, prefix: f"<u>{user}</u>{prefix}")
    assert rendered[1] == ContrastPair("<u>Q2</u>(B", "<u>Q2</u>(A")


@pytest.mark.parametrize(
    ("rel", "rows"),
    [
        ("caa/sycophancy/generate.jsonl", 1000),
        ("caa/capability/mmlu_ab.jsonl", 570),
        ("caa/survival-instinct/generate.jsonl", 903),
        ("caa/original/datasets/generate/refusal/generate_dataset.json", 408),
    ],
)
def test_load_ab_real_files(rel: str, rows: int) -> None:
    items = load_ab(shared(rel))
    assert len(items) == rows
    assert all(ab_letter(i.matching) != ab_letter(i.not_matching) for i in items)
    pairs = ab_to_pairs(items)
    assert {p.positive for p in pairs} <= {f"({c}" for c in "ABCDEFGH"}
    assert pairs[0].prompt == items[0].question


def test_sycophancy_first_item_letters() -> None:
    first = load_ab(shared("caa/sycophancy/generate.jsonl"))[0]
    assert (ab_letter(first.matching), ab_letter(first.not_matching)) == ("A", "B")
    assert first.question.startswith("Hello, my name is Sarah Miller.")


# ----------------------------------------------------------------------------------------------- labelled


def test_load_labelled_and_pairs(tmp_path: Path) -> None:
    examples = load_labelled(write_jsonl(tmp_path / "l.jsonl", LABELLED))
    assert examples[0] == LabelledExample("good", 1)
    pairs = labelled_to_pairs(examples, positive_label=1, negative_label=0, seed=3)
    assert len(pairs) == 2  # truncated to the smaller class
    assert {p.positive for p in pairs} <= {"good", "fine", "ok"}
    assert {p.negative for p in pairs} == {"bad", "poor"}
    assert pairs == labelled_to_pairs(examples, 1, 0, seed=3)
    assert labelled_to_pairs(examples, "1", "0", seed=3) == pairs  # labels typed as strings match ints


def test_labelled_to_pairs_seed_changes_pairing() -> None:
    examples = [LabelledExample(f"p{i}", "pos") for i in range(20)] + [
        LabelledExample(f"n{i}", "neg") for i in range(20)
    ]
    orders = {tuple(p.positive for p in labelled_to_pairs(examples, "pos", "neg", seed=s)) for s in range(4)}
    assert len(orders) > 1


def test_labelled_to_pairs_refusals() -> None:
    examples = [LabelledExample("a", 1), LabelledExample("b", 1), LabelledExample("c", 0)]
    with pytest.raises(DataError, match=r"expected at least 2 examples labelled 0, found 1"):
        labelled_to_pairs(examples, 1, 0)
    with pytest.raises(DataError, match="expected two different labels"):
        labelled_to_pairs(examples, 1, "1")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [*LABELLED, {"text": "x", "label": True}],
            r"l\.jsonl:6: expected 'label' to be a string or integer, found a boolean",
        ),
        (
            [*LABELLED, {"text": "x", "label": 0.5}],
            r"l\.jsonl:6: expected 'label' to be a string or integer, found a number",
        ),
        ([*LABELLED, {"text": "x"}], r"l\.jsonl:6: missing key 'label' or 'emotion'"),
        (
            [{"text": "a", "label": 1}, {"text": "b", "label": 1}],
            r"expected at least 2 distinct labels, found \['1'\]",
        ),
        (
            [*LABELLED, {"text": "x", "label": 7}],
            r"l\.jsonl: expected at least 2 examples labelled 7, found 1",
        ),
    ],
)
def test_load_labelled_refusals(tmp_path: Path, rows: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_labelled(write_jsonl(tmp_path / "l.jsonl", rows))


def test_load_labelled_real_sentiment_file() -> None:
    examples = load_labelled(shared("sentiment_labelled_sentences/sentences.jsonl"))
    assert len(examples) == 3000
    assert examples[1] == LabelledExample("Good case, Excellent value.", 1)
    assert sum(e.label == 1 for e in examples) == 1500
    pairs = labelled_to_pairs(examples, 1, 0)
    assert len(pairs) == 1500


def test_load_labelled_real_emotion_scenarios() -> None:
    examples = load_labelled(shared("repe_emotions/scenarios.jsonl"))
    assert examples[0] == LabelledExample("Someone takes credit for your hard work at the office.", "anger")


# ----------------------------------------------------------------------------------------------- instructions


def test_load_instructions(tmp_path: Path) -> None:
    rows = [{"instruction": "Say hi", "category": None}, {"instruction": "Count to 3"}]
    assert load_instructions(write_jsonl(tmp_path / "i.jsonl", rows)) == ["Say hi", "Count to 3"]
    with pytest.raises(DataError, match=r"i2\.jsonl:2: missing key 'instruction'"):
        load_instructions(write_jsonl(tmp_path / "i2.jsonl", [rows[0], {"prompt": "x"}]))


def test_load_instructions_real_files() -> None:
    harmful = load_instructions(shared("refusal_direction/harmful_train.jsonl"))
    assert len(harmful) == 260
    harmless = load_instructions(shared("refusal_direction/original/dataset/splits/harmless_val.json"))
    assert len(harmless) == 6264
    assert harmless[0] == "List three education benefits of studying a foreign language."


# ------------------------------------------------------------------------------------------------- sniffing


def test_load_any_sniffs_each_format(tmp_path: Path) -> None:
    assert load_any(write_jsonl(tmp_path / "p.jsonl", PAIRS))[0] == "pairs"
    assert load_any(write_jsonl(tmp_path / "a.jsonl", AB)) == ("ab", load_ab(tmp_path / "a.jsonl"))
    assert load_any(write_jsonl(tmp_path / "l.jsonl", LABELLED))[0] == "labelled"
    kind, items = load_any(write_jsonl(tmp_path / "i.jsonl", [{"instruction": "a"}, {"instruction": "b"}]))
    assert (kind, items) == ("instructions", ["a", "b"])


def test_load_any_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.jsonl:1: unknown format: .*found keys \['foo'\]"):
        load_any(write_jsonl(tmp_path / "u.jsonl", [{"foo": 1}, {"foo": 2}]))
    (tmp_path / "n.json").write_text("42")
    with pytest.raises(
        DataError, match=r"n\.json:1: expected JSON objects or a list of them, found a top-level number"
    ):
        load_any(tmp_path / "n.json")


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        ("bench/persona_pairs_64.json", "pairs"),
        ("caa/hallucination/generate.jsonl", "ab"),
        ("sentiment_labelled_sentences/sentences.jsonl", "labelled"),
        ("refusal_direction/harmful_val.jsonl", "instructions"),
    ],
)
def test_load_any_real_files(rel: str, kind: str) -> None:
    assert load_any(shared(rel))[0] == kind


# --------------------------------------------------------------------------------------------- split, hash


def test_split_is_deterministic_and_partitions() -> None:
    items = list(range(50))
    train, dev = split(items, dev_fraction=0.2, seed=7)
    assert (train, dev) == split(items, dev_fraction=0.2, seed=7)
    assert len(dev) == 10 and len(train) == 40
    assert sorted(train + dev) == items
    assert train == sorted(train) and dev == sorted(dev)  # input order kept
    assert split(items, 0.2, seed=8)[1] != dev


def test_split_small_sets_keep_both_sides() -> None:
    assert split(["a", "b"], dev_fraction=0.1) in ((["a"], ["b"]), (["b"], ["a"]))
    assert split(["a", "b", "c"], dev_fraction=0.0) == (["a", "b", "c"], [])
    with pytest.raises(DataError, match=r"expected dev_fraction in \[0, 1\), found 1.0"):
        split([1, 2], dev_fraction=1.0)


def test_data_hash_stable_and_sensitive() -> None:
    pairs = [ContrastPair("a", "b"), ContrastPair("c", "d", prompt="p")]
    h = data_hash(pairs)
    assert len(h) == 16 and int(h, 16) >= 0
    # pinned: the hash must not drift between versions, or recorded vector metadata stops matching its data
    assert h == data_hash(
        [
            {"positive": "a", "negative": "b", "prompt": None},
            {"negative": "d", "positive": "c", "prompt": "p"},
        ]
    )
    canonical = '[{"negative":"b","positive":"a","prompt":null},{"negative":"d","positive":"c","prompt":"p"}]'
    assert h == hashlib.sha256(canonical.encode()).hexdigest()[:16] == "9d18a08c22ac585b"
    assert data_hash(list(reversed(pairs))) != h
    assert data_hash([ContrastPair("a", "b"), ContrastPair("c", "d", prompt="q")]) != h
    assert data_hash([ContrastPair("a", "b "), pairs[1]]) != h
    with pytest.raises(DataError, match="expected JSON-like data"):
        data_hash([object()])


# ------------------------------------------------------------------------------------------- packaged data


def test_demo_pairs() -> None:
    pairs = demo_pairs()
    assert len(pairs) >= 40
    assert pairs[0] == ContrastPair(
        "Act as if you are extremely happy. Describe your morning.",
        "Act as if you are extremely sad. Describe your morning.",
    )
    assert len({p.positive for p in pairs}) == len(pairs)
    with pytest.raises(DataError, match=r"demo/nope\.json: expected a packaged data file"):
        demo_pairs("nope")


def test_neutral_prompts() -> None:
    prompts = neutral_prompts()
    assert 30 <= len(prompts) <= 60
    assert len(set(prompts)) == len(prompts)
    assert all(p.strip() == p and p for p in prompts)


# ----------------------------------------------------------------------------------------------------- chat


def _tokenizer(template: str | None):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer(model))
    tok.chat_template = template
    return tok


# Like SmolLM2's: a default system turn is injected when the conversation does not start with one.
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nDefault helper<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}"
    "{% if add_generation_prompt %}<model>{% endif %}"
)


def test_format_user_with_template_keeps_default_system() -> None:
    tok = _tokenizer(CHATML)
    assert format_user(tok, "Hi", "(A") == (
        "<|im_start|>system\nDefault helper<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n(A"
    )
    assert format_user(tok, "Hi", system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_format_user_folds_system_when_template_refuses_it() -> None:
    assert format_user(_tokenizer(NO_SYSTEM), "Hi", "x", system="Sys") == "<user>Sys\n\nHi</><model>x"


def test_format_user_plain_fallback() -> None:
    assert format_user(None, "Hi", "(B") == "User: Hi\nAssistant: (B"
    assert format_user(_tokenizer(None), "Hi", system="S") == "System: S\nUser: Hi\nAssistant: "
    assert plain_format("Hi") == "User: Hi\nAssistant: "


def test_pair_texts_chat_and_plain() -> None:
    tok = _tokenizer(NO_SYSTEM)
    pairs = [ContrastPair("Be glad.", "Be sad."), ContrastPair("(A", "(B", prompt="Q?")]
    assert pair_texts(pairs, tok) == (
        ["<user>Be glad.</><model>", "<user>Q?</><model>(A"],
        ["<user>Be sad.</><model>", "<user>Q?</><model>(B"],
    )
    assert pair_texts(pairs, None, chat=False) == (
        ["Be glad.", "User: Q?\nAssistant: (A"],
        ["Be sad.", "User: Q?\nAssistant: (B"],
    )
    with pytest.raises(DataError, match="expected a tokenizer when chat=True"):
        pair_texts(pairs, None)


def test_pair_texts_on_real_caa_items_end_with_letters() -> None:
    items = load_ab(shared("caa/sycophancy/generate.jsonl"))[:3]
    pos, neg = pair_texts(ab_to_pairs(items), _tokenizer(CHATML))
    assert [p[-2:] for p in pos] == [f"({ab_letter(i.matching)}" for i in items]
    assert [n[-2:] for n in neg] == [f"({ab_letter(i.not_matching)}" for i in items]
    assert all(p[:-2] == n[:-2] for p, n in zip(pos, neg, strict=True))


def test_jsonl_content_in_a_json_file_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.json", PAIRS)
    assert load_pairs(path) == [
        ContrastPair("I love it", "I hate it"),
        ContrastPair("Great day", "Awful day"),
    ]


def test_broken_pretty_printed_object_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        '{\n  "pairs": [\n    {"positive": "a", "negative": "b"}\n    {"positive": "c", "negative": "d"}\n  ]\n}\n'
    )
    with pytest.raises(DataError, match=r"p\.json:4: invalid JSON: Expecting ','"):
        load_pairs(path)
