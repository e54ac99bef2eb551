"""The noise context: how a per-sample λ reaches every noise-aware adapter of a model.

``add_adapters`` attaches one :class:`NoiseHub` to the model (``model.nara_hub``). It owns the
*conditioners*: the modules that turn λ into what a layer needs (NaRA's hypernetworks → C(λ),
Multi-LoRA's bin index, T-LoRA's rank mask). A forward pre-hook on the model computes every
conditioner ONCE per forward pass and caches the result; the adapted layers only read the cache.

Why a cache filled by a pre-hook on the root module:
- the hypernetwork runs once per forward per conditioner, not once per layer;
- the conditioning is computed outside any checkpointed block, and the cache outlives the
  ``with`` block, so when gradient checkpointing recomputes a block during backward (usually
  after the ``with`` has exited) the layer gets the very same C. Run backward before the next
  forward of the same model (the usual training loop); the recompute uses the latest forward's C.
  Reentrant checkpointing (``use_reentrant=True``) backpropagates each recomputed block on its
  own, so there the layer recomputes C from the cached λ (same values, a fresh graph).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

NO_NOISE_MESSAGE = (
    "this model has noise-aware adapters ({methods}) but no noise level is set. Wrap the call in "
    "`with nara.noise_level(model, lam):` where lam is a float or a tensor of shape (batch,) in "
    "[0, 1] (the masked fraction, nara.diffusion.masked_fraction); nara.diffusion_loss and "
    "nara.generate do this for you"
)


class Conditioner(nn.Module):
    """Maps per-sample noise (λ, density) to what an adapter layer consumes, once per forward."""

    needs_noise: bool = True
    needs_density: bool = False

    def forward(self, lam: torch.Tensor | None, density: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _in_backward() -> bool:
    """True while autograd runs a backward pass (where checkpointed blocks are recomputed)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


class NoiseHub(nn.Module):
    """Per-model noise state: the conditioners, the λ stack and the per-forward cache."""

    def __init__(self, method: str, conditioners: dict[str, Conditioner]) -> None:
        super().__init__()
        self.method = method
        self.conditioners = nn.ModuleDict(conditioners)
        # follows model.to(...) so λ can be moved to the adapters' device without a lookup
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.needs_noise = any(c.needs_noise for c in self.conditioners.values())
        self.merged = False
        self._stack: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._cache: dict[str, torch.Tensor] | None = None
        self._cache_noise: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self._rebuild_in_backward = False

    def forward(self, x: Any) -> Any:
        """The identity: the hub holds state, not computation (keeps nn.Sequential roots working)."""
        return x

    @property
    def noise(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The innermost (λ, density) set by ``noise_level``, or (None, None)."""
        return self._stack[-1] if self._stack else (None, None)

    def compute(
        self, lam: torch.Tensor | None, density: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Run every conditioner on (λ, density): the per-forward cache."""
        if lam is None and self.needs_noise:
            raise RuntimeError(NO_NOISE_MESSAGE.format(methods=self.method))
        for key, cond in self.conditioners.items():
            if cond.needs_density and density is None:
                raise ValueError(
                    f"conditioner {key!r} uses the local mask density (input_mode 'density' or "
                    "'both') but none was given; pass noise_level(model, lam, density=...) with "
                    "nara.diffusion.local_mask_density(masked, maskable)"
                )
        return {key: cond(lam, density) for key, cond in self.conditioners.items()}

    def _fill(self) -> None:
        self._cache_noise = self.noise
        self._cache = self.compute(*self._cache_noise)
        self._rebuild_in_backward = False

    def begin_forward(self, module: nn.Module, args: Any) -> None:
        """Forward pre-hook of the adapted model: fill the cache for this forward pass."""
        if self.conditioners and not self.merged:
            self._fill()

    def lookup(self, key: str) -> torch.Tensor:
        """The cached conditioning for ``key`` (called by adapter layers in their forward)."""
        lam, _ = self.noise
        in_backward = _in_backward()
        if lam is None and self.needs_noise and not in_backward:
            # a forward outside any noise_level block (a recompute in backward is fine)
            raise RuntimeError(NO_NOISE_MESSAGE.format(methods=self.method))
        if self._cache is None:  # a submodule was called directly: no pre-hook ran
            self._fill()
        cond = self._cache[key]
        if cond.requires_grad and not torch.is_grad_enabled():
            # a no-grad forward inside a grad-enabled model call: reentrant checkpointing. Its
            # recompute backpropagates through C once per block, so it needs a fresh C graph.
            self._rebuild_in_backward = True
        elif self._rebuild_in_backward and in_backward and torch.is_grad_enabled():
            cond = self.conditioners[key](*self._cache_noise)
        return cond

    def push(self, lam: torch.Tensor, density: torch.Tensor | None) -> None:
        device = self._anchor.device
        self._stack.append((lam.to(device), None if density is None else density.to(device)))
        self._cache = None

    def pop(self) -> None:
        self._stack.pop()


def find_hub(model: nn.Module) -> NoiseHub | None:
    """The model's NoiseHub (also through wrappers such as DDP), or None for a plain model."""
    hub = getattr(model, "nara_hub", None)
    if isinstance(hub, NoiseHub):
        return hub
    return next((m for m in model.modules() if isinstance(m, NoiseHub)), None)


def as_noise_tensor(value: float | torch.Tensor, name: str) -> torch.Tensor:
    """Validate a noise level: a float or a tensor of shape () or (B,) with values in [0, 1].

    Returns float32 of shape (B,) (a float gives shape (1,), broadcast over the batch).
    Raises ValueError with the offending values otherwise.
    """
    t = torch.as_tensor(value).detach()
    if t.dim() > 1:
        raise ValueError(
            f"{name} must be a float or a tensor of shape (batch,), got shape {tuple(t.shape)}"
        )
    t = t.reshape(-1).float()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; pass one value per sample, shape (batch,)")
    bad = ~((t >= 0) & (t <= 1))  # also catches NaN
    if bool(bad.any()):
        raise ValueError(
            f"{name} must lie in [0, 1] (a masked fraction), got {t[bad][:4].tolist()}; "
            "compute it with nara.diffusion.masked_fraction"
        )
    return t


@contextmanager
def noise_level(
    model: nn.Module,
    lam: float | torch.Tensor,
    density: float | torch.Tensor | None = None,
) -> Iterator[None]:
    """Set the per-sample noise level λ for every noise-aware adapter of ``model``.

    Args:
        model: the model passed to ``add_adapters`` (or a wrapper of it). Plain models and models
            with only static adapters accept the context and ignore it.
        lam: float or tensor (B,) in [0, 1]; a float applies to every sample. A doubled batch
            (classifier-free guidance) needs a λ of the doubled size.
        density: optional local mask density, same shape; needed by NaRA's input modes
            'density' and 'both'.

    Raises:
        ValueError: λ or density outside [0, 1], of the wrong shape, or of different sizes.
    """
    lam_t = as_noise_tensor(lam, "lam")
    dens_t = None if density is None else as_noise_tensor(density, "density")
    if dens_t is not None and dens_t.numel() != lam_t.numel():
        raise ValueError(
            f"density has {dens_t.numel()} values but lam has {lam_t.numel()}; give one of each "
            "per sample"
        )
    hub = find_hub(model)
    if hub is None:
        yield
        return
    hub.push(lam_t, dens_t)
    try:
        yield
    finally:
        hub.pop()
