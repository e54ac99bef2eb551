"""Adapter configs: one dataclass per method, validated on construction.

Each field's help text lives once, in its dataclass metadata (``field_help``), so the command line
and the docs read it from there. ``to_dict``/``from_dict`` round-trip through JSON; ``method`` names
the adapter kind and picks the class back on load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

# LLaDA's attention projections: the paper's target set.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out")
EMBEDDINGS = ("fourier", "sinusoidal", "learned", "raw")
INPUT_MODES = ("noise", "density", "both", "constant")

_CONFIGS: dict[str, type[AdapterConfig]] = {}


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text is stored once, in its metadata."""
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help}, **kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class AdapterConfig:
    """Fields shared by every adapter method (the LoRA core: A r×d_in, B d_out×r, scale s)."""

    method: ClassVar[str] = ""
    noise_aware: ClassVar[bool] = False

    r: int = _field(8, "rank of the low-rank update (columns of B, rows of A)")
    alpha: float = _field(16.0, "LoRA alpha; the scale is s = alpha / r unless `scale` is set")
    scale: float | None = _field(
        None, "explicit scale s of the update (overrides alpha / r; the released NaRA code used 1)"
    )
    dropout: float = _field(0.0, "dropout probability on the adapter input (paper: 0.05)")
    target_modules: list[str] | str = _field(
        list(DEFAULT_TARGETS),
        "modules to adapt: a list of exact names or '.'-suffixes, a regex string matched "
        "against full module names, or 'all-linear' (every nn.Linear except the output head)",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            _CONFIGS[cls.method] = cls

    def __post_init__(self) -> None:
        _check(
            isinstance(self.r, int) and self.r > 0,
            f"r must be a positive integer, got {self.r!r}; use e.g. r=8",
        )
        _check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}; use e.g. alpha=2*r")
        _check(
            self.scale is None or self.scale > 0,
            f"scale must be > 0 or None (None means alpha / r), got {self.scale}",
        )
        _check(
            0.0 <= self.dropout < 1.0,
            f"dropout must be in [0, 1), got {self.dropout}; use 0.0 to disable it",
        )
        self.target_modules = _modules(
            self.target_modules,
            "target_modules must be a non-empty list of module names, a regex string or "
            "'all-linear'",
        )

    @property
    def scaling(self) -> float:
        """The scale s applied to the update: `scale` if set, else alpha / r."""
        return self.alpha / self.r if self.scale is None else self.scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``method``."""
        return {"method": self.method, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AdapterConfig:
        """Rebuild the config of the method named in ``data["method"]``."""
        data = dict(data)
        method = data.pop("method", None)
        if method not in _CONFIGS:
            raise ValueError(
                f"unknown adapter method {method!r}; known methods: {', '.join(sorted(_CONFIGS))}"
            )
        cls = _CONFIGS[method]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {unknown}; it accepts {sorted(names)} "
                "(was the file written by a newer nara?)"
            )
        return cls(**data)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Help text of every field, for command-line help and docs."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _modules(value: Any, requirement: str, empty: bool = False) -> list[str] | str:
    """A module selection checked and normalised: a regex string, or a list (tuples become
    lists) of non-empty names, non-empty unless ``empty``; ``requirement`` opens the error."""
    if isinstance(value, tuple):
        value = list(value)
    names_ok = isinstance(value, list) and (empty or bool(value))
    _check(
        isinstance(value, str) or (names_ok and all(isinstance(t, str) and t for t in value)),
        f"{requirement}, got {value!r}",
    )
    return value


def config_class(method: str) -> type[AdapterConfig]:
    """The config class registered for ``method`` (e.g. "nara")."""
    if method not in _CONFIGS:
        raise ValueError(f"unknown adapter method {method!r}; known: {', '.join(sorted(_CONFIGS))}")
    return _CONFIGS[method]


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA: ΔW = s·B·A, the same at every noise level."""

    method: ClassVar[str] = "lora"


@dataclass
class DoRAConfig(AdapterConfig):
    """DoRA: W' = m·(W + s·B·A)/‖W + s·B·A‖ (row norm, detached), m learned, init ‖W‖."""

    method: ClassVar[str] = "dora"


@dataclass
class HiRAConfig(AdapterConfig):
    """HiRA: ΔW = W ⊙ (s·B·A). The scale defaults to 1, as in PEFT's HiRA (which has no alpha)."""

    method: ClassVar[str] = "hira"
    scale: float | None = _field(
        1.0, "explicit scale s of B·A (default 1 as in PEFT's HiRA; None means alpha / r)"
    )


