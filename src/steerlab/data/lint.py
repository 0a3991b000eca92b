"""Model-free checks that catch contrast data which would give a misleading steering vector.

A mean-difference vector encodes *every* systematic difference between the two sides, not only the concept
the author had in mind. Most defects below are ways a second difference sneaks in (length, a marker word) or
the intended one gets diluted (duplicates, texts on both sides, identical pairs). Errors mean the data is
wrong; warnings mean it is suspicious and the vector should be checked.

Checks (``code``: level):

* ``empty`` (error): an empty or whitespace-only text or prompt.
* ``identical`` (error): a pair whose positive equals its negative; it adds a zero difference.
* ``leakage`` (error): the same text on both sides across the set (or under two labels); it pulls the side
  means together and usually means a labelling mistake.
* ``duplicate-pair`` (warning): a pair repeating an earlier one; it silently doubles its weight.
* ``duplicate-item`` (warning): the same text twice on one side (or twice under one label).
* ``length-skew`` (warning): mean length of one side over the other beyond ``max_length_ratio``; length is
  then a second contrast the vector will learn.
* ``marker-prefix`` / ``marker-suffix`` (warning): one first (or last) word starts (or ends) at least
  ``marker_share`` of one side's texts and at most ``1 - marker_share`` of the other's. Such a word separates
  the sides on its own, and a reader taking the last token sees it directly, so the vector may encode the
  word rather than the concept. Words are lower-cased ``\\w+`` runs; for pairs with a shared prompt only the
  continuations are compared, since the prompt is the same on both sides. Balanced A/B letters pass;
  a set where the matching answer is always "(A" is flagged.
* ``imbalance`` (warning, labelled sets): the largest class is over ``max_class_ratio`` times the smallest;
  pairing truncates to the smaller class and drops the rest.
* ``too-few`` (error below 2 items per side, warning below ``min_items``): a handful of examples gives a
  direction dominated by their idiosyncrasies.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steerlab.data.formats import (
    MIN_PER_SIDE,
    ABItem,
    ContrastPair,
    LabelledExample,
    ab_to_pairs,
    load_any,
)
from steerlab.data.records import load_records
from steerlab.errors import DataError

Level = Literal["error", "warning"]

_WORD = re.compile(r"\w+")
_SHOWN_ITEMS = 8


@dataclass(frozen=True)
class Finding:
    """One defect: ``items`` are 0-based indices into the linted list, so a tool can point at them.

    Rendered for people they become 1-based, like every other location steerlab prints: file line
    numbers when the report came from a file (:attr:`LintReport.lines`), else item numbers from 1.
    """

    level: Level
    code: str
    message: str
    items: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LintReport:
    """All findings for one data set; ``exit_code`` is what a CLI should exit with."""

    kind: str
    n_items: int
    findings: list[Finding]
    strict: bool = False
    source: str | None = None
    #: 1-based line in ``source`` of each linted item (``None``: not from a file, or no one line per item)
    lines: tuple[int, ...] | None = None

    def where(self, index: int) -> int:
        """The 1-based location people see for item ``index``: its file line, else its item number."""
        if self.lines is not None and index < len(self.lines):
            return self.lines[index]
        return index + 1

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def exit_code(self) -> int:
        """1 if any error (or, with ``strict``, any warning), else 0."""
        return int(bool(self.errors) or (self.strict and bool(self.warnings)))

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}


@dataclass(frozen=True)
class _Entry:
    """One text on one side: ``key`` identifies it for duplicates/leakage, ``text`` is what differs."""

    index: int
    key: tuple[str | None, str]
    text: str


Sides = dict[str, list[_Entry]]


# ------------------------------------------------------------------------------------------------ checks


def _norm(text: str) -> str:
    return " ".join(text.split())


def _empty(items: Sequence[tuple[int, Sequence[str | None]]]) -> Finding | None:
    bad = [i for i, texts in items if any(t is not None and not t.strip() for t in texts)]
    if not bad:
        return None
    return Finding(
        "error", "empty", f"expected non-empty texts, found {len(bad)} item(s) with an empty one", bad
    )


def _duplicates(sides: Sides, unit: str) -> Finding | None:
    repeated: list[int] = []
    for entries in sides.values():
        counts = Counter(e.key for e in entries)
        repeated += [e.index for e in entries if counts[e.key] > 1]
    if not repeated:
        return None
    names = "/".join(sides)
    message = f"{len(repeated)} {unit} share a text with another on the same side ({names}); repeats weigh that text more"
    return Finding("warning", "duplicate-item", message, sorted(set(repeated)))


def _leakage(sides: Sides) -> Finding | None:
    where: dict[tuple[str | None, str], set[str]] = defaultdict(set)
    for side, entries in sides.items():
        for e in entries:
            where[e.key].add(side)
    leaked = {k for k, s in where.items() if len(s) > 1}
    if not leaked:
        return None
    items = sorted({e.index for entries in sides.values() for e in entries if e.key in leaked})
    example = next(iter(sorted(leaked, key=lambda k: k[1])))[1]
    message = f"{len(leaked)} text(s) appear on more than one side, e.g. {example[:50]!r}: they cancel in the difference"
    return Finding("error", "leakage", message, items)


def _length_skew(sides: Sides, max_ratio: float) -> Finding | None:
    means = {s: sum(len(e.text) for e in es) / len(es) for s, es in sides.items() if es}
    if len(means) < 2 or min(means.values()) <= 0:
        return None
    longest, shortest = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
    ratio = means[longest] / means[shortest]
    if ratio <= max_ratio:
        return None
    message = (
        f"mean length {longest} {means[longest]:.0f} chars vs {shortest} {means[shortest]:.0f} chars "
        f"(ratio {ratio:.2f} > {max_ratio}): the vector may encode length"
    )
    return Finding("warning", "length-skew", message)


def _edge_word(text: str, last: bool) -> str | None:
    words = _WORD.findall(text.lower())
    if not words:
        return None
    return words[-1] if last else words[0]


@dataclass(frozen=True)
class _Hit:
    side: str
    word: str
    share: float
    other_share: float
    items: tuple[int, ...]


def _marker_hits(sides: Sides, share: float, last: bool) -> list[_Hit]:
    hits = []
    for side, entries in sides.items():
        others = [e for s, es in sides.items() if s != side for e in es]
        if not entries or not others:
            continue
        words = [_edge_word(e.text, last) for e in entries]
        common = Counter(w for w in words if w is not None).most_common(1)
        if not common or common[0][1] / len(entries) < share:
            continue
        word, count = common[0]
        other_share = sum(_edge_word(e.text, last) == word for e in others) / len(others)
        if other_share <= 1 - share:
            items = tuple(e.index for e, w in zip(entries, words, strict=True) if w == word)
            hits.append(_Hit(side, word, count / len(entries), other_share, items))
    return hits


def _marker_finding(hits: list[_Hit], last: bool) -> Finding | None:
    if not hits:
        return None
    where, code = ("end with", "marker-suffix") if last else ("start with", "marker-prefix")
    parts = [
        f"{h.share:.0%} of {h.side} texts {where} {h.word!r} vs {h.other_share:.0%} of the rest" for h in hits
    ]
    message = "; ".join(parts) + ": the vector may encode that word rather than the concept"
    return Finding("warning", code, message, sorted({i for h in hits for i in h.items}))


def _markers(sides: Sides, share: float) -> list[Finding | None]:
    """Suffix and prefix markers, one finding each; a one-word text's prefix is its suffix, so report it once."""
    suffix = _marker_hits(sides, share, last=True)
    prefix = [h for h in _marker_hits(sides, share, last=False) if h not in suffix]
    return [_marker_finding(prefix, last=False), _marker_finding(suffix, last=True)]


