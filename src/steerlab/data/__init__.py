"""Contrast data for steering: formats, loaders with clear refusals, chat formatting and a linter.

Model-free on purpose: everything here can be checked without loading a model, so bad data is caught before
an expensive forward pass, and the same strings are produced for extraction, evaluation and serving.
"""

from steerlab.data.chat import format_user, has_chat_template, pair_texts, plain_format
from steerlab.data.formats import (
    MIN_PER_SIDE,
    ABItem,
    ContrastPair,
    LabelledExample,
    ab_letter,
    ab_to_pairs,
    labelled_to_pairs,
    load_ab,
    load_any,
    load_instructions,
    load_labelled,
    load_pairs,
    persona_pairs,
)
from steerlab.data.lint import Finding, LintReport, lint, lint_path, render
from steerlab.data.packaged import EXAMPLES, demo_pairs, example_path, neutral_prompts
from steerlab.data.sets import data_hash, split

__all__ = [
    "EXAMPLES",
    "MIN_PER_SIDE",
    "ABItem",
    "ContrastPair",
    "Finding",
    "LabelledExample",
    "LintReport",
    "ab_letter",
    "ab_to_pairs",
    "data_hash",
    "demo_pairs",
    "example_path",
    "format_user",
    "has_chat_template",
    "labelled_to_pairs",
    "lint",
    "lint_path",
    "load_ab",
    "load_any",
    "load_instructions",
    "load_labelled",
    "load_pairs",
    "neutral_prompts",
    "pair_texts",
    "persona_pairs",
    "plain_format",
    "render",
    "split",
]
