"""The report as text: the Markdown table and page, and a self-contained HTML rendering of it."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from steerlab.evaluate.report.verdicts import CRITERIA, est, num

COLUMNS = (
    ("effect", "effect (eval) [95% CI]"),
    ("gain", "gain vs unadapted"),
    ("heldout", "held-out effect"),
    ("generalisation_ratio", "held-out gain / eval gain"),
    ("wrong_way_fraction", "wrong-way fraction [95% CI]"),
    ("kl", "KL neutral (nats) [95% CI]"),
    ("ppl_ratio", "perplexity ratio"),
    ("capability_change", "capability Δacc"),
    ("build_seconds", "build s"),
    ("forward_passes", "fwd passes"),
    ("backward_passes", "bwd passes"),
    ("speed_ratio", "tok/s vs unadapted"),
    ("extra_prompt_tokens", "extra prompt tokens"),
    ("reversible", "reversible"),
)


#: Columns shown with their interval when the results recorded one (``<key>_ci``).
WITH_INTERVAL = ("kl", "wrong_way_fraction")


def _cell(row: dict[str, Any], key: str) -> str:
    if key in WITH_INTERVAL and row.get(f"{key.removesuffix('_fraction')}_ci"):
        return est(row[f"{key.removesuffix('_fraction')}_ci"])
    v = row.get(key)
    if isinstance(v, dict):
        return est(v)
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return num(v)


def table_md(rows: dict[str, dict[str, Any]]) -> str:
    head = "| method | family | " + " | ".join(label for _, label in COLUMNS) + " |"
    sep = "|" + "---|" * (len(COLUMNS) + 2)
    body = [
        f"| {m} | {r['family']} | " + " | ".join(_cell(r, k) for k, _ in COLUMNS) + " |"
        for m, r in rows.items()
    ]
    return "\n".join([head, sep, *body])


def markdown(
    results: dict[str, Any], rows: dict[str, dict[str, Any]], verdict: dict[str, str], plots: dict[str, Path]
) -> str:
    task = results["task"]
    lines = [
        f"# steerlab compare: {task['name']} ({task['kind']})",
        "",
        f"Model `{results.get('model')}`; executor {results.get('executor')}; wall time {results.get('wall_seconds', 0):.0f} s.",
        f"Training pool: {task['train_pairs']} pairs / {task['lora_examples']} completions / {task['shots']} shots; "
        f"evaluation: {task['eval']} items; held-out: {task['heldout']} ({task['heldout_name']}).",
        "",
        "## Verdicts",
        "",
    ]
    lines += [f"- **{c}**: {verdict.get(c, 'not measured.')}" for c in CRITERIA]
    lines += ["", "## Measured criteria", "", table_md(rows), ""]
    scorer = task.get("concept_scorer")
    if scorer:
        lines += [
            "## Concept scorer",
            "",
            f"`{scorer.get('scorer')}` trained on {scorer.get('n_train')} texts ({scorer.get('trained_on', 'task data')}); "
            f"held-out agreement with labels: accuracy {num(scorer.get('accuracy'))} "
            f"[{num(scorer.get('accuracy_low'))}, {num(scorer.get('accuracy_high'))}], AUC {num(scorer.get('auc'))} "
            f"on {scorer.get('n_positive')}+{scorer.get('n_negative')} texts.",
            "",
        ]
    if results.get("missing_methods"):
        lines += ["## Methods not run", ""]
        lines += [f"- {m}: {why}" for m, why in results["missing_methods"].items()]
        lines.append("")
    for m, r in results["main"].items():
        cal = r.get("calibration")
        if cal:
            lines += [f"### Calibration of {m}", ""]
            choice = cal.get("choice") or {}
            used = r.get("settings") or {}
            lines.append(
                f"chosen: layers {choice.get('layer_label', used.get('layers'))} "
                f"strength {choice.get('strength', used.get('strength'))} "
                f"(within budget: {cal.get('within_budget')}; KL <= {cal.get('max_kl')}, ppl ratio <= {cal.get('max_ppl_ratio')})"
            )
            if cal.get("slopes"):
                s = cal["slopes"]
                lines.append(
                    f"per-example slopes over strengths {s['strengths']}: mean {s['mean_slope']:.3f}, wrong way {s['wrong_way_fraction']:.0%} of {s['n']}"
                )
            for note in cal.get("notes", []):
                lines.append(f"note: {note}")
            lines.append("")
    if task.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in task["notes"]] + [""]
    lines += ["## Sample generations (eval split)", ""]
    for m, r in results["main"].items():
        gens = r["eval"].get("generations") or []
        if gens:
            lines.append(f"- **{m}**: " + " / ".join(repr(g[:160]) for g in gens[:2]))
    lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()]
    lines += ["", "How to read each number: see docs/criteria/ in the steerlab repository.", ""]
    return "\n".join(lines)


def html_page(md_text: str, plots: dict[str, Path], title: str) -> str:
    body = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            path = next((p for p in plots.values() if p.name == name), None)
            if path and path.exists():
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            text = html.escape(line[2:]).replace("**", "")
            body.append(f"<li>{text}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#eee}img{max-width:48%;margin:4px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
