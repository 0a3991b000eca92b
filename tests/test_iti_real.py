"""ITI on the real embedded model (slow): with nothing but its recorded defaults (the paper's alpha = 15
activation standard deviations per kept head, raw unit), an ITI vector from sentiment pairs moves
open-ended answers to neutral prompts towards positive, and the opposite sign does not; judged by VADER,
an independent lexicon scorer. Measured (SmolLM2-135M, 32 pairs, 8 prompts, 24 tokens): VADER +0.25
unsteered, +0.45 with the defaults, +0.21 at -alpha; at alpha 15 the text starts repeating itself
(the paper's scale is strong for a 135M model: calibration picks a smaller alpha within the KL budget).
"""

from __future__ import annotations

import statistics

import pytest

import steerlab
from steerlab.data import labelled_to_pairs, load_labelled, neutral_prompts, split
from steerlab.methods.iti import ITI_ALPHA

pytestmark = pytest.mark.slow


def test_iti_with_its_recorded_defaults_moves_sentiment_the_intended_way(lm, shared_data):
    vader = pytest.importorskip("vaderSentiment.vaderSentiment").SentimentIntensityAnalyzer()
    examples = load_labelled(shared_data / "sentiment_labelled_sentences" / "sentences.jsonl")
    train, _ = split(examples, dev_fraction=0.2, seed=0)
    vec = steerlab.extract(lm, labelled_to_pairs(train, 1, 0)[:32], method="iti")
    assert vec.defaults["strength"] == ITI_ALPHA and vec.defaults["unit"] == "raw"
    prompts = neutral_prompts()[:8]

    def sentiment(**steer) -> float:
        answers = lm.generate(prompts, max_new_tokens=24, **steer)
        return statistics.mean(vader.polarity_scores(a)["compound"] for a in answers)

    base = sentiment()
    plus = sentiment(steering=vec)  # recorded defaults only
    minus = sentiment(steering=vec, strength=-ITI_ALPHA)
    print(f"\nVADER: unsteered {base:+.3f}, ITI defaults {plus:+.3f}, -alpha {minus:+.3f}")
    assert plus > base + 0.1
    assert plus > minus + 0.15
