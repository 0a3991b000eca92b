"""Contrast-data formats and their loaders.

Every loader refuses bad input with a :class:`~steerlab.errors.DataError` naming the file, the line and what
was expected versus found: a steering vector silently built from half a file, or from a misspelt key read as
empty text, looks plausible and is wrong, so we would rather stop early and say exactly where.

Files are read into line-numbered records by :mod:`steerlab.data.records` (JSONL or one JSON document);
this module gives the records their meaning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.data.records import Parsed, Record, fail, kind_name, load_records, show
from steerlab.errors import DataError

#: The fewest items a side may have: a mean difference over one example is that example, not a direction.
MIN_PER_SIDE = 2

# Field names accepted for each format. The first name is the canonical one; the others are the names used
# by the files we ship against (CAA's original JSON vs the normalised JSONL, RepE's emotion scenarios).
_AB_MATCHING = ("answer_matching_behavior", "positive_answer")
_AB_NOT_MATCHING = ("answer_not_matching_behavior", "negative_answer")
_TEXT_KEYS = ("text", "sentence", "scenario")
_LABEL_KEYS = ("label", "emotion")


@dataclass(frozen=True)
class ContrastPair:
    """Two texts that differ in the concept to steer.

    With ``prompt`` unset, ``positive`` and ``negative`` are whole user messages. With ``prompt`` set, they are
    continuations of the assistant turn that answers ``prompt`` (CAA's answer letters, completion pairs).
    """

    positive: str
    negative: str
    prompt: str | None = None


@dataclass(frozen=True)
class ABItem:
    """A CAA-style multiple-choice item: the question with its lettered choices and the two answers."""

    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class LabelledExample:
    """One text with its class, for sets where contrast comes from labels rather than from explicit pairs."""

    text: str
    label: str | int


# ------------------------------------------------------------------------------------------------- fields


def _object(record: Record, source: str) -> dict[str, Any]:
    if not isinstance(record.data, dict):
        raise fail(
            source,
            record.line,
            f"expected a JSON object, found a {kind_name(record.data)} {show(record.data)}",
        )
    return record.data


def _pick(obj: dict[str, Any], names: Sequence[str], line: int, source: str) -> tuple[str, Any]:
    for name in names:
        if name in obj:
            return name, obj[name]
    wanted = " or ".join(repr(n) for n in names)
    raise fail(source, line, f"missing key {wanted}: found keys {sorted(obj)}")


def _text(obj: dict[str, Any], names: Sequence[str], line: int, source: str) -> str:
    name, value = _pick(obj, names, line, source)
    if not isinstance(value, str):
        raise fail(
            source, line, f"expected {name!r} to be a string, found a {kind_name(value)} {show(value)}"
        )
    if not value.strip():
        raise fail(source, line, f"expected {name!r} to be a non-empty string, found {show(value)}")
    return value


def _optional_text(obj: dict[str, Any], name: str, line: int, source: str) -> str | None:
    if obj.get(name) is None:
        return None
    return _text(obj, (name,), line, source)


def _label(obj: dict[str, Any], line: int, source: str) -> str | int:
    name, value = _pick(obj, _LABEL_KEYS, line, source)
    # bool is an int in Python; a true/false label is more likely a mistake than a class id, so refuse it.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise fail(
            source,
            line,
            f"expected {name!r} to be a string or integer, found a {kind_name(value)} {show(value)}",
        )
    if isinstance(value, str) and not value.strip():
        raise fail(source, line, f"expected {name!r} to be a non-empty string, found {show(value)}")
    return value


def _require_count(count: int, what: str, source: str) -> None:
    if count < MIN_PER_SIDE:
        raise fail(source, None, f"expected at least {MIN_PER_SIDE} {what}, found {count}")


def _list_records(parsed: Parsed, what: str, source: str) -> list[Record]:
    if isinstance(parsed, dict):
        raise fail(source, None, f"expected {what}, found a persona template (load it with load_pairs)")
    return parsed


# ------------------------------------------------------------------------------------------------- pairs


def persona_pairs(template: str, positive: str, negative: str, suffixes: Sequence[str]) -> list[ContrastPair]:
    """Repeng-style pairs: the same neutral task asked under two personas.

    Sharing the task between sides makes the persona the only systematic difference, so the mean difference
    isolates it. ``prompt`` stays unset: the texts are user messages and chat formatting happens when they are
    read, for whichever model reads them.
    """
    if "{persona}" not in template:
        raise DataError(f"persona template: expected a '{{persona}}' placeholder, found {template!r}")
    for side, persona in (("positive", positive), ("negative", negative)):
        if not isinstance(persona, str) or not persona.strip():
            raise DataError(f"persona template: expected a non-empty {side} persona, found {persona!r}")
    if len(suffixes) < MIN_PER_SIDE:
        raise DataError(f"persona template: expected at least {MIN_PER_SIDE} suffixes, found {len(suffixes)}")
    for number, suffix in enumerate(suffixes, start=1):
        if not isinstance(suffix, str) or not suffix.strip():
            raise DataError(
                f"persona template: suffix {number}: expected a non-empty string, found {show(suffix)}"
            )
    pos, neg = template.replace("{persona}", positive), template.replace("{persona}", negative)
    return [ContrastPair(f"{pos} {s}", f"{neg} {s}") for s in suffixes]


def _persona_spec(spec: dict[str, Any], source: str) -> list[ContrastPair]:
    try:
        return persona_pairs(spec["template"], spec["positive"], spec["negative"], spec["suffixes"])
    except (DataError, TypeError) as exc:
        raise DataError(f"{source}: {exc}") from None


def parse_pairs(parsed: Parsed, source: str) -> list[ContrastPair]:
    """Contrast pairs from parsed records (what :func:`load_pairs` reads; packaged data uses it too)."""
    if isinstance(parsed, dict):
        return _persona_spec(parsed, source)
    pairs = []
    for record in parsed:
        obj = _object(record, source)
        pairs.append(
            ContrastPair(
                positive=_text(obj, ("positive",), record.line, source),
                negative=_text(obj, ("negative",), record.line, source),
                prompt=_optional_text(obj, "prompt", record.line, source),
            )
        )
    _require_count(len(pairs), "pairs", source)
    return pairs


def load_pairs(path: str | Path) -> list[ContrastPair]:
    """Load contrast pairs from JSONL, a JSON list, a ``{"pairs": [...]}`` object or a persona template file."""
    return parse_pairs(*load_records(path))


# ----------------------------------------------------------------------------------------------------- A/B

_LETTER = re.compile(r"\s*\(?\s*([A-Z])\s*\)?\s*")


def ab_letter(answer: str) -> str:
    """The choice letter of an answer such as ``"(A)"``, ``" (B)"`` or ``"C"``.

    CAA files write the letter with parentheses and sometimes a leading space; we normalise so that the letter
    we append when reading is exactly the one in the question's choices.
    """
    match = _LETTER.fullmatch(answer) if isinstance(answer, str) else None
    if match is None:
        raise DataError(f"expected an answer letter like '(A)' or '(B)', found {show(answer)}")
    return match.group(1)


def _parse_ab(parsed: Parsed, source: str) -> list[ABItem]:
    items = []
    for record in _list_records(parsed, "A/B items", source):
        obj = _object(record, source)
        question = _text(obj, ("question",), record.line, source)
        answers = [_text(obj, names, record.line, source) for names in (_AB_MATCHING, _AB_NOT_MATCHING)]
        try:
            matching, not_matching = (ab_letter(a) for a in answers)
        except DataError as exc:
            raise fail(source, record.line, str(exc)) from None
        if matching == not_matching:
            raise fail(
                source,
                record.line,
                f"expected two different answer letters, found {matching!r} for both sides",
            )
        items.append(ABItem(question, answers[0], answers[1]))
    _require_count(len(items), "A/B items", source)
    return items


def load_ab(path: str | Path) -> list[ABItem]:
    """Load CAA-style A/B items (original ``answer_*_behavior`` keys or normalised ``*_answer`` keys)."""
    return _parse_ab(*load_records(path))


def ab_to_pairs(
    items: Sequence[ABItem], chat_formatter: Callable[[str, str], str] | None = None
) -> list[ContrastPair]:
    """Pairs that end at the answer letter, where CAA reads its activations.

    Both sides end with ``"(" + letter`` (no closing parenthesis), so the last token of each text is the
    letter itself and the reader's "last token" position is the answer token. Without ``chat_formatter`` the
    pairs keep the question as ``prompt`` and the letters as assistant continuations, and
    :func:`steerlab.data.pair_texts` renders them for the model at read time. With ``chat_formatter(user,
    assistant_prefix) -> str`` the texts are rendered now and are final.
    """
    pairs = []
    for item in items:
        pos, neg = f"({ab_letter(item.matching)}", f"({ab_letter(item.not_matching)}"
        if chat_formatter is None:
            pairs.append(ContrastPair(pos, neg, prompt=item.question))
        else:
            pairs.append(ContrastPair(chat_formatter(item.question, pos), chat_formatter(item.question, neg)))
    return pairs


# ----------------------------------------------------------------------------------------------- labelled


def _parse_labelled(parsed: Parsed, source: str) -> list[LabelledExample]:
    examples = []
    for record in _list_records(parsed, "labelled examples", source):
        obj = _object(record, source)
        examples.append(
            LabelledExample(_text(obj, _TEXT_KEYS, record.line, source), _label(obj, record.line, source))
        )
    counts: dict[str | int, int] = {}
    for example in examples:
        counts[example.label] = counts.get(example.label, 0) + 1
    if len(counts) < 2:
        raise fail(source, None, f"expected at least 2 distinct labels, found {sorted(map(str, counts))}")
    for label, count in counts.items():
        _require_count(count, f"examples labelled {label!r}", source)
    return examples


def load_labelled(path: str | Path) -> list[LabelledExample]:
    """Load ``{"text", "label"}`` JSONL (also ``sentence``/``scenario`` for text and ``emotion`` for label)."""
    return _parse_labelled(*load_records(path))


def _same_label(a: str | int, b: str | int) -> bool:
    # Labels typed on a command line arrive as strings while files often hold integers; "1" means 1.
    return str(a) == str(b)


def labelled_to_pairs(
    examples: Sequence[LabelledExample], positive_label: str | int, negative_label: str | int, seed: int = 0
) -> list[ContrastPair]:
    """Pair examples of two classes, one from each, truncating to the smaller class.

    The classes are shuffled independently with ``seed`` so that the pairing does not follow file order (which
    often groups by source site or topic), yet the same seed always gives the same pairs.
    """
    if _same_label(positive_label, negative_label):
        raise DataError(f"expected two different labels, found {positive_label!r} for both sides")
    sides = []
    for label in (positive_label, negative_label):
        texts = [e.text for e in examples if _same_label(e.label, label)]
        if len(texts) < MIN_PER_SIDE:
            found = sorted({str(e.label) for e in examples})
            raise DataError(
                f"expected at least {MIN_PER_SIDE} examples labelled {label!r}, found {len(texts)} "
                f"(labels present: {found})"
            )
        sides.append(texts)
    rng = random.Random(seed)
    for texts in sides:
        rng.shuffle(texts)
    return [ContrastPair(p, n) for p, n in zip(*sides, strict=False)]


# ------------------------------------------------------------------------------------------- instructions


def _parse_instructions(parsed: Parsed, source: str) -> list[str]:
    out = []
    for record in _list_records(parsed, "instructions", source):
        out.append(_text(_object(record, source), ("instruction",), record.line, source))
    _require_count(len(out), "instructions", source)
    return out


def load_instructions(path: str | Path) -> list[str]:
    """Load the ``instruction`` field of each row (refusal-direction JSONL or its original JSON lists)."""
    return _parse_instructions(*load_records(path))


# ------------------------------------------------------------------------------------------------- sniffing

_PARSERS: dict[str, Callable[[Parsed, str], list[Any]]] = {
    "pairs": parse_pairs,
    "ab": _parse_ab,
    "labelled": _parse_labelled,
    "instructions": _parse_instructions,
}


def _sniff(first: dict[str, Any]) -> str | None:
    keys = set(first)
    if {"positive", "negative"} <= keys:
        return "pairs"
    if "question" in keys and keys & set(_AB_MATCHING):
        return "ab"
    if keys & set(_TEXT_KEYS) and keys & set(_LABEL_KEYS):
        return "labelled"
    if "instruction" in keys:
        return "instructions"
    return None


def load_any(path: str | Path) -> tuple[str, list[Any]]:
    """Load a file of any supported format, returning ``(kind, items)``.

    ``kind`` is ``"pairs"``, ``"ab"``, ``"labelled"`` or ``"instructions"``. The format is decided by the keys
    of the first record, so tools like the linter can take any data file without being told its type.
    """
    parsed, source = load_records(path)
    if isinstance(parsed, dict):
        return "pairs", _persona_spec(parsed, source)
    if not parsed:
        raise fail(source, None, f"expected at least {MIN_PER_SIDE} records, found an empty file")
    first = _object(parsed[0], source)
    kind = _sniff(first)
    if kind is None:
        raise fail(
            source,
            parsed[0].line,
            "unknown format: expected keys positive+negative (pairs), question+answer_matching_behavior (A/B), "
            f"text+label (labelled) or instruction (instructions), found keys {sorted(first)}",
        )
    return kind, _PARSERS[kind](parsed, source)
