"""Prefix tuning (Li & Liang, 2021): n learned keys and values prepended in every attention layer.

Every attention layer l attends over [P_l^K; K] and [P_l^V; V] instead of K and V: the queries
of the input read the n prefix positions as if n earlier tokens had been cached. The prefixes of
all layers come from one table (n, L·2·H_kv·D), learned directly, or, with ``prefix_projection``,
produced by an MLP from n learned d-vectors (Embedding → Linear → tanh → Linear): the
reparameterisation of the prefix-tuning paper, trained the same way. Layout and parameter names
follow PEFT's ``PrefixEncoder`` (its weights load into ours), and so does the default init,
N(0, 1); ``init="vocab"`` starts direct prefixes as the keys and values the model computes for n
random vocabulary tokens, as the prefix-tuning paper suggests (on the embedded tiny model it
started further from the base loss than N(0, 1): 8.45 vs 7.38, base 7.20, arithmetic).

Positions, as in PEFT on a rotary (LLaMA-style) model: the prefix keys are used as given (never
rotated), and the input sits at positions n, n+1, ... after them. nara's LLaDA keeps the input at
its positions and rotates each prefix key back by n positions (plus the sample's left padding)
instead, which gives the same scores (rotary attention depends only on position differences), so
the first real token is n positions after the prefix whether the sample is padded or not.
LLaDA's attention is bidirectional, so every input position reads every prefix position.

How it plugs in: the prefix module lives in the model's NoiseHub (the core's freezing, counting,
save/load and trainer paths see it); a forward pre-hook on the root model computes all prefixes
once per forward pass, and each attention layer's ``kv_prefix`` hook (nara's LLaDA blocks have it)
prepends its slice to the rotated keys and values and marks the prefix positions as real in the
padding mask. A padded batch therefore equals one-by-one calls. Not a weight update, so
``nara.merge_adapters`` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nara.adapters.config import _check, _field
from nara.adapters.inject import HIDDEN_STATE_METHODS, HiddenStateMethod
from nara.adapters.noise import NoiseHub, _in_backward, find_hub
from nara.adapters.prompt import VirtualTokenConfig

PREFIX_INITS = ("random", "vocab")


@dataclass
class PrefixTuningConfig(VirtualTokenConfig):
    """Prefix tuning: n learned keys and values prepended in every attention layer."""

    method: ClassVar[str] = "prefix_tuning"

    prefix_projection: bool = _field(
        False,
        "reparameterise the prefixes through an MLP (n learned vectors → hidden → all layers' "
        "keys and values), as in the prefix-tuning paper; False learns them directly",
    )
    encoder_hidden_size: int | None = _field(
        None, "hidden width of the reparameterisation MLP (None: the key/value width)"
    )
    init: str = _field(
        "random",
        f"initial prefixes, one of {PREFIX_INITS}: random (N(0, 1), as PEFT) or vocab (the keys "
        "and values the model computes for n random vocabulary tokens, real context's scale; "
        "direct prefixes only)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.init in PREFIX_INITS, f"init must be one of {PREFIX_INITS}, got {self.init!r}")
        _check(
            self.init == "random" or not self.prefix_projection,
            "init 'vocab' sets the prefixes directly, but prefix_projection=True produces them "
            "with an MLP; use init='random' with prefix_projection",
        )
        _check(
            self.encoder_hidden_size is None or self.encoder_hidden_size > 0,
            f"encoder_hidden_size must be positive or None, got {self.encoder_hidden_size}",
        )


class PrefixEncoder(nn.Module):
    """All layers' prefixes: () → (n, L·2·H_kv·D); PEFT's ``PrefixEncoder`` layout and names."""

    def __init__(self, n: int, token_dim: int, layers: int, hidden: int, projection: bool) -> None:
        super().__init__()
        width = layers * 2 * token_dim
        self.embedding = nn.Embedding(n, token_dim if projection else width)
        self.transform = (
            nn.Sequential(nn.Linear(token_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            if projection
            else None
        )

    def forward(self) -> torch.Tensor:
        table = self.embedding.weight  # (n, d) or (n, width)
        return table if self.transform is None else self.transform(table)


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The modules with a ``kv_prefix`` hook (one per attention layer), in model order."""
    layers = [m for m in model.modules() if hasattr(m, "kv_prefix")]
    if not layers:
        raise ValueError(
            f"prefix tuning needs attention layers with a kv_prefix hook, and "
            f"{type(model).__name__} has none; use nara's LLaDA (nara.models), or another method "
            "(e.g. prompt_tuning, which only needs the input embeddings)"
        )
    return layers


def _kv_shape(layer: nn.Module) -> tuple[int, int]:
    """(H_kv, D) of an attention layer: its key/value heads and head width."""
    return layer.n_kv_heads, layer.k_proj.out_features // layer.n_kv_heads


def _rope_theta(model: nn.Module) -> float:
    config = getattr(model, "config", None)
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if theta is None:
        raise ValueError(
            f"prefix tuning reads the rotary base rope_theta from the model's config, and "
            f"{type(model).__name__} has none; set model.config.rope_theta"
        )
    return float(theta)


