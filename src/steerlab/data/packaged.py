"""Data shipped inside the package: the demo's pairs, neutral prompts, and one example file per format.

Packaged rather than read from the repository, so the demo, the docs' commands and the tests work from an
installed wheel.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from steerlab.data.formats import ContrastPair, parse_pairs
from steerlab.data.records import parse_records, show
from steerlab.errors import DataError


def _resource_text(*parts: str) -> tuple[str, str]:
    resource = importlib.resources.files("steerlab.data").joinpath(*parts)
    source = "steerlab/data/" + "/".join(parts)
    try:
        return resource.read_text(encoding="utf-8"), source
    except FileNotFoundError:
        raise DataError(
            f"{source}: expected a packaged data file, found nothing (is the package installed?)"
        ) from None


#: The minimal example file of every accepted format, shipped in ``steerlab/data/examples`` (documented in
#: docs/data-formats.md): file name -> the kind :func:`load_any` reads it as.
EXAMPLES = {
    "pairs.jsonl": "pairs",
    "pairs.json": "pairs",
    "completions.jsonl": "pairs",
    "persona.json": "pairs",
    "ab.jsonl": "ab",
    "labelled.jsonl": "labelled",
    "harmful.jsonl": "instructions",
    "harmless.jsonl": "instructions",
}


def example_path(name: str) -> Path:
    """The path of a shipped example data file (see :data:`EXAMPLES`), to copy or pass to a command."""
    if name not in EXAMPLES:
        raise DataError(f"no example data file {name!r}; expected one of {', '.join(EXAMPLES)}")
    path = Path(str(importlib.resources.files("steerlab.data").joinpath("examples", name)))
    if not path.is_file():
        raise DataError(
            f"{path}: expected a packaged example file, found nothing (is the package installed?)"
        )
    return path


def demo_pairs(name: str = "happy_sad") -> list[ContrastPair]:
    """The demo's contrast pairs (a persona template over neutral tasks), shipped inside the package.

    Packaged rather than read from the repo so the demo and the tests work from an installed wheel.
    """
    text, source = _resource_text("demo", f"{name}.json")
    return parse_pairs(parse_records(text, source), source)


def neutral_prompts() -> list[str]:
    """Short prompts with no emotional or safety loading, for measuring side effects (e.g. KL) of a vector."""
    text, source = _resource_text("neutral", "prompts.json")
    doc = json.loads(text)
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise DataError(f"{source}: expected {{'prompts': [non-empty strings]}}, found {show(doc)}")
    return list(prompts)
