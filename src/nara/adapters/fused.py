"""Shared-input groups: q, k and v read one tensor, so their A projections run as one matmul.

In a transformer block the query, key and value projections all read the same normed hidden
state. Three adapters then compute x·A_qᵀ, x·A_kᵀ and x·A_vᵀ: three skinny matmuls forward and
six backward. A group computes x·[A_q; A_k; A_v]ᵀ once (one matmul forward, two backward: the
stacked A's gradient and x's) and hands each member its slice. Parameters, names and the save
format stay per module; the stacked A is a ``torch.cat`` of the members' tensors each forward.

Which layers share an input is learned, not assumed from names: the candidates are the LoRA-core
adapters of one parent module with the same input width. The group first watches one forward
pass; the candidates that received the very same tensor become members. Afterwards the first
member called on a tensor computes every member's slice, and a member takes its slice only if it
is called on that same tensor object, unmodified (version counter), in the same grad mode, with
its A unchanged; anything else falls back to its own projection and re-learns. Layers that
apply dropout (p > 0 in training) draw their own mask, so their inputs differ: they always
project alone, as PEFT does. No decision is taken during backward, so the recompute of a
checkpointed block runs the same graph as its forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.noise import _in_backward


class _Slices(NamedTuple):
    """One input's projections, waiting to be taken by the other members."""

    x: torch.Tensor
    x_version: int
    grad_enabled: bool
    a_versions: tuple[int, ...]
    parts: dict[int, torch.Tensor]  # id(layer) → (..., r) slice


class SharedInputGroup:
    """Candidate layers (model order) whose A projections may run as one matmul."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers
        self.members: list[nn.Module] | None = None  # None while watching a round of calls
        self._seen: dict[int, torch.Tensor] = {}
        self._pending: _Slices | None = None

    def project(
        self, layer: nn.Module, x: torch.Tensor, alone: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """x·Aᵀ for ``layer`` (B, ..., r), from the group's matmul when it shares x."""
        in_backward = _in_backward()  # a checkpointed block's recompute: change nothing
        if self.members is None:
            return self._watch(layer, x, alone, in_backward)
        if not any(m is layer for m in self.members):
            return alone(x)
        taken = self._take(layer, x)
        if taken is not None:
            return taken
        if not in_backward and self._pending is not None and self._pending.parts:
            # a member came with another input while slices wait: the sharing changed
            self.members, self._pending = None, None
            return self._watch(layer, x, alone)
        return self._compute(layer, x)

    def _take(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        p = self._pending
        if (
            p is None
            or p.x is not x
            or p.x_version != x._version
            or p.grad_enabled != torch.is_grad_enabled()
            or p.a_versions != tuple(m.lora_A._version for m in self.members)
            or id(layer) not in p.parts
        ):
            return None
        part = p.parts.pop(id(layer))
        if not p.parts:
            self._pending = None  # release x
        return part

    def _compute(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        a = torch.cat([m.lora_A for m in self.members])  # (Σr, d_in)
        h = F.linear(x if x.dtype == a.dtype else x.to(a.dtype), a)  # (B, ..., Σr)
        parts = dict(
            zip(
                (id(m) for m in self.members),
                h.split([m.lora_A.shape[0] for m in self.members], dim=-1),
            )
        )
        own = parts.pop(id(layer))
        versions = tuple(m.lora_A._version for m in self.members)
        self._pending = _Slices(x, x._version, torch.is_grad_enabled(), versions, parts)
        return own

    def _watch(
        self,
        layer: nn.Module,
        x: torch.Tensor,
        alone: Callable[[torch.Tensor], torch.Tensor],
        in_backward: bool,
    ) -> torch.Tensor:
        """Project alone while recording inputs. The sharers become members when a layer is
        called again outside backward (the next forward), so a checkpointed block's recompute
        builds the same graph as its forward did."""
        if not in_backward:
            if id(layer) in self._seen:
                self._decide()
                return self.project(layer, x, alone)
            self._seen[id(layer)] = x
        return alone(x)

    def _decide(self) -> None:
        by_input: dict[int, list[nn.Module]] = {}
        for m in self.layers:
            if id(m) in self._seen:
                by_input.setdefault(id(self._seen[id(m)]), []).append(m)
        largest = max(by_input.values(), key=len, default=[])
        self.members = largest if len(largest) > 1 else []
        self._seen = {}


def group_shared_inputs(layers: dict[str, nn.Module]) -> None:
    """Give each LoRA-core layer (LoRA, DoRA, NaRA, NaRA-DoRA, T-LoRA) its candidate group:
    the layers of the same parent module with the same input width and A dtype."""
    from nara.adapters.lora import LoRALayer  # lora.py calls into this module at run time

    groups: dict[tuple[str, int, torch.dtype], list[nn.Module]] = {}
    for name, layer in layers.items():
        if isinstance(layer, LoRALayer):
            key = (name.rpartition(".")[0], layer.in_features, layer.lora_A.dtype)
            groups.setdefault(key, []).append(layer)
    for members in groups.values():
        if len(members) > 1:
            group = SharedInputGroup(members)
            for layer in members:
                object.__setattr__(layer, "_shared_input", group)  # a reference, no submodule