def _size(counts: dict[str, int], min_items: int, unit: str, min_sides: int = 2) -> Finding | None:
    shown = ", ".join(f"{s} {n}" for s, n in counts.items()) or "none"
    smallest = min(counts.values(), default=0)
    if len(counts) < min_sides:
        return Finding(
            "error", "too-few", f"expected at least {min_sides} labels, found {len(counts)} ({shown})"
        )
    if smallest < MIN_PER_SIDE:
        return Finding("error", "too-few", f"expected at least {MIN_PER_SIDE} {unit} per side, found {shown}")
    if smallest < min_items:
        return Finding(
            "warning",
            "too-few",
            f"only {shown} {unit}; at least {min_items} per side give a stable direction",
        )
    return None


def _imbalance(sides: Sides, max_ratio: float) -> Finding | None:
    counts = {s: len(es) for s, es in sides.items()}
    if len(counts) < 2 or min(counts.values()) == 0:
        return None
    big, small = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
    if counts[big] / counts[small] <= max_ratio:
        return None
    message = f"class {big} has {counts[big]} examples vs {small} {counts[small]}: pairing drops the surplus"
    return Finding("warning", "imbalance", message)


# ---------------------------------------------------------------------------------------------- per kind


@dataclass(frozen=True)
class _Options:
    min_items: int
    max_length_ratio: float
    marker_share: float
    max_class_ratio: float


