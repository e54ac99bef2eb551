"""Noise-level profile: where along the noise trajectory an adapter helps (the NaRA paper's Fig. 1).

For every example and every λ bin (10 bins over [0, 1] by default) one mask is drawn ONCE, with a
masked fraction inside the bin, and reused for every compared model, so the base and each adapter
are scored on identical inputs and their differences are paired. Per bin we report the
masked-diffusion loss per answer token and the masked-token accuracy; per adapter, its gain over
the base (base loss − adapter loss) with a paired standard error over examples.

The loss is LLaDA's SFT loss (prompt never masked) on a fixed mask: Σ_masked CE / p divided by the
answer length n, with p = λ, the fraction actually masked (:func:`nara.diffusion.masked_fraction`,
the one λ definition). With p = λ = c/n this is the mean cross-entropy of the c masked tokens.

    nara profile --model tiny --adapter lora=runs/lora/final --adapter runs/nara/final \\
        --task arithmetic --output runs/profile
"""

from __future__ import annotations

import copy
import itertools
import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters import load_adapters
from nara.diffusion import local_mask_density, masked_fraction
from nara.diffusion._model import denoise


@dataclass
class ProfileMasks:
    """The fixed masks shared by every model of a profile.

    Attributes:
        edges: float (K+1,), bin k is [edges[k], edges[k+1]) (the last bin is closed).
        masked: bool (K, S, N, T), the mask of sample s of example n in bin k.
        lam: float (K, S, N), λ of each mask (``masked_fraction``), NaN where invalid.
        valid: bool (K, S, N), False when the example's answer is too short for any masked
            count to fall inside the bin (e.g. 3 answer tokens and the bin [0.1, 0.2)).
    """

    edges: torch.Tensor
    masked: torch.Tensor
    lam: torch.Tensor
    valid: torch.Tensor


