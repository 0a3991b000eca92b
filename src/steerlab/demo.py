"""``steerlab demo``: the whole loop in under two minutes on the embedded model.

It extracts a happy-vs-sad direction from contrast data shipped with the package (persona sentences ×
neutral tasks), then answers the same neutral prompts unsteered and steered at a few strengths in both
directions, so one sees what a strength means before reading any documentation.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from steerlab.progress import spinner

DEMO_PROMPTS = (
    "Tell me about your day.",
    "What do you think about the ocean?",
    "Describe the street outside your window.",
)
# Strength in the norm unit: a fraction of the typical residual-stream norm, added at every steered layer.
DEMO_STRENGTHS = (-0.08, -0.04, 0.0, 0.04, 0.08)


def run_demo(
    *, max_new_tokens: int = 40, layers: str = "10-16", console: Console | None = None, quiet: bool = False
) -> None:
    import steerlab
    from steerlab.data import demo_pairs

    console = console or Console()
    started = time.perf_counter()
    with spinner("loading the embedded SmolLM2-135M-Instruct", quiet=quiet, console=console):
        lm = steerlab.load()
    console.print(f"[bold]model[/] {lm}  (loaded in {time.perf_counter() - started:.1f} s)")
    pairs = demo_pairs()
    console.print(
        f"[bold]data[/]  {len(pairs)} contrast pairs, e.g.\n"
        f"   + {pairs[0].positive}\n   - {pairs[0].negative}"
    )
    tick = time.perf_counter()
    vector = steerlab.extract(lm, pairs, method="mean_diff", progress=not quiet)
    console.print(
        f"[bold]vector[/] mean difference of last-token activations, all {lm.num_layers} layers, "
        f"in {time.perf_counter() - tick:.1f} s; steering layers {layers}"
    )
    console.print(
        "[dim]strength = fraction of the typical residual-stream norm added at each steered layer; "
        "+ pushes towards 'happy', - towards 'sad', 0 is the unsteered model.[/]"
    )
    rows = len(DEMO_PROMPTS) * len(DEMO_STRENGTHS)
    with spinner(
        f"generating {rows} answers ({max_new_tokens} tokens each) in one batch", quiet=quiet, console=console
    ):
        texts = lm.generate(
            [p for p in DEMO_PROMPTS for _ in DEMO_STRENGTHS],
            max_new_tokens=max_new_tokens,
            row_steering=[
                None if s == 0 else steerlab.Steering(vector, strength=s, layers=layers)
                for _ in DEMO_PROMPTS
                for s in DEMO_STRENGTHS
            ],
        )
    for i, prompt in enumerate(DEMO_PROMPTS):
        table = Table(title=f"“{prompt}”", show_lines=True, title_justify="left")
        table.add_column("strength", justify="right", no_wrap=True)
        table.add_column("answer")
        for j, strength in enumerate(DEMO_STRENGTHS):
            label = "unsteered" if strength == 0 else f"{strength:+.2f}"
            table.add_row(label, texts[i * len(DEMO_STRENGTHS) + j].strip().replace("\n", " "))
        console.print(table)
    vector.save(path := _demo_path())
    console.print(
        f"saved the vector to {path}; try: steerlab generate 'Tell me a story.' -v {path} -s 0.06 "
        f"--layers {layers} --compare"
    )
    console.print(f"[bold]done[/] in {time.perf_counter() - started:.1f} s")


def _demo_path():
    from steerlab.models.loading import cache_root

    root = cache_root() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    return root / "happy_sad.safetensors"