def _contrast_checks(sides: Sides, opts: _Options, unit: str) -> list[Finding | None]:
    return [
        _leakage(sides),
        _duplicates(sides, unit),
        _length_skew(sides, opts.max_length_ratio),
        *_markers(sides, opts.marker_share),
    ]


def _lint_pairs(pairs: Sequence[ContrastPair], opts: _Options) -> list[Finding | None]:
    seen: set[tuple[str | None, str, str]] = set()
    repeats, identical = [], []
    sides: Sides = {"positive": [], "negative": []}
    for i, p in enumerate(pairs):
        prompt = None if p.prompt is None else _norm(p.prompt)
        key = (prompt, _norm(p.positive), _norm(p.negative))
        if not all(key[1:]) or prompt == "":
            continue  # reported by the empty check
        if key in seen:
            repeats.append(i)
        elif key[1] == key[2]:
            identical.append(i)
        else:
            sides["positive"].append(_Entry(i, (prompt, key[1]), p.positive))
            sides["negative"].append(_Entry(i, (prompt, key[2]), p.negative))
        seen.add(key)
    findings: list[Finding | None] = [
        _empty([(i, (p.positive, p.negative, p.prompt)) for i, p in enumerate(pairs)])
    ]
    if identical:
        findings.append(
            Finding("error", "identical", f"{len(identical)} pair(s) have positive == negative", identical)
        )
    if repeats:
        message = f"{len(repeats)} pair(s) repeat an earlier pair exactly; repeats weigh that pair more"
        findings.append(Finding("warning", "duplicate-pair", message, repeats))
    counts = {"positive": len(pairs), "negative": len(pairs)}
    return [*findings, *_contrast_checks(sides, opts, "pairs"), _size(counts, opts.min_items, "pairs")]


def _lint_labelled(examples: Sequence[LabelledExample], opts: _Options) -> list[Finding | None]:
    sides: Sides = defaultdict(list)
    all_sides: Sides = defaultdict(list)
    for i, e in enumerate(examples):
        entry = _Entry(i, (None, _norm(e.text)), e.text)
        all_sides[str(e.label)].append(entry)
        if e.text.strip():
            sides[str(e.label)].append(entry)
    return [
        _empty([(i, (e.text,)) for i, e in enumerate(examples)]),
        *_contrast_checks(dict(sides), opts, "examples"),
        _imbalance(dict(all_sides), opts.max_class_ratio),
        _size({label: len(es) for label, es in all_sides.items()}, opts.min_items, "examples"),
    ]


