"""Arena runtimes: how long ``steerlab compare`` takes per task, and where the time goes.

Not a test: the numbers go to RESULTS.md ("Arena runtimes"). Two modes:

* ``--record DIR [DIR ...]``: summarise finished ``steerlab compare`` report folders (wall time of the
  run, per-method build and measurement seconds, headline effects) without rerunning anything;
* ``--task KIND --data PATH --out DIR``: run a comparison now (in-process, one torch thread) and then
  summarise it. Add ``--append`` to append the table to bench/RESULTS.md.

The machine is shared: wall seconds depend on other people's load, so the summary also prints the
load average at the time of writing. A rerun of an interrupted comparison reuses finished jobs, so its
wall time only covers what was left: record only uninterrupted runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def summarise(folder: Path) -> str:
    """Markdown lines for one finished report folder."""
    data: dict[str, Any] = json.loads((folder / "results.json").read_text())
    task = data["task"]
    derived = data.get("derived", {})
    lines = [
        f"#### {task['name']} ({task['kind']}): main-stage jobs {sum(r.get('wall_seconds', 0) for r in data['main'].values()) / 60:.1f} min wall "
        f"(this report: {data['wall_seconds'] / 60:.1f} min), executor {data['executor']}",
        "",
        f"train pool {task['train_pairs']}, eval {task['eval']}, held-out {task['heldout']}; "
        f"{len(data['efficiency'])} data-efficiency jobs, {len([k for k in data['compose'] if k != '_single'])} "
        "composability jobs",
        "",
        "| method | build s | measure s (eval / heldout / kl / fluency / capability / tput / revers.) | job wall s | effect [95% CI] | KL | reversible |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in data["main"].items():
        t = r.get("timings", {})
        parts = " / ".join(
            f"{t.get(k, 0):.0f}"
            for k in ("eval", "heldout", "kl", "fluency", "capability", "throughput", "reversibility")
        )
        e = r["eval"]["estimate"]
        lines.append(
            f"| {name} | {r['cost']['seconds']:.0f} | {parts} | {r.get('wall_seconds', 0):.0f} | "
            f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}] | {r['kl']['mean']:.3f} | "
            f"{'yes' if derived.get(name, {}).get('reversible', r['reversibility']['passed']) else 'NO'} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", nargs="*", type=Path, default=[])
    ap.add_argument("--task")
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--budget", default="default")
    ap.add_argument("--append", action="store_true", help="append the summary to bench/RESULTS.md")
    ap.add_argument("--note", default="", help="free text added under the heading (machine load, etc.)")
    args = ap.parse_args()
    folders = list(args.record)
    if args.task:
        import torch

        import steerlab
        from steerlab.evaluate import arena, tasks

        torch.set_num_threads(1)
        lm = steerlab.load()
        budget = tasks.Budget.preset(args.budget)
        task = tasks.build_task(lm, args.task, args.data, budget)
        start = time.perf_counter()
        arena.compare(
            lm, task, args.out, arena.ArenaConfig(budget=budget), progress=lambda m: print(m, file=sys.stderr)
        )
        print(f"compare took {time.perf_counter() - start:.0f}s", file=sys.stderr)
        folders.append(args.out)
    load = os.getloadavg()
    text = "\n".join(
        [
            f"### Arena runtimes ({time.strftime('%Y-%m-%d %H:%M')}, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on 2 cores)",
            "",
            args.note,
            "",
            *[summarise(f) for f in folders],
        ]
    )
    print(text)
    if args.append:
        path = Path(__file__).resolve().parent / "RESULTS.md"
        with path.open("a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
