"""PEFT interop: load a PEFT LoRA (or DoRA) adapter folder as a nara adapter.

PEFT stores ``base_model.model.<module>.lora_A.weight`` (r, d_in), ``...lora_B.weight``
(d_out, r) and, for DoRA, ``...lora_magnitude_vector`` (d_out,), with the scale lora_alpha / r
(lora_alpha / √r with rsLoRA). Loaded as NaRA, the hypernetwork starts at C = I, so the outputs
equal the PEFT LoRA's until NaRA is trained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from nara.adapters.config import config_class
from nara.adapters.dora import DoRALayer
from nara.adapters.inject import add_adapters
from nara.adapters.layer import LAYERS
from nara.adapters.lora import LoRALayer
from nara.adapters.save import (
    WEIGHTS_NAME,
    adapter_state_dict,
    load_state,
    read_config,
    read_tensors,
)

_PREFIX = "base_model.model."
_RENAME = {
    "lora_A.weight": "lora_A",
    "lora_B.weight": "lora_B",
    "lora_magnitude_vector": "magnitude",
}
_UNSUPPORTED = ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform")


def _check_supported(meta: dict[str, Any], path: Path) -> None:
    problems = []
    if meta.get("peft_type") != "LORA":
        problems.append(f"peft_type {meta.get('peft_type')!r} (only LORA is supported)")
    problems += [f"{k}={meta[k]!r}" for k in _UNSUPPORTED if meta.get(k)]
    if meta.get("bias", "none") != "none":
        problems.append(f"bias={meta['bias']!r}")
    if meta.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out=True (Conv1D layers)")
    if problems:
        raise ValueError(
            f"PEFT adapter {path} uses features nara cannot load: {', '.join(problems)}; "
            "re-train it as a plain LoRA/DoRA on nn.Linear layers"
        )


def load_peft_adapters(
    model: nn.Module, path: str | Path, method: str | None = None, **overrides: Any
) -> nn.Module:
    """Add a PEFT LoRA/DoRA adapter from folder ``path`` to ``model`` as nara adapters.

    Args:
        model: the base model the PEFT adapter was trained on (plain, not a PeftModel).
        path: folder with PEFT's adapter_config.json and adapter_model.safetensors.
        method: nara method to load as: "lora"/"dora" (default: as saved), "nara", "nara_dora" or
            "t_lora" (same A and B; NaRA starts at C = I, so outputs match at start).
        **overrides: further fields of the target config, e.g. ``eta=0.1``.

    Returns the same model. Raises ValueError for unsupported PEFT features or mismatches.
    """
    path = Path(path)
    meta = read_config(path)
    _check_supported(meta, path)
    dora = bool(meta.get("use_dora"))
    method = method or ("dora" if dora else "lora")
    layer_cls = LAYERS.get(method)
    if layer_cls is None or not issubclass(layer_cls, LoRALayer):
        raise ValueError(
            f"a PEFT LoRA loads as lora, dora, nara, nara_dora or t_lora, not {method!r}"
        )
    if dora != issubclass(layer_cls, DoRALayer):
        kind = "DoRA (use_dora=True)" if dora else "plain LoRA"
        raise ValueError(
            f"the PEFT adapter in {path} is {kind} but method {method!r} "
            f"{'is not' if dora else 'is'} DoRA; use method={'dora' if dora else 'lora'!r} "
            f"or {'nara_dora' if dora else 'nara'!r}"
        )
    tensors = read_tensors(path / WEIGHTS_NAME)
    state = {}
    for key, value in tensors.items():
        suffix = next((s for s in _RENAME if key.endswith("." + s)), None)
        if suffix is None or not key.startswith(_PREFIX):
            raise ValueError(f"unexpected tensor {key!r} in PEFT adapter {path}")
        module = key[len(_PREFIX) : -len(suffix) - 1]
        state[f"{module}.{_RENAME[suffix]}"] = value
    modules = sorted({k.rpartition(".")[0] for k in state})
    r = int(meta["r"])
    alpha = float(meta["lora_alpha"])
    scale = alpha / r**0.5 if meta.get("use_rslora") else alpha / r
    config = config_class(method)(
        r=r,
        alpha=alpha,
        scale=scale,
        dropout=float(meta.get("lora_dropout") or 0.0),
        # the exact modules PEFT adapted, whatever its target rule was
        target_modules="|".join(re.escape(m) for m in modules),
        **overrides,
    )
    add_adapters(model, config)
    # tensors PEFT does not have (NaRA's hypernetworks) keep their initial values: C = I
    own = adapter_state_dict(model)
    state.update({k: v for k, v in own.items() if k not in state})
    load_state(model, state, path / WEIGHTS_NAME)
    return model
