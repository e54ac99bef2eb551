"""Sampling with a key/value cache: speed (tokens/s) and how far cached logits drift (KL).

    python benchmarks/sampling_cache.py                      # both parts (about 20 min on 2 CPUs)
    python benchmarks/sampling_cache.py --quick              # small shapes, about a minute
    python benchmarks/sampling_cache.py --only kl --json /tmp/cache.json

Speed: ``nara.generate`` with ``cache`` None / "prefix" / "dual", with and without
``threshold=0.9``, after a 64-token random prompt, blocks of 32, one token per step, on a random
LLaDA (d_model 512, 8 layers) with a NaRA adapter and on the embedded tiny model; and Dream's
sampler (the answer as one block) with ``cache`` None / "prefix" after a ``--dream-prompt``-token
prompt on a random Dream of the same shapes with NaRA; tokens/s per setting, timed interleaved
(nara.benchmarking.timing).

Drift: along the uncached greedy trajectory of the embedded model on corpus prompts, each step's
block logits are computed uncached and from each cache (recorded at the block start, refreshed
per its tolerance); KL(uncached ‖ cached) is averaged over the block's masked positions, per λ
range (row "λ only": entries of the current tokens computed at the block start's λ, so only the
adapter's change with λ is stale; zero for static adapters), for no adapter and for LoRA, NaRA,
Multi-LoRA and T-LoRA with random nonzero weights scaled to the same strength (KL(base ‖ adapted)
≈ ``--strength`` on all-masked answers).
docs/cache.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import torch
from torch import nn

from nara.adapters import NaRAConfig, add_adapters
from nara.benchmarking.models import adapter_config, base_model, shared_copy
from nara.benchmarking.timing import interleaved, machine_info
from nara.diffusion import generate, local_mask_density, masked_fraction
from nara.diffusion._model import denoise
from nara.diffusion.cache import KVCache
from nara.models import DreamModel, LLaDAModelLM, tiny_config, tiny_dream_config

MID = {
    "d_model": 512, "n_heads": 8, "n_kv_heads": 8, "n_layers": 8, "mlp_hidden_size": 1536,
    "vocab_size": 1024, "embedding_size": 1024, "mask_token_id": 1023, "eos_token_id": 1022,
    "pad_token_id": 1022, "max_sequence_length": 512, "rope_theta": 10000.0,
}  # fmt: skip
QUICK_MID = {**MID, "d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2}
DREAM_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # Dream's names of the same targets
METHODS = ("nara LoRA", "NaRA", "Multi-LoRA", "T-LoRA")
MODES = (None, "prefix", "dual")
LAMBDA_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)
LAMBDA_ONLY = ("λ only", None)  # the drift row of λ staleness alone


# ----------------------------------------------------------------------------- speed


def tokens_per_second(
    model: nn.Module,
    lengths: list[int],
    thresholds: list[float | None],
    reps: int,
    block: int | None = 32,
    prompt_len: int = 64,
    modes: tuple = MODES,
) -> list[dict[str, Any]]:
    """Rows (gen_length, threshold, cache, tokens/s, speed-up over cache None) for one model;
    ``block`` None = the model family's sampler with the answer as one block (Dream's)."""
    mask_id = model.config.mask_token_id
    prompt = torch.randint(0, mask_id, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    rows = []
    for gen in lengths:
        for threshold in thresholds:
            options = {
                "mask_token_id": mask_id,
                "gen_length": gen,
                "steps": gen,
                "block_length": None if block is None else min(block, gen),
                "threshold": threshold,
            }
            calls = {
                mode: lambda mode=mode, options=options: generate(
                    model, prompt, cache=mode, **options
                )
                for mode in modes
            }
            times = interleaved(calls, warmup=0, reps=reps, device=torch.device("cpu"))
            for mode in modes:
                rows.append(
                    {
                        "gen_length": gen,
                        "threshold": threshold,
                        "cache": mode or "none",
                        "tokens_per_s": round(gen / times[mode].median, 2),
                        "speedup": round(times[None].median / times[mode].median, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def dream_model(quick: bool) -> nn.Module:
    """A random Dream with MID's shapes (QUICK_MID's with ``quick``)."""
    shape = QUICK_MID if quick else MID
    return DreamModel(
        tiny_dream_config(
            hidden_size=shape["d_model"], num_hidden_layers=shape["n_layers"],
            num_attention_heads=shape["n_heads"], num_key_value_heads=shape["n_kv_heads"],
            intermediate_size=shape["mlp_hidden_size"], vocab_size=shape["vocab_size"],
            mask_token_id=shape["mask_token_id"], eos_token_id=shape["eos_token_id"],
            pad_token_id=shape["pad_token_id"], bos_token_id=shape["eos_token_id"],
            max_position_embeddings=1024,
        )
    )  # fmt: skip


def dream_nara(rank: int) -> NaRAConfig:
    """The mid model's NaRA adapter, on Dream's module names."""
    config = adapter_config("NaRA", rank, 0.0)
    config.target_modules = DREAM_LINEARS
    return config


# ----------------------------------------------------------------------------- drift


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per position, float64 (…, V) -> (…)."""
    logp, logq = p_logits.double().log_softmax(-1), q_logits.double().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def _answer_logits(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    answer = torch.zeros_like(x, dtype=torch.bool)
    answer[:, p:] = True
    masked = (x == model.config.mask_token_id) & answer
    lam, dens = masked_fraction(masked, answer), local_mask_density(masked, answer)
    return denoise(model, x, mask, lam, dens, mask.bool() & ~answer)[:, p:]


def calibrate(model: nn.Module, base: nn.Module, batch: tuple, target: float) -> float:
    """Scale the adapter's random trainable weights so that KL(base ‖ adapted), averaged over
    the answer positions of ``batch`` (all masked), is ``target``; returns the scale."""
    x, mask, p = batch
    params = [q for q in model.parameters() if q.requires_grad]
    gen = torch.Generator().manual_seed(1)
    directions = [torch.randn(q.shape, generator=gen) for q in params]
    reference = _answer_logits(base, x, mask, p)

    def strength(scale: float) -> float:
        for q, d in zip(params, directions):
            q.data = d * scale
        return float(_kl(reference, _answer_logits(model, x, mask, p)).mean())

    low, high = 1e-4, 10.0
    for _ in range(16):  # bisection on a log scale: the scale within 1 %
        mid = math.sqrt(low * high)
        low, high = (mid, high) if strength(mid) < target else (low, mid)
    strength(math.sqrt(low * high))
    return math.sqrt(low * high)


def drift(
    model: nn.Module, batch: tuple, gen: int, block: int, tolerances: list[float | None]
) -> dict[str, Any]:
    """Mean KL(uncached ‖ cached) of the block's masked positions per λ range, per cache setting,
    along the uncached greedy trajectory; and the share of sample-steps that were refreshed."""
    x0, mask, p = batch
    mask_id = model.config.mask_token_id
    out = generate(
        model, x0, mask, mask_token_id=mask_id, gen_length=gen, steps=gen, block_length=block,
        return_history=True,
    )  # fmt: skip
    states = [torch.cat([x0, torch.full_like(out.sequences, mask_id)], 1), *out.history[:-1]]
    full_mask = torch.cat([mask, torch.ones_like(out.sequences)], 1)
    answer = torch.zeros_like(states[0], dtype=torch.bool)
    answer[:, p:] = True
    settings = [(mode, tol) for mode in ("prefix", "dual") for tol in tolerances]
    caches = {s: KVCache(*s) for s in settings}
    sums = {s: [[0.0, 0] for _ in LAMBDA_EDGES[1:]] for s in [*settings, LAMBDA_ONLY]}
    for step, x in enumerate(states):
        start = p + (step // block) * block
        masked = (x == mask_id) & answer
        lam, dens = masked_fraction(masked, answer), local_mask_density(masked, answer)
        if step % block == 0:
            for cache in caches.values():
                cache.begin_block()
            lam0, dens0 = lam, dens
        args = (model, x, full_mask, lam, dens, full_mask.bool() & ~answer)
        exact = denoise(*args)[:, start : start + block]
        todo = masked[:, start : start + block]  # (B, L)
        bins = torch.bucketize(lam, torch.tensor(LAMBDA_EDGES[1:-1]), right=True)  # (B,)
        cached = {s: cache.logits(*args, start, start + block) for s, cache in caches.items()}
        # λ staleness alone: entries of the current tokens, recorded at the block start's λ
        fresh = KVCache("dual")
        fresh.begin_block()
        fresh.logits(model, x, full_mask, lam0, dens0, args[-1], start, start + block)
        cached[LAMBDA_ONLY] = fresh.logits(*args, start, start + block)
        for s, logits in cached.items():
            kl = _kl(exact, logits)  # (B, L)
            for row in range(x.shape[0]):
                if todo[row].any():
                    cell = sums[s][int(bins[row])]
                    cell[0] += float(kl[row][todo[row]].sum())
                    cell[1] += int(todo[row].sum())
    sample_steps = len(states) * x0.shape[0]
    result = {}
    for (mode, tol), cells in sums.items():
        by_lam = [round(total / n, 6) if n else None for total, n in cells]
        mean = sum(t for t, _ in cells) / max(sum(n for _, n in cells), 1)
        row = {"mean_kl": round(mean, 6), "kl_by_lambda": by_lam}
        if (mode, tol) in caches:
            row["refreshed"] = round(caches[(mode, tol)].refreshes / sample_steps, 3)
        result[f"{mode} tol={tol}"] = row
    return result


def corpus_batch(tokenizer: Any, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """n left-padded prompts of the embedded model's corpus families (seed 1000: not trained)."""
    from nara.data.collate import encode_prompt_batch
    from nara.data.corpus import pretraining_corpus

    prompts = [r["prompt"] for r in pretraining_corpus(n, seed=1000)]
    ids, mask = encode_prompt_batch(tokenizer, prompts, chat_template="never")
    return ids, mask, ids.shape[1]


def drift_table(args: argparse.Namespace) -> dict[str, Any]:
    from nara.models import load_model

    loaded = load_model("tiny", dtype=torch.float32)
    base = loaded.model.eval()
    batch = corpus_batch(loaded.tokenizer, args.prompts)
    x, mask, p = batch
    masked = torch.cat([x, torch.full((x.shape[0], args.kl_gen), base.config.mask_token_id)], 1)
    calib = (masked, torch.cat([mask, torch.ones(x.shape[0], args.kl_gen, dtype=mask.dtype)], 1), p)
    tolerances = [None, *args.tolerances]
    table = {"none": drift(base, batch, args.kl_gen, args.kl_block, tolerances)}
    print(json.dumps({"none": table["none"]}), flush=True)
    for name in METHODS:
        model = add_adapters(shared_copy(base), adapter_config(name, args.rank, 0.0)).eval()
        scale = calibrate(model, base, calib, args.strength)
        table[name] = {"weight_scale": round(scale, 5)}
        table[name].update(drift(model, batch, args.kl_gen, args.kl_block, tolerances))
        print(json.dumps({name: table[name]}), flush=True)
    return table


# ----------------------------------------------------------------------------- main


def _threshold(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and lengths")
    parser.add_argument("--only", choices=("speed", "kl"), help="one part only")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: shared cores)"
    )
    parser.add_argument("--reps", type=int, default=1, help="timed rounds per setting")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["mid", "embedded", "dream"],
        choices=("mid", "embedded", "dream"),
    )
    parser.add_argument(
        "--dream-prompt", type=int, default=256, help="prompt tokens of the Dream speed rows"
    )
    parser.add_argument(
        "--dream-lengths",
        type=int,
        nargs="+",
        default=[64],
        help="answer lengths of the Dream rows",
    )
    parser.add_argument(
        "--lengths", type=int, nargs="+", help="answer lengths (default 64 128 256)"
    )
    parser.add_argument(
        "--thresholds",
        type=_threshold,
        nargs="+",
        default=[None, 0.9],
        help="'none' and/or confidence thresholds (random weights never reach 0.9)",
    )
    parser.add_argument("--rank", type=int, default=8, help="adapter rank")
    parser.add_argument("--prompts", type=int, default=8, help="prompts in the drift batch")
    parser.add_argument("--kl-gen", type=int, default=32, help="answer length of the drift run")
    parser.add_argument("--kl-block", type=int, default=8, help="block length of the drift run")
    parser.add_argument(
        "--tolerances", type=float, nargs="*", default=[0.1, 0.05], help="λ tolerances to add"
    )
    parser.add_argument(
        "--strength", type=float, default=0.1, help="KL(base ‖ adapted) of every adapter"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, Any] = {"machine": machine_info(torch.device("cpu"))}
    print(json.dumps(results["machine"]), flush=True)
    with torch.no_grad():
        if args.only in (None, "speed"):
            lengths = args.lengths or ([32, 64] if args.quick else [64, 128, 256])
            speed = {"lengths": lengths, "thresholds": args.thresholds, "reps": args.reps}
            if "mid" in args.sizes:
                shape = QUICK_MID if args.quick else MID
                mid = LLaDAModelLM(tiny_config(**shape))
                mid = add_adapters(mid, adapter_config("NaRA", 32, 0.0)).eval()
                results["speed_mid_nara"] = tokens_per_second(mid, **speed)
            if "embedded" in args.sizes:
                tiny = base_model("tiny")[0].eval()
                results["speed_embedded"] = tokens_per_second(tiny, **speed)
            if "dream" in args.sizes:  # Dream's sampler: one block, prefix cache only
                dream = add_adapters(dream_model(args.quick), dream_nara(32)).eval()
                results["speed_dream_nara"] = tokens_per_second(
                    dream, **{**speed, "thresholds": [None], "lengths": args.dream_lengths},
                    block=None, prompt_len=args.dream_prompt, modes=(None, "prefix"),
                )  # fmt: skip
        if args.only in (None, "kl"):
            if args.quick:
                args.prompts, args.kl_gen, args.kl_block = 2, 16, 8
            results["kl"] = drift_table(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
