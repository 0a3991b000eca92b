"""The refusal direction (Arditi et al. 2024): harmful minus harmless, read after the instruction.

Extraction. Each instruction is wrapped in the model's chat template as a user turn; activations are
read at the *post-instruction* tokens (the template tokens between the end of the instruction and the
start of the answer: ``<|im_end|>\\n<|im_start|>assistant\\n`` for ChatML, 6 tokens on SmolLM2), at
every layer. Every (layer, position) gives a candidate ``r = mean(harmful) - mean(harmless)``.

Selection, on a validation split. Cheap screen for every candidate, one forward pass per condition:
the log-probability of a canonical refusal opening (``REFUSAL_PROBE``) on harmful instructions with
``r`` ablated (should fall), on harmful and harmless ones with ``r`` added at its own layer (should
rise), and the KL divergence of the next-token distribution on harmless instructions with ``r``
ablated (should stay small; candidates over ``kl_max`` are dropped unless none pass). The best few by
the summed log-prob changes then generate, and the phrase detector below gives refusal rates; the
winner maximises the induced refusal rates (harmful + harmless, direction added) minus the rate left
on harmful under ablation, ties to the lower KL. On a model that refuses, the ablation term decides;
on one that hardly ever refuses (SmolLM2-135M), only the induced refusals can. Candidates past ``max_layer_fraction``
of the depth are skipped, as in the paper (late layers only restate the decision).

Application. Directional ablation at every layer (``ablation_steerings``: the direction is projected
out of the attention output and the block output of every block, i.e. of everything written into the
residual stream, so no later block can read it back); or activation addition at the source layer
(``addition_steering``), which on a model that rarely refuses is the demonstrable effect.

The refusal detector (``is_refusal``, phrase matching on text) lives in :mod:`.refusal_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerlab.decode.scoring import forced_logits, token_log_probs
from steerlab.errors import DataError
from steerlab.methods.diagnostics import separation
from steerlab.methods.refusal_text import BENIGN_PHRASES, REFUSAL_PHRASES, is_refusal, refusal_rate

__all__ = [
    "BENIGN_PHRASES",
    "REFUSAL_PHRASES",
    "REFUSAL_PROBE",
    "ablation_steerings",
    "addition_steering",
    "extract_refusal",
    "is_refusal",
    "refusal_rate",
]

if TYPE_CHECKING:
    from steerlab.engine.spec import Steering
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

#: A canonical refusal opening whose log-probability screens candidates without generating.
REFUSAL_PROBE = "I'm sorry, but I can't"


def post_instruction_tokens(lm: LM) -> int:
    """How many tokens the chat template puts after the user's instruction (at least 1)."""
    marker = "XQZV"
    rendered = lm.chat(marker)
    if marker not in rendered:
        raise DataError(
            "the chat template dropped the instruction text; cannot locate post-instruction tokens"
        )
    suffix = rendered.split(marker, 1)[1]
    ids = lm.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    return max(len(ids), 1)


# ------------------------------------------------------------------------------------------ candidates


def candidate_directions(
    harmful: dict[int, torch.Tensor], harmless: dict[int, torch.Tensor], positions: Sequence[int]
) -> dict[tuple[int, int], tuple[torch.Tensor, dict[str, float]]]:
    """``mean(harmful) - mean(harmless)`` for every (layer, position); inputs are ``(n, k, W)`` per layer."""
    out = {}
    for layer, acts in harmful.items():
        other = harmless[layer]
        if acts.dim() != 3 or acts.shape[1] != len(positions):
            raise DataError(
                f"expected (n, {len(positions)}, W) activations at layer {layer}, got {tuple(acts.shape)}"
            )
        for j, position in enumerate(positions):
            h, b = acts[:, j].double(), other[:, j].double()
            direction = (h.mean(0) - b.mean(0)).float()
            out[(layer, position)] = (direction, separation(acts[:, j], other[:, j], direction))
    return out


