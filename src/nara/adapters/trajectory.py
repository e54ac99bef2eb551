"""LoRA-Diffusion: low-rank perturbations of the denoising trajectory's hidden states (issue 8).

At each chosen place (after every transformer block by default) a trajectory module adds

    h ← h + s · B_k · A_k · h            A_k: r_k × d, B_k: d × r_k (zero init)

to the hidden state h (B, T, d), where k is the *phase* of the sample's noise level λ: λ ∈ [0, 1]
is cut into P phases at boundaries b_1 < … < b_{P−1}; phase 0 is the highest-noise one,

    phase(λ) = P − 1 − #{j : λ > b_j}        (λ on a boundary goes to the lower-noise phase).

Each phase has its own rank r_k (a step-adaptive schedule, e.g. [64, 32, 8] high → low noise, or
a rule at equal total rank), and its own A_k, B_k; or, with ``shared=True``, one A, B of rank
max r_k whose phase k uses the first r_k ranks (a rank mask, as T-LoRA masks by λ).

How it plugs into the adapter core: the modules live in the model's NoiseHub (so the core's
freezing, counting, save/load and trainer paths see them), a forward hook on each place adds the
perturbation, and the phase index is a hub Conditioner, computed once per forward from the λ of
``nara.noise_level``. A mixed batch runs in one pass: every phase's A_k is stacked into one
(Σr_k × d) matrix and each sample keeps its own phase's ranks with a (B, Σr_k) gate.

Composition (:func:`compose_trajectories`): modules trained separately are loaded frozen; a router
(a Linear from the mean token embedding of the *prompt* — the hidden state entering the first
block — to softmax weights over the modules) mixes their perturbations, per sample. The prompt
positions reach the router through :func:`route_context`, entered like ``noise_level``:

    model = nara.add_adapters(model, nara.TrajectoryConfig(rank_schedule=[64, 32, 8]))
    with nara.noise_level(model, lam):                       # lam: (B,)
        loss = ... model(ids) ... + trajectory_regularizer(model)

    model = compose_trajectories(base, ["out/task_a", "out/task_b"])   # router trainable
    with nara.noise_level(model, lam), route_context(model, prompt_mask):  # prompt_mask (B, T)
        logits = model(ids).logits

It is not a weight update, so ``nara.merge_adapters`` refuses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import AdapterConfig, _check, _field
from nara.adapters.inject import (
    HIDDEN_STATE_METHODS,
    HiddenStateMethod,
    add_adapters,
    compile_target_regex,
)
from nara.adapters.layer import matches, per_sample
from nara.adapters.noise import Conditioner, NoiseHub, find_hub
from nara.adapters.save import WEIGHTS_NAME, fingerprint, read_config, read_weights

RANK_RULES = ("decreasing", "constant", "increasing")
# λ arrives as float32: keep λ = 1/3 on the boundary 1/3 (lower-noise phase) despite rounding.
_ROUNDING_SLACK = 1e-6
_HIDDEN_SIZE_NAMES = ("d_model", "hidden_size", "n_embd")
NO_PROMPT_MESSAGE = (
    "this model composes trajectory modules with a router, which reads the prompt, but no "
    "prompt mask is set; wrap the call in `with nara.adapters.trajectory.route_context(model, "
    "prompt_mask):` with prompt_mask bool (batch, length), True at prompt tokens"
)


# ----------------------------------------------------------------------------- configs


@dataclass
class TrajectoryConfig(AdapterConfig):
    """LoRA-Diffusion: h ← h + s·B_k·A_k·h at chosen places, k = the noise phase of λ."""

    method: ClassVar[str] = "trajectory"
    noise_aware: ClassVar[bool] = True

    r: int = _field(
        8,
        "mean rank per phase for a rank rule (total rank r × num_phases); unused when "
        "rank_schedule is a list",
    )
    scale: float | None = _field(
        1.0, "scale s of the perturbation (default 1; None means alpha / r)"
    )
    target_modules: list[str] | str = _field(
        "blocks",
        "places whose output is perturbed: 'blocks' (after every transformer block), a list of "
        "block indices and/or module names or '.'-suffixes, or a regex on full module names",
    )
    num_phases: int = _field(3, "P, the number of noise phases (high, mid, low noise for 3)")
    boundaries: list[float] | None = _field(
        None,
        "the P − 1 increasing λ boundaries between phases, in (0, 1); None = equal phases k/P",
    )
    rank_schedule: list[int] | str = _field(
        "decreasing",
        "rank of each phase, high → low noise, e.g. [64, 32, 8]; or a rule at equal total rank "
        f"r × num_phases: {', '.join(RANK_RULES)}",
    )
    shared: bool = _field(
        False, "one module of rank max r_k for all phases, phase k using its first r_k ranks"
    )
    orthogonality_weight: float = _field(
        0.0, "weight of Σ‖A_k A_kᵀ − I‖²_F in trajectory_regularizer (0 = off)"
    )
    nuclear_weight: float = _field(
        0.0, "weight of Σ‖B_k A_k‖_* (nuclear norm) in trajectory_regularizer (0 = off)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (list, tuple)):  # block indices may be given as ints
            self.target_modules = [str(t) if isinstance(t, int) else t for t in self.target_modules]
        super().__post_init__()
        _check(
            isinstance(self.num_phases, int) and self.num_phases >= 1,
            f"num_phases must be an integer >= 1, got {self.num_phases!r}",
        )
        p = self.num_phases
        if self.boundaries is not None:
            self.boundaries = [float(b) for b in self.boundaries]
            b = self.boundaries
            _check(
                len(b) == p - 1
                and all(0 < x < 1 for x in b)
                and all(x < y for x, y in zip(b, b[1:])),
                f"boundaries must be {p - 1} increasing values in (0, 1) for num_phases={p}, "
                f"got {b}; e.g. {[round(k / p, 3) for k in range(1, p)]}, or None for equal phases",
            )
        if isinstance(self.rank_schedule, str):
            _check(
                self.rank_schedule in RANK_RULES,
                f"rank_schedule must be a list of ranks or one of {RANK_RULES}, "
                f"got {self.rank_schedule!r}",
            )
        else:
            self.rank_schedule = list(self.rank_schedule)
            _check(
                len(self.rank_schedule) == p,
                f"rank_schedule has {len(self.rank_schedule)} ranks but num_phases={p}; give one "
                f"rank per phase (high → low noise) or set num_phases={len(self.rank_schedule)}",
            )
        ranks = self.ranks
        _check(
            all(isinstance(k, int) and k > 0 for k in ranks),
            f"every phase needs a positive integer rank, got {ranks} from rank_schedule="
            f"{self.rank_schedule!r}; raise r (total rank r × num_phases) or list the ranks",
        )
        for name in ("orthogonality_weight", "nuclear_weight"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def ranks(self) -> list[int]:
        """Rank of each phase, high → low noise (a rule spreads r·P by largest remainders)."""
        if not isinstance(self.rank_schedule, str):
            return list(self.rank_schedule)
        p = self.num_phases
        weights = {
            "decreasing": [p - k for k in range(p)],
            "constant": [1] * p,
            "increasing": [k + 1 for k in range(p)],
        }[self.rank_schedule]
        shares = [self.r * p * w / sum(weights) for w in weights]
        ranks = [int(s) for s in shares]
        by_remainder = sorted(range(p), key=lambda k: ranks[k] - shares[k])  # stable: high first
        for k in by_remainder[: self.r * p - sum(ranks)]:
            ranks[k] += 1
        return ranks

    @property
    def phase_boundaries(self) -> list[float]:
        """The P − 1 λ boundaries (equal phases k/P unless ``boundaries`` is set)."""
        if self.boundaries is not None:
            return list(self.boundaries)
        return [k / self.num_phases for k in range(1, self.num_phases)]


@dataclass
class TrajectoryRouterConfig(AdapterConfig):
    """A router over trained trajectory modules (frozen): softmax weights from the prompt.

    Only ``sources`` is needed; the LoRA fields inherited from AdapterConfig are unused.
    """

    method: ClassVar[str] = "trajectory_router"
    noise_aware: ClassVar[bool] = True

    sources: list[str] = _field(
        [], "folders of trained trajectory adapters (nara.save_adapters) to compose, >= 2"
    )
    modules: list[dict] = _field(
        [],
        "the modules' TrajectoryConfig dicts; filled in from sources (a saved composition keeps "
        "them so it loads without the source folders): leave empty in recipes",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sources = [str(s) for s in self.sources]
        count = len(self.modules) or len(self.sources)
        _check(
            count >= 2,
            f"a trajectory router composes at least 2 modules, got {count}; pass "
            "sources=['out/task_a', 'out/task_b'] (load a single module with nara.load_adapters)",
        )
        _check(
            not (self.modules and self.sources) or len(self.modules) == len(self.sources),
            f"modules ({len(self.modules)}) and sources ({len(self.sources)}) differ in number; "
            "leave modules empty, it is filled in from sources",
        )
        for m in self.modules:
            _check(
                m.get("method") == TrajectoryConfig.method,
                f"modules must hold TrajectoryConfig dicts (method 'trajectory'), got {m!r}",
            )

    @property
    def module_configs(self) -> list[TrajectoryConfig]:
        return [AdapterConfig.from_dict(m) for m in self.modules]


# ----------------------------------------------------------------------------- places


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer blocks: its longest nn.ModuleList (LLaDA ``transformer.blocks``)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(
            "target_modules='blocks' found no nn.ModuleList of transformer blocks in this model; "
            "name the places instead, e.g. target_modules=['layers.0', 'layers.3']"
        )
    return max(lists, key=lambda item: len(item[1]))


def _hidden_size(model: nn.Module, module: nn.Module, name: str) -> int:
    """Width d of ``module``'s output: out_features of a Linear, else the model's hidden size."""
    if isinstance(module, nn.Linear):
        return module.out_features
    config = getattr(model, "config", None)
    for attr in _HIDDEN_SIZE_NAMES:
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    first = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise ValueError(
            f"cannot tell the hidden size at place {name!r} (no model.config.d_model/hidden_size "
            "and no linear layer inside); choose transformer blocks or linear layers as places"
        )
    return first.in_features  # a pre-norm block reads and writes the residual stream


def _block(model: nn.Module, index: int) -> str:
    """Full name of transformer block ``index``."""
    name, blocks = _block_list(model)
    if not 0 <= index < len(blocks):
        raise ValueError(
            f"block index {index} is out of range: {name} has {len(blocks)} blocks "
            f"(0 … {len(blocks) - 1})"
        )
    return f"{name}.{index}"


def resolve_places(model: nn.Module, spec: list[str] | str) -> dict[str, int]:
    """Place name → hidden size d, in model order, for ``TrajectoryConfig.target_modules``.

    ``"blocks"``: every transformer block; a list: block indices (digit strings) and module names
    or '.'-suffixes; another string: a regex matched against full names (``re.fullmatch``).

    Raises:
        ValueError: entries that match nothing (naming what exists), a block index out of range.
    """
    modules = {n: m for n, m in model.named_modules() if n and not n.startswith("nara_hub")}
    if spec == "blocks":
        name, blocks = _block_list(model)
        picked = {f"{name}.{i}" for i in range(len(blocks))}
    elif isinstance(spec, str):
        pattern = compile_target_regex(spec)
        picked = {n for n in modules if pattern.fullmatch(n)}
        if not picked:
            raise ValueError(
                f"target_modules regex {spec!r} matches no module name (re.fullmatch on full "
                f"names such as {list(modules)[:3]}); or pass 'blocks' or block indices"
            )
    else:
        picked = {_block(model, int(e)) for e in spec if e.isdigit()}
        for entry in (e for e in spec if not e.isdigit()):
            hits = {n for n in modules if matches(n, entry)}
            if not hits:
                raise ValueError(
                    f"target_modules entry {entry!r} matches no module of this model; use "
                    f"block indices or names such as {list(modules)[:3]}"
                )
            picked |= hits
    return {n: _hidden_size(model, m, n) for n, m in modules.items() if n in picked}


def _key(place: str) -> str:
    return place.replace(".", "__")  # ModuleDict keys cannot hold '.'


# ----------------------------------------------------------------------------- modules


class PhaseIndex(Conditioner):
    """λ (n,) → phase (n,) long: P − 1 − #{j : λ > b_j}; 0 is the highest-noise phase."""

    def __init__(self, boundaries: list[float]) -> None:
        super().__init__()
        self.register_buffer(
            "boundaries", torch.tensor(boundaries, dtype=torch.float64), persistent=False
        )

    def forward(self, lam: torch.Tensor, density: torch.Tensor | None) -> torch.Tensor:
        above = lam.double()[:, None] - _ROUNDING_SLACK > self.boundaries  # (n, P − 1)
        return len(self.boundaries) - above.sum(-1)


