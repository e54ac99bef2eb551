"""NaRA's noise embeddings and hypernetwork: C(λ) = I + η·reshape_r×r(F(e(λ))).

docs/design.md §1 (Wang et al., ICML 2026): e(λ) defaults to Gaussian Fourier features of a frozen
w ~ N(0, σ²); F is an MLP 64 → 256 → 512 → r² with SiLU between layers and a zero-initialised last
layer, so C(λ) = I at the start and NaRA begins exactly as LoRA.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nara.adapters.config import NaRAConfig
from nara.adapters.noise import Conditioner


class NoiseEmbedding(nn.Module):
    """e(λ): (n,) → (n, dim). Kinds: fourier (frozen random w), sinusoidal (fixed), learned, raw."""

    def __init__(self, kind: str, dim: int, sigma: float = 16.0) -> None:
        super().__init__()
        self.kind = kind
        self.dim = 1 if kind == "raw" else dim
        if kind == "fourier":
            # frozen, but a persistent buffer: saved with the adapter and restored on load
            self.register_buffer("freqs", torch.randn(dim // 2) * sigma)
        elif kind == "sinusoidal":
            # transformer timestep frequencies 10000^(-k/half), applied to 1000·λ
            half = dim // 2
            freqs = 1000.0 * torch.exp(-math.log(10000.0) * torch.arange(half) / half)
            self.register_buffer("freqs", freqs, persistent=False)
        elif kind == "learned":
            self.proj = nn.Sequential(nn.Linear(1, dim), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().unsqueeze(-1)  # (n, 1)
        if self.kind == "raw":
            return x
        if self.kind == "learned":
            return self.proj(x)
        angles = x * self.freqs  # (n, dim/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim)


class Hypernetwork(Conditioner):
    """C(λ) = I + η·reshape(F(e)), one r×r matrix per sample: (n,) → (n, r, r)."""

    def __init__(self, config: NaRAConfig) -> None:
        super().__init__()
        self.r, self.eta = config.r, config.eta
        mode = config.input_mode
        self.needs_density = mode in ("density", "both")

        def embedding() -> NoiseEmbedding:
            return NoiseEmbedding(config.embedding, config.embedding_dim, config.fourier_sigma)

        self.noise_embed = embedding() if mode in ("noise", "both") else None
        self.density_embed = embedding() if self.needs_density else None
        width = sum(e.dim for e in (self.noise_embed, self.density_embed) if e is not None)
        layers: list[nn.Module] = []
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        last = nn.Linear(width, self.r * self.r)
        nn.init.zeros_(last.weight)  # identity plus deviation: C = I at initialisation
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, lam: torch.Tensor | None, density: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.noise_embed is not None:
            parts.append(self.noise_embed(lam))
        if self.density_embed is not None:
            parts.append(self.density_embed(density))
        e = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (n, 64) or (n, 128)
        deviation = self.net(e).view(-1, self.r, self.r)  # (n, r, r)
        eye = torch.eye(self.r, device=deviation.device, dtype=deviation.dtype)
        return eye + self.eta * deviation


class ConstantMixer(Conditioner):
    """NaRA-C: one learned C = I + η·D (D zero-initialised), no noise input: → (1, r, r)."""

    needs_noise = False

    def __init__(self, config: NaRAConfig) -> None:
        super().__init__()
        self.eta = config.eta
        self.deviation = nn.Parameter(torch.zeros(config.r, config.r))

    def forward(self, lam: torch.Tensor | None, density: torch.Tensor | None) -> torch.Tensor:
        eye = torch.eye(self.deviation.shape[0], device=self.deviation.device)
        return (eye + self.eta * self.deviation).unsqueeze(0)


def make_mixer(config: NaRAConfig) -> Conditioner:
    """The conditioner for one NaRA sharing group."""
    return ConstantMixer(config) if config.input_mode == "constant" else Hypernetwork(config)
