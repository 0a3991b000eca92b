"""Continuation-style prompts (:class:`Opening`): how every adaptation renders text a base model continues,
and the sentiment task's choice of them for a model without a chat template."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from steerlab.errors import DataError
from steerlab.evaluate import adaptations
from steerlab.evaluate.adaptations import Opening, render_chat, render_continuation
from steerlab.evaluate.tasks import Budget, sentiment_task
from steerlab.evaluate.tasks.openings import CALIB_OPENINGS, GENERAL_OPENINGS, REVIEW_OPENINGS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment_labelled_sentences"
BASE = SimpleNamespace(tokenizer=None, has_chat_template=False)  # a base model, as the task sees it


def test_an_opening_is_continued_with_instruction_and_examples_before_it():
    opening = Opening("The hotel was")
    assert render_chat(BASE, opening) == "The hotel was"
    shots = [("ignored question", "Lovely stay."), ("q", "Great staff.")]
    text = render_chat(BASE, opening, system="Be warm.", shots=shots)
    assert text == "Be warm.\n\nLovely stay.\n\nGreat staff.\n\nThe hotel was"
    assert render_continuation("x") == "x"
    # a plain string stays a user turn in the dialogue layout
    assert render_chat(BASE, "The hotel was") == "User: The hotel was\nAssistant: "
    assert (
        render_chat(BASE, "Hi", system="S", shots=[("Q", "A")])
        == "System: S\nUser: Q\nAssistant: A\nUser: Hi\nAssistant: "
    )
    assert adaptations.prompting("p", "Be warm.").render(BASE, opening).startswith("Be warm.\n\n")


def test_openings_are_distinct_and_enough_for_the_budgets():
    everything = REVIEW_OPENINGS + CALIB_OPENINGS + GENERAL_OPENINGS
    assert len(set(everything)) == len(everything)
    assert len(REVIEW_OPENINGS) >= 32 and len(GENERAL_OPENINGS) >= 16 and len(CALIB_OPENINGS) >= 6


@pytest.mark.skipif(not DATA.exists(), reason="shared sentiment data not present")
def test_sentiment_task_is_continuation_style_for_a_base_model():
    task = sentiment_task(BASE, DATA, Budget.preset("small"), scorer="vader")
    assert all(isinstance(p, Opening) for p in task.eval_prompts + task.calib_prompts + task.heldout_prompts)
    assert task.eval_prompts == REVIEW_OPENINGS[: Budget.preset("small").eval]
    assert all(p.prompt is None for p in task.pairs) and all(p.prompt for p in task.preference_pairs)
    assert all(isinstance(prompt, Opening) for prompt, _ in task.lora_examples)
    too_many = replace(Budget.preset("small"), eval=len(REVIEW_OPENINGS) + 1)
    with pytest.raises(DataError, match="openings"):
        sentiment_task(BASE, DATA, too_many, scorer="vader")