class TrajectoryModule(nn.Module):
    """The perturbation at one place: δ = s · ((h·Aᵀ) ⊙ gate[phase]) · Bᵀ, one pass for a batch.

    ``A`` (R, d) stacks every phase's A_k (R = Σ r_k), or is one rank-max(r_k) matrix when
    shared; ``gate`` (P, R) holds s on the ranks phase k uses and 0 elsewhere. So each sample
    computes exactly s·B_k·A_k·h of its own phase, vectorised over a mixed batch.
    """

    def __init__(self, d: int, config: TrajectoryConfig, device: torch.device) -> None:
        super().__init__()
        ranks = config.ranks
        if max(ranks) > d:
            raise ValueError(f"phase ranks {ranks} exceed the hidden size {d}; use ranks <= {d}")
        if config.shared:
            self.spans = [(0, r) for r in ranks]
        else:
            self.spans = [(end - r, end) for r, end in zip(ranks, accumulate(ranks))]
        total = max(ranks) if config.shared else sum(ranks)
        self.A = nn.Parameter(torch.empty(total, d, device=device))  # (R, d)
        nn.init.kaiming_uniform_(self.A, a=5**0.5)  # LoRA's A init (nn.Linear's default)
        self.B = nn.Parameter(torch.zeros(d, total, device=device))  # (d, R)
        gate = torch.zeros(len(ranks), total, device=device)
        for k, (start, stop) in enumerate(self.spans):
            gate[k, start:stop] = config.scaling
        self.register_buffer("gate", gate, persistent=False)
        self.dropout_p = config.dropout

    def forward(self, h: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """h (B, ..., d), phase long (n,) with n = 1 or B → δ (B, ..., d) in float32."""
        if self.dropout_p and self.training:
            h = F.dropout(h, self.dropout_p, training=True)
        z = F.linear(h.to(self.A.dtype), self.A)  # (B, ..., R)
        z = z * per_sample(self.gate[phase], z)  # each sample keeps its phase's ranks
        return F.linear(z, self.B)  # (B, ..., d)

    def factors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(A_k (r_k, d), B_k (d, r_k)) of every phase, high → low noise."""
        return [(self.A[start:stop], self.B[:, start:stop]) for start, stop in self.spans]


class Router(Conditioner):
    """Prompt features (B, d) → softmax weights (B, M) over M composed modules.

    Zero-initialised, so it starts from the uniform mix. The features — the mean token embedding
    over the prompt positions given by :func:`route_context` — are set by a pre-hook just before
    the hub computes its conditioners, so a checkpoint recompute sees the same features.
    """

    needs_noise = False

    def __init__(self, d: int, num_modules: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, num_modules)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.prompt_masks: list[torch.Tensor] = []
        self.features: torch.Tensor | None = None

    def forward(self, lam: torch.Tensor | None, density: torch.Tensor | None) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError(NO_PROMPT_MESSAGE)
        return torch.softmax(self.proj(self.features), dim=-1)  # (B, M)

    def observe(self, model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Root forward pre-hook: the mean input embedding over the prompt positions."""
        if not self.prompt_masks:
            raise RuntimeError(NO_PROMPT_MESSAGE)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            embeds = model.get_input_embeddings()(ids)
        mask = self.prompt_masks[-1]
        if mask.shape != embeds.shape[:2]:
            raise ValueError(
                f"route_context got a prompt mask of shape {tuple(mask.shape)} but the input is "
                f"{tuple(embeds.shape[:2])}; give one row per sample (a doubled batch for CFG)"
            )
        w = mask.to(device=embeds.device, dtype=torch.float32)[..., None]  # (B, T, 1)
        x = embeds.detach().float()  # (B, T, d); frozen embeddings: no graph to keep
        self.features = (x * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, d)


@contextmanager
def route_context(model: nn.Module, prompt_mask: torch.Tensor) -> Iterator[None]:
    """Tell a composed model's router which positions are the prompt, bool (B, T).

    A no-op for any model without a trajectory router, so the loss and the sampler can enter it
    unconditionally: training passes ``attention_mask & ~maskable``, sampling its prompt region.
    """
    hub = find_hub(model)
    router = (
        hub.conditioners["router"] if hub is not None and "router" in hub.conditioners else None
    )
    if router is None:
        yield
        return
    if prompt_mask.dim() != 2:
        raise ValueError(f"prompt_mask must be (batch, length), got {tuple(prompt_mask.shape)}")
    router.prompt_masks.append(prompt_mask.bool())
    try:
        yield
    finally:
        router.prompt_masks.pop()


# ----------------------------------------------------------------------------- installing


def _perturb(hub: NoiseHub, place: str, module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of a place: output h → h + Σ_m w_m · δ_m(h) (w ≡ 1 without a router)."""
    h = output[0] if isinstance(output, tuple) else output  # (B, ..., d)
    weights = hub.lookup("router") if "router" in hub.conditioners else None  # (B, M)
    delta = None
    for m, task in enumerate(hub.trajectories):
        if _key(place) not in task:
            continue
        phase = hub.lookup(f"phase_{m}")  # (n,)
        if phase.shape[0] not in (1, h.shape[0]):
            raise ValueError(
                f"noise_level got {phase.shape[0]} noise values but the hidden state at {place} "
                f"has batch size {h.shape[0]}; pass one λ per sample or a float"
            )
        d = task[_key(place)](h, phase)  # (B, ..., d)
        if weights is not None:
            d = d * per_sample(weights[:, m : m + 1], d)
        delta = d if delta is None else delta + d
    if delta is None:
        return output
    h = h + delta.to(h.dtype)
    return (h, *output[1:]) if isinstance(output, tuple) else h


def _install(
    model: nn.Module, config: AdapterConfig, task_configs: list[TrajectoryConfig]
) -> NoiseHub:
    """Freeze the model, build one set of trajectory modules per task config in its hub, hook
    the places, and add a router when composing. Returns the hub."""
    if find_hub(model) is not None:
        raise ValueError(
            "this model already has nara adapters; nara keeps one adapter config per model: "
            "start from a fresh base model"
        )
    places = [resolve_places(model, c.target_modules) for c in task_configs]
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    conditioners: dict[str, Conditioner] = {
        f"phase_{m}": PhaseIndex(c.phase_boundaries) for m, c in enumerate(task_configs)
    }
    if len(task_configs) > 1:
        width = model.get_input_embeddings().embedding_dim
        conditioners["router"] = Router(width, len(task_configs))
    hub = NoiseHub(config.method, conditioners)
    hub.trajectories = nn.ModuleList(
        nn.ModuleDict({_key(n): TrajectoryModule(d, c, device) for n, d in where.items()})
        for c, where in zip(task_configs, places)
    )
    hub.to(device).train(model.training)  # new modules follow the model's mode (dropout)
    hub.config = config
    hub.task_configs = task_configs
    all_places = set().union(*places)
    hub.targets = [n for n, _ in model.named_modules() if n in all_places]
    model.nara_hub = hub
    for name in hub.targets:
        model.get_submodule(name).register_forward_hook(partial(_perturb, hub, name))
    if "router" in conditioners:
        hub.trajectories.requires_grad_(False)  # composing: only the router trains
        model.register_forward_pre_hook(conditioners["router"].observe, with_kwargs=True)
    model.register_forward_pre_hook(hub.begin_forward)  # after observe: the router needs it
    return hub


def _add_trajectory(model: nn.Module, config: TrajectoryConfig) -> nn.Module:
    _install(model, config, [config])
    return model


def _read_source(model: nn.Module, source: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A trained trajectory adapter folder → (its config dict, its module tensors by name)."""
    meta = read_config(source)
    if meta.get("method") != TrajectoryConfig.method:
        raise ValueError(
            f"{source} holds a {meta.get('method')!r} adapter; a router composes trajectory "
            "adapters only (train them with method 'trajectory')"
        )
    config = AdapterConfig.from_dict(meta["config"])
    if fingerprint(_trajectory_shapes(model, config)) != meta.get("fingerprint"):
        raise ValueError(
            f"the trajectory adapter in {source} was trained on a model with other place shapes "
            "than this one; compose adapters trained on this base model"
        )
    prefix = "nara_hub.trajectories.0."
    tensors = read_weights(source, meta)
    return meta["config"], {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _add_router(model: nn.Module, config: TrajectoryRouterConfig) -> nn.Module:
    if config.modules:  # a saved composition: its tensors come from load_adapters
        _install(model, config, config.module_configs)
        return model
    sources = [_read_source(model, Path(s)) for s in config.sources]
    config = dataclasses.replace(config, modules=[c for c, _ in sources])
    hub = _install(model, config, config.module_configs)
    for (_, tensors), task, source in zip(sources, hub.trajectories, config.sources):
        missing = task.load_state_dict(tensors, strict=False).missing_keys
        if missing:
            raise ValueError(
                f"{Path(source) / WEIGHTS_NAME} lacks {missing[:4]}; save the adapter again"
            )
    return model


def _trajectory_shapes(model: nn.Module, config: TrajectoryConfig) -> dict[str, list[int]]:
    return {n: [d, d] for n, d in resolve_places(model, config.target_modules).items()}


def _router_shapes(model: nn.Module, config: TrajectoryRouterConfig) -> dict[str, list[int]]:
    if not config.modules:
        config = dataclasses.replace(
            config, modules=[read_config(Path(s))["config"] for s in config.sources]
        )
    shapes = {}
    for c in config.module_configs:
        shapes.update(_trajectory_shapes(model, c))
    return shapes


def compose_trajectories(model: nn.Module, sources: list[str | Path]) -> nn.Module:
    """Load trained trajectory adapters (folders) into fresh base ``model``, frozen, and add a
    trainable router that mixes them per sample. Returns the same model.

    Calls then need ``noise_level`` and :func:`route_context`. Save and reload the composition
    (router and modules together) with ``nara.save_adapters`` / ``nara.load_adapters``.
    """
    return add_adapters(model, TrajectoryRouterConfig(sources=[str(s) for s in sources]))


# ----------------------------------------------------------------------------- regularisers


def _trajectory_hub(model: nn.Module) -> NoiseHub:
    hub = find_hub(model)
    if hub is None or not hasattr(hub, "trajectories"):
        raise ValueError(
            "this model has no trajectory adapters; add them with "
            "nara.add_adapters(model, nara.TrajectoryConfig(...))"
        )
    return hub


def _nuclear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖B·A‖_* from small matrices: Aᵀ = Q·R gives B·A = (B·Rᵀ)·Qᵀ, Qᵀ with orthonormal rows."""
    r = torch.linalg.qr(a.mT).R  # (r, r)
    return torch.linalg.svdvals(b @ r.mT).sum()  # singular values of a (d, r) matrix


def _penalties(
    task: nn.ModuleDict, *, orthogonality: bool, nuclear: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ‖A_kA_kᵀ − I‖²_F and Σ‖B_kA_k‖_* over a task's trainable places and phases (0 if off)."""
    orth = nuc = torch.zeros((), device=next(task.parameters()).device)
    for module in task.values():
        if not module.A.requires_grad:  # frozen composed modules: a constant, left out
            continue
        for a, b in module.factors():
            if orthogonality:
                eye = torch.eye(a.shape[0], device=a.device)
                orth = orth + (a @ a.mT - eye).square().sum()
            if nuclear:
                nuc = nuc + _nuclear(a, b)
    return orth, nuc


def regularizer_terms(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unweighted Σ‖A_kA_kᵀ − I‖²_F ("orthogonality") and Σ‖B_kA_k‖_* ("nuclear") over every
    trainable place and phase, for logging whether either penalty moves.

    Raises:
        ValueError: the model has no trajectory adapters.
    """
    pairs = [
        _penalties(task, orthogonality=True, nuclear=True)
        for task in _trajectory_hub(model).trajectories
    ]
    return {"orthogonality": sum(o for o, _ in pairs), "nuclear": sum(n for _, n in pairs)}


def trajectory_regularizer(model: nn.Module) -> torch.Tensor:
    """The penalty to add to the training loss: orthogonality_weight · Σ‖A_kA_kᵀ − I‖²_F +
    nuclear_weight · Σ‖B_kA_k‖_*. A zero scalar when both weights are 0, or when composing
    (the modules are frozen; only the router trains).

    Raises:
        ValueError: the model has no trajectory adapters.
    """
    hub = _trajectory_hub(model)
    total = 0.0
    for config, task in zip(hub.task_configs, hub.trajectories):
        ow, nw = config.orthogonality_weight, config.nuclear_weight
        orth, nuc = _penalties(task, orthogonality=ow > 0, nuclear=nw > 0)
        total = total + ow * orth + nw * nuc
    return total


HIDDEN_STATE_METHODS[TrajectoryConfig.method] = HiddenStateMethod(
    _add_trajectory, _trajectory_shapes
)
HIDDEN_STATE_METHODS[TrajectoryRouterConfig.method] = HiddenStateMethod(_add_router, _router_shapes)