class PrefixHooks:
    """The root pre-hook (computes the prefixes) and the per-layer ``kv_prefix`` hooks."""

    def __init__(self, hub: NoiseHub, n: int, layers: int, kv: tuple[int, int], theta: float):
        self.hub, self.n, self.layers, self.kv, self.theta = hub, n, layers, kv, theta
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.rebuild_in_backward = False

    def begin(self, model: nn.Module, args: tuple) -> None:
        """Forward pre-hook of the root model: every layer's prefix keys and values, once."""
        self.cache = self.compute()
        self.rebuild_in_backward = False

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (L, H_kv, n, D) each, unrotated, from the prefix encoder."""
        heads, dim = self.kv
        table = self.hub.prefix().view(self.n, self.layers, 2, heads, dim)
        table = table.permute(1, 2, 3, 0, 4)  # (L, 2, H_kv, n, D)
        return table[:, 0], table[:, 1]

    def layer(self, index: int) -> PrefixHook:
        return PrefixHook(self, index)

    def rotate_back(self, keys: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Prefix keys (H_kv, n, D) → (B, H_kv, n, D) at position lead − n, with lead each
        sample's left padding: the prefix ends right before the first real token."""
        from nara.models.layers import apply_rotary, rotary_cos_sin  # (imports transformers)

        t = 0 if key_mask is None else key_mask.shape[1]  # lead is at most T
        cos, sin = rotary_cos_sin(max(self.n, t) + 1, keys.shape[-1], self.theta, keys.device)
        keys = apply_rotary(keys[None], cos[self.n], -sin[self.n])  # back by n: (1, H_kv, n, D)
        if key_mask is None:
            return keys
        lead = (~key_mask).long().cumprod(1).sum(1)  # (B,)
        return apply_rotary(keys, cos[lead][:, None, None], sin[lead][:, None, None])


class PrefixHook:
    """One attention layer's ``kv_prefix``: prepend its prefix to the keys, values and mask."""

    def __init__(self, hooks: PrefixHooks, index: int) -> None:
        self.hooks, self.index = hooks, index

    def __call__(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hooks = self.hooks
        if hooks.cache is None:  # a layer called outside a model forward
            hooks.cache = hooks.compute()
        keys, values = hooks.cache
        if keys.requires_grad and not torch.is_grad_enabled():
            # a no-grad forward inside a grad-enabled model call: reentrant checkpointing, whose
            # recompute backpropagates each layer alone, so each needs a fresh prefix graph
            hooks.rebuild_in_backward = True
        elif hooks.rebuild_in_backward and torch.is_grad_enabled() and _in_backward():
            keys, values = hooks.compute()
        b = k.shape[0]
        pk = hooks.rotate_back(keys[self.index], key_mask).to(k.dtype).expand(b, -1, -1, -1)
        pv = values[self.index].to(v.dtype).expand(b, -1, -1, -1)  # (B, H_kv, n, D)
        if key_mask is not None:
            key_mask = torch.cat([key_mask.new_ones(b, pk.shape[2]), key_mask], 1)  # (B, n + T)
        return torch.cat([pk, k], 2), torch.cat([pv, v], 2), key_mask


@torch.no_grad()
def vocab_prefixes(model: nn.Module, layers: list[nn.Module], n: int) -> torch.Tensor:
    """The rotated keys and values every attention layer computes for n random vocabulary tokens,
    as a prefix table (n, L·2·H_kv·D): n tokens the model has cached, as PEFT stores them."""
    captured = []

    def capture(k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> tuple:
        captured.append(torch.stack([k[0], v[0]]))  # (2, H_kv, n, D)
        return k, v, key_mask

    for layer in layers:
        layer.kv_prefix = capture
    try:
        words = model.get_input_embeddings().weight
        model(torch.randint(0, words.shape[0], (1, n), device=words.device))
    finally:
        for layer in layers:
            layer.kv_prefix = None
    table = torch.stack(captured)  # (L, 2, H_kv, n, D)
    return table.permute(3, 0, 1, 2, 4).reshape(n, -1).float()


def _add_prefix(model: nn.Module, config: PrefixTuningConfig) -> nn.Module:
    """Freeze ``model``, put the prefix encoder in a new hub and hook every attention layer."""
    if find_hub(model) is not None:
        raise ValueError(
            "this model already has nara adapters; nara keeps one adapter config per model: "
            "start from a fresh base model"
        )
    layers = attention_layers(model)
    heads, dim = _kv_shape(layers[0])
    theta = _rope_theta(model)
    for p in model.parameters():
        p.requires_grad_(False)
    n, token_dim = config.num_virtual_tokens, heads * dim
    hub = NoiseHub(config.method, {})
    hub.prefix = PrefixEncoder(
        n, token_dim, len(layers), config.encoder_hidden_size or token_dim, config.prefix_projection
    )
    if config.init == "vocab":
        hub.prefix.embedding.weight.data.copy_(vocab_prefixes(model, layers, n))
    hub.to(layers[0].k_proj.weight.device).train(model.training)
    hub.config, hub.targets = config, []
    model.nara_hub = hub
    hooks = PrefixHooks(hub, n, len(layers), (heads, dim), theta)
    for index, layer in enumerate(layers):
        layer.kv_prefix = hooks.layer(index)
    model.register_forward_pre_hook(hooks.begin)
    return model


def _prefix_shapes(model: nn.Module, config: PrefixTuningConfig) -> dict[str, list[int]]:
    layers = attention_layers(model)
    return {"prefix": [len(layers), 2, config.num_virtual_tokens, *_kv_shape(layers[0])]}


HIDDEN_STATE_METHODS[PrefixTuningConfig.method] = HiddenStateMethod(_add_prefix, _prefix_shapes)