@dataclass
class NaRAConfig(AdapterConfig):
    """NaRA: ΔW(λ) = s·B·C(λ)·A with C(λ) = I + η·reshape(F(e(λ))) (Wang et al., ICML 2026)."""

    method: ClassVar[str] = "nara"
    noise_aware: ClassVar[bool] = True

    eta: float = _field(0.1, "η, the scale of C's deviation from the identity (paper: 0.1)")
    embedding: str = _field(
        "fourier", f"noise embedding e(λ), one of {', '.join(EMBEDDINGS)} (paper: fourier)"
    )
    embedding_dim: int = _field(64, "size of the noise embedding (fourier: 2 × frequencies)")
    fourier_sigma: float = _field(16.0, "σ of the frozen Gaussian Fourier frequencies w ~ N(0, σ²)")
    hidden_sizes: list[int] = _field([256, 512], "hidden widths of the hypernetwork F")
    input_mode: str = _field(
        "noise",
        "what C depends on: noise (λ), density (local mask density), both (concatenated), "
        "or constant (NaRA-C: one learned C, no noise input)",
    )
    sharing: str | dict[str, list[str]] = _field(
        "global",
        "hypernetwork sharing: 'global' (one for the model), 'per_layer' (one per adapted "
        "module), or named groups {name: [module names or suffixes]}",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.eta > 0, f"eta must be > 0, got {self.eta}; the paper uses eta=0.1")
        _check(
            self.embedding in EMBEDDINGS,
            f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}",
        )
        _check(
            self.embedding_dim > 0 and (self.embedding != "fourier" or self.embedding_dim % 2 == 0),
            f"embedding_dim must be positive (and even for fourier), got {self.embedding_dim}",
        )
        _check(self.fourier_sigma > 0, f"fourier_sigma must be > 0, got {self.fourier_sigma}")
        self.hidden_sizes = list(self.hidden_sizes)
        _check(
            bool(self.hidden_sizes) and all(h > 0 for h in self.hidden_sizes),
            f"hidden_sizes must be positive widths, e.g. [256, 512], got {self.hidden_sizes}",
        )
        _check(
            self.input_mode in INPUT_MODES,
            f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}",
        )
        groups_ok = isinstance(self.sharing, dict) and all(
            isinstance(k, str) and "." not in k and isinstance(v, list) and v
            for k, v in self.sharing.items()
        )
        _check(
            self.sharing in ("global", "per_layer") or groups_ok,
            "sharing must be 'global', 'per_layer' or a dict of group name (no '.') -> non-empty "
            f"list of module names, e.g. {{'qk': ['q_proj', 'k_proj']}}; got {self.sharing!r}",
        )


@dataclass
class NaRADoRAConfig(NaRAConfig):
    """NaRA-DoRA: DoRA whose low-rank update is NaRA's ΔW(λ)."""

    method: ClassVar[str] = "nara_dora"


@dataclass
class MultiLoRAConfig(AdapterConfig):
    """Multi-LoRA: K independent LoRAs, sample i uses bin ⌈λᵢ·K⌉ (λ = 0 goes to bin 1)."""

    method: ClassVar[str] = "multi_lora"
    noise_aware: ClassVar[bool] = True

    num_bins: int = _field(4, "K, the number of noise bins (one LoRA each)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.num_bins >= 1, f"num_bins must be >= 1, got {self.num_bins}")


@dataclass
class TLoRAConfig(AdapterConfig):
    """T-LoRA: active rank r_min + ⌊(1−λ)^p·(r − r_min)⌋; higher noise → fewer ranks."""

    method: ClassVar[str] = "t_lora"
    noise_aware: ClassVar[bool] = True

    r_min: int = _field(1, "rank used at full noise (λ = 1)")
    power: float = _field(1.0, "p, the exponent of the rank schedule (1 − λ)^p")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            1 <= self.r_min <= self.r,
            f"r_min must be in [1, r={self.r}], got {self.r_min}",
        )
        _check(self.power > 0, f"power must be > 0, got {self.power}")


_UNUSED = "unused by this method (a LoRA field, accepted so shared recipes apply)"
NONLINEARITIES = ("tanh", "relu", "gelu", "silu")
BOTTLENECK_VARIANTS = ("series", "parallel")
GATES = ("hard", "soft")


