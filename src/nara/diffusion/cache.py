"""Key/value caching for the samplers: prefix and dual cache, aware of the noise level.

A masked-diffusion model attends bidirectionally, so no key/value is exactly reusable once any
token changes. Caching is an approximation that bets on the far context changing little while a
block is decoded (Fast-dLLM's prefix and dual cache, docs/cache.md):

- At the first step of every block the sampler runs the whole sequence (its logits are exactly
  the uncached ones) and records every layer's keys/values.
- ``"prefix"``: later steps of the block feed only the block and everything after it; their
  queries attend to the recorded keys/values of the positions before the block plus their own
  fresh ones.
- ``"dual"``: later steps feed only the block; the recorded keys/values of the masked suffix are
  reused too, and the block's slots are overwritten with fresh ones at every step.

Noise-aware adapters (NaRA, Multi-LoRA, T-LoRA, ...) make their weights depend on λ, the masked
fraction, which falls at every step; recorded keys/values carry the λ they were computed at.
They are refreshed at every block start and, with ``tolerance``, for each sample whose λ has
moved by more than ``tolerance`` since its entries were recorded (that sample's step is then a
whole-sequence pass). Each sample's decision is its own, so a batch decodes as its rows alone.

The model side is small: nara's LLaDA and Dream take ``kv_cache=`` (:class:`KVCache`), start
their rotary positions at ``kv_cache.start`` and let each layer splice its fresh keys/values
through ``kv_cache.layer(i)``. LLaDA's block sampler uses it on either model; Dream's sampler
decodes the whole answer as one block, so only ``"prefix"`` (the prompt's entries) applies there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import partial

import torch

from nara.diffusion._model import denoise

CACHE_MODES = ("prefix", "dual")


def check_cache_settings(cache: str | None, tolerance: float | None) -> None:
    """Raise ValueError, naming the value and the fix, for a cache mode or tolerance
    :func:`nara.generate` refuses (callable before a model is loaded)."""
    if cache is not None and cache not in CACHE_MODES:
        raise ValueError(f"cache must be None, 'prefix' or 'dual', got {cache!r}")
    if tolerance is None:
        return
    if cache is None:
        raise ValueError(
            f"cache_tolerance={tolerance} needs a cache; pass cache='prefix' or 'dual', or drop "
            "cache_tolerance"
        )
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not (math.isfinite(tolerance) and tolerance >= 0)
    ):
        raise ValueError(
            f"cache_tolerance must be a finite number >= 0 (the largest change of λ before a "
            f"sample's cache is recomputed; 0 = recompute whenever λ changes), got {tolerance!r}"
        )


def check_cache_model(model: torch.nn.Module) -> None:
    """Raise ValueError unless ``model`` can run with a KV cache: nara's native LLaDA or Dream,
    without virtual tokens (prompt tuning, P-tuning shift every position) or a trajectory router
    (it reads the prompt's hidden states, which a cached step does not compute)."""
    from nara.adapters.noise import find_hub
    from nara.models.dream import DreamModel
    from nara.models.llada import LLaDAModelLM

    if not any(isinstance(m, (LLaDAModelLM, DreamModel)) for m in model.modules()):
        raise ValueError(
            f"cache= needs nara's native LLaDA or Dream (nara.load_model of such a checkpoint); "
            f"{type(model).__name__} has no KV cache support: use cache=None"
        )
    hub = find_hub(model)
    if hub is not None and (hasattr(hub, "prompt") or "router" in hub.conditioners):
        what = "virtual tokens" if hasattr(hub, "prompt") else "a trajectory router"
        raise ValueError(
            f"cache= does not work with {hub.method} ({what} need the whole sequence at every "
            "step); use cache=None with this adapter"
        )


def _rows(t: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or rows is None else t[rows]


class KVCache:
    """Every layer's keys/values over the whole sequence, owned by one sampling call.

    Args:
        mode: ``"prefix"`` or ``"dual"`` (module docstring).
        tolerance: None = refresh only at block starts; else also refresh a sample whose λ moved
            by more than this since its entries were recorded.

    Attributes:
        start: sequence position of the first token of the current forward (the model reads it).
        refreshes: whole-sequence passes run so far, counted per sample (a statistic).
    """

    def __init__(self, mode: str, tolerance: float | None = None) -> None:
        check_cache_settings(mode, tolerance)
        self.mode, self.tolerance = mode, tolerance
        self.start = 0
        self.refreshes = 0
        self._keys: dict[int, torch.Tensor] = {}  # layer -> (B, H_kv, S, D)
        self._values: dict[int, torch.Tensor] = {}
        self._lam: torch.Tensor | None = None  # (B,) λ of each row's entries; None = none valid
        self._end: int | None = None  # end of the fed window; None = recording a whole pass
        self._rows: torch.Tensor | None = None  # rows of this forward; None = all

    def begin_block(self) -> None:
        """Invalidate every entry: the next forward records the whole sequence."""
        self._lam = None

    def layer(self, index: int) -> Callable[[torch.Tensor, torch.Tensor], tuple]:
        """Layer ``index``'s splice: fresh (k, v) (B, H_kv, T, D) -> the sequence's (B, H_kv, S, D)."""
        return partial(self._splice, index)

    def _splice(
        self, index: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows
        if self._end is None:  # a whole-sequence pass: record
            if rows is None:
                self._keys[index], self._values[index] = k, v
            else:
                self._keys[index][rows], self._values[index][rows] = k, v
            return k, v
        keys, values = self._keys[index], self._values[index]
        if rows is not None:
            keys, values = keys[rows], values[rows]  # copies; the window is rewritten each step
        keys[:, :, self.start : self._end] = k  # the fed window's slots hold fresh entries
        values[:, :, self.start : self._end] = v
        return keys, values

    def _stale(self, lam: torch.Tensor) -> torch.Tensor:
        """bool (B,): rows whose entries must be recomputed this step."""
        if self._lam is None:
            return torch.ones_like(lam, dtype=torch.bool)
        if self.tolerance is None:
            return torch.zeros_like(lam, dtype=torch.bool)
        return (lam - self._lam).abs() > self.tolerance

    def logits(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        lam: torch.Tensor,
        density: torch.Tensor,
        prompt: torch.Tensor,
        start: int,
        end: int,
    ) -> torch.Tensor:
        """Logits (B, end − start, V) of the block [start, end) of ``x`` (B, S), as
        :func:`~nara.diffusion._model.denoise` gives them, with cached keys/values where valid.

        Stale rows (:meth:`_stale`) run the whole sequence and re-record their entries; the
        others feed the window: the block (and, for ``"prefix"``, everything after it) from the
        first logit the block's predictions are read from, ``start`` for aligned models,
        ``start − 1`` for shifted ones (Dream).
        """
        from nara.models.families import logit_positions

        first = int(logit_positions(model, torch.tensor(start)))
        window_end = x.shape[1] if self.mode == "prefix" else end

        def forward(rows: torch.Tensor | None, record: bool) -> torch.Tensor:
            # one model call on rows (None = all): a recording whole pass or the window pass
            self.start, self._end = (0, None) if record else (first, window_end)
            self._rows = rows
            ids = x if record else x[:, first:window_end]
            inputs = (ids, attention_mask, lam, density, prompt)
            try:
                logits = denoise(model, *(_rows(t, rows) for t in inputs), kv_cache=self)
            finally:
                self.start, self._end, self._rows = 0, None, None
            if not record:
                return logits[:, start - first : end - first]
            if self._lam is None or rows is None:
                self._lam = lam.clone()
            else:
                self._lam[rows] = lam[rows]
            self.refreshes += lam.shape[0] if rows is None else int(rows.sum())
            return logits[:, start:end]

        stale = self._stale(lam)  # (B,)
        if bool(stale.all()) or not bool(stale.any()):
            return forward(None, record=bool(stale.all()))
        fresh, cached = forward(stale, record=True), forward(~stale, record=False)
        out = cached.new_empty(x.shape[0], *cached.shape[1:])
        out[stale], out[~stale] = fresh, cached
        return out