def _vector(lm: LM, direction: torch.Tensor, layer: int, norm: float | None, **extra: Any) -> SteeringVector:
    from steerlab.vector import SteeringVector

    return SteeringVector(
        directions={layer: direction},
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site="resid",
        method="refusal",
        norms={layer: norm} if norm else {},
        defaults={"op": "ablate", "strength": 1.0, "layers": list(range(lm.num_layers))},
        **extra,
    )


def ablation_steerings(vector: SteeringVector, lm: LM, strength: float = 1.0) -> list[Steering]:
    """Project the direction out of every attention output and block output (all residual writes)."""
    from steerlab.engine.spec import Steering

    every = tuple(range(lm.num_layers))
    return [
        Steering(vector, strength=strength, op="ablate", layers=every, site="attn"),
        Steering(vector, strength=strength, op="ablate", layers=every, site="resid"),
    ]


def addition_steering(vector: SteeringVector, strength: float | None = None) -> Steering:
    """Add the raw direction (``strength`` times the harmful-harmless gap) at its source layer, all tokens.

    ``strength`` defaults to the one the vector was selected with (``provenance["add_strength"]``, else 1,
    the paper's coefficient).
    """
    from steerlab.engine.spec import Steering

    if strength is None:
        strength = float(vector.provenance.get("add_strength", 1.0))
    return Steering(vector, strength=strength, op="add", layers=tuple(vector.layers), unit="raw")


# ---------------------------------------------------------------------------------------- evaluation


