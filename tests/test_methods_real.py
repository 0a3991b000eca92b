"""Extraction on the real embedded model (slow): does a vector do what it claims, as judged from outside?

* sentiment: a vector from UCI sentiment sentences (our own train/dev split) separates held-out dev
  sentences, and shifts open-ended answers to neutral prompts towards positive at +strength and
  negative at -strength, scored by VADER (an independent lexicon scorer shipped on PyPI); fluency is
  reported as perplexity of the answers under the unsteered model;
* CAA A/B items are read at the answer-letter token;
* the ``extract`` command end to end (table, vector file, plot).
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

import steerlab
from steerlab.data import ab_to_pairs, labelled_to_pairs, load_ab, load_labelled, neutral_prompts, split
from steerlab.extract import contrast_texts
from steerlab.methods.learned import completion_logprobs

pytestmark = pytest.mark.slow

LAYERS = "6-12"  # steered layers
STRENGTH = 0.1  # norm unit, per layer, over 7 layers: strong enough to move VADER, short of gibberish
DEV_LAYER = 14  # where the sentiment of the user's sentence is readable at the last template token


def _perplexity(lm, prompts: list[str], answers: list[str]) -> float:
    """Perplexity of the answers under the unsteered model (mean per-token NLL over all answers)."""
    heads = [lm.encode(lm.chat(p)) for p in prompts]
    tails = [
        lm.tokenizer(a, add_special_tokens=False)["input_ids"] or [lm.tokenizer.eos_token_id] for a in answers
    ]
    with torch.no_grad():
        total = completion_logprobs(lm, heads, tails)
    return math.exp(-float(total.sum()) / sum(len(t) for t in tails))


def _auc(scores_pos: torch.Tensor, scores_neg: torch.Tensor) -> float:
    """Probability that a positive item outscores a negative one (ROC AUC, threshold-free)."""
    wins = (scores_pos[:, None] > scores_neg[None, :]).float().mean()
    ties = (scores_pos[:, None] == scores_neg[None, :]).float().mean()
    return float(wins + ties / 2)


def test_sentiment_vector_separates_dev_and_shifts_generations(lm, shared_data):
    vader = pytest.importorskip("vaderSentiment.vaderSentiment").SentimentIntensityAnalyzer()
    examples = load_labelled(shared_data / "sentiment_labelled_sentences" / "sentences.jsonl")
    train, dev = split(examples, dev_fraction=0.2, seed=0)
    pairs = labelled_to_pairs(train, 1, 0)[:64]
    vec = steerlab.extract(lm, pairs, method="mean_diff", layers=f"6-{DEV_LAYER}", batch_size=128)

    # held-out: dev sentences (never seen in extraction) are ordered by their projection on the direction
    dev_pos, dev_neg = contrast_texts(lm, labelled_to_pairs(dev, 1, 0, seed=1)[:40], chat=True)
    acts = steerlab.read(lm, dev_pos + dev_neg, [DEV_LAYER], batch_size=80).acts[DEV_LAYER]
    scores = acts @ vec.unit(DEV_LAYER)
    dev_auc = _auc(scores[:40], scores[40:])

    prompts = neutral_prompts()[:10]
    results = {}
    for sign in (0, 1, -1):
        steer = {} if sign == 0 else dict(steering=vec, strength=sign * STRENGTH, layers=LAYERS)
        answers = lm.generate(prompts, max_new_tokens=32, **steer)
        results[sign] = (
            statistics.mean(vader.polarity_scores(a)["compound"] for a in answers),
            _perplexity(lm, prompts, answers),
            answers[0],
        )
    print(
        f"\ndev AUC of the layer-{DEV_LAYER} direction: {dev_auc:.2f}\n"
        + "\n".join(
            f"strength {s * STRENGTH:+.2f} at layers {LAYERS}: VADER {v:+.3f}, perplexity {p:.1f}, e.g. {a[:70]!r}"
            for s, (v, p, a) in results.items()
        )
    )
    assert dev_auc >= 0.8
    base, plus, minus = results[0][0], results[1][0], results[-1][0]
    assert plus > base + 0.05 and minus < base - 0.05 and plus - minus > 0.25
    for sign in (1, -1):  # fluency: steered answers stay within a bounded factor of unsteered perplexity
        assert results[sign][1] < 8 * results[0][1]


def test_caa_ab_items_are_read_at_the_answer_letter(lm, shared_data):
    items = load_ab(shared_data / "caa" / "sycophancy" / "generate.jsonl")[:8]
    pairs = ab_to_pairs(items)
    positive, negative = contrast_texts(lm, pairs, chat=True)
    for item, pos, neg in zip(items, positive, negative, strict=True):
        last_pos, last_neg = lm.encode(pos)[-1], lm.encode(neg)[-1]
        assert lm.tokenizer.decode([last_pos]).strip() == item.matching.strip(" ()")
        assert lm.tokenizer.decode([last_neg]).strip() == item.not_matching.strip(" ()")
        assert pos[:-1] == neg[:-1]  # the two sides differ only in the letter
    vec = steerlab.extract(lm, pairs, method="mean_diff", layers=[12])
    assert vec.provenance["pairs"] == 8 and float(vec[12].norm()) > 0


def test_extract_command_end_to_end(lm, tmp_path):
    from typer.testing import CliRunner

    from steerlab.cli import app

    data = tmp_path / "pairs.jsonl"
    tasks = [
        "Describe your morning.",
        "Explain how to boil an egg.",
        "Talk about the weather.",
        "Describe a park.",
    ]
    data.write_text(
        "\n".join(
            json.dumps(
                {
                    "positive": f"Act as if you are extremely happy. {t}",
                    "negative": f"Act as if you are extremely sad. {t}",
                }
            )
            for t in tasks
        )
    )
    out, png = tmp_path / "v.safetensors", tmp_path / "diag.png"
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(data),
            "--method",
            "pca_diff",
            "--layers",
            "3-5",
            "--out",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line[:5].strip().rstrip("*").isdigit()]
    assert [int(r[0].rstrip("*")) for r in rows] == [3, 4, 5]
    vec = steerlab.SteeringVector.load(out, lm)
    assert vec.method == "pca_diff" and vec.layers == [3, 4, 5]
    assert png.read_bytes()[:4] == b"\x89PNG"
