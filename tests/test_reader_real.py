"""The one reader, on the real model: same numbers as HF hidden states, early stop, positions, norms."""

from __future__ import annotations

import pytest
import torch

import steerlab
from steerlab import DataError
from steerlab.reader import iter_read, read

pytestmark = pytest.mark.slow

TEXTS = [
    "The cat sat on the mat.",
    "A much longer sentence about the weather in the mountains today.",
    "Hi there",
]


def hidden_states(lm, text):
    ids = torch.tensor([lm.encode(text)])
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True).hidden_states


def test_matches_hf_hidden_states_at_every_position_kind(lm):
    layers = [0, 7, 15]
    last = read(lm, TEXTS, layers, position="last", batch_size=2)
    mean = read(lm, TEXTS, layers, position="mean", batch_size=2)
    second = read(lm, TEXTS, layers, position=1, batch_size=2)
    for i, text in enumerate(TEXTS):
        hs = hidden_states(lm, text)
        for layer in layers:
            ref = hs[layer + 1][0]  # layer i = output of block i = hidden_states[i + 1]
            torch.testing.assert_close(last.acts[layer][i], ref[-1], rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(mean.acts[layer][i], ref.mean(0), rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(second.acts[layer][i], ref[1], rtol=1e-4, atol=1e-3)


def test_several_positions_and_input_order(lm):
    acts = read(lm, TEXTS[:2], [5], position=(-2, -1), batch_size=1)
    assert acts.acts[5].shape == (2, 2, 576)
    single = read(lm, [TEXTS[1]], [5], position=-1)
    torch.testing.assert_close(acts.acts[5][1, 1], single.acts[5][0])


def test_stops_after_deepest_layer(lm):
    calls = []
    handle = lm.anatomy.module(29, "resid").register_forward_hook(lambda *a: calls.append(1))
    try:
        read(lm, TEXTS, [3, 4])
    finally:
        handle.remove()
    assert calls == []


def test_norms_skip_the_attention_sink_token(lm):
    acts = read(lm, TEXTS, [0, 20])
    hs = hidden_states(lm, TEXTS[1])
    first = float(hs[21][0, 0].norm())
    rest = hs[21][0, 1:].norm(dim=-1)
    assert acts.norms[20] < first  # the sink token is an outlier...
    assert float(rest.min()) <= acts.norms[20] <= float(rest.max())  # ...and the median is a typical token


def test_head_site_width_and_streaming(lm):
    batches = list(iter_read(lm, TEXTS, [2], site="head", batch_size=2))
    assert sorted(i for b in batches for i in b.indices) == [0, 1, 2]
    assert batches[0].acts[2].shape[-1] == lm.anatomy.num_heads * lm.anatomy.head_dim


def test_bad_requests(lm):
    with pytest.raises(DataError, match="no texts"):
        read(lm, [], [1])
    with pytest.raises(steerlab.ModelError, match="out of range"):
        read(lm, TEXTS, [30])
    with pytest.raises(DataError, match="outside a text"):
        read(lm, ["Hi"], [1], position=50)


def test_extract_mean_diff_matches_numpy(lm, happy_pairs):
    vec = steerlab.extract(lm, happy_pairs, layers="4,12")
    pos = read(lm, [lm.chat(p) for p, _ in happy_pairs], [4, 12]).acts
    neg = read(lm, [lm.chat(n) for _, n in happy_pairs], [4, 12]).acts
    for layer in (4, 12):
        expected = pos[layer].double().numpy().mean(0) - neg[layer].double().numpy().mean(0)
        assert torch.allclose(vec[layer], torch.from_numpy(expected).float(), atol=1e-3)
    assert vec.model_id == lm.model_id and vec.method == "mean_diff" and vec.layers == [4, 12]
    assert set(vec.norms) == {4, 12} and len(vec.data_hash) == 16
    assert vec.diagnostics["12"]["accuracy"] >= 0.9


def test_extract_refuses_bad_data(lm):
    with pytest.raises(DataError, match="at least 2 examples"):
        steerlab.extract(lm, [("a", "b")])
    with pytest.raises(DataError, match="no contrast"):
        steerlab.extract(lm, [("same text", "same text"), ("other", "other")], layers=[3])
    with pytest.raises(DataError, match="non-empty"):
        steerlab.extract(lm, [("a", ""), ("c", "d")])
    with pytest.raises(DataError, match="unknown method"):
        steerlab.extract(lm, [("a", "b"), ("c", "d")], method="magic")
