"""Shared fixtures. The real embedded model is loaded once per session (a cached copy loads in ~1 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

HAPPY_SAD_TASKS = [
    "Describe your morning routine.",
    "Explain how to boil an egg.",
    "Tell me about the weather today.",
    "What do you think of your job?",
    "Write about your weekend.",
    "Describe a walk in the park.",
    "Tell me about your family.",
    "What did you eat for lunch?",
    "Describe the room you are in.",
    "Talk about a book you read.",
    "How was your commute?",
    "Describe your neighbourhood.",
]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def refusal_data(shared_data) -> dict[str, list[str]]:
    """The shared refusal instructions, whole: harmful/harmless x train/val (tests slice their own)."""
    from steerlab.data import load_instructions

    root = shared_data / "refusal_direction"
    original = root / "original" / "dataset" / "splits"
    return {
        f"{kind}_{split}": load_instructions(
            root / f"harmful_{split}.jsonl" if kind == "harmful" else original / f"harmless_{split}.json"
        )
        for kind in ("harmful", "harmless")
        for split in ("train", "val")
    }


@pytest.fixture(scope="session")
def lm():
    """The real embedded SmolLM2-135M-Instruct."""
    import steerlab

    return steerlab.load()


@pytest.fixture(scope="session")
def happy_pairs() -> list[tuple[str, str]]:
    return [
        (f"Act as if you are extremely happy. {t}", f"Act as if you are extremely sad. {t}")
        for t in HAPPY_SAD_TASKS
    ]


@pytest.fixture(scope="session")
def happy_vector(lm, happy_pairs):
    import steerlab

    return steerlab.extract(lm, happy_pairs, method="mean_diff")


def foreign_hooks(model) -> list[str]:
    """Hooks on ``model`` that transformers did not install itself (its output-capturing hooks stay)."""
    from steerlab.evaluate.reversibility import installed_hooks

    return [f"{name}: {count} hook(s)" for name, count in installed_hooks(model).items()]


@pytest.fixture(autouse=True)
def _no_leaked_hooks(request):
    """Every test must leave the shared real model as it found it: no hooks of ours left behind."""
    yield
    if "lm" in request.fixturenames:
        leaked = foreign_hooks(request.getfixturevalue("lm").model)
        assert not leaked, f"hooks left on the shared model after this test: {leaked[:5]}"
