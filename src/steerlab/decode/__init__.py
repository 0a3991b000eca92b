"""The one decode core: padding, sampling (one seed rule), EOS and stop strings with held-back streaming
text, per-row finish reasons and usage. ``lm.generate``, the server's scheduler and the llama.cpp engine
all drive it; none has sampling or stop rules of its own."""

from steerlab.decode.decoder import RowDecoder
from steerlab.decode.eos import eos_token_ids
from steerlab.decode.kv import cache_arg, last_logits_kwargs, returned_cache
from steerlab.decode.loop import TokenCallback, drive
from steerlab.decode.padding import Padded, left_pad, right_pad
from steerlab.decode.result import FINISH_REASONS, LENGTH, STOP, Generation
from steerlab.decode.sampling import (
    SEED_SPACE,
    SamplingParams,
    nucleus_probs,
    pick_token,
    pick_tokens,
    row_sampling,
    row_seed,
)
from steerlab.decode.stops import REPLACEMENT, find_stop, held_back

__all__ = [
    "FINISH_REASONS",
    "LENGTH",
    "REPLACEMENT",
    "SEED_SPACE",
    "STOP",
    "Generation",
    "Padded",
    "RowDecoder",
    "SamplingParams",
    "TokenCallback",
    "cache_arg",
    "drive",
    "eos_token_ids",
    "find_stop",
    "held_back",
    "last_logits_kwargs",
    "left_pad",
    "nucleus_probs",
    "pick_token",
    "pick_tokens",
    "returned_cache",
    "right_pad",
    "row_sampling",
    "row_seed",
]
