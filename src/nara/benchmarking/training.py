"""Training-step benchmarks: every adapter against PEFT's LoRA and the floor, and batch 8 vs 1.

A training step is nara's masked-diffusion loss (``nara.diffusion_loss``, pre-training form:
every token maskable, a fixed per-sample t spread over (0, 1) so noise-aware adapters see a mixed
batch, the same mask every step and variant), its backward and an AdamW step on the trainable
tensors. Reference rows:

- ``frozen base (forward)``: the loss of the frozen model, nothing to back-propagate.
- ``floor``: the same forward plus the backward of the activations with no weight gradient at
  all (every parameter frozen, the embedding output requiring grad): the least any adapter
  training must pay, since its gradients must flow back through the whole network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nara.adapters import NaRAConfig, add_adapters
from nara.benchmarking.models import TARGETS, base_model, shared_copy, variant_builders
from nara.benchmarking.options import BenchOptions
from nara.benchmarking.timing import Measurement, interleaved, paired_ratio, peak_memory
from nara.diffusion import diffusion_loss

FORWARD, FLOOR = "frozen base (forward)", "floor"
REFERENCES = {"vs_floor": FLOOR, "vs_nara_lora": "nara LoRA", "vs_peft_lora": "PEFT LoRA"}


@dataclass
class StepData:
    """One fixed batch: clean ids (B, T), all maskable, noise times t (B,)."""

    ids: torch.Tensor
    maskable: torch.Tensor
    t: torch.Tensor
    mask_token_id: int

    def select(self, i: int) -> StepData:
        """Sample i alone, a batch of one."""
        return StepData(
            self.ids[i : i + 1], self.maskable[i : i + 1], self.t[i : i + 1], self.mask_token_id
        )


def make_data(model: nn.Module, batch: int, seq: int, device: torch.device) -> StepData:
    """Random ids that avoid the mask token, with t spread evenly over [0.05, 0.95]."""
    config = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.mask_token_id, (batch, seq), generator=g)  # (B, T)
    t = torch.linspace(0.05, 0.95, batch)  # (B,)
    ones = torch.ones_like(ids, dtype=torch.bool)
    return StepData(ids.to(device), ones.to(device), t.to(device), config.mask_token_id)


def step_loss(model: nn.Module, data: StepData) -> torch.Tensor:
    """nara's diffusion loss on ``data`` with the same mask on every call (seeded generator)."""
    g = torch.Generator(device=data.ids.device).manual_seed(0)
    return diffusion_loss(
        model, data.ids, data.maskable, data.mask_token_id, t=data.t, generator=g
    ).loss


def forward_step(model: nn.Module, data: StepData) -> Callable[[], None]:
    """The frozen base: loss only (nothing requires grad)."""
    for p in model.parameters():
        p.requires_grad_(False)

    def step() -> None:
        step_loss(model, data)

    return step


def floor_step(model: nn.Module, data: StepData) -> Callable[[], None]:
    """Forward + backward of activations only: frozen weights, the embedding output requires grad."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda mod, args, out: out.requires_grad_())

    def step() -> None:
        step_loss(model, data).backward()

    return step


def train_step(model: nn.Module, batches: list[StepData]) -> Callable[[], None]:
    """One optimizer step over ``batches`` (gradient accumulation when there are several)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for data in batches:
            (step_loss(model, data) / len(batches)).backward()
        optimizer.step()

    return step


def ratios(results: dict[str, Measurement], name: str) -> dict[str, float]:
    """Paired time ratios of row ``name`` against each reference row that was measured."""
    return {
        key: round(paired_ratio(results[name], results[ref]), 4)
        for key, ref in REFERENCES.items()
        if ref in results
    }


def describe(model: nn.Module, source: str) -> dict[str, Any]:
    """The model's shape, size and origin, for the tables."""
    c = model.config
    shape = {k: getattr(c, k) for k in ("d_model", "n_heads", "n_layers", "mlp_hidden_size")}
    params = sum(p.numel() for p in model.parameters())
    return {"model": source, **shape, "vocab_size": c.vocab_size, "parameters": params}


def training_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section 1: time, tokens/s and peak memory of a training step, every variant interleaved."""
    device = torch.device(options.device)
    base, source = base_model(size, options.quick)
    base.to(device)
    data = make_data(base, options.batch, options.seq, device)
    calls = {
        FORWARD: forward_step(shared_copy(base), data),
        FLOOR: floor_step(shared_copy(base), data),
    }
    for name, build in variant_builders(options.rank, options.dropout).items():
        if options.methods is None or name in options.methods:
            calls[name] = train_step(build(shared_copy(base)), [data])
    results = interleaved(calls, warmup=options.warmup, reps=options.reps, device=device)
    peaks = {name: peak_memory(call, device) for name, call in calls.items()}
    tokens = options.batch * options.seq
    rows = {
        name: {
            "median_s": round(m.median, 5),
            "tokens_per_s": round(tokens / m.median, 1),
            "peak_mb": round(peaks[name] / 2**20, 1),
            **ratios(results, name),
            "times_s": [round(t, 5) for t in m.times],
        }
        for name, m in results.items()
    }
    return {
        **describe(base, source),
        "batch": options.batch,
        "seq": options.seq,
        "rank": options.rank,
        "dropout": options.dropout,
        "targets": TARGETS,
        "variants": rows,
    }


def batching_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section 2: NaRA, one step on a batch of B against B accumulated steps of batch 1."""
    device = torch.device(options.device)
    base, source = base_model(size, options.quick)
    base.to(device)
    data = make_data(base, options.batch, options.seq, device)

    def nara_model() -> nn.Module:
        config = NaRAConfig(
            r=options.rank,
            alpha=2.0 * options.rank,
            dropout=options.dropout,
            target_modules=TARGETS,
        )
        return add_adapters(shared_copy(base), config)

    singles = [data.select(i) for i in range(options.batch)]
    calls = {
        "batched": train_step(nara_model(), [data]),
        "one at a time": train_step(nara_model(), singles),
    }
    results = interleaved(calls, warmup=options.warmup, reps=options.reps, device=device)
    per_s = {name: options.batch / m.median for name, m in results.items()}
    return {
        **describe(base, source),
        "batch": options.batch,
        "seq": options.seq,
        "batched_samples_per_s": round(per_s["batched"], 3),
        "single_samples_per_s": round(per_s["one at a time"], 3),
        "speedup": round(1 / paired_ratio(results["batched"], results["one at a time"]), 3),
        "times_s": {name: [round(t, 5) for t in m.times] for name, m in results.items()},
    }
