"""Baking steering into weights: an ordinary HF model folder that behaves like the steered model.

Every runtime edit steerlab makes is an affine map of one activation, ``y -> M y + t`` with
``M = I + (a - 1) u u^T`` (``a = 1`` for ``add``).  Where that activation is the output (or input) of a
linear layer, the map folds into the layer's weight and bias exactly:

=====================  =========================================================================
runtime steering       weights (block ``L``)
=====================  =========================================================================
``add`` at ``resid``   bias on the MLP output projection (``down_proj``): the MLP output is added
                       to the residual stream, so the bias is added to block ``L``'s output at
                       every position -- runtime ``add`` with ``positions="all"``
any op at ``mlp``      ``W <- M W``, ``b <- M b + t`` on the MLP output projection
any op at ``attn``     the same on the attention output projection (``o_proj``)
any op at ``head``     ``W <- W M``, ``b <- b + W t`` on ``o_proj`` (its input is the head site)
``ablate`` at          directional ablation by weight orthogonalisation (Arditi et al. 2024): the
``resid``, *every*     direction is projected out of the token embeddings and of every attention
layer, one direction   and MLP output projection, so nothing ever writes it into the stream
=====================  =========================================================================

A missing bias parameter is added by switching on the architecture's config flag (``mlp_bias`` /
``attention_bias``; the sibling projections get zero biases) so the folder loads in stock transformers.

Not expressible, refused: position policies other than ``"all"`` (weights act at every position),
``ablate``/``clamp``/``scale`` on the residual stream at some layers only, or with a different direction
per layer (runtime ablation at block outputs is not a weight edit: see below), and per-row steering.

Runtime ``ablate`` at every block output is *not* the same model as the orthogonalised one: at runtime
block 0 still reads the embedding's component and each MLP reads its own block's attention component
before the block output is projected.  The exact runtime equivalent of the orthogonalised model is
ablation at the ``attn`` and ``mlp`` sites of every block plus the token embeddings
(:func:`runtime_equivalent`); the gap to block-output ablation is measured in ``docs/interop.md``.

Every bake is verified before it is kept: the written folder is reloaded and its logits compared to the
runtime equivalent on probe texts.  An architecture whose blocks do not add the MLP output straight to
the stream (e.g. a norm after the MLP) fails that check and nothing is written.

Modules, one job each: :mod:`~steerlab.bake.affine` (the folding math), :mod:`~steerlab.bake.plan`
(what to change, and every refusal), :mod:`~steerlab.bake.folder` (writing the HF folder),
:mod:`~steerlab.bake.verify` (the runtime equivalent and the logit check), :mod:`~steerlab.bake.run`
(the :func:`bake` entry point).
"""

from steerlab.bake.affine import Affine, fold_input, fold_output
from steerlab.bake.run import BakeReport, bake
from steerlab.bake.verify import runtime_equivalent

__all__ = ["Affine", "BakeReport", "bake", "fold_input", "fold_output", "runtime_equivalent"]
