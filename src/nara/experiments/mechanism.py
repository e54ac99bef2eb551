"""The mechanism test: distil teachers whose best update depends on λ into static and noise-aware
students, and measure how close each gets, per noise level.

Teachers. Every teacher is the base model plus a fixed rank-r update on the adapted modules
(r even; the same A, B for all three teachers):

    ΔW_m(λ) = B_m · R(θ(λ)) · A_m          for each target module m,

with A_m (r × d_in) the top-r right singular vectors of module m's inputs on 256 training
chunks masked at t ~ U(0, 1) (orthonormal rows: the update acts on directions the inputs occupy), B_m (d_out × r)
random orthogonal columns (from ``teacher.seed``) of norm ``strength · ‖W_m‖₂`` (so
‖ΔW_m‖₂ = strength · ‖W_m‖₂),
and R(θ) the block-diagonal r × r matrix of r/2 plane rotations [[cos θ, −sin θ], [sin θ, cos θ]].
The angle θ(λ) defines the teacher:

- ``step``:    θ = 0 for λ ≤ 0.5 and π/2 for λ > 0.5, so ΔW = ΔW_a = B·A up to λ = 0.5 and
  ΔW_b = B·R(π/2)·A above (λ = 0.5 exactly goes to ΔW_a, as Multi-LoRA puts a boundary λ in
  the lower bin);
- ``smooth``:  θ = (π/2)·λ, the update rotates continuously from ΔW_a (λ = 0) to ΔW_b (λ = 1);
- ``control``: θ = 0 at every λ, ΔW = B·A: nothing to gain from knowing λ.

‖ΔW_b − ΔW_a‖ = ‖B·(R(π/2) − I)·A‖ = √2·‖ΔW_a‖ (R(π/2) − I is √2 times an orthogonal matrix),
so one static update cannot serve both halves. The teacher is built with nara's own adapter core: a NaRA layer (y = x·Wᵀ +
x·Aᵀ·R(θ(λ))ᵀ·Bᵀ, scale 1) whose hypernetwork is replaced by :class:`RotationSchedule`, so λ
reaches it through ``nara.noise_level`` exactly as it reaches the students.

Inputs and noise. The embedded tasks' records (prompt + answer + EOS) are packed into one token
stream and cut into chunks of ``data.length`` tokens; every token is maskable (the pre-training
layout, so λ has a fine grid). Training masks come from :func:`nara.diffusion.forward_process`
(t ~ U(0, 1), the masking of ``nara.diffusion_loss``); held-out masks from the noise profile's
:func:`~nara.evaluation.profile.draw_masks` (one mask per chunk and λ bin, the same for every
model). λ is always :func:`nara.masked_fraction` of the mask, given to teacher and student by the
same :func:`~nara.diffusion._model.denoise` call.

Loss and metric. KL(teacher ‖ student) of the predicted token distributions, averaged over the
masked positions of a chunk; training minimises its batch mean. The report gives, per λ bin, the
mean over held-out chunks of that per-chunk KL, and overall the mean over every (chunk, bin);
then mean ± sample std (ddof 1) over seeds. ``base`` (no adapter) is the base → teacher KL.

Runs are short, so resuming is per run: one with ``metrics.json`` is skipped, an interrupted
one starts again.

    nara experiment configs/experiments/mechanism.yaml            # resumable
    nara experiment configs/experiments/mechanism.yaml --dry-run  # the runs
    nara experiment configs/experiments/mechanism.yaml --counts   # trainable parameters
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from nara.adapters.noise import Conditioner

KIND = "mechanism"  # the ``kind`` key that marks a mechanism-test YAML
TEACHER_KINDS = ("step", "smooth", "control")
BASE_LABEL = "base"  # the base model as a "student": the base → teacher KL
KEYS = (
    "kind", "name", "output", "model", "seeds", "teachers", "teacher", "target_modules", "adapter",
    "students", "data", "training", "evaluation",
)  # fmt: skip
DEFAULTS: dict[str, Any] = {
    "teacher": {"rank": 2, "strength": 0.5, "seed": 1234},
    "data": {"tasks": ["commonsense", "arithmetic", "programs"], "length": 16,
             "train_chunks": 2048, "eval_chunks": 32},
    "training": {"steps": 200, "batch_size": 8, "lr": 2.0e-3, "log_every": 0},
    "evaluation": {"bins": 10, "seed": 0, "batch_size": 32},
}  # fmt: skip
METRICS = "metrics.json"
TEACHER_FILE = "teacher.json"


# ----------------------------------------------------------------------------- teachers


def teacher_angle(kind: str, lam: torch.Tensor) -> torch.Tensor:
    """θ(λ) of a teacher (see the module docstring): (n,) → (n,) float32.

    Raises:
        ValueError: an unknown kind.
    """
    lam = lam.float()
    if kind == "step":
        return torch.where(lam > 0.5, math.pi / 2, 0.0)
    if kind == "smooth":
        return lam * (math.pi / 2)
    if kind == "control":
        return torch.zeros_like(lam)
    raise ValueError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")


def block_rotation(theta: torch.Tensor, rank: int) -> torch.Tensor:
    """R(θ): (n,) angles → (n, r, r), r/2 copies of the 2-D rotation by θ on the diagonal."""
    if rank < 2 or rank % 2:
        raise ValueError(f"the teacher rank must be even and >= 2 (plane rotations), got {rank}")
    cos, sin = theta.cos(), theta.sin()
    plane = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    out = torch.zeros(theta.shape[0], rank, rank, dtype=plane.dtype, device=theta.device)
    for k in range(0, rank, 2):
        out[:, k : k + 2, k : k + 2] = plane  # (n, 2, 2)
    return out


class RotationSchedule(Conditioner):
    """The teacher's conditioner: λ (n,) → R(θ(λ)) (n, r, r), in place of NaRA's C(λ)."""

    def __init__(self, kind: str, rank: int) -> None:
        super().__init__()
        teacher_angle(kind, torch.zeros(1))  # validates the kind
        block_rotation(torch.zeros(1), rank)  # validates the rank
        self.kind, self.rank = kind, rank

    def forward(self, lam: torch.Tensor, density: torch.Tensor | None) -> torch.Tensor:
        return block_rotation(teacher_angle(self.kind, lam), self.rank)


def teacher_factors(
    model: nn.Module,
    target_modules: list[str] | str,
    inputs: torch.Tensor,
    *,
    rank: int,
    strength: float,
    seed: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module name → (A (r, d_in), B (d_out, r)) of the teachers' update.

    A's rows are the top-r right singular vectors of the module's inputs when ``model`` reads
    the token ids ``inputs`` (B, T) (the directions its inputs occupy, so the update matters and
    is learnable); B has random orthogonal columns (from ``seed``) of norm ``strength · ‖W‖₂``
    (W the module's weight), so every singular value of B·R·A is ``strength · ‖W‖₂``.
    """
    from nara.adapters import resolve_targets

    if strength <= 0:
        raise ValueError(f"teacher.strength must be > 0, got {strength}; e.g. 1.0")
    block_rotation(torch.zeros(1), rank)  # validates the rank
    modules = dict(model.named_modules())
    names = resolve_targets(model, target_modules)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    hooks = [
        modules[name].register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].detach().flatten(0, -2))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            model(inputs.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for name in names:
        weight = modules[name].weight.detach().float().cpu()  # (d_out, d_in)
        x = torch.cat(seen[name]).float().cpu()  # (B·T, d_in)
        a = torch.linalg.svd(x, full_matrices=False)[2][:rank]  # (r, d_in), orthonormal rows
        b = torch.linalg.qr(torch.randn(weight.shape[0], rank, generator=gen))[0]  # (d_out, r)
        factors[name] = (a, b * strength * torch.linalg.matrix_norm(weight, 2))
    return factors


def build_teacher(
    base: nn.Module, kind: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> nn.Module:
    """The base (shared, untouched) + ΔW(λ) = B·R(θ(λ))·A on every module of ``factors``.

    A frozen NaRA (scale 1) whose conditioner is :class:`RotationSchedule`; call it inside
    ``nara.noise_level`` like any noise-aware model.
    """
    from nara.adapters import NaRAConfig, adapter_layers, add_adapters
    from nara.adapters.noise import find_hub
    from nara.evaluation.profile import shared_copy

    rank = next(iter(factors.values()))[0].shape[0]
    config = NaRAConfig(r=rank, scale=1.0, target_modules=list(factors), hidden_sizes=[1])
    model = add_adapters(shared_copy(base), config)
    find_hub(model).conditioners["global"] = RotationSchedule(kind, rank)
    device = next(base.parameters()).device
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            a, b = factors[name]
            layer.lora_A.copy_(a.to(device))
            layer.lora_B.copy_(b.to(device))
    return model.requires_grad_(False).eval()


# ----------------------------------------------------------------------------- data and KL


def packed_chunks(tokenizer: Any, records: list[Any], *, length: int, count: int) -> torch.Tensor:
    """``count`` chunks (count, length) of the records' tokens (prompt + answer + EOS) packed
    into one stream in order (only as many records are encoded as the chunks need).

    Raises:
        ValueError: the records hold fewer than ``count · length`` tokens.
    """
    from nara.data.collate import encode_records

    stream: list[int] = []
    for start in range(0, len(records), 64):
        if len(stream) >= count * length:
            break
        for enc in encode_records(tokenizer, records[start : start + 64], max_length=10**9):
            stream += enc.prompt_ids + enc.answer_ids
    if len(stream) < count * length:
        raise ValueError(
            f"the records hold {len(stream)} tokens, fewer than {count} chunks x {length}; lower "
            "data.train_chunks / data.eval_chunks or data.length, or add data.tasks"
        )
    return torch.tensor(stream[: count * length]).view(count, length)


def masked_logits(
    model: nn.Module, ids: torch.Tensor, masked: torch.Tensor, mask_token_id: int
) -> torch.Tensor:
    """Logits (M, V) at the masked positions of ``ids`` (B, T) (every position maskable), with
    λ = masked_fraction and the local density set on the adapters, as the diffusion loss does."""
    from nara.diffusion import local_mask_density, masked_fraction
    from nara.diffusion._model import denoise

    maskable = torch.ones_like(masked)
    noisy = ids.masked_fill(masked, mask_token_id)
    lam = masked_fraction(masked, maskable)  # (B,)
    density = local_mask_density(masked, maskable)
    return denoise(model, noisy, None, lam, density, ~maskable)[masked].float()


def chunk_kl(
    teacher: nn.Module,
    student: nn.Module,
    ids: torch.Tensor,
    masked: torch.Tensor,
    mask_token_id: int,
) -> torch.Tensor:
    """KL(teacher ‖ student) per chunk (B,): mean over its masked positions (0 if none)."""
    with torch.no_grad():
        log_t = masked_logits(teacher, ids, masked, mask_token_id).log_softmax(-1)  # (M, V)
    log_s = masked_logits(student, ids, masked, mask_token_id).log_softmax(-1)
    per_token = (log_t.exp() * (log_t - log_s)).sum(-1)  # (M,)
    rows = masked.nonzero(as_tuple=True)[0]
    total = torch.zeros(ids.shape[0], device=per_token.device).index_add(0, rows, per_token)
    return total / masked.sum(-1).clamp_min(1)


# ----------------------------------------------------------------------------- train and score


def distil(
    student: nn.Module,
    teacher: nn.Module,
    chunks: torch.Tensor,
    *,
    mask_token_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log_every: int = 0,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train the student's trainable tensors (AdamW, lr decaying linearly to 0, gradient norm
    clipped at 1) to minimise the batch-mean :func:`chunk_kl` on masks of nara's forward
    process (t ~ U(0, 1)).

    Returns the training KL of every step.
    """
    from nara.diffusion import forward_process

    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters; add adapters to it first")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # linear decay to 0: the distillation gradient is noisy (few masked tokens per step)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / steps)
    gen = torch.Generator().manual_seed(seed)
    maskable = torch.ones(batch_size, chunks.shape[1], dtype=torch.bool)
    device = next(student.parameters()).device
    student.train()
    trace = []
    for step in range(1, steps + 1):
        ids = chunks[torch.randint(len(chunks), (batch_size,), generator=gen)]
        _, masked, _ = forward_process(ids, maskable, mask_token_id, generator=gen)
        loss = chunk_kl(teacher, student, ids.to(device), masked.to(device), mask_token_id).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        trace.append(loss.item())
        if log_every and step % log_every == 0:
            log(f"  step {step}/{steps}: KL {np.mean(trace[-log_every:]):.4f}")
    student.eval()
    return trace


@torch.no_grad()
def score_kl(
    teacher: nn.Module,
    model: nn.Module,
    chunks: torch.Tensor,
    masked: torch.Tensor,
    *,
    mask_token_id: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """Per-chunk KL(teacher ‖ model) on fixed masks: ``masked`` (K, N, T) → (K, N)."""
    bins, n, length = masked.shape
    device = next(model.parameters()).device
    flat = masked.reshape(bins * n, length)
    ids = chunks.repeat(bins, 1)  # row k·N + i is chunk i
    out = [
        chunk_kl(teacher, model, ids[s].to(device), flat[s].to(device), mask_token_id).cpu()
        for s in torch.arange(bins * n).split(batch_size)
    ]
    return torch.cat(out).view(bins, n)


def bin_summary(kl: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, Any]:
    """Per-bin mean KL over chunks and the overall mean over every valid (bin, chunk).

    Args:
        kl: (K, N) per-chunk KL per λ bin.
        valid: bool (K, N), which entries count (default all).
    """
    kl = kl.double()
    valid = torch.ones_like(kl, dtype=torch.bool) if valid is None else valid.bool()
    counts = valid.sum(-1)
    per_bin = torch.where(valid, kl, 0.0).sum(-1) / counts.clamp_min(1)
    return {
        "bins": [float(v) if c else None for v, c in zip(per_bin, counts)],
        "counts": counts.tolist(),
        "overall": float(kl[valid].mean()),
    }


# ----------------------------------------------------------------------------- the experiment


@dataclass
class Mechanism:
    """A validated mechanism-test config (keys: see configs/experiments/mechanism.yaml)."""

    name: str
    output: Path
    model: str
    seeds: list[int]
    teachers: list[str]
    teacher: dict[str, Any]
    target_modules: list[str] | str
    adapter: dict[str, Any]
    students: dict[str, dict[str, Any]]
    data: dict[str, Any]
    training: dict[str, Any]
    evaluation: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.output / self.name

    def run_dir(self, teacher: str, label: str, seed: int) -> Path:
        return self.root / teacher / label / f"seed{seed}"

    def runs(self, only: list[str] | None = None) -> list[tuple[str, str, int]]:
        """(teacher, student label, seed) of every run, seed-major (whole seeds finish first).

        Raises:
            ValueError: ``only`` names a student the config does not have.
        """
        unknown = sorted(set(only or []) - set(self.students))
        if unknown:
            raise ValueError(f"--methods {unknown} are not students here: {list(self.students)}")
        labels = [s for s in self.students if not only or s in only]
        return [(t, s, seed) for seed in self.seeds for t in self.teachers for s in labels]

    def adapter_config(self, label: str) -> Any:
        """The student's adapter config: shared ``adapter`` fields it has + its own fields."""
        from nara.training.adapters import adapter_fields, build_adapter_config

        spec = dict(self.students[label])
        method = spec.pop("method")
        names = {f.name for f in adapter_fields(method)}
        shared = {"target_modules": self.target_modules, **self.adapter}
        options = {k: v for k, v in shared.items() if k in names}
        return build_adapter_config(method, {**options, **spec})


def is_mechanism_file(path: str | Path) -> bool:
    """True if ``path`` is a YAML mapping with ``kind: mechanism``."""
    path = Path(path)
    if not path.is_file():
        return False
    raw = yaml.safe_load(path.read_text())
    return isinstance(raw, dict) and raw.get("kind") == KIND


def mechanism_from_dict(raw: dict[str, Any], *, default_name: str = KIND) -> Mechanism:
    """Validate a mechanism mapping (a loaded YAML); every student's adapter config is built
    once, so a bad field fails before any model is loaded.

    Raises:
        ValueError: unknown keys or teacher kinds, no students or seeds, a student without
            ``method``, or a bad adapter field (its message names it).
    """
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown mechanism key(s) {unknown}; keys: {', '.join(KEYS)}")
    merged = {k: {**v, **(raw.get(k) or {})} for k, v in DEFAULTS.items()}
    teachers = [str(t) for t in raw.get("teachers") or TEACHER_KINDS]
    bad = [t for t in teachers if t not in TEACHER_KINDS]
    if bad:
        raise ValueError(f"teachers {bad} are unknown; choose from {list(TEACHER_KINDS)}")
    students = {str(k): dict(v or {}) for k, v in (raw.get("students") or {}).items()}
    for label, spec in students.items():
        if "method" not in spec or label == BASE_LABEL:
            raise ValueError(
                f"students.{label} must be a mapping with an adapter 'method' (and a label other "
                f"than {BASE_LABEL!r}, which names the base model), got {spec!r}"
            )
    mech = Mechanism(
        name=str(raw.get("name") or default_name),
        output=Path(str(raw.get("output") or "results")),
        model=str(raw.get("model") or "tiny"),
        seeds=[int(s) for s in raw.get("seeds") or [0]],
        teachers=teachers,
        teacher=merged["teacher"],
        target_modules=raw.get("target_modules") or ["q_proj", "k_proj", "v_proj", "attn_out"],
        adapter=dict(raw.get("adapter") or {}),
        students=students,
        data=merged["data"],
        training=merged["training"],
        evaluation=merged["evaluation"],
    )
    if not mech.students or not mech.seeds:
        raise ValueError("a mechanism test needs at least one student and one seed")
    for label in mech.students:
        mech.adapter_config(label)  # raises naming the bad field
    return mech


def load_mechanism(path: str | Path, overrides: list[str] = ()) -> Mechanism:
    """Load a mechanism YAML and apply dotted ``key=value`` overrides (values read as YAML).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: see :func:`mechanism_from_dict`, or a bad override.
    """
    from nara.experiments.grid import apply_overrides

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"mechanism config {str(path)!r} not found; e.g. configs/experiments/mechanism.yaml"
        )
    raw = apply_overrides(yaml.safe_load(path.read_text()) or {}, list(overrides), KEYS)
    return mechanism_from_dict(raw, default_name=path.stem)


@dataclass
class Setup:
    """What every run of a mechanism test shares: base, factors, data and held-out masks."""

    model: nn.Module
    mask_token_id: int
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    train: torch.Tensor  # (N_train, L)
    heldout: torch.Tensor  # (N_eval, L)
    masked: torch.Tensor  # (K, N_eval, L)
    lam: torch.Tensor  # (K, N_eval)


def prepare(mech: Mechanism, loaded: tuple[Any, Any, int] | None = None) -> Setup:
    """Load the base (unless given as ``(model, tokenizer, mask id)``), draw the teachers'
    factors, pack the train / validation chunks and draw the held-out masks."""
    from nara.diffusion import forward_process
    from nara.evaluation.profile import draw_masks
    from nara.models import load_model
    from nara.training.data import load_source

    model, tokenizer, mask_token_id = loaded or load_model(mech.model, dtype=torch.float32)
    data = mech.data

    def chunks(split: str, count: int) -> torch.Tensor:
        per_task = [load_source(f"embedded:{t}", split) for t in data["tasks"]]
        records = [r for group in zip(*per_task) for r in group]  # tasks in turn
        return packed_chunks(tokenizer, records, length=int(data["length"]), count=count)

    heldout = chunks("validation", int(data["eval_chunks"]))
    ev = mech.evaluation
    masks = draw_masks(torch.ones_like(heldout, dtype=torch.bool), bins=ev["bins"], seed=ev["seed"])
    train = chunks("train", int(data["train_chunks"]))
    sample = train[:256]  # masked at t ~ U(0, 1): the inputs the teachers will see
    gen = torch.Generator().manual_seed(int(mech.teacher["seed"]))
    noisy = forward_process(sample, torch.ones_like(sample, dtype=torch.bool), mask_token_id,
                            generator=gen)[0]  # fmt: skip
    factors = teacher_factors(model, mech.target_modules, noisy, **mech.teacher)
    return Setup(model, mask_token_id, factors, train, heldout, masks.masked[:, 0],
                 masks.lam[:, 0])  # fmt: skip


def _scores(mech: Mechanism, setup: Setup, teacher: nn.Module, model: nn.Module) -> dict:
    kl = score_kl(teacher, model, setup.heldout, setup.masked, mask_token_id=setup.mask_token_id,
                  batch_size=int(mech.evaluation["batch_size"]))  # fmt: skip
    return {**bin_summary(kl), "mean_lam": setup.lam.double().mean(-1).tolist()}


def _write(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def run_one(
    mech: Mechanism, setup: Setup, teacher_kind: str, label: str, seed: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Distil one student from one teacher with one seed and score it; writes ``metrics.json``."""
    from nara.adapters import add_adapters, trainable_parameters
    from nara.evaluation.profile import shared_copy

    teacher = build_teacher(setup.model, teacher_kind, setup.factors)
    torch.manual_seed(seed)  # the adapter's initialisation (and NaRA's Fourier frequencies)
    student = add_adapters(shared_copy(setup.model), mech.adapter_config(label))
    start = time.perf_counter()
    tr = mech.training
    trace = distil(student, teacher, setup.train, mask_token_id=setup.mask_token_id,
                   steps=int(tr["steps"]), batch_size=int(tr["batch_size"]), lr=float(tr["lr"]),
                   seed=seed, log_every=int(tr["log_every"]), log=log)  # fmt: skip
    seconds = time.perf_counter() - start
    tail = max(1, len(trace) // 10)
    return _write(mech.run_dir(teacher_kind, label, seed) / METRICS, {
        "teacher": teacher_kind, "method": label, "seed": seed,
        "adapter": mech.adapter_config(label).to_dict(),
        "trainable_params": trainable_parameters(student).trainable,
        "steps": len(trace), "final_train_kl": float(np.mean(trace[-tail:])),
        "train_seconds": round(seconds, 2),
        **_scores(mech, setup, teacher, student),
    })  # fmt: skip


def teacher_record(mech: Mechanism, setup: Setup, kind: str) -> dict[str, Any]:
    """The base → teacher KL per λ bin (``<teacher>/teacher.json``, computed once)."""
    path = mech.root / kind / TEACHER_FILE
    if path.is_file():
        return json.loads(path.read_text())
    teacher = build_teacher(setup.model, kind, setup.factors)
    return _write(path, {"teacher": kind, **mech.teacher, **_scores(mech, setup, teacher,
                                                                      setup.model)})  # fmt: skip


def read_rows(mech: Mechanism) -> list[dict[str, Any]]:
    """``metrics.json`` of every finished run."""
    paths = [mech.run_dir(*run) / METRICS for run in mech.runs()]
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def summarize(mech: Mechanism, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per teacher and student: per-bin and overall KL, mean and std over seeds (ddof 1); each
    student's overall KL minus the first student's (``minus_<first>``) and, for a λ-dependent
    teacher, minus its own KL on the control teacher (``minus_control``), paired by seed."""
    from nara.experiments.runner import mean_std

    reference = next(iter(mech.students))

    out: dict[str, Any] = {"settings": {k: getattr(mech, k) for k in (
        "model", "seeds", "teacher", "target_modules", "data", "training", "evaluation")},
        "teachers": {}}  # fmt: skip
    for kind in mech.teachers:
        base_path = mech.root / kind / TEACHER_FILE
        entry: dict[str, Any] = {}
        if base_path.is_file():
            base = json.loads(base_path.read_text())
            entry[BASE_LABEL] = {"trainable_params": 0, "seeds": [], "overall": [base["overall"],
                                 None], "bins": [[v, None] for v in base["bins"]],
                                 "mean_lam": base["mean_lam"]}  # fmt: skip
        for label in mech.students:
            mine = sorted((r for r in rows if (r["teacher"], r["method"]) == (kind, label)),
                          key=lambda r: r["seed"])  # fmt: skip
            if not mine:
                continue
            bins = np.array([r["bins"] for r in mine], dtype=float)  # (S, K)
            entry[label] = {
                "trainable_params": mine[0]["trainable_params"],
                "seeds": [r["seed"] for r in mine],
                "overall": list(mean_std([r["overall"] for r in mine])),
                "bins": [list(mean_std(list(col))) for col in bins.T],
                "per_seed_overall": [r["overall"] for r in mine],
            }
        for label, e in entry.items():
            if label != reference:
                _paired(e, entry.get(reference), f"minus_{reference}")
        out["teachers"][kind] = entry
    control = out["teachers"].get("control", {})
    for kind, entry in out["teachers"].items():
        for label, e in entry.items():
            if kind != "control":
                _paired(e, control.get(label), "minus_control")
    return out


def _paired(entry: dict[str, Any], other: dict[str, Any] | None, key: str) -> None:
    """Set ``entry[key]`` to mean ± std over seeds of entry − other (overall KL), paired by
    seed, when they share seeds."""
    from nara.experiments.runner import mean_std

    pairs = dict(zip(other["seeds"], other.get("per_seed_overall", []))) if other else {}
    diffs = [v - pairs[s] for s, v in zip(entry["seeds"], entry.get("per_seed_overall", []))
             if s in pairs]  # fmt: skip
    if diffs:
        entry[key] = list(mean_std(diffs))


def _cell(pair: list[float | None], digits: int = 4) -> str:
    mean, std = pair
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def render(mech: Mechanism, summary: dict[str, Any]) -> str:
    """Markdown: overall KL per student and teacher, then per-λ-bin KL per teacher."""
    teachers = [k for k in mech.teachers if summary["teachers"].get(k)]
    labels = list(dict.fromkeys(label for k in teachers for label in summary["teachers"][k]))
    seeds = ", ".join(map(str, mech.seeds))
    lines = [f"KL(teacher ‖ student) per masked token on held-out chunks, all λ bins, mean ± std "
             f"over the finished seeds of {seeds} (a cell without ± has one; {BASE_LABEL}: the "
             "base model, no adapter).", "",
             "| student | trainable params | " + " | ".join(teachers) + " |",
             "|---|---:|" + "---:|" * len(teachers)]  # fmt: skip
    for label in labels:
        entries = [summary["teachers"][k].get(label) for k in teachers]
        params = next(e["trainable_params"] for e in entries if e)
        cells = [_cell(e["overall"]) if e else "–" for e in entries]
        lines.append(f"| {label} | {params:,} | " + " | ".join(cells) + " |")
    reference = next(iter(mech.students))
    key = f"minus_{reference}"
    lines += ["", f"Overall KL minus {reference}'s, paired by seed (mean ± std; negative: closer "
              "to the teacher).", "", "| student | " + " | ".join(teachers) + " |",
              "|---|" + "---:|" * len(teachers)]  # fmt: skip
    for label in labels:
        entries = [summary["teachers"][k].get(label) or {} for k in teachers]
        if any(key in e for e in entries):
            cells = [_cell(e[key]) if key in e else "–" for e in entries]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    dependent = [k for k in teachers if k != "control"]
    if "control" in teachers and dependent:
        lines += ["", "The cost of λ-dependence: each student's overall KL on a λ-dependent "
                  "teacher minus its own KL on the control (same ‖ΔW‖, same A and B), paired by "
                  "seed.", "", "| student | " + " | ".join(dependent) + " |",
                  "|---|" + "---:|" * len(dependent)]  # fmt: skip
        for label in labels:
            entries = [summary["teachers"][k].get(label) or {} for k in dependent]
            if any("minus_control" in e for e in entries):
                cells = [_cell(e["minus_control"]) if "minus_control" in e else "–"
                         for e in entries]  # fmt: skip
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    bins = mech.evaluation["bins"]
    for kind in teachers:
        entry = summary["teachers"][kind]
        heads = [f"{k / bins:.1f}–{(k + 1) / bins:.1f}" for k in range(bins)]
        lines += ["", f"Teacher `{kind}`: KL per λ bin (mean ± std over seeds).", "",
                  "| student | " + " | ".join(heads) + " |", "|---|" + "---:|" * bins]  # fmt: skip
        for label, e in entry.items():
            lines.append(f"| {label} | " + " | ".join(_cell(p, 3) for p in e["bins"]) + " |")
    return "\n".join(lines)


def plot(mech: Mechanism, summary: dict[str, Any], path: Path) -> Path:
    """PNG: per-λ-bin KL per student (mean ± std band), one panel per teacher, log scale;
    static students dashed, the base dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = [k for k in mech.teachers if summary["teachers"].get(k)]
    bins = mech.evaluation["bins"]
    x = (np.arange(bins) + 0.5) / bins
    fig, axes = plt.subplots(1, len(teachers), figsize=(4.6 * len(teachers), 4), squeeze=False,
                             sharey=True)  # fmt: skip
    static = {label for label in mech.students if not _noise_aware(mech.adapter_config(label))}
    for ax, kind in zip(axes[0], teachers):
        for label, e in summary["teachers"][kind].items():
            mean = np.array([p[0] for p in e["bins"]], dtype=float)
            std = np.array([p[1] or 0.0 for p in e["bins"]], dtype=float)
            style = {"color": "k", "ls": ":"} if label == BASE_LABEL else {"marker": "o", "ms": 3}
            if label in static:
                style["ls"] = "--"
            ax.plot(x, mean, label=label, **style)
            ax.fill_between(x, np.clip(mean - std, 1e-6, None), mean + std, alpha=0.15)
        if kind == "step":
            ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=f"teacher: {kind}", xlabel="noise level λ (masked fraction)", yscale="log")
    axes[0][0].set_ylabel("KL(teacher ‖ student) per masked token")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _noise_aware(config: Any) -> bool:
    """Whether an adapter config reads λ (NaRA-C, the constant input mode, does not)."""
    return config.noise_aware and getattr(config, "input_mode", "noise") != "constant"


def report(mech: Mechanism) -> str:
    """Write ``results.md``, ``results.json`` and ``mechanism.png`` from the finished runs."""
    summary = summarize(mech, read_rows(mech))
    text = f"# {mech.name}\n\n{render(mech, summary)}\n\n![per-λ KL]({KIND}.png)\n"
    _write(mech.root / "results.json", summary)
    (mech.root / "results.md").write_text(text)
    if any(summary["teachers"].values()):
        plot(mech, summary, mech.root / f"{KIND}.png")
    return text


def parameter_counts(mech: Mechanism, model: nn.Module) -> dict[str, int]:
    """Trainable parameters of every student on ``model`` (no training)."""
    from nara.adapters import add_adapters, trainable_parameters
    from nara.evaluation.profile import shared_copy

    return {
        label: trainable_parameters(add_adapters(shared_copy(model), mech.adapter_config(label)))
        .trainable for label in mech.students
    }  # fmt: skip


def run_mechanism(
    mech: Mechanism,
    *,
    only: list[str] | None = None,
    loaded: tuple[Any, Any, int] | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Run every unfinished run (a run with ``metrics.json`` is skipped), then the report.

    Args:
        mech: from :func:`load_mechanism`.
        only: student labels to run.
        loaded: ``(model, tokenizer, mask_token_id)`` instead of loading ``mech.model``.
        log: where progress lines go.

    Returns:
        The markdown report.
    """
    runs = mech.runs(only)
    setup = prepare(mech, loaded)
    for kind in mech.teachers:
        base = teacher_record(mech, setup, kind)
        log(f"teacher {kind}: base → teacher KL {base['overall']:.4f}")
    for i, (kind, label, seed) in enumerate(runs, 1):
        where = f"[{i}/{len(runs)}] teacher {kind} student {label} seed {seed}"
        if (mech.run_dir(kind, label, seed) / METRICS).is_file():
            log(f"{where}: done, skipped")
            continue
        m = run_one(mech, setup, kind, label, seed, log)
        log(f"{where}: KL {m['overall']:.4f} ({m['train_seconds']:.0f} s)")
    return report(mech)


def run_command(args: argparse.Namespace) -> int:
    """``nara experiment <mechanism yaml>``: the same flags as a grid (see commands/experiment)."""
    mech = load_mechanism(args.config, args.overrides)
    only = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.dry_run:
        for kind, label, seed in mech.runs(only):
            print(f"{kind}\t{label}\tseed {seed}\t{mech.run_dir(kind, label, seed)}")
        return 0
    if args.report:
        print(report(mech))
        return 0
    if args.counts:
        from nara.models import load_model

        for label, count in parameter_counts(mech, load_model(mech.model).model).items():
            print(f"{label:28s} {count:>12,}")
        return 0
    print(run_mechanism(mech, only=only))
    return 0
