"""Built adaptations on disk: a steering vector with its calibrated defaults, or LoRA weights.

The main stage saves them so the composability stage (maybe on another worker) can load them back
without rebuilding.
"""

from __future__ import annotations

from pathlib import Path

from steerlab.engine.spec import Steering
from steerlab.evaluate import adaptations
from steerlab.evaluate.adaptations import Adaptation


def save_artifact(adaptation: Adaptation, folder: str | None) -> str | None:
    """Save a steering or LoRA adaptation under ``folder``; the path, or None for nothing to save."""
    if folder is None:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    vector = adaptation.settings.get("vector")
    if vector is not None:
        out = path / f"{adaptation.name}.safetensors"
        vector.defaults = {
            "strength": adaptation.settings["strength"],
            "layers": adaptation.settings["layers"],
            "op": "add",
            "unit": adaptation.settings.get("unit", "norm"),
        }
        vector.save(out)
        return str(out)
    if adaptation.lora is not None:
        from safetensors.torch import save_file

        out = path / "lora.safetensors"
        save_file(
            {k: v.contiguous() for k, v in adaptation.lora.state.items()},
            str(out),
            metadata={
                "rank": str(adaptation.lora.rank),
                "alpha": str(adaptation.lora.alpha),
                "targets": ",".join(adaptation.lora.targets),
            },
        )
        return str(out)
    return None


def load_artifact(path: str, method: str) -> Adaptation:
    """Rebuild a saved adaptation (steering vector with its calibrated defaults, or LoRA weights)."""
    if method == "lora":
        from safetensors import safe_open

        from steerlab.evaluate.lora import LoraAdapter

        with safe_open(path, "pt") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        adapter = LoraAdapter(int(meta["rank"]), float(meta["alpha"]), meta["targets"].split(","), state)
        return Adaptation("lora", "lora", lora=adapter)
    from steerlab.vector import SteeringVector

    vector = SteeringVector.load(path)
    d = vector.defaults
    s = Steering(
        vector, strength=d["strength"], layers=d["layers"], op=d.get("op", "add"), unit=d.get("unit", "norm")
    )
    return adaptations.steering(
        method, [s], layers=d["layers"], strength=d["strength"], unit=d.get("unit", "norm")
    )