@dataclass
class NoRankConfig(AdapterConfig):
    """Base of the methods without a low-rank update: the LoRA fields are accepted and unused."""

    r: int = _field(8, _UNUSED)
    alpha: float = _field(16.0, _UNUSED)
    scale: float | None = _field(None, _UNUSED)
    dropout: float = _field(0.0, _UNUSED)


@dataclass
class BitFitConfig(NoRankConfig):
    """BitFit: only biases train. Each targeted linear gets a zero-initialised trainable bias
    δ (d_out,) added to its output, so y = x·Wᵀ + b + δ; a bias-free layer (LLaDA) has b = 0."""

    method: ClassVar[str] = "bitfit"

    target_modules: list[str] | str = _field(
        "all-linear",
        "linears whose bias trains: names, a regex, or 'all-linear' (every nn.Linear but the head)",
    )


@dataclass
class IA3Config(NoRankConfig):
    """(IA)³: learned vectors, initialised to ones, rescale the outputs of the key and value
    projections and the input of the MLP's down projection (``feedforward_modules``)."""

    method: ClassVar[str] = "ia3"

    target_modules: list[str] | str = _field(
        ["k_proj", "v_proj", "ff_out"],
        "linears to rescale (LLaDA's keys, values and MLP down projection; the output head is "
        "never matched by a last name)",
    )
    feedforward_modules: list[str] | str = _field(
        ["ff_out"],
        "targets whose input, not output, is rescaled: the MLP down projection (LLaDA: ff_out, "
        "Dream/LLaMA: down_proj); names or a regex, each naming some target",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feedforward_modules = _modules(
            self.feedforward_modules,
            "feedforward_modules must be a list of module names (possibly empty) or a regex string",
            empty=True,
        )


@dataclass
class BottleneckConfig(AdapterConfig):
    """Bottleneck adapters: y = h + s·U·f(D·z), D (r, d) then U (d_out, r) zero-initialised;
    z = h (the layer's output: series, Houlsby) or its input x (parallel)."""

    method: ClassVar[str] = "bottleneck"

    r: int = _field(16, "bottleneck width: D maps to r features, U maps them back")
    alpha: float = _field(16.0, "unused unless scale is None (then s = alpha / r)")
    scale: float | None = _field(1.0, "s, the scale of the adapter output (default 1)")
    target_modules: list[str] | str = _field(
        ["attn_out", "ff_out"],
        "linears whose output is adapted: the attention output and MLP down projections "
        "(LLaDA names; Dream/LLaMA: o_proj, down_proj)",
    )
    variant: str = _field(
        "series",
        f"one of {BOTTLENECK_VARIANTS}: series adapts the layer's output h (Houlsby), parallel "
        "runs beside the layer on its input x",
    )
    nonlinearity: str = _field("tanh", f"f, one of {NONLINEARITIES}")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.variant in BOTTLENECK_VARIANTS,
            f"variant must be one of {BOTTLENECK_VARIANTS}, got {self.variant!r}",
        )
        _check(
            self.nonlinearity in NONLINEARITIES,
            f"nonlinearity must be one of {NONLINEARITIES}, got {self.nonlinearity!r}",
        )


@dataclass
class FouRAConfig(AdapterConfig):
    """FouRA: ΔW = s·Re(F⁻¹·B·diag(g)·A·F), A and B acting on the Fourier transform of the
    input; g a rank gate of the input's low-rank features and of λ (nara.adapters.foura)."""

    method: ClassVar[str] = "foura"
    noise_aware: ClassVar[bool] = True

    gate: str = _field(
        "hard",
        f"one of {GATES}: hard (a 0/1 rank mask, trained through a straight-through "
        "estimator) or soft (the sigmoid gate itself)",
    )
    gate_init: float = _field(
        4.0, "initial gate logit (σ(4) ≈ 0.98: every rank open at the start, as in LoRA)"
    )
    embedding: str = _field(
        "sinusoidal", f"noise embedding e(λ) of the gate, one of {', '.join(EMBEDDINGS)}"
    )
    embedding_dim: int = _field(16, "size of the noise embedding")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.gate in GATES, f"gate must be one of {GATES}, got {self.gate!r}")
        _check(
            self.embedding in EMBEDDINGS,
            f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}",
        )
        _check(
            self.embedding_dim > 0 and self.embedding_dim % 2 == 0,
            f"embedding_dim must be a positive even number, got {self.embedding_dim}",
        )
