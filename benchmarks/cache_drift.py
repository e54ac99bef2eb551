"""Cache drift of adapters that really depend on λ: the mechanism test's teachers and students.

    python benchmarks/cache_drift.py --json /tmp/drift.json   # about 5 min of CPU time (1 thread)
    python benchmarks/cache_drift.py --steps 10 --teachers smooth --students lora  # smoke test

The random adapters of ``benchmarks/sampling_cache.py --only kl`` barely change with λ. Here each
adapter's λ-dependence is learned or built in. For each teacher of the mechanism test
(src/nara/experiments/mechanism.py: the base model + ΔW(λ) = B·R(θ(λ))·A on q/k/v/attn_out with
‖ΔW‖₂ = 0.5·‖W‖₂; ``smooth``: θ = πλ/2, ``step``: θ jumps from 0 to π/2 above λ = 0.5,
``control``: θ = 0, a static update) the rows are the teacher itself (a NaRA layer whose C(λ) is
the rotation) and the students of configs/experiments/mechanism.yaml distilled from it
(``--steps`` updates of the mechanism test's recipe, seed ``--seed``): LoRA, NaRA at η = 1,
Multi-LoRA, T-LoRA.

Per adapter: its λ-sensitivity, KL(model at λ = 0.75 ‖ at λ = 0.25) on the drift prompts with
all-masked answers (0 for a static adapter), then the drift of
``sampling_cache.drift``: along the uncached greedy trajectory, KL(uncached ‖ cached) of each
step's block logits averaged over its masked positions, for prefix and dual without and with λ
tolerances, and "λ only" (entries of the current tokens recorded at the block start's λ: the
staleness that comes from λ alone). Default geometry: 24 answer tokens in blocks of 8, so every
block straddles a λ bin edge (0.75, 0.5, 0.25) — the case where a step in λ lands inside a block.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from sampling_cache import _kl, corpus_batch, drift

from nara.benchmarking.timing import machine_info
from nara.diffusion._model import denoise

CONFIG = Path(__file__).parents[1] / "configs" / "experiments" / "mechanism.yaml"


def lambda_sensitivity(
    model: torch.nn.Module, batch: tuple, gen: int, high: float = 0.75, low: float = 0.25
) -> float:
    """Mean KL(model at λ = high ‖ model at λ = low) over all-masked answer positions."""
    x, mask, p = batch
    mask_id = model.config.mask_token_id
    b = x.shape[0]
    ids = torch.cat([x, torch.full((b, gen), mask_id)], 1)
    full = torch.cat([mask, torch.ones(b, gen, dtype=mask.dtype)], 1)
    prompt = full.bool() & (torch.arange(ids.shape[1]) < p)

    def logits(lam: float) -> torch.Tensor:
        level = torch.full((b,), lam)
        return denoise(model, ids, full, level, level, prompt)[:, p:]

    return float(_kl(logits(high), logits(low)).mean())


def measure(model: torch.nn.Module, batch: tuple, args: argparse.Namespace) -> dict[str, Any]:
    """λ-sensitivity and cache drift of one model on the drift batch."""
    row = {"lambda_sensitivity": round(lambda_sensitivity(model, batch, args.gen), 6)}
    row.update(drift(model, batch, args.gen, args.block, [None, *args.tolerances]))
    return row


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per model, its λ-sensitivity, training KL and mean drift per setting."""
    rows = [k for k, v in results.items() if isinstance(v, dict) and "lambda_sensitivity" in v]
    settings = [k for k in results[rows[0]] if " tol=" in k]
    names = [k.replace(" tol=None", "").replace(" tol=", " τ=") for k in settings]
    lines = [
        f"| teacher/model | λ-sensitivity | KL to teacher | {' | '.join(names)} |",
        "|---|---:|---:|" + "---:|" * len(settings),
    ]
    for key in rows:
        row = results[key]
        train = f"{row['train_kl']:.3f}" if "train_kl" in row else "-"
        cells = " | ".join(f"{row[k]['mean_kl']:.4f}" for k in settings)
        lines.append(f"| {key} | {row['lambda_sensitivity']:.4f} | {train} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a LLaDA folder")
    parser.add_argument("--teachers", nargs="+", default=["smooth", "step", "control"])
    parser.add_argument(
        "--students", nargs="+", default=["lora", "nara_eta1", "multi_lora", "t_lora"]
    )
    parser.add_argument("--steps", type=int, default=200, help="distillation updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=8, help="prompts in the drift batch")
    parser.add_argument("--gen", type=int, default=24, help="answer length of the drift run")
    parser.add_argument("--block", type=int, default=8, help="block length of the drift run")
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.1, 0.05])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--report", metavar="FILE", help="only print the table of a --json file")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads(Path(args.report).read_text())))
        return 0
    torch.set_num_threads(args.threads)

    from nara.adapters import add_adapters
    from nara.evaluation.profile import shared_copy
    from nara.experiments.mechanism import build_teacher, distil, load_mechanism, prepare
    from nara.models import load_model

    mech = load_mechanism(CONFIG, [f"model={args.model}", f"seeds=[{args.seed}]"])
    loaded = load_model(args.model, dtype=torch.float32)
    setup = prepare(mech, loaded)
    tokenizer = loaded.tokenizer
    batch = corpus_batch(tokenizer, args.prompts)
    results: dict[str, Any] = {"machine": machine_info(torch.device("cpu")), "args": vars(args)}
    print(json.dumps(results), flush=True)
    with torch.no_grad():
        results["base"] = measure(setup.model.eval(), batch, args)
    print(json.dumps({"base": results["base"]}), flush=True)
    for kind in args.teachers:
        teacher = build_teacher(setup.model, kind, setup.factors)
        with torch.no_grad():
            results[f"{kind}/teacher"] = measure(teacher, batch, args)
        print(json.dumps({f"{kind}/teacher": results[f"{kind}/teacher"]}), flush=True)
        for label in args.students:
            torch.manual_seed(args.seed)
            student = add_adapters(shared_copy(setup.model), mech.adapter_config(label))
            trace = distil(student, teacher, setup.train, mask_token_id=setup.mask_token_id,
                           steps=args.steps, batch_size=int(mech.training["batch_size"]),
                           lr=float(mech.training["lr"]), seed=args.seed)  # fmt: skip
            tail = trace[-max(1, len(trace) // 10) :]
            with torch.no_grad():
                row = {"train_kl": round(sum(tail) / len(tail), 4), **measure(student, batch, args)}
            results[f"{kind}/{label}"] = row
            print(json.dumps({f"{kind}/{label}": row}), flush=True)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
