"""Reading JSON / JSONL data files into records that remember their line, for precise error messages.

Files may be JSONL (one object per line) or one JSON document holding a list of objects (or an object with a
``"pairs"`` list), because the shared datasets come both ways. Locations in messages are 1-based line numbers
in the file in both cases. What the records mean is :mod:`steerlab.data.formats`' job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import DataError

#: Keys of a persona-template spec: such a file is one object, returned whole instead of as records.
PERSONA_KEYS = ("template", "positive", "negative", "suffixes")


@dataclass(frozen=True)
class Record:
    """A parsed JSON object and where it came from, so later checks can point at the right line."""

    data: Any
    line: int


#: A file's records, or its top-level object when the file is a persona-template spec.
Parsed = list[Record] | dict[str, Any]


def fail(source: str, line: int | None, message: str) -> DataError:
    """A DataError located at ``source:line`` (or the file alone)."""
    where = f"{source}:{line}" if line is not None else source
    return DataError(f"{where}: {message}")


def read_text(path: str | Path) -> str:
    """The file's text (UTF-8, BOM allowed), or a DataError saying why it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{p}: cannot read: expected an existing file, found nothing at that path") from None
    except IsADirectoryError:
        raise DataError(f"{p}: cannot read: expected a file, found a directory") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{p}: cannot read: expected UTF-8 text, found undecodable bytes ({exc.reason})"
        ) from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _array_records(text: str, pos: int) -> list[Record]:
    """Elements of the JSON array starting at ``pos``, each with the line it starts on.

    Only called on text that already parsed as valid JSON: decoding element by element is how we keep line
    numbers, which ``json.loads`` throws away.
    """
    decoder = json.JSONDecoder()
    records: list[Record] = []
    line, counted = 1, 0
    pos = _skip_ws(text, pos + 1)  # past "["
    while text[pos] != "]":
        value, end = decoder.raw_decode(text, pos)
        line, counted = line + text.count("\n", counted, pos), pos
        records.append(Record(value, line))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return records


def _key_offset(text: str, key: str) -> int:
    """Offset of the value of a top-level ``key`` in valid JSON object text (a text search could hit a nested key)."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, text.index("{") + 1)
    while True:
        name, pos = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ":"
        if name == key:
            return pos
        _, pos = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ","


def _jsonl_records(text: str, source: str) -> list[Record]:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record(json.loads(line), number))
        except json.JSONDecodeError as exc:
            raise fail(
                source, number, f"invalid JSON line: expected one JSON object, found {exc.msg}"
            ) from None
    return records


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def parse_records(text: str, source: str) -> Parsed:
    """The records of a file, or the top-level object itself when it is a persona-template spec.

    ``.jsonl`` files are read line by line. Anything else is tried as one JSON document first, then as JSONL
    when its first line is a JSON value by itself; otherwise the decoder's error and line are reported, which
    points at the real mistake in a pretty-printed file.
    """
    if source.endswith(".jsonl") or not text.strip():
        return _jsonl_records(text, source)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if _is_json(next(line for line in text.split("\n") if line.strip())):
            return _jsonl_records(text, source)
        raise fail(source, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if isinstance(doc, list):
        return _array_records(text, text.index("["))
    if isinstance(doc, dict) and isinstance(doc.get("pairs"), list):
        return _array_records(text, _key_offset(text, "pairs"))
    if isinstance(doc, dict) and all(k in doc for k in PERSONA_KEYS):
        return doc
    if isinstance(doc, dict):  # a one-record file
        return [Record(doc, text[: text.index("{")].count("\n") + 1)]
    raise fail(source, 1, f"expected JSON objects or a list of them, found a top-level {kind_name(doc)}")


def load_records(path: str | Path) -> tuple[Parsed, str]:
    """The parsed records of the file at ``path`` and the name messages use for it."""
    source = str(path)
    return parse_records(read_text(path), source), source


def kind_name(value: Any) -> str:
    """The JSON type of a value, as messages name it."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def show(value: Any) -> str:
    """A value as short JSON for a message."""
    shown = json.dumps(value, ensure_ascii=False, default=repr)
    return shown if len(shown) <= 60 else shown[:57] + "..."
