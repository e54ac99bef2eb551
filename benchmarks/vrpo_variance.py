"""Variance of VRPO's preference score on the embedded model: shared (antithetic) against
independent masks for the policy and the reference, and the budget split (n timesteps with one
mask each against one timestep with n masks), at the same cost.

    python scripts/make_preferences.py                        # runs/prefs/arithmetic.jsonl
    nara rl rl/embedded_arithmetic_vrpo training.max_steps=4 output_dir=runs/rl/vrpo_smoke
    python benchmarks/vrpo_variance.py --adapter runs/rl/vrpo_smoke/final
    python benchmarks/vrpo_variance.py --adapter runs/demo/nara/final --pairs 8 --repeats 40

The score of a pair is s = (B̂_π(y_w) − B̂_ref(y_w)) − (B̂_π(y_l) − B̂_ref(y_l)), π the tiny model
with the adapter, ref the same model with it switched off; its variance over --repeats seeds is
averaged over the first --pairs pairs of the file. Writes a markdown table to stdout (and
--output, if given). All four estimators are unbiased: their means agree within their
standard errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def one_timestep(model, prompts, answers, budget: int, mask_id: int, seed: int) -> torch.Tensor:
    """The ELBO with one timestep (mask count) per answer and ``budget`` masks of that count:
    VRPO's worst split, for comparison with :func:`nara.rl.elbo_estimates`."""
    from nara.diffusion.likelihood import _mask_counts, _score_rows, checked_pairs

    _, pairs = checked_pairs(model, prompts, answers, mask_id)
    gen = torch.Generator().manual_seed(seed)
    counts = _mask_counts(torch.tensor([len(a) for _, a in pairs]), 1, gen).view(-1)  # (N,)
    rows = [p for p in pairs for _ in range(budget)]
    scores = _score_rows(model, rows, counts.repeat_interleave(budget), mask_id, gen)
    return scores.view(len(pairs), budget).mean(1)


def scores(model, encoded, budget: int, mask_id: int, seed: int, split: str, shared: bool):
    """float64 (pairs,): one draw of the preference score of every pair."""
    from nara.rl import adapters_disabled, elbo_estimates

    prompts = [e.prompt_ids for e in encoded] * 2
    answers = [e.chosen_ids for e in encoded] + [e.rejected_ids for e in encoded]

    def estimate(s: int) -> torch.Tensor:
        if split == "timesteps":
            return elbo_estimates(model, prompts, answers, budget, mask_token_id=mask_id, seed=s)
        return one_timestep(model, prompts, answers, budget, mask_id, s)

    with torch.no_grad():
        policy = estimate(seed)
        with adapters_disabled(model):
            ref = estimate(seed if shared else seed + 1_000_003)
    diff = policy - ref
    n = len(encoded)
    return diff[:n] - diff[n:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="adapter folder (the policy)")
    parser.add_argument("--data", type=Path, default=Path("runs/prefs/arithmetic.jsonl"))
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--budget", type=int, default=4, help="forward passes per ELBO (n)")
    parser.add_argument("--repeats", type=int, default=16, help="seeds per estimator")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    from nara.adapters import load_adapters
    from nara.models import load_model
    from nara.rl import encode_preferences, load_preferences

    model, tokenizer, mask_id = load_model("tiny")
    model = load_adapters(model, args.adapter).eval()
    encoded = encode_preferences(tokenizer, load_preferences(args.data)[: args.pairs])
    rows = []
    for split, shared, name in [
        ("timesteps", True, f"VRPO: {args.budget} timesteps x 1 mask, shared"),
        ("timesteps", False, f"{args.budget} timesteps x 1 mask, independent"),
        ("one", True, f"1 timestep x {args.budget} masks, shared"),
        ("one", False, f"1 timestep x {args.budget} masks, independent"),
    ]:
        draws = torch.stack(
            [
                scores(model, encoded, args.budget, mask_id, seed, split, shared)
                for seed in range(args.repeats)
            ]
        )  # (repeats, pairs)
        variance = draws.var(0)  # (pairs,)
        error = (variance.sum() / args.repeats).sqrt().item() / len(encoded)  # of the mean
        rows.append((name, draws.mean().item(), error, variance.mean().item()))
    base = rows[0][3]
    lines = [
        f"Preference score on {args.pairs} pairs of {args.data}, adapter {args.adapter}, "
        f"{args.repeats} seeds",
        "",
        "| estimator | mean score ± s.e. | variance per draw | × VRPO's |",
        "|---|---|---|---|",
    ]
    for name, mean, error, variance in rows:
        ratio = variance / base if base > 0 else float("inf")
        lines.append(f"| {name} | {mean:.3f} ± {error:.3f} | {variance:.3g} | {ratio:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
