"""The arena report: one table of measured criteria per method, plots, and a plain verdict per criterion.

Written to a folder: ``results.json`` (everything measured), ``report.md`` and a self-contained
``index.html`` (plots embedded as base64 PNG; the PNGs are also saved beside it). Verdicts are computed
from the numbers with fixed rules (see docs/criteria/) and say who wins even when it is not steering;
when intervals overlap they say the difference is not established.

The numbers (:mod:`.numbers`: derived rows; :mod:`.findings`: what each verdict states) are kept apart
from their rendering (:mod:`.verdicts` words, :mod:`.render` Markdown/HTML, :mod:`.plots` figures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.evaluate.report.findings import Findings, findings
from steerlab.evaluate.report.numbers import derive, efficiency_curves, seed_spread
from steerlab.evaluate.report.plots import make_plots
from steerlab.evaluate.report.render import COLUMNS, html_page, markdown, table_md
from steerlab.evaluate.report.verdicts import CRITERIA, verdicts
from steerlab.interop.atomic import atomic_write

__all__ = [
    "COLUMNS",
    "CRITERIA",
    "Findings",
    "derive",
    "efficiency_curves",
    "findings",
    "html_page",
    "load",
    "markdown",
    "seed_spread",
    "table_md",
    "verdicts",
    "write",
]


def write(folder: str | Path, results: dict[str, Any]) -> dict[str, Path]:
    """Write results.json, report.md, index.html and the plot PNGs into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = derive(results)
    verdict = verdicts(results, rows)
    results = {**results, "derived": rows, "verdicts": verdict}
    made = make_plots(results, rows, folder)
    md_text = markdown(results, rows, verdict, made)
    paths = {"json": folder / "results.json", "md": folder / "report.md", "html": folder / "index.html"}
    data = json.dumps(results, indent=1, default=_default)
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(data))
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(md_text))
    page = html_page(md_text, made, f"steerlab compare: {results['task']['name']}")
    atomic_write(paths["html"], lambda tmp: Path(tmp).write_text(page))
    return {**paths, **made}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def load(folder: str | Path) -> dict[str, Any]:
    """The results document of a finished (or interrupted) comparison folder."""
    return json.loads((Path(folder) / "results.json").read_text())
