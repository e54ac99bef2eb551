"""BitFit (Ben Zaken et al., 2022): only biases train.

Each targeted linear gets a trainable bias δ (d_out,), zero-initialised, added to its output:
y = x·Wᵀ + b + δ. Training δ is training the bias b + δ from its pre-trained value, while the base
stays frozen and the adapter file holds only δ. A backbone without biases (LLaDA) has b = 0, so
BitFit adds zero-initialised biases there. Merging folds δ into the bias: b ← b + δ (a bias-free
layer gets a bias, so the merged model's state dict gains ``.bias`` entries).
"""

from __future__ import annotations

import torch
from torch import nn

from nara.adapters.config import BitFitConfig
from nara.adapters.layer import AdapterLayer, register


@register
class BitFitLayer(AdapterLayer):
    method = "bitfit"
    adapter_names = ("bitfit_bias",)

    def __init__(self, base: nn.Linear, config: BitFitConfig) -> None:
        super().__init__(base, config)
        self.dropout_p = 0.0  # BitFit has no dropout
        self.bitfit_bias = nn.Parameter(torch.zeros(self.out_features, device=self.weight.device))

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        return out + self.bitfit_bias.to(out.dtype)

    def merged_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        return self.weight

    def merged_bias(self, cond: torch.Tensor | None) -> torch.Tensor:
        return self.bitfit_bias if self.bias is None else self.bias + self.bitfit_bias
