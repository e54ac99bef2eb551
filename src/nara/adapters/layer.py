"""The shared adapter layer: a frozen nn.Linear plus a method's small trainable part.

``AdapterLayer`` *is* an ``nn.Linear`` that takes over the base layer's weight and bias, so base
parameter names stay unchanged (``...q_proj.weight``) and a merged model saves like the original.
A method subclass declares its trainable tensors once (``adapter_names``), implements ``adapt``
(the forward on top of the base output) and ``delta_weight`` (for merging), and, if noise-aware,
its ``conditioners`` (what the NoiseHub computes once per forward).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import AdapterConfig

if TYPE_CHECKING:
    from nara.adapters.noise import Conditioner, NoiseHub

LAYERS: dict[str, type[AdapterLayer]] = {}


def register(cls: type[AdapterLayer]) -> type[AdapterLayer]:
    """Class decorator: make ``cls`` the layer of its config's method."""
    LAYERS[cls.method] = cls
    return cls


def matches(name: str, entry: str) -> bool:
    """True if module ``name`` is ``entry`` or ends with ``"." + entry``."""
    return name == entry or name.endswith("." + entry)


def per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View (n, F) as (n, 1, ..., 1, F) to broadcast over the middle dims of ``like`` (B, ..., F)."""
    return t.view(t.shape[0], *([1] * (like.dim() - 2)), t.shape[-1])


def is_quantized(layer: nn.Linear) -> bool:
    """Whether a linear stores its weight quantised (integer storage, as bitsandbytes' 4- and
    8-bit layers do), so only its own forward computes x·Wᵀ."""
    return not layer.weight.dtype.is_floating_point


class AdapterLayer(nn.Linear):
    """Base of every method: y = x·Wᵀ + b (frozen) + the method's update.

    Attributes:
        scaling: the scale s of the update (``config.scaling``).
        cond_key: the NoiseHub entry this layer reads each forward (None for static methods).
        merged: True while the update is folded into ``weight``.
    """

    method: ClassVar[str] = ""
    adapter_names: ClassVar[tuple[str, ...]] = ()
    # why ``merge`` is refused (an update that is not a fixed weight), or None when it merges
    merge_refusal: ClassVar[str | None] = None
    # the forward reads the base weight W itself (not only the base output): refused on a 4- or
    # 8-bit base, whose W is stored packed (nara.models.quantize)
    reads_base_weight: ClassVar[bool] = False

    def __init__(self, base: nn.Linear, config: AdapterConfig) -> None:
        # allocate nothing: the base's own weight and bias are taken over below
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.scaling = config.scaling
        self.dropout_p = config.dropout
        self.cond_key: str | None = None
        self.merged = False
        self._weight_before_merge: torch.Tensor | None = None
        self._bias_before_merge: nn.Parameter | None = None
        object.__setattr__(self, "_hub", None)  # a reference, not a submodule
        # a quantised base (bitsandbytes' 4/8-bit Linear: integer storage) computes its own
        # frozen product; the adapter adds to it
        object.__setattr__(self, "_base_forward", base.forward if is_quantized(base) else None)
        if self._base_forward is not None and self.reads_base_weight:
            raise ValueError(
                f"{self.method} reads the base weight W in its forward, and this base layer "
                f"({type(base).__name__}) stores W quantised; on a 4- or 8-bit base use a method "
                "that adds to the base output (lora, nara, tlora, multi_lora, ...), or load the "
                "base in bfloat16 (model.load_in_4bit=false)"
            )

    @classmethod
    def build(cls, base: nn.Linear, config: AdapterConfig, name: str) -> AdapterLayer:
        """The layer for target ``name`` (full module name); methods whose layers differ by
        target, such as (IA)³'s feed-forward layers, override this."""
        return cls(base, config)

    @classmethod
    def conditioners(
        cls, config: AdapterConfig, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        """The conditioners the hub needs and each target's key in them (static: none)."""
        return {}, {}

    def attach(self, hub: NoiseHub, cond_key: str | None) -> None:
        object.__setattr__(self, "_hub", hub)
        self.cond_key = cond_key

    def _new(self, *shape: int, zero: bool = False) -> nn.Parameter:
        """A float32 adapter tensor on the base weight's device (Kaiming-uniform or zeros)."""
        t = torch.zeros(*shape, device=self.weight.device)
        if not zero:
            # nn.Linear's default init, per slice for stacked (K, r, d_in) tensors
            for s in t.view(-1, *shape[-2:]):
                nn.init.kaiming_uniform_(s, a=5**0.5)
        return nn.Parameter(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._base_forward is None:
            out = F.linear(x, self.weight, self.bias)
        else:
            out = self._base_forward(x)
        if self.merged:
            return out
        cond = self.conditioning(x) if self.cond_key is not None else None
        xd = F.dropout(x, self.dropout_p, training=True) if self.dropout_p and self.training else x
        return self.adapt(x, xd, out, cond)

    def conditioning(self, x: torch.Tensor) -> torch.Tensor:
        """This forward's conditioning from the hub, (n, ...) with n = 1 or the batch size."""
        cond = self._hub.lookup(self.cond_key)
        n = cond.shape[0]
        if n != 1 and n != x.shape[0]:
            raise ValueError(
                f"noise_level got {n} noise values but this layer's input has batch size "
                f"{x.shape[0]} (input shape {tuple(x.shape)}); pass one λ per sample, a tensor of "
                f"shape ({x.shape[0]},), or a float for the whole batch"
            )
        return cond

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """The adapted output given the input x, its dropped-out copy xd and the base output."""
        raise NotImplementedError

    def delta_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        """ΔW (d_out, d_in) for one conditioning (batch 1)."""
        raise NotImplementedError

    def merged_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        """The weight that makes the plain linear equal this layer: W + ΔW by default."""
        return self.weight + self.delta_weight(cond)

    def merged_bias(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """The bias that goes with ``merged_weight``: the base bias unchanged by default."""
        return self.bias

    @torch.no_grad()
    def merge(self, cond: torch.Tensor | None) -> None:
        """Fold the update into ``weight`` (and ``bias``); the originals are kept for ``unmerge``.

        A method that changes the bias gets a new frozen bias tensor (also on a layer that had
        none, e.g. BitFit on LLaDA); ``unmerge`` puts the original one (or None) back.
        """
        if self.merged:
            raise RuntimeError("adapters are already merged; call nara.unmerge_adapters first")
        if self.merge_refusal is not None:
            raise ValueError(f"{self.method} adapters cannot be merged: {self.merge_refusal}")
        if self._base_forward is not None:
            raise ValueError(
                "cannot merge into a quantised (4/8-bit) base layer; load the base in bfloat16 "
                "and merge the saved adapter into it"
            )
        new = self.merged_weight(cond).to(self.weight.dtype)
        bias = self.merged_bias(cond)
        self._weight_before_merge = self.weight.detach().clone()
        self._bias_before_merge = self.bias
        self.weight.copy_(new)
        if bias is not self.bias:
            self.bias = nn.Parameter(bias.detach().to(self.weight.dtype), requires_grad=False)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the original weight and bias bit-exactly."""
        if self.merged:
            self.weight.copy_(self._weight_before_merge)
            self.bias = self._bias_before_merge
            self._weight_before_merge = self._bias_before_merge = None
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method}, scaling={self.scaling:g}"
