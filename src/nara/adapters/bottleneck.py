"""Bottleneck adapters (Houlsby et al., 2019; the series and parallel forms of LLM-Adapters).

On a targeted linear (the attention output projection and the MLP down projection by default,
i.e. on the attention and MLP outputs) with base output h = x·Wᵀ + b:

- series (Houlsby):  y = h + s·U·f(D·h̃)   the adapter reads the layer's output;
- parallel:          y = h + s·U·f(D·x̃)   the adapter runs beside the layer, on its input;

x̃, h̃ are the dropped-out copies, f the nonlinearity, D (r, ·) Kaiming-uniform with a zero bias,
U (d_out, r) and its bias zero-initialised, so the model starts unchanged. The update is not
linear in x (f sits in the middle), so it cannot be merged into W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import BottleneckConfig
from nara.adapters.layer import AdapterLayer, register

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


@register
class BottleneckLayer(AdapterLayer):
    method = "bottleneck"
    reads_base_weight = True
    adapter_names = ("adapter_down", "adapter_down_bias", "adapter_up", "adapter_up_bias")
    merge_refusal = (
        "the adapter applies a nonlinearity, so it is not a weight update; keep it unmerged"
    )

    def __init__(self, base: nn.Linear, config: BottleneckConfig) -> None:
        super().__init__(base, config)
        self.series = config.variant == "series"
        self.activation = _ACTIVATIONS[config.nonlinearity]
        width = self.out_features if self.series else self.in_features
        self.adapter_down = self._new(config.r, width)
        self.adapter_down_bias = self._new(config.r, zero=True)
        self.adapter_up = self._new(self.out_features, config.r, zero=True)
        self.adapter_up_bias = self._new(self.out_features, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        z = out if self.series else x
        if self.dropout_p and self.training:
            z = F.dropout(z, self.dropout_p, training=True)
        h = self.activation(
            F.linear(z.to(self.adapter_down.dtype), self.adapter_down, self.adapter_down_bias)
        )
        delta = F.linear(h, self.adapter_up, self.adapter_up_bias)
        return out + (self.scaling * delta).to(out.dtype)
