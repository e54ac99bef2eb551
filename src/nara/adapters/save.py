"""Saving and loading adapters: a folder with adapter_config.json + adapter_model.safetensors.

The JSON records the method, every config field, the nara version, the exact full name and
[out, in] shape of every adapted module (``target_shapes``) with a fingerprint of them, and the
sha256 of the weights file; the safetensors file holds every adapter tensor (frozen Fourier
frequencies included). What loading guarantees:

- nothing executable is loaded (safetensors only, no pickle);
- adapters go onto exactly the modules named in ``target_shapes``: a saved ``target_modules``
  regex is never evaluated for linear-layer methods (and is refused when it could backtrack
  catastrophically, see :func:`~nara.adapters.inject.compile_target_regex`);
- the weights file must match its recorded sha256 (files saved before the hash was recorded
  load with a warning), and every tensor must be finite (no NaN or inf).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.inject import (
    HIDDEN_STATE_METHODS,
    _require_hub,
    adapter_layers,
    adapter_parameters,
    add_adapters,
    wrap_linears,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

# folders already warned about for having no recorded sha256 (the warning is given once each)
_WARNED_NO_HASH: set[Path] = set()


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


def _write_atomic(file: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``file``, then rename it into place."""
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, file)


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write ``path``/adapter_config.json and ``path``/adapter_model.safetensors; returns path.

    The weights are written first and the config (with their sha256) last, each through a
    temporary file, so a folder whose config is present holds complete weights; an interrupted
    overwrite leaves weights that no longer match the recorded hash, which loading reports.
    """
    hub = _require_hub(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hidden = HIDDEN_STATE_METHODS.get(hub.config.method)
    if hidden is not None:
        shapes = hidden.target_shapes(model, hub.config)
    else:
        shapes = target_shapes(adapter_layers(model))
    weights = save(adapter_state_dict(model), metadata={"format": "pt"})
    _write_atomic(path / WEIGHTS_NAME, weights)
    meta = {
        "nara_version": _version(),
        "method": hub.config.method,
        "config": hub.config.to_dict(),
        "fingerprint": fingerprint(shapes),
        "target_shapes": shapes,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    _write_atomic(path / CONFIG_NAME, (json.dumps(meta, indent=2) + "\n").encode())
    return path


def read_tensors(file: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking its sha256 (when given) and that every tensor is finite.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupted or truncated, does not match ``sha256``, or holds a
            tensor with NaN or inf values (each message names the file and the fix).
    """
    if not file.is_file():
        raise FileNotFoundError(f"no adapter weights at {file}; expected a {WEIGHTS_NAME} file")
    data = file.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{file.name} does not match the sha256 recorded in {CONFIG_NAME}: the file is damaged "
            f"or was modified ({file}); copy or save the adapter again"
        )
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"adapter weights {file} are corrupted or truncated ({err}); save them again with "
            "nara.save_adapters, or copy the file again"
        ) from err
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"adapter tensor {name!r} in {file} holds {bad} NaN/inf value(s) of "
                f"{tensor.numel()}: the adapter is broken (did training diverge?); use an earlier "
                "checkpoint or train again with a lower learning rate"
            )
    return tensors


def read_config(path: Path) -> dict[str, Any]:
    """The adapter_config.json of folder ``path``, checked to be a nara or PEFT adapter config.

    Raises:
        FileNotFoundError: ``path`` is not a folder, or has no adapter_config.json.
        ValueError: the JSON is invalid or is not an adapter config.
    """
    if not path.is_dir():
        raise FileNotFoundError(
            f"adapter folder {str(path)!r} does not exist (or is a file); pass the folder that "
            f"holds {CONFIG_NAME} and {WEIGHTS_NAME} (e.g. <output_dir>/final of nara train)"
        )
    file = path / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not an adapter folder: {CONFIG_NAME} is missing (a model folder goes to "
            "--model, an adapter folder such as <output_dir>/final of nara train to --adapter)"
        )
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); save the adapter again") from err
    nara_keys = isinstance(meta, dict) and isinstance(meta.get("config"), dict)
    if not (nara_keys and isinstance(meta.get("target_shapes"), dict)) and not (
        isinstance(meta, dict) and "peft_type" in meta
    ):
        raise ValueError(
            f"{file} is not a nara or PEFT adapter config (it lacks 'config' and 'target_shapes', "
            "or 'peft_type'); pass a folder written by nara.save_adapters, nara train or PEFT"
        )
    return meta


def read_weights(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of nara adapter folder ``path``, checked against the sha256 in its config
    ``meta``; a config saved before the hash was recorded loads with a warning (once per folder).
    """
    sha256 = meta.get("weights_sha256")
    if sha256 is None and path.resolve() not in _WARNED_NO_HASH:
        _WARNED_NO_HASH.add(path.resolve())
        warnings.warn(
            f"{path / CONFIG_NAME} records no sha256 of {WEIGHTS_NAME} (saved by nara "
            f"{meta.get('nara_version', '< 0.1')}), so damage to the weights cannot be detected; "
            "save the adapter again to record it",
            UserWarning,
            stacklevel=3,
        )
    return read_tensors(path / WEIGHTS_NAME, sha256)


def check_adapter_folder(path: str | Path) -> None:
    """Every check of :func:`load_adapters` that needs no model: the folder and its config, the
    weights' sha256 and finite tensors. Lets a command refuse a bad adapter before loading a
    large base model.
    """
    path = Path(path)
    meta = read_config(path)
    if "peft_type" in meta:
        read_tensors(path / WEIGHTS_NAME)
    else:
        read_weights(path, meta)


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

    Linear-layer adapters go onto exactly the modules named in the saved ``target_shapes``; the
    saved ``target_modules`` rule is not evaluated again.

    Raises:
        FileNotFoundError: ``path`` is not an adapter folder.
        ValueError: the base model's target shapes differ from the saved ones, or the weights
            file is corrupted, truncated, does not match its sha256, holds NaN/inf values or does
            not fit.
    """
    path = Path(path)
    meta = read_config(path)
    if "peft_type" in meta:
        from nara.adapters.peft import load_peft_adapters

        return load_peft_adapters(model, path)
    config = AdapterConfig.from_dict(meta["config"])
    state = read_weights(path, meta)  # fail on a broken file before touching the model
    saved = meta["target_shapes"]
    hidden = HIDDEN_STATE_METHODS.get(config.method)
    if hidden is not None:
        shapes = hidden.target_shapes(model, config)
    else:
        modules = dict(model.named_modules())
        linears = {n: modules[n] for n in saved if isinstance(modules.get(n), nn.Linear)}
        shapes = target_shapes(linears)
    if fingerprint(shapes) != meta.get("fingerprint"):
        diff = [
            f"{n}: saved {saved.get(n)} vs model {shapes.get(n)}"
            for n in dict.fromkeys([*saved, *shapes])
            if saved.get(n) != shapes.get(n)
        ]
        raise ValueError(
            f"adapter in {path} was trained on a base model with different target layers "
            f"({'; '.join(diff[:4])}); load it into the base model it was trained on"
        )
    if hidden is not None:
        add_adapters(model, config)
    else:
        wrap_linears(model, config, list(saved))
    load_state(model, state, path / WEIGHTS_NAME)
    return model
