"""Sampling benchmark: ``nara.generate`` with no adapter, LoRA (unmerged, merged), NaRA, Multi-LoRA.

Each call generates ``gen_length`` tokens in as many steps after a random prompt (one block,
low-confidence remasking, greedy). The conditioner row times ``NoiseHub.compute`` alone: what
NaRA adds once per denoising step to turn the batch's λ into C(λ) (its hypernetwork).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn

from nara.adapters import add_adapters, merge_adapters
from nara.benchmarking.models import adapter_config, base_model, shared_copy
from nara.benchmarking.options import BenchOptions
from nara.benchmarking.timing import interleaved, paired_ratio
from nara.benchmarking.training import describe
from nara.diffusion import generate

PROMPT_LENGTH = 32
REFERENCE = "LoRA unmerged"


def sampling_models(base: nn.Module, rank: int) -> dict[str, nn.Module]:
    """The variants in eval mode; the merged LoRA gets its own copy of the weights."""

    def adapted(name: str, model: nn.Module) -> nn.Module:
        return add_adapters(model, adapter_config(name, rank, dropout=0.0))

    return {
        "base": shared_copy(base),
        REFERENCE: adapted("nara LoRA", shared_copy(base)),
        "LoRA merged": merge_adapters(adapted("nara LoRA", copy.deepcopy(base))),
        "NaRA": adapted("NaRA", shared_copy(base)),
        "Multi-LoRA": adapted("Multi-LoRA", shared_copy(base)),
    }


def conditioner_seconds(model: nn.Module, batch: int, calls: int = 200) -> float:
    """Median time of one ``NoiseHub.compute`` (every conditioner on a batch of λ), no grad."""
    hub = model.nara_hub
    lam = torch.rand(batch, device=hub._anchor.device)
    times = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            hub.compute(lam, None)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def sampling_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section 3: time to generate, per variant, interleaved; and C(λ)'s cost per step."""
    device = torch.device(options.device)
    base, source = base_model(size, options.quick)
    base.to(device).eval()
    batch = options.sample_batch
    models = {name: m.eval() for name, m in sampling_models(base, options.rank).items()}
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, base.config.mask_token_id, (batch, PROMPT_LENGTH), generator=g)
    prompt = prompt.to(device)
    gen, steps = options.gen_length, options.gen_length

    def call(model: nn.Module) -> Any:
        mask_id = base.config.mask_token_id
        return lambda: generate(model, prompt, mask_token_id=mask_id, gen_length=gen, steps=steps)

    results = interleaved(
        {name: call(m) for name, m in models.items()},
        warmup=1,
        reps=options.sample_reps,
        device=device,
    )
    rows = {
        name: {
            "median_s": round(m.median, 4),
            "ms_per_step": round(1000 * m.median / steps, 3),
            "vs_lora_unmerged": round(paired_ratio(m, results[REFERENCE]), 4),
            "times_s": [round(t, 4) for t in m.times],
        }
        for name, m in results.items()
    }
    cond_s = conditioner_seconds(models["NaRA"], batch)
    nara_step_s = results["NaRA"].median / steps
    return {
        **describe(base, source),
        "batch": batch,
        "prompt_length": PROMPT_LENGTH,
        "gen_length": gen,
        "steps": steps,
        "rank": options.rank,
        "variants": rows,
        "conditioner_us_per_step": round(1e6 * cond_s, 1),
        "conditioner_share_of_nara_step": round(cond_s / nara_step_s, 5),
    }