def probe_scores(
    lm: LM, prompts: Sequence[str], steering: Any = None, *, batch_size: int = 16, probe: str = REFUSAL_PROBE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt: log p(``probe`` | prompt) and the next-token log-distribution after the prompt.

    One right-padded forward per batch; the probe text is teacher-forced after each (chat-wrapped) prompt.
    """
    probe_ids = lm.tokenizer(probe, add_special_tokens=False)["input_ids"]
    scores, dists = [], []
    context = lm.steer(steering) if steering is not None else None
    try:
        if context is not None:
            context.__enter__()
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                heads = [lm.encode(p) for p in prompts[start : start + batch_size]]
                for pred in forced_logits(lm, heads, [probe_ids] * len(heads)):
                    scores.append(token_log_probs(pred, probe_ids).sum().cpu())
                    dists.append(torch.log_softmax(pred[0].float(), -1).cpu())
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return torch.stack(scores), torch.stack(dists)


def kl_divergence(base: torch.Tensor, other: torch.Tensor) -> float:
    """Mean KL(base || other) between rows of log-distributions."""
    return float((base.exp() * (base - other)).sum(-1).mean())


def generated_refusal_rate(
    lm: LM,
    instructions: Sequence[str],
    steering: Any = None,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> tuple[float, list[str]]:
    """Greedy completions (chat template) and the fraction the detector calls refusals."""
    completions: list[str] = []
    for start in range(0, len(instructions), batch_size):
        chunk = list(instructions[start : start + batch_size])
        completions.extend(lm.generate(chunk, max_new_tokens=max_new_tokens, steering=steering))
    return refusal_rate(completions), completions


# ------------------------------------------------------------------------------------------ extraction


def _texts(lm: LM, instructions: Sequence[str], what: str) -> list[str]:
    items = [x for x in instructions if isinstance(x, str) and x.strip()]
    if len(items) != len(instructions):
        raise DataError(f"{what}: every instruction must be a non-empty string")
    if len(items) < 2:
        raise DataError(f"{what}: need at least 2 instructions, got {len(items)}")
    return [lm.chat(x) for x in items]


def extract_refusal(
    lm: LM,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    val_harmful: Sequence[str] | None = None,
    val_harmless: Sequence[str] | None = None,
    layers: Any = None,
    positions: Sequence[int] | None = None,
    max_layer_fraction: float = 0.8,
    n_val: int = 16,
    generate_top: int = 3,
    add_strength: float = 1.0,
    max_new_tokens: int = 32,
    kl_max: float = 0.1,
    select: bool = True,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    cache: Any = None,
    seed: int = 0,
    notes: str = "",
) -> SteeringVector:
    """Refusal direction from harmful vs harmless instructions (plain strings, not chat-wrapped).

    Without ``val_*`` sets, ``n_val`` instructions of each kind are split off for selection. With
    ``select=False`` no steered forward runs: the candidate with the largest d' among the allowed
    layers/positions is returned (useful for quick looks; the paper's selection is causal).
    ``add_strength`` is the raw coefficient of activation addition used in selection and recorded for
    :func:`addition_steering` (the paper uses 1; SmolLM2-135M needs about 4 before refusals appear).
    """
    from steerlab.act_cache import cached_read
    from steerlab.data import split
    from steerlab.data.contrast import texts_hash
    from steerlab.engine.spec import parse_layers

    harmful, harmless = list(harmful), list(harmless)
    if val_harmful is None or val_harmless is None:
        if select:
            fraction_h = min(n_val / max(len(harmful), 1), 0.5)
            fraction_b = min(n_val / max(len(harmless), 1), 0.5)
            harmful, val_harmful = split(harmful, fraction_h, seed) if len(harmful) >= 4 else (harmful, [])
            harmless, val_harmless = (
                split(harmless, fraction_b, seed) if len(harmless) >= 4 else (harmless, [])
            )
        else:
            val_harmful, val_harmless = [], []
    train_h, train_b = _texts(lm, harmful, "harmful"), _texts(lm, harmless, "harmless")
    if select and (len(val_harmful) < 1 or len(val_harmless) < 1):
        raise DataError("selection needs validation instructions of both kinds (pass val_* or more data)")
    n_post = post_instruction_tokens(lm)
    positions = tuple(range(-n_post, 0)) if positions is None else tuple(int(p) for p in positions)
    if not positions or any(p >= 0 for p in positions):
        raise DataError(
            f"positions are counted from the end of the prompt and must be negative, got {positions}"
        )
    deepest = max(int(lm.num_layers * max_layer_fraction), 1)
    allowed = list(range(deepest)) if layers is None else [x for x in parse_layers(layers)]
    for layer in allowed:
        lm.anatomy.check_layer(layer)
    options = dict(site="resid", position=positions, batch_size=batch_size, dtype=dtype, cache=cache)
    acts_h = cached_read(lm, train_h, allowed, **options)
    acts_b = cached_read(lm, train_b, allowed, **options)
    candidates = candidate_directions(acts_h.acts, acts_b.acts, positions)
    if all(float(d.norm()) == 0 for d, _ in candidates.values()):
        raise DataError("harmful and harmless activations are identical at every layer and position")
    per_layer = _per_layer_diagnostics(candidates)
    norms = {k: (acts_h.norms[k] + acts_b.norms[k]) / 2 for k in allowed if k in acts_h.norms}
    if select:
        chosen, table = _select(
            lm,
            candidates,
            norms,
            list(val_harmful),
            list(val_harmless),
            add_strength=add_strength,
            generate_top=generate_top,
            max_new_tokens=max_new_tokens,
            kl_max=kl_max,
            batch_size=min(batch_size, 16),
        )
    else:
        chosen = max(candidates, key=lambda key: candidates[key][1]["d_prime"])
        table = []
    layer, position = chosen
    for row in table:
        per_layer.setdefault(row["layer"], {}).update(
            {f"p{row['position']}_{k}": v for k, v in row.items() if k not in ("layer", "position")}
        )
    direction, stats = candidates[chosen]
    return _vector(
        lm,
        direction,
        layer,
        norms.get(layer),
        data_hash=texts_hash(train_h, train_b),
        notes=notes
        or "refusal direction: ablate at every layer (defaults) or add at its layer to induce refusal",
        provenance={
            "harmful": len(train_h),
            "harmless": len(train_b),
            "layer": layer,
            "position": position,
            "post_instruction_tokens": n_post,
            "selected_by": "validation" if select else "d_prime",
            "add_strength": add_strength,
            "val_harmful": len(val_harmful or []),
            "val_harmless": len(val_harmless or []),
            "chosen": stats,
        },
        diagnostics={"selection": table, **{str(k): v for k, v in per_layer.items()}},
    )


def _per_layer_diagnostics(candidates: dict) -> dict[int, dict[str, Any]]:
    """Best position per layer by d', with its separation numbers."""
    out: dict[int, dict[str, Any]] = {}
    for (layer, position), (_, stats) in candidates.items():
        best = out.get(layer)
        if best is None or stats["d_prime"] > best["d_prime"]:
            out[layer] = {**stats, "position": position}
    return dict(sorted(out.items()))


def _select(
    lm: LM,
    candidates: dict,
    norms: dict[int, float],
    val_harmful: list[str],
    val_harmless: list[str],
    *,
    add_strength: float,
    generate_top: int,
    max_new_tokens: int,
    kl_max: float,
    batch_size: int,
) -> tuple[tuple[int, int], list[dict[str, Any]]]:
    """Screen every candidate by teacher-forced refusal log-probs, then generate for the best few."""
    prompts_h = [lm.chat(x) for x in val_harmful]
    prompts_b = [lm.chat(x) for x in val_harmless]
    base_h, _ = probe_scores(lm, prompts_h, batch_size=batch_size)
    base_b, dist_b = probe_scores(lm, prompts_b, batch_size=batch_size)
    table = []
    for (layer, position), (direction, _) in candidates.items():
        vector = _vector(lm, direction, layer, norms.get(layer))
        ablate, add = ablation_steerings(vector, lm), addition_steering(vector, add_strength)
        ablated_h, _ = probe_scores(lm, prompts_h, ablate, batch_size=batch_size)
        added_h, _ = probe_scores(lm, prompts_h, add, batch_size=batch_size)
        added_b, _ = probe_scores(lm, prompts_b, add, batch_size=batch_size)
        _, ablated_dist_b = probe_scores(lm, prompts_b, ablate, batch_size=batch_size)
        row = {
            "layer": layer,
            "position": position,
            "bypass_logp_drop": float(base_h.mean() - ablated_h.mean()),
            "induce_logp_gain_harmful": float(added_h.mean() - base_h.mean()),
            "induce_logp_gain_harmless": float(added_b.mean() - base_b.mean()),
            "kl_harmless": kl_divergence(dist_b, ablated_dist_b),
        }
        row["screen"] = (
            row["bypass_logp_drop"] + row["induce_logp_gain_harmful"] + row["induce_logp_gain_harmless"]
        )
        table.append(row)
    passing = [row for row in table if row["kl_harmless"] <= kl_max] or table
    passing.sort(key=lambda r: -r["screen"])
    if generate_top <= 0:
        return (passing[0]["layer"], passing[0]["position"]), table

    def rate(instructions: list[str], steering: Any = None) -> float:
        value, _ = generated_refusal_rate(
            lm, instructions, steering, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        return value

    base_rate_h, base_rate_b = rate(val_harmful), rate(val_harmless)
    for row in passing[:generate_top]:
        vector = _vector(lm, candidates[(row["layer"], row["position"])][0], row["layer"], None)
        add = addition_steering(vector, add_strength)
        row.update(
            refusal_harmful_base=base_rate_h,
            refusal_harmless_base=base_rate_b,
            refusal_harmful_ablated=rate(val_harmful, ablation_steerings(vector, lm)),
            refusal_harmful_added=rate(val_harmful, add),
            refusal_harmless_added=rate(val_harmless, add),
        )
    best = max(
        passing[:generate_top],
        key=lambda r: (
            r["refusal_harmful_added"] + r["refusal_harmless_added"] - r["refusal_harmful_ablated"],
            -r["kl_harmless"],
        ),
    )
    return (best["layer"], best["position"]), table