def _lint_instructions(texts: Sequence[str], opts: _Options) -> list[Finding | None]:
    entries = [_Entry(i, (None, _norm(t)), t) for i, t in enumerate(texts)]
    sides = {"instructions": [e for e in entries if e.text.strip()]}
    return [
        _empty([(i, (t,)) for i, t in enumerate(texts)]),
        _duplicates(sides, "instructions"),
        _size({"instructions": len(texts)}, opts.min_items, "instructions", min_sides=1),
    ]


def _kind_of(items: Sequence[Any]) -> str:
    kinds = {
        ContrastPair: "pairs",
        ABItem: "ab",
        LabelledExample: "labelled",
        str: "instructions",
    }
    found = {kinds.get(type(x)) for x in items}
    if len(found) != 1 or None in found:
        names = sorted({type(x).__name__ for x in items})
        raise DataError(
            f"lint: expected a list of one item type (ContrastPair, ABItem, LabelledExample, str), found {names}"
        )
    return found.pop()  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- public


def lint(
    items: Sequence[Any],
    *,
    strict: bool = False,
    min_items: int = 8,
    max_length_ratio: float = 1.5,
    marker_share: float = 0.9,
    max_class_ratio: float = 2.0,
    source: str | None = None,
) -> LintReport:
    """Check pairs, A/B items, labelled examples or instructions; see the module docstring for each check.

    A/B items are checked as the pairs :func:`~steerlab.data.ab_to_pairs` makes from them, since those are
    what gets read.
    """
    opts = _Options(min_items, max_length_ratio, marker_share, max_class_ratio)
    kind = _kind_of(items) if items else "pairs"
    if kind == "labelled":
        found = _lint_labelled(items, opts)
    elif kind == "instructions":
        found = _lint_instructions(items, opts)
    else:
        found = _lint_pairs(ab_to_pairs(items) if kind == "ab" else items, opts)
    findings = [f for f in found if f is not None]
    findings.sort(key=lambda f: f.level != "error")  # errors first, stable otherwise
    return LintReport(kind, len(items), findings, strict, source)


def lint_path(path: str | Path, strict: bool = False, **options: Any) -> LintReport:
    """Lint a data file of any supported format; a file that does not load is one ``load`` error."""
    try:
        kind, items = load_any(path)
    except DataError as exc:
        return LintReport("unknown", 0, [Finding("error", "load", str(exc))], strict, str(path))
    report = lint(items, strict=strict, source=str(path), **options)
    return LintReport(kind, report.n_items, report.findings, strict, str(path), _item_lines(path, len(items)))


def _item_lines(path: str | Path, count: int) -> tuple[int, ...] | None:
    """The file line of each item, when the file has one record per item (not a persona template)."""
    parsed, _ = load_records(path)
    if isinstance(parsed, dict) or len(parsed) != count:
        return None
    return tuple(record.line for record in parsed)


def _items_text(report: LintReport, items: list[int]) -> str:
    if not items:
        return ""
    shown = ", ".join(str(report.where(i)) for i in items[:_SHOWN_ITEMS])
    more = f" +{len(items) - _SHOWN_ITEMS} more" if len(items) > _SHOWN_ITEMS else ""
    unit = "lines" if report.lines is not None else "items"
    return f" [{unit} {shown}{more}]"


def render(report: LintReport) -> str:
    """A compact report: one summary line, then one line per finding, errors first."""
    n_err, n_warn = len(report.errors), len(report.warnings)
    name = f"{report.source}: " if report.source else ""
    verdict = "FAIL" if report.exit_code else "ok"
    lines = [
        f"{name}{report.n_items} items ({report.kind}), {n_err} error(s), {n_warn} warning(s): {verdict}"
    ]
    width = max((len(f.code) for f in report.findings), default=0)
    for f in report.findings:
        lines.append(f"  {f.level:<7} {f.code:<{width}}  {f.message}{_items_text(report, f.items)}")
    return "\n".join(lines)
