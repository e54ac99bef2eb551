"""Saving and loading adapters: a folder with adapter_config.json + adapter_model.safetensors.

The JSON records the method, every config field, the nara version and a fingerprint of the base
model's target shapes; the safetensors file holds every adapter tensor (frozen Fourier frequencies
included). Safetensors only: no pickle, nothing executable is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.inject import (
    HIDDEN_STATE_METHODS,
    _require_hub,
    adapter_layers,
    adapter_parameters,
    add_adapters,
    resolve_targets,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def _version() -> str:
    import nara

    return nara.__version__


def target_shapes(layers: dict[str, nn.Linear]) -> dict[str, list[int]]:
    """Module name → [out_features, in_features] of every adapted layer."""
    return {name: [m.out_features, m.in_features] for name, m in layers.items()}


def fingerprint(shapes: dict[str, list[int]]) -> str:
    """A short hash of the target names and shapes, to recognise the base model on load."""
    return hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor by name: the trainable ones plus the hub's buffers (Fourier w)."""
    hub = _require_hub(model)
    state = {**adapter_parameters(model), **prefixed(hub.state_dict(), "nara_hub.")}
    return {k: v.detach().contiguous() for k, v in state.items()}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write ``path``/adapter_config.json and ``path``/adapter_model.safetensors; returns path."""
    hub = _require_hub(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hidden = HIDDEN_STATE_METHODS.get(hub.config.method)
    if hidden is not None:
        shapes = hidden.target_shapes(model, hub.config)
    else:
        shapes = target_shapes(adapter_layers(model))
    meta = {
        "nara_version": _version(),
        "method": hub.config.method,
        "config": hub.config.to_dict(),
        "fingerprint": fingerprint(shapes),
        "target_shapes": shapes,
    }
    (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    save_file(adapter_state_dict(model), str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    return path


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, corrupted or truncated file gives a clear error."""
    if not file.is_file():
        raise FileNotFoundError(f"no adapter weights at {file}; expected a {WEIGHTS_NAME} file")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"adapter weights {file} are corrupted or truncated ({err}); save them again with "
            "nara.save_adapters, or copy the file again"
        ) from err


def read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an adapter folder: {CONFIG_NAME} is missing")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); save the adapter again") from err


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into the model's adapter tensors; key or shape mismatches raise."""
    own = adapter_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"adapter weights in {source} do not fit the adapted model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}; the file was saved from a different model or config"
        )
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(
            f"adapter tensor shapes in {source} differ from the model's: "
            + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:4])
        )
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, value in state.items():
            owner, _, attr = key.rpartition(".")
            target = getattr(modules[owner], attr)
            target.copy_(value.to(device=target.device, dtype=target.dtype))


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the adapters saved in ``path`` to a fresh base ``model`` and load their weights.

    A PEFT LoRA/DoRA folder (its adapter_config.json has ``peft_type``) loads as nara LoRA/DoRA.
    Returns the same model; its outputs equal those of the model that was saved.

    Raises:
        ValueError: the base model's target shapes differ from the saved fingerprint, or the
            weights file is corrupted, truncated or does not fit.
    """
    path = Path(path)
    meta = read_config(path)
    if "peft_type" in meta:
        from nara.adapters.peft import load_peft_adapters

        return load_peft_adapters(model, path)
    config = AdapterConfig.from_dict(meta["config"])
    state = read_tensors(path / WEIGHTS_NAME)  # fail on a broken file before touching the model
    hidden = HIDDEN_STATE_METHODS.get(config.method)
    if hidden is not None:
        shapes = hidden.target_shapes(model, config)
    else:
        shapes = target_shapes(
            {n: model.get_submodule(n) for n in resolve_targets(model, config.target_modules)}
        )
    if fingerprint(shapes) != meta.get("fingerprint"):
        saved = meta.get("target_shapes", {})
        diff = [
            f"{n}: saved {saved.get(n)} vs model {shapes.get(n)}"
            for n in dict.fromkeys([*saved, *shapes])
            if saved.get(n) != shapes.get(n)
        ]
        raise ValueError(
            f"adapter in {path} was trained on a base model with different target layers "
            f"({'; '.join(diff[:4])}); load it into the base model it was trained on"
        )
    add_adapters(model, config)
    load_state(model, state, path / WEIGHTS_NAME)
    return model
