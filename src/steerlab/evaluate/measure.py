"""Model-dependent measurement: run the model under an adaptation and collect what the metrics need.

Each function takes the unadapted ``lm`` plus an :class:`Adaptation` and returns plain numbers/arrays;
the arithmetic on them is in ``metrics.py``. Fluency is always judged by the *unadapted* model, so an
adaptation cannot make its own degenerate text look likely.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from steerlab.data import ABItem, ab_letter
from steerlab.decode.scoring import forced_logits
from steerlab.errors import DataError
from steerlab.evaluate import metrics
from steerlab.evaluate.adaptations import Adaptation, baseline

if TYPE_CHECKING:
    from steerlab.lm import LM


def generate(
    lm: LM,
    adaptation: Adaptation,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions of each user prompt under the adaptation (batched, left-padded)."""
    texts = [adaptation.render(lm, p) for p in prompts]
    out: list[str] = []
    with adaptation.active(lm) as model:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            out.extend(model.generate(chunk, max_new_tokens=max_new_tokens, chat=False))
    return out


def completion_nll(
    lm: LM, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL (nats) and token count of each completion after its plain prompt, under ``lm``.

    Call it with the unadapted model: the perplexity of steered text under the original model is the
    fluency measure (degenerate repetition or word salad scores high).
    """
    if len(prompts) != len(completions):
        raise DataError(f"completion_nll: {len(prompts)} prompts but {len(completions)} completions")
    sums, counts = np.zeros(len(prompts)), np.zeros(len(prompts), dtype=np.int64)
    rows = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        head = lm.encode(baseline().render(lm, p))  # the plain prompt (an Opening stays bare text)
        tail = lm.tokenizer(c, add_special_tokens=False)["input_ids"] if c else []
        if tail:
            rows.append((i, head, tail))
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            preds = forced_logits(lm, [h for _, h, _ in chunk], [t for _, _, t in chunk])
            for (i, _, t), pred in zip(chunk, preds, strict=True):
                nll = metrics.token_nll(pred.float().cpu(), torch.tensor(t))
                sums[i], counts[i] = float(nll.sum()), len(t)
    return sums, counts


def sorted_logits(model: LM, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """``model.logits`` over batches of similar length (less padding), returned in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, row in zip(chunk, model.logits([texts[i] for i in chunk]), strict=True):
            out[i] = row
    return torch.stack(out)  # type: ignore[arg-type]


def next_token_logits(lm: LM, adaptation: Adaptation, prompts: Sequence[str]) -> torch.Tensor:
    """Logits of the first response token after each rendered prompt, under the adaptation."""
    texts = [adaptation.render(lm, p) for p in prompts]
    with adaptation.active(lm) as model:
        return sorted_logits(model, texts)


def kl_on_prompts(
    lm: LM, adaptation: Adaptation, prompts: Sequence[str], reference: torch.Tensor | None = None
) -> np.ndarray:
    """Per-prompt ``KL(unadapted || adapted)`` of the first response token's distribution.

    ``reference`` (the unadapted logits) can be passed in when many adaptations share it.
    """
    ref = reference if reference is not None else next_token_logits(lm, baseline(), prompts)
    return metrics.kl_divergence(ref, next_token_logits(lm, adaptation, prompts))


def letter_ids(lm: LM, prefix: str, letters: Sequence[str]) -> list[int]:
    """Token id of each answer letter as it follows ``prefix`` (which ends with the opening parenthesis)."""
    base = lm.encode(prefix)
    out = []
    for letter in letters:
        ids = lm.encode(prefix + letter)
        if ids[: len(base)] != base or len(ids) != len(base) + 1:
            raise DataError(
                f"answer letter {letter!r} does not tokenize as one token after '(' for this model"
            )
        out.append(ids[-1])
    return out


def ab_probabilities(
    lm: LM, adaptation: Adaptation, items: Sequence[ABItem], batch_size: int = 16
) -> np.ndarray:
    """CAA behaviour probability per item: p(matching letter) / (p(A) + p(B)) right after ``(``."""
    if not items:
        raise DataError("ab_probabilities: no A/B items")
    texts = [adaptation.render(lm, item.question) + "(" for item in items]
    match, other = [], []
    for text, item in zip(texts, items, strict=True):
        m, o = letter_ids(lm, text, [ab_letter(item.matching), ab_letter(item.not_matching)])
        match.append(m)
        other.append(o)
    with adaptation.active(lm) as model:
        logits = sorted_logits(model, texts, batch_size)
    return metrics.ab_match_probability(logits, match, other)


def throughput(
    lm: LM, adaptation: Adaptation, prompts: Sequence[str], *, max_new_tokens: int = 24, repeats: int = 1
) -> float:
    """Generated tokens per second (greedy, one batch) under the adaptation; best of ``repeats`` runs."""
    return paired_throughput(lm, adaptation, prompts, max_new_tokens=max_new_tokens, repeats=repeats)[0]


def paired_throughput(
    lm: LM,
    adaptation: Adaptation,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 24,
    repeats: int = 2,
    unadapted: bool = False,
) -> tuple[float, float | None]:
    """Tokens per second with the adaptation and (``unadapted=True``) without it, runs alternating.

    A ratio of two numbers measured minutes apart mostly measures the machine (warm-up, other load);
    measured back to back, best of ``repeats`` each, it measures the adaptation. The unadapted run
    generates from the plain prompts, so prompting's longer context counts against it.
    """
    from steerlab.evaluate.adaptations import baseline

    best = {"adapted": 0.0, "unadapted": 0.0}
    runs = [("adapted", adaptation)] + ([("unadapted", baseline())] if unadapted else [])
    for _ in range(repeats):
        for name, which in runs:
            texts = [which.render(lm, p) for p in prompts]
            with which.active(lm) as model:
                start = time.perf_counter()
                gens = model.generate(texts, max_new_tokens=max_new_tokens, chat=False, details=True)
                elapsed = time.perf_counter() - start
            tokens = sum(len(g.token_ids) + (1 if g.finish_reason == "stop" else 0) for g in gens)
            best[name] = max(best[name], tokens / elapsed if elapsed > 0 else 0.0)
    return best["adapted"], (best["unadapted"] if unadapted else None)
