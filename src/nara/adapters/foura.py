"""FouRA (Borse et al., 2024): low-rank adaptation in the frequency domain, with a rank gate.

For one token x ∈ ℝ^d_in of a sample at noise level λ (docs: the formulas the tests check):

    x̂ = F_in·x̃                        unitary DFT along the feature dimension (ℂ^d_in)
    h = A·x̂                            A (r, d_in) real, Kaiming-uniform: h ∈ ℂ^r
    g = gate(σ(G·|h| + b + U·e(λ)))     rank gate ∈ [0, 1]^r, per token and per sample
    Δy = s·Re(F_out⁻¹·B·(g ⊙ h))       B (d_out, r) real, zero-initialised
    y = x·Wᵀ + bias + Δy

|h| is the modulus of the low-rank frequency features (the gate's input condition), e(λ) nara's
noise embedding (the noise condition, one conditioner per layer in the NoiseHub, computed once per
forward), G (r, r) and U (r, dim e) start at zero and b at ``gate_init``, so every rank is open at
the start and, B being zero, the model starts unchanged. ``gate="hard"`` rounds g to a 0/1 rank
mask in the forward pass and lets gradients through the sigmoid (straight-through estimator);
``"soft"`` uses the sigmoid itself. The paper's gate is a learned, input-dependent rank mask; this
one also reads λ, the diffusion noise level, and its exact form is the one written above.

Computation: F is linear, so A·F_in = DFT of A's rows and F_out⁻¹·B = inverse DFT of B's
columns; the layer transforms A and B once per forward instead of every token, and runs the rest
as real matrix products (real and imaginary parts), which also keeps bf16 autocast working.

Merging is refused: g depends on each token's input, so ΔW differs per token; no single weight
reproduces the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import FouRAConfig
from nara.adapters.hyper import NoiseEmbedding
from nara.adapters.layer import AdapterLayer, per_sample, register
from nara.adapters.noise import Conditioner

_EPS = 1e-12  # inside |h| = sqrt(re² + im² + ε): a finite gradient where h = 0


class GateNoise(Conditioner):
    """λ (n,) → the noise term U·e(λ) (n, r) of one layer's gate logits; U starts at zero."""

    def __init__(self, config: FouRAConfig) -> None:
        super().__init__()
        self.embed = NoiseEmbedding(config.embedding, config.embedding_dim)
        self.proj = nn.Linear(self.embed.dim, config.r, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, lam: torch.Tensor, density: torch.Tensor | None) -> torch.Tensor:
        return self.proj(self.embed(lam))


@register
class FouRALayer(AdapterLayer):
    method = "foura"
    adapter_names = ("foura_A", "foura_B", "gate_weight", "gate_bias")
    merge_refusal = (
        "its rank gate depends on each token's input, so the update is not one weight matrix; "
        "keep the adapters unmerged"
    )

    def __init__(self, base: nn.Linear, config: FouRAConfig) -> None:
        super().__init__(base, config)
        self.hard = config.gate == "hard"
        self.foura_A = self._new(config.r, self.in_features)
        self.foura_B = self._new(self.out_features, config.r, zero=True)
        self.gate_weight = self._new(config.r, config.r, zero=True)
        self.gate_bias = nn.Parameter(
            torch.full((config.r,), float(config.gate_init), device=self.weight.device)
        )

    @classmethod
    def conditioners(
        cls, config: FouRAConfig, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        keys = {name: name.replace(".", "__") for name in names}
        return {key: GateNoise(config) for key in keys.values()}, keys

    def gate(self, h_abs: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """g from |h| (B, ..., r) and the noise term (n, r): soft, or hard with straight-through."""
        noise = cond[0] if cond.shape[0] == 1 else per_sample(cond, h_abs)
        soft = torch.sigmoid(F.linear(h_abs, self.gate_weight, self.gate_bias) + noise)
        if not self.hard:
            return soft
        return (soft > 0.5).to(soft.dtype) + soft - soft.detach()

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        a_hat = torch.fft.fft(self.foura_A, dim=-1, norm="ortho")  # A·F_in (r, d_in)
        b_hat = torch.fft.ifft(self.foura_B, dim=0, norm="ortho")  # F_out⁻¹·B (d_out, r)
        xa = xd if xd.dtype == a_hat.real.dtype else xd.to(a_hat.real.dtype)
        h_re, h_im = F.linear(xa, a_hat.real), F.linear(xa, a_hat.imag)  # h (B, ..., r)
        g = self.gate(torch.sqrt(h_re.square() + h_im.square() + _EPS), cond)
        delta = F.linear(g * h_re, b_hat.real) - F.linear(g * h_im, b_hat.imag)  # Re(·)
        return out + (self.scaling * delta).to(out.dtype)
