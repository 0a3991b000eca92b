"""Build time of the arena's ``learned`` method: training the vector, then calibrating it.

Not a test: the numbers go to RESULTS.md. Builds the sentiment task at a budget (default ``small``) on
the embedded model with one torch thread, times ``train_vector`` and the arena calibration separately
(wall and CPU seconds: on a shared machine CPU seconds are the comparable number),
and prints the calibration's chosen cell and the trained vector's held-out diagnostics, so a faster
build can be checked for the same quality. Run it with ``PYTHONPATH`` pointing at another source tree
to time an older version side by side on the same data and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/sentiment_labelled_sentences")
    ap.add_argument("--budget", default="small")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    import torch

    import steerlab
    from steerlab.data import neutral_prompts
    from steerlab.evaluate import arena, tasks
    from steerlab.evaluate.arena.build import _steering_vector, calibrate_vector

    torch.set_num_threads(1)
    lm = steerlab.load()
    budget = tasks.Budget.preset(args.budget)
    task = tasks.build_task(lm, "sentiment", args.data, budget)
    config = arena.ArenaConfig(budget=budget)
    config.neutral = neutral_prompts()[: budget.neutral]
    start, cpu0 = time.perf_counter(), time.process_time()
    vector = _steering_vector(lm, task, "learned", config)
    trained, cpu1 = time.perf_counter(), time.process_time()
    setting, record = calibrate_vector(lm, task, vector, config, None)
    done, cpu2 = time.perf_counter(), time.process_time()
    layer = str(vector.layers[0])
    chosen = next((r for r in record["rows"] if r.get("strength") == setting["strength"]), {})
    base = next((r for r in record["rows"] if r.get("key") == "baseline"), {})
    print(
        json.dumps(
            {
                "label": args.label,
                "source": steerlab.__file__,
                "train_seconds": round(trained - start, 1),
                "calibrate_seconds": round(done - trained, 1),
                "build_seconds": round(done - start, 1),
                # CPU seconds of this process (one thread): comparable across runs on a loaded machine
                "train_cpu_seconds": round(cpu1 - cpu0, 1),
                "calibrate_cpu_seconds": round(cpu2 - cpu1, 1),
                "build_cpu_seconds": round(cpu2 - cpu0, 1),
                "heldout_curve": list(
                    zip(vector.diagnostics["heldout_steps"], vector.diagnostics["heldout_loss"], strict=True)
                ),
                "steps_run": vector.provenance.get("steps_run"),
                "best_step": vector.diagnostics.get("best_step"),
                "heldout": vector.diagnostics[layer],
                "setting": setting,
                "calib_effect_baseline": base.get("effect"),
                "calib_effect_chosen": chosen.get("effect"),
                "calib_kl_chosen": chosen.get("kl"),
                "loadavg": os.getloadavg(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
