"""The refusal detector the evaluation uses: the project's one phrase matcher, named for reports.

Phrase matching as in Arditi et al.'s refusal score (no judge model); the definition, its phrase lists
live in :mod:`steerlab.methods.refusal_text` (re-exported by :mod:`steerlab.methods.refusal`). Reports
record the detector's name so a number can be traced to the rule that produced it.
"""

from __future__ import annotations

from collections.abc import Callable

from steerlab.methods.refusal_text import is_refusal


def refusal_detector() -> tuple[Callable[[str], bool], str]:
    """The detector and the name reports print for it."""
    return is_refusal, "steerlab.methods.refusal.is_refusal (phrase match in the opening 200 characters)"
