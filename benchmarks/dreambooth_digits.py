"""DreamBooth on scikit-learn's 8×8 digits: LoRA vs NaRA vs T-LoRA at equal parameters, on CPU.

    python benchmarks/dreambooth_digits.py                  # the table in docs/results/dreambooth/
                                                            # (13.4 CPU-minutes, base model included)
    python benchmarks/dreambooth_digits.py --quick --out /tmp/db   # a smoke run (seconds)

The whole image path of nara.integrations.diffusers, offline (docs/diffusers.md, "The offline
experiment"):

1. A class-conditional ``UNet2DConditionModel`` (1 channel, 8×8) is trained from scratch on the
   digits of the training split (DDPM, ε-prediction, 10 % unconditional prompts for guidance). A
   prompt is two tokens, [modifier, digit], whose embeddings are a frozen random table (the
   "text encoder"); the modifier is "plain" in pretraining, and the identifier "sks" is never seen.
2. The subject is a new concept: a horizontally mirrored 3, known from 5 held-out images only.
   Each method trains adapters on the attention projections with the DreamBooth loss: the 5 images
   under "sks 3" plus prior preservation, images the base model generates for "plain 3".
3. A classifier (scikit-learn MLP on the pixels) is trained on real digits and mirrored 3s (11
   classes). Measured on guided DDIM samples: subject fidelity (share of "sks 3" samples
   classified as the mirrored 3), prior preservation (share of "plain k" samples, k ≠ 3, classified
   as k), class drift (share of "plain 3" samples still classified as 3), and diversity (mean
   pairwise distance of the "sks 3" samples over that of real mirrored 3s).

LoRA and T-LoRA use rank r; NaRA uses rank r − 1 and a one-layer hypernetwork whose width makes
its trainable parameters as close as possible to LoRA's. The base model is trained once and cached
under --cache; seeds vary adapter initialisation, noise, timesteps and sampling.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

METHODS = ("lora", "nara", "t_lora")
SUBJECT_DIGIT = 3
# prompt tokens: the digits 0-9, then the modifiers and the unconditional token
PLAIN, SKS, NULL = 10, 11, 12
TEXT_DIM = 32
SUBJECT_CLASS = 10  # the classifier's label of a mirrored 3
SAMPLE = {
    "subject": 64,
    "other": 10,
    "drift": 30,
}  # samples per run: sks 3, each plain k≠3, plain 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results/dreambooth", help="table, JSON and sample grids")
    p.add_argument("--cache", default="runs/dreambooth_digits", help="the cached base model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rank", type=int, default=4, help="LoRA and T-LoRA rank (NaRA: rank − 1)")
    p.add_argument("--base_steps", type=int, default=1500, help="pretraining steps (batch 64)")
    p.add_argument("--steps", type=int, default=200, help="personalisation steps")
    p.add_argument("--learning_rate", type=float, default=2e-3, help="personalisation lr")
    p.add_argument("--num_class_images", type=int, default=40, help="prior-preservation images")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--sampling_steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the table: 1)")
    p.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    args = p.parse_args(argv)
    if args.rank < 2:
        p.error(f"--rank must be >= 2 (NaRA gets rank − 1), got {args.rank}")
    if args.quick:
        args.base_steps, args.steps, args.num_class_images, args.sampling_steps = 3, 3, 4, 2
    return args


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits in [-1, 1] as (N, 1, 8, 8), split 80/20 by a fixed permutation:
    train images, train labels, held-out images, held-out labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def mirror(x: torch.Tensor) -> torch.Tensor:
    """The subject's transformation: a left-right flip."""
    return x.flip(-1)


TOKENS = torch.randn(13, TEXT_DIM, generator=torch.Generator().manual_seed(1234))


def prompt(modifier: int, digit: torch.Tensor | int, n: int | None = None) -> torch.Tensor:
    """Encoder hidden states (B, 2, TEXT_DIM) of the prompts [modifier, digit]."""
    digit = torch.as_tensor(digit).reshape(-1)
    if n is not None:
        digit = digit.expand(n)
    mod = torch.full_like(digit, modifier)
    return torch.stack([TOKENS[mod], TOKENS[digit]], dim=1)


