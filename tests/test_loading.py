"""Loading from every kind of source, and the cached GGUF conversion."""

from __future__ import annotations

import time

import pytest
import torch

import steerlab
from steerlab import ModelError
from steerlab.models import loading

pytestmark = pytest.mark.slow


def test_cached_copy_reproduces_gguf_logits_and_loads_fast(lm, tmp_path, monkeypatch):
    path = loading.embedded_gguf_path()
    target = loading.cache_root() / "models" / f"{loading.file_sha256(path)[:24]}-v{loading.CACHE_FORMAT}"
    assert (target / "steerlab-cache.txt").is_file() and (target / "model.safetensors").is_file()
    tick = time.perf_counter()
    again = steerlab.load()
    assert time.perf_counter() - tick < 60  # cached: no dequantisation (which alone takes ~10-30 s)
    ids = torch.tensor([[1, 400, 500]])
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, lm.model(ids).logits)


def test_folder_and_gguf_path_sources(lm, tmp_path):
    folder = tmp_path / "copy"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    from_folder = steerlab.load(str(folder))
    assert from_folder.anatomy.num_layers == 30
    ids = torch.tensor([[1, 400, 500]])
    with torch.no_grad():
        assert torch.equal(from_folder.model(ids).logits, lm.model(ids).logits)
    via_path = steerlab.load(str(loading.embedded_gguf_path()))
    assert via_path.model_id == "SmolLM2-135M-Instruct.Q4_1"


def test_bad_sources_are_explained(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        steerlab.load(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"holds no config\.json"):
        steerlab.load(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="as a hub id"):
        steerlab.load("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelError, match=r"find the decoder blocks|no submodule"):
        steerlab.load(blocks="model.nowhere")
