"""(IA)³ (Liu et al., 2022): learned vectors rescale activations; nothing else trains.

A targeted layer y = x·Wᵀ + b becomes y = (x·Wᵀ + b) ⊙ l with l (d_out,) on the keys and values,
or y = (x ⊙ l)·Wᵀ + b with l (d_in,) on a feed-forward layer (the MLP's down projection, whose
input is the MLP's hidden activation). Every l starts at ones, so the model starts unchanged.
As in PEFT's IA3 (same forward and merge rule).

Merging is exact: W ← diag(l)·W and b ← l ⊙ b on the keys and values; W ← W·diag(l) (b unchanged)
on a feed-forward layer.
"""

from __future__ import annotations

import torch
from torch import nn

from nara.adapters.config import IA3Config
from nara.adapters.inject import compile_target_regex
from nara.adapters.layer import AdapterLayer, matches, register
from nara.adapters.noise import Conditioner


def selected(name: str, entries: list[str] | str) -> bool:
    """True if module ``name`` is one of ``entries`` (names or '.'-suffixes) or fullmatches the
    regex ``entries`` (checked like target_modules: no nested repetition)."""
    if isinstance(entries, str):
        return compile_target_regex(entries).fullmatch(name) is not None
    return any(matches(name, e) for e in entries)


@register
class IA3Layer(AdapterLayer):
    method = "ia3"
    adapter_names = ("ia3_l",)

    def __init__(self, base: nn.Linear, config: IA3Config, feedforward: bool = False) -> None:
        super().__init__(base, config)
        self.dropout_p = 0.0  # (IA)³ has no dropout
        self.feedforward = feedforward
        width = self.in_features if feedforward else self.out_features
        self.ia3_l = nn.Parameter(torch.ones(width, device=self.weight.device))

    @classmethod
    def build(cls, base: nn.Linear, config: IA3Config, name: str) -> IA3Layer:
        return cls(base, config, feedforward=selected(name, config.feedforward_modules))

    @classmethod
    def conditioners(
        cls, config: IA3Config, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        """None (static); checks that every feed-forward entry names a target."""
        entries = config.feedforward_modules
        for entry in [entries] if isinstance(entries, str) else [[e] for e in entries]:
            if not any(selected(n, entry) for n in names):
                raise ValueError(
                    f"feedforward_modules entry {entry!r} matches none of the adapted modules "
                    f"(e.g. {names[:4]}); every feed-forward module must also be a target "
                    "(LLaDA: ff_out, Dream/LLaMA: down_proj)"
                )
        return {}, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return super().forward(x)
        scale = self.ia3_l.to(x.dtype)
        if self.feedforward:
            return super().forward(x * scale)  # the base on the rescaled input
        return super().forward(x) * scale

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        return out  # the rescaling happens in forward, around the base layer

    def merged_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        l = self.ia3_l  # noqa: E741  (the paper's name)
        return self.weight * (l[None, :] if self.feedforward else l[:, None])

    def merged_bias(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        if self.feedforward or self.bias is None:
            return self.bias
        return self.bias * self.ia3_l