def make_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def train_base(x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.nn.Module:
    """The class-conditional base model, trained from scratch (AdamW, cosine decay)."""
    from nara.integrations.diffusers import denoising_loss

    unet, sched = make_unet(), scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(0)
    unet.train()
    for step in range(steps):
        pick = torch.randint(0, len(y), (64,), generator=gen)
        cond = prompt(PLAIN, y[pick])
        drop = torch.rand(64, generator=gen) < 0.1  # unconditional prompts for guidance
        cond[drop] = prompt(NULL, NULL, int(drop.sum()))
        loss = denoising_loss(unet, sched, x[pick], cond, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        if step % max(1, steps // 10) == 0:
            print(f"  base step {step}/{steps} loss {loss.item():.4f}", flush=True)
    return unet.eval()


@torch.no_grad()
def sample(
    unet: torch.nn.Module, cond: torch.Tensor, args: argparse.Namespace, seed: int
) -> torch.Tensor:
    """Guided DDIM samples for the prompts ``cond``, in [-1, 1]."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler().config)
    sched.set_timesteps(args.sampling_steps)
    n = cond.shape[0]
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    both = torch.cat([cond, prompt(NULL, NULL, n)])
    for t in sched.timesteps:
        eps_c, eps_u = unet(torch.cat([x, x]), t, both).sample.chunk(2)
        x = sched.step(eps_u + args.guidance * (eps_c - eps_u), t, x).prev_sample
    return x.clamp(-1, 1)


def train_classifier(x: torch.Tensor, y: torch.Tensor):
    """An MLP on the pixels for the 10 digits and the mirrored 3 (class 10)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    threes = x[y == SUBJECT_DIGIT]
    feats = torch.cat([x, mirror(threes)]).flatten(1).numpy()
    labels = np.concatenate([y.numpy(), np.full(len(threes), SUBJECT_CLASS)])
    with warnings.catch_warnings():  # 200 epochs do (held-out accuracy is printed and saved)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier((64,), max_iter=200, random_state=0).fit(feats, labels)


def adapter_configs(unet: torch.nn.Module, rank: int) -> dict:
    """LoRA and T-LoRA at ``rank``; NaRA at rank − 1 plus a hypernetwork 64 → h → (rank − 1)²
    whose width h brings NaRA's parameter count nearest LoRA's."""
    import nara
    from nara.integrations.diffusers import diffusers_targets

    targets = diffusers_targets(unet)
    per_rank = sum(
        m.in_features + m.out_features
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear) and any(name.endswith("." + t) for t in targets)
    )
    r = rank - 1
    emb = nara.NaRAConfig.embedding_dim
    width = max(1, round((per_rank - r * r) / (emb + 1 + r * r)))
    return {
        "lora": nara.LoRAConfig(r=rank, alpha=float(rank), target_modules=targets),
        "nara": nara.NaRAConfig(r=r, alpha=float(r), hidden_sizes=[width], target_modules=targets),
        "t_lora": nara.TLoRAConfig(r=rank, alpha=float(rank), target_modules=targets),
    }


def personalise(
    base: torch.nn.Module,
    config,
    subject: torch.Tensor,
    prior: torch.Tensor,
    args: argparse.Namespace,
    seed: int,
) -> tuple[torch.nn.Module, int]:
    """DreamBooth with prior preservation: adapters on a copy of ``base``; (model, parameters)."""
    from nara.adapters.inject import trainable_parameters
    from nara.integrations.diffusers import add_diffusers_adapters, denoising_loss

    sched = scheduler()
    torch.manual_seed(seed)
    unet = add_diffusers_adapters(copy.deepcopy(base), config, scheduler=sched)
    count = trainable_parameters(unet).trainable
    opt = torch.optim.AdamW(
        [p for p in unet.parameters() if p.requires_grad], lr=args.learning_rate, weight_decay=0.0
    )
    gen = torch.Generator().manual_seed(seed)
    subject_text = prompt(SKS, SUBJECT_DIGIT, len(subject))
    unet.train()
    for _ in range(args.steps):
        pick = torch.randint(0, len(prior), (len(subject),), generator=gen)
        loss = denoising_loss(unet, sched, subject, subject_text, generator=gen)
        prior_text = prompt(PLAIN, SUBJECT_DIGIT, len(pick))
        loss = loss + denoising_loss(unet, sched, prior[pick], prior_text, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return unet.eval(), count


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance between distinct images (pixels in [0, 1])."""
    flat = ((x + 1) / 2).flatten(1)
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


def evaluate(unet, classifier, args, seed: int, real_diversity: float) -> tuple[dict, dict]:
    """The four measures of the module docstring, and the samples they were taken on."""
    others = torch.tensor([k for k in range(10) if k != SUBJECT_DIGIT])
    other_digits = others.repeat_interleave(SAMPLE["other"])
    cond = torch.cat(
        [
            prompt(SKS, SUBJECT_DIGIT, SAMPLE["subject"]),
            prompt(PLAIN, other_digits),
            prompt(PLAIN, SUBJECT_DIGIT, SAMPLE["drift"]),
        ]
    )
    images = sample(unet, cond, args, seed=1000 + seed)
    subj, other, drift = images.split([SAMPLE["subject"], len(other_digits), SAMPLE["drift"]])

    def predict(x: torch.Tensor) -> np.ndarray:
        return classifier.predict(x.flatten(1).numpy())

    metrics = {
        "fidelity": float((predict(subj) == SUBJECT_CLASS).mean()),
        "prior": float((predict(other) == other_digits.numpy()).mean()),
        "class_kept": float((predict(drift) == SUBJECT_DIGIT).mean()),
        "diversity": mean_pairwise_distance(subj) / real_diversity,
    }
    return metrics, {"subject": subj, "other": other}


def save_grids(out: Path, subject: torch.Tensor, shown: dict[str, dict]) -> list[Path]:
    """subject.png: the training images and 8 "sks 3" samples per model; prior.png: one "plain k"
    sample per digit k ≠ 3 per model (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, rows in (
        ("subject", {"training images": subject} | {k: v["subject"][:8] for k, v in shown.items()}),
        ("prior", {k: v["other"][:: SAMPLE["other"]] for k, v in shown.items()}),
    ):
        cols = max(len(v) for v in rows.values())
        fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.8 + 1.6, len(rows) * 0.85))
        for i, (label, images) in enumerate(rows.items()):
            for j in range(cols):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(images):
                    ax.imshow(images[j, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
                else:
                    ax.axis("off")
            axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        fig.tight_layout()
        file = out / f"{name}.png"
        fig.savefig(file, dpi=80)
        plt.close(fig)
        files.append(file)
    return files


def table(results: dict, counts: dict, args: argparse.Namespace, cost: dict) -> str:
    from nara.experiments.runner import mean_std

    def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
        mean, std = mean_std([v * scale for v in values])
        return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"

    lines = [
        f"DreamBooth on 8×8 digits (benchmarks/dreambooth_digits.py): subject = mirrored 3 from 5 "
        f"images, {args.steps} steps with prior preservation, adapters on the attention "
        f"projections; mean ± std over seeds {args.seeds}. Cost: {cost['cpu_min']:.1f} CPU-minutes "
        f"(torch threads: {args.threads}; {cost['wall_min']:.1f} min wall) plus "
        f"{cost['base_cpu_min']:.1f} CPU-minutes for the base model (cached).",
        "",
        "| model | trainable | subject fidelity % | prior, other digits % | plain 3 kept % "
        "| diversity |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        col = {k: [r[k] for r in runs] for k in runs[0]}
        lines.append(
            f"| {name} | {counts.get(name, 0):,} | {cell(col['fidelity'])} | {cell(col['prior'])} "
            f"| {cell(col['class_kept'])} | {cell(col['diversity'], 1.0, 2)} |"
        )
    lines += [
        "",
        "Fidelity: share of 'sks 3' samples the classifier calls a mirrored 3; prior: share of "
        "'plain k' samples (k ≠ 3) classified as k; plain 3 kept: share of 'plain 3' samples still "
        "classified as 3; diversity: mean pairwise distance of 'sks 3' samples over that of real "
        "mirrored 3s (1 = as varied as the real ones).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start, cpu_start = time.time(), time.process_time()
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    x, y, held_x, held_y = digits()
    base_file = cache / f"base_{args.base_steps}.pt"
    base_cost = base_file.with_suffix(".json")  # the CPU time its training took
    base = make_unet()
    if base_file.is_file() and base_cost.is_file():
        base.load_state_dict(torch.load(base_file, weights_only=True))
        base_cpu = json.loads(base_cost.read_text())["cpu_s"]
        print(f"base model from {base_file}")
    else:
        print(f"training the base model ({args.base_steps} steps)", flush=True)
        tick = time.process_time()
        base = train_base(x, y, args.base_steps)
        base_cpu = time.process_time() - tick
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(base.state_dict(), base_file)
        base_cost.write_text(json.dumps({"cpu_s": base_cpu}))
    base.eval().requires_grad_(False)
    classifier = train_classifier(x, y)
    held_feats = torch.cat([held_x, mirror(held_x[held_y == SUBJECT_DIGIT])]).flatten(1)
    held_labels = np.concatenate(
        [held_y.numpy(), np.full(int((held_y == SUBJECT_DIGIT).sum()), SUBJECT_CLASS)]
    )
    accuracy = float((classifier.predict(held_feats.numpy()) == held_labels).mean())
    print(f"classifier accuracy on held-out real digits and mirrored 3s: {accuracy:.3f}")
    mirrored = mirror(held_x[held_y == SUBJECT_DIGIT])
    subject, rest = mirrored[:5], mirrored[5:]
    real_diversity = mean_pairwise_distance(rest)
    prior = sample(base, prompt(PLAIN, SUBJECT_DIGIT, args.num_class_images), args, seed=99)
    configs = adapter_configs(base, args.rank)
    results: dict[str, list[dict]] = {"base (no adapter)": []}
    counts: dict[str, int] = {}
    shown: dict[str, dict] = {}
    for seed in args.seeds:
        metrics, images = evaluate(base, classifier, args, seed, real_diversity)
        results["base (no adapter)"].append(metrics)
        if seed == args.seeds[0]:
            shown["base"] = images
        for method in METHODS:
            unet, counts[method] = personalise(base, configs[method], subject, prior, args, seed)
            metrics, images = evaluate(unet, classifier, args, seed, real_diversity)
            results.setdefault(method, []).append(metrics)
            if seed == args.seeds[0]:
                shown[method] = images
            print(f"seed {seed} {method}: {metrics}", flush=True)
    minutes = (time.time() - start) / 60
    cost = {
        "wall_min": minutes,
        "cpu_min": (time.process_time() - cpu_start) / 60,
        "base_cpu_min": base_cpu / 60,
    }
    save_grids(out, subject, shown)
    (out / "results.md").write_text(table(results, counts, args, cost))
    record = {
        "args": vars(args),
        "classifier_accuracy": accuracy,
        "parameters": counts,
        "runs": results,
        "cost": cost,
    }
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