def draw_masks(
    maskable: torch.Tensor, *, bins: int = 10, samples_per_bin: int = 1, seed: int = 0
) -> ProfileMasks:
    """Draw, per bin and example, masks whose masked fraction lies inside the bin.

    The masked count c of an example with n maskable tokens is drawn uniformly among the counts
    with c/n in the bin (c >= 1), then c positions uniformly among the maskable ones. Same
    ``maskable``, ``bins``, ``samples_per_bin`` and ``seed`` give identical masks.

    Args:
        maskable: bool (N, T), the answer region of each example (never the prompt).
        bins: K, equal-width bins over [0, 1].
        samples_per_bin: S, masks per example and bin.
        seed: seed of the draws.

    Raises:
        ValueError: for bins < 1 or samples_per_bin < 1.
    """
    if bins < 1 or samples_per_bin < 1:
        raise ValueError(
            f"bins and samples_per_bin must be >= 1, got {bins} and {samples_per_bin}; "
            "use e.g. bins=10, samples_per_bin=1"
        )
    maskable = maskable.bool().cpu()
    n_ex, length = maskable.shape
    rng = np.random.default_rng(seed)
    masked = torch.zeros(bins, samples_per_bin, n_ex, length, dtype=torch.bool)
    valid = torch.zeros(bins, samples_per_bin, n_ex, dtype=torch.bool)
    positions = [row.nonzero().flatten().numpy() for row in maskable]
    for k, s, i in itertools.product(range(bins), range(samples_per_bin), range(n_ex)):
        n = len(positions[i])
        # integer form of k/K <= c/n < (k+1)/K (c <= n in the last bin), so no rounding issues
        c_lo = max(1, -(-k * n // bins))
        c_hi = n if k == bins - 1 else ((k + 1) * n - 1) // bins
        if c_lo > c_hi:
            continue
        count = int(rng.integers(c_lo, c_hi + 1))
        masked[k, s, i, rng.choice(positions[i], size=count, replace=False)] = True
        valid[k, s, i] = True
    flat = masked.view(-1, n_ex, length)
    lam = torch.stack([masked_fraction(m, maskable) for m in flat]).view(bins, samples_per_bin, -1)
    lam = lam.masked_fill(~valid, float("nan"))
    return ProfileMasks(torch.linspace(0.0, 1.0, bins + 1), masked, lam, valid)


@dataclass
class ModelScores:
    """Per-mask results of one model: float (K, S, N) each, NaN where the mask is invalid.

    ``loss`` is Σ_masked CE / λ / n (per answer token); ``correct`` and ``num_masked`` count the
    masked tokens predicted right and masked, for the pooled accuracy.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    num_masked: torch.Tensor


@torch.no_grad()
def score_masks(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    maskable: torch.Tensor,
    masks: ProfileMasks,
    *,
    mask_token_id: int,
    batch_size: int = 16,
) -> ModelScores:
    """Run ``model`` on every fixed mask under the noise context and score the masked tokens.

    Args:
        model: a dLLM (``model(ids, attention_mask=...).logits``), with or without adapters.
        input_ids, attention_mask, maskable: (N, T), the clean examples.
        masks: from :func:`draw_masks` on this ``maskable``.
        mask_token_id: id written into masked positions.
        batch_size: masks per forward pass.
    """
    model.eval()
    device = next(model.parameters()).device
    bins, samples, n_ex, _ = masks.masked.shape
    rows = masks.valid.flatten().nonzero().flatten()  # indices into the (K*S*N) grid
    flat_masked = masks.masked.view(bins * samples * n_ex, -1)
    out = torch.full((3, bins * samples * n_ex), float("nan"))
    for chunk in rows.split(batch_size):
        example = chunk % n_ex
        ids = input_ids[example].to(device)  # (B, T)
        region = maskable[example].bool().to(device)
        masked = flat_masked[chunk].to(device)
        noisy = torch.where(masked, torch.full_like(ids, mask_token_id), ids)
        lam = masked_fraction(masked, region)  # (B,)
        density = local_mask_density(masked, region)
        attn = attention_mask[example].to(device)
        logits = denoise(model, noisy, attn, lam, density, attn.bool() & ~region)
        which = masked.nonzero(as_tuple=True)[0]  # (M,) row of each masked position
        masked_logits = logits[masked].float()  # (M, V)
        targets = ids[masked]
        ce = F.cross_entropy(masked_logits, targets, reduction="none")  # (M,)
        b = len(chunk)
        ce_sum = torch.zeros(b, device=device).index_add(0, which, ce)
        hits = (masked_logits.argmax(-1) == targets).float()
        correct = torch.zeros(b, device=device).index_add(0, which, hits)
        n_answer = region.sum(-1).float()
        out[0, chunk] = (ce_sum / lam / n_answer).cpu()
        out[1, chunk] = correct.cpu()
        out[2, chunk] = masked.sum(-1).float().cpu()
    loss, correct, count = (t.view(bins, samples, n_ex) for t in out)
    return ModelScores(loss, correct, count)


@dataclass
class ProfileResult:
    """Loss and accuracy per λ bin for the base and each adapter, and each adapter's gain.

    Lists have one entry per bin; ``gain[name][k]`` is the mean over examples of (base loss −
    adapter loss) in bin k, ``gain_se`` its paired standard error (std over examples, ddof 1,
    over √n). ``scores`` keeps the per-mask results (not written to JSON).
    """

    base: str
    edges: list[float]
    lam: list[float]
    counts: list[int]
    loss: dict[str, list[float]]
    accuracy: dict[str, list[float]]
    gain: dict[str, list[float]]
    gain_se: dict[str, list[float]]
    settings: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, ModelScores] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("scores")
        return data

    def table(self) -> str:
        """Markdown table: per bin, each model's loss and accuracy and each adapter's gain."""
        names = list(self.loss)
        head = ["λ bin", "mean λ", "n"]
        head += [f"{m} loss / acc" for m in names] + [f"{m} gain ± se" for m in self.gain]
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for k, (lo, hi) in enumerate(itertools.pairwise(self.edges)):
            cells = [f"{lo:.1f}–{hi:.1f}", _num(self.lam[k], 3), str(self.counts[k])]
            cells += [f"{_num(self.loss[m][k], 3)} / {_num(self.accuracy[m][k], 3)}" for m in names]
            cells += [
                f"{_num(self.gain[m][k], 4)} ± {_num(self.gain_se[m][k], 4)}" for m in self.gain
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """PNG: loss vs λ per model (left), each adapter's gain over the base vs λ (right)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        lam = np.array(self.lam, dtype=float)
        for name, values in self.loss.items():
            style = "k--" if name == self.base else "o-"
            left.plot(lam, np.array(values, dtype=float), style, label=name, markersize=3)
        left.set(xlabel="noise level λ (masked fraction)", ylabel="loss per answer token")
        left.legend(fontsize=7)
        for name, values in self.gain.items():
            se = np.array(self.gain_se[name], dtype=float)  # None (a bin with < 2 examples): NaN
            right.errorbar(lam, np.array(values, dtype=float), yerr=se, fmt="o-", ms=3, capsize=2,
                           label=name)  # fmt: skip
        right.axhline(0.0, color="k", lw=0.8)
        right.set(xlabel="noise level λ (masked fraction)", ylabel=f"loss gain over {self.base}")
        if self.gain:
            right.legend(fontsize=7)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def save(self, output_dir: str | Path, title: str = "") -> tuple[Path, Path]:
        """Write ``profile.json`` and ``profile.png`` to ``output_dir``; returns both paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path = output_dir / "profile.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return json_path, self.plot(output_dir / "profile.png", title)


def _num(value: float, digits: int) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def summarize(
    scores: Mapping[str, ModelScores], masks: ProfileMasks, *, base: str
) -> ProfileResult:
    """Per-bin loss, accuracy and paired gains over ``base`` from per-mask scores."""
    valid = masks.valid.numpy()
    per_example_valid = valid.any(axis=1)  # (K, N)
    counts = per_example_valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no example reaches stay NaN
        lam = np.nanmean(np.where(valid, masks.lam.numpy(), np.nan), axis=(1, 2))
        loss, accuracy, gain, gain_se = {}, {}, {}, {}
        for name, s in scores.items():
            loss[name] = np.nanmean(s.loss.numpy(), axis=(1, 2))
            hits = np.nansum(s.correct.numpy(), axis=(1, 2))
            accuracy[name] = hits / np.nansum(s.num_masked.numpy(), axis=(1, 2))
        base_ex = np.nanmean(scores[base].loss.numpy(), axis=1)  # (K, N)
        for name, s in scores.items():
            if name == base:
                continue
            diff = base_ex - np.nanmean(s.loss.numpy(), axis=1)  # (K, N), paired per example
            gain[name] = np.nanmean(diff, axis=1)
            sd = np.array([np.std(d[~np.isnan(d)], ddof=1) if c > 1 else np.nan
                           for d, c in zip(diff, counts)])  # fmt: skip
            gain_se[name] = sd / np.sqrt(np.maximum(counts, 1))
    return ProfileResult(
        base=base,
        edges=masks.edges.tolist(),
        lam=_nan_to_none(lam),
        counts=counts.tolist(),
        loss={k: _nan_to_none(v) for k, v in loss.items()},
        accuracy={k: _nan_to_none(v) for k, v in accuracy.items()},
        gain={k: _nan_to_none(v) for k, v in gain.items()},
        gain_se={k: _nan_to_none(v) for k, v in gain_se.items()},
        scores=dict(scores),
    )


def shared_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` that shares its parameters and buffers (no extra memory).

    Adapters added to the copy wrap the same frozen weights without touching the original's
    modules, so the next adapter starts again from the plain base.
    """
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def encode_examples(
    tokenizer: Any,
    records: Iterable[Any],
    *,
    max_length: int = 512,
    chat_template: str = "auto",
) -> dict[str, torch.Tensor]:
    """Records (``.prompt``/``.answer`` or dicts) → one right-padded batch in the SFT layout.

    Every answer is padded with EOS to the longest example (maskable, as in training), so
    ``maskable`` is the answer plus its EOS padding and the λ grid is fine even for short answers.
    """
    from nara.data.collate import Collator, encode_records

    encoded = encode_records(
        tokenizer, records, max_length=max_length, truncation="drop", chat_template=chat_template
    )
    return Collator(tokenizer.eos_token_id, "batch")(encoded)


def noise_profile(
    model: nn.Module,
    tokenizer: Any,
    records: Iterable[Any],
    *,
    adapters: Mapping[str, str | Path] | None = None,
    mask_token_id: int,
    bins: int = 10,
    samples_per_bin: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int = 512,
    chat_template: str = "auto",
    base_name: str = "base",
) -> ProfileResult:
    """Profile the base ``model`` and each adapter (loaded in turn) over λ bins, on fixed masks.

    Args:
        model: the base dLLM (left unchanged: each adapter goes onto a :func:`shared_copy`).
        tokenizer: its tokenizer (prompts encoded as in training).
        records: examples with a prompt and an answer (e.g. an embedded task's validation split).
        adapters: name → adapter folder (``nara.save_adapters`` / ``nara train`` output).
        mask_token_id: the model's mask token id.
        bins: equal-width λ bins over [0, 1].
        samples_per_bin: masks per example and bin (more = smaller error bars).
        seed: seed of the masks; the same seed gives the same masks for every model and call.
        batch_size: masks per forward pass.
        max_length: examples longer than this are dropped.
        chat_template: as in training (``auto`` wraps prompts when the tokenizer has a template).
        base_name: the base model's name in the result.

    Raises:
        ValueError: an adapter name equal to ``base_name``, or no example fits ``max_length``.
    """
    adapters = dict(adapters or {})
    if base_name in adapters:
        raise ValueError(f"adapter name {base_name!r} is the base model's; rename the adapter")
    batch = encode_examples(tokenizer, records, max_length=max_length, chat_template=chat_template)
    masks = draw_masks(batch["maskable"], bins=bins, samples_per_bin=samples_per_bin, seed=seed)
    args = (batch["input_ids"], batch["attention_mask"], batch["maskable"], masks)
    kwargs = {"mask_token_id": mask_token_id, "batch_size": batch_size}
    scores = {base_name: score_masks(model, *args, **kwargs)}
    for name, path in adapters.items():
        adapted = load_adapters(shared_copy(model), path)
        scores[name] = score_masks(adapted, *args, **kwargs)
        del adapted
    result = summarize(scores, masks, base=base_name)
    result.settings = {
        "bins": bins,
        "samples_per_bin": samples_per_bin,
        "seed": seed,
        "examples": int(batch["input_ids"].shape[0]),
        "adapters": {k: str(v) for k, v in adapters.items()},
    }
    return result
