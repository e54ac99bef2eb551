"""The RL recipe schema: what ``nara rl CONFIG.yaml [key=value ...]`` accepts.

Sections: ``model`` and ``training`` as in ``nara train`` (:mod:`nara.training.config`; the
training keys that only make sense for supervised fine-tuning are refused), ``adapter`` as in
``nara train`` plus ``adapter.init_from`` (start from a trained adapter folder, e.g. an SFT
run's ``final/``), and three of its own: ``data`` (the prompts and their gold answers),
``rl`` (the algorithm, its groups and the sampler) and ``rewards`` (a weight per reward).
Every value goes through the same coercion and checks as ``nara train``'s, and an unknown key
or a bad value is a :class:`~nara.training.config.ConfigError` naming it, before a model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nara.training.config import (
    AdapterSection,
    ConfigError,
    ModelSection,
    Section,
    TrainingSection,
    _read_yaml,
    coerce,
    option,
    switch_method,
    unknown_key,
)

SECTIONS = ("model", "adapter", "data", "rl", "rewards", "training")
ALGORITHMS = ("diffu_grpo", "wd1", "vrpo")
# the rl keys that only one algorithm reads: a recipe of another algorithm may not set them
ALGORITHM_KEYS = {
    "diffu_grpo": ("beta", "clip_eps"),
    "wd1": ("wd1_temperature",),
    "vrpo": ("beta", "elbo_samples", "max_length"),
}
# training keys of nara train that have no meaning here: refused when a recipe sets them
SFT_ONLY = {
    "normalization": "the RL losses average over each completion's tokens",
    "epochs": "RL runs for training.max_steps updates",
    "eval_every": "RL has no validation loss (evaluate the adapter with nara eval)",
    "eval_batch_size": "RL has no validation loss",
    "global_batch_size": "set training.batch_size (prompts per process per rollout)",
    "grad_accum": "set rl.micro_batch_size to split a rollout's backward passes",
}


@dataclass
class RLAdapterSection(AdapterSection):
    """The adapter: ``method`` plus its fields, as in ``nara train``, and ``init_from``."""

    init_from: str | None = option(
        None,
        "Start from this adapter folder (e.g. runs/sft/final of nara train); its method and "
        "fields must equal this section's. None: a fresh adapter.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_from is not None and not Path(self.init_from).is_dir():
            raise ConfigError(
                f"adapter.init_from = {self.init_from!r} is not a folder; pass an adapter folder "
                "(adapter_config.json + adapter_model.safetensors, e.g. <output_dir>/final of "
                "nara train) or adapter.init_from=none for a fresh adapter"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RLAdapterSection:
        """As :meth:`AdapterSection.from_dict`, with ``init_from`` taken out first."""
        if not isinstance(raw, dict):
            raise ConfigError(f"adapter must be a mapping with a 'method' key, got {raw!r}")
        raw = dict(raw)
        init_from = coerce(raw.pop("init_from", None), str | None, "adapter.init_from")
        method = str(raw.pop("method", cls.method))
        return cls(method=method, options=raw, init_from=init_from)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "init_from": self.init_from}


@dataclass
class PromptSection(Section):
    """The prompts: a task of ``nara eval``'s registry or a file, and the split to draw from."""

    NAME = "data"
    source: str = option(
        "embedded:arithmetic",
        "A task of nara eval (embedded:arithmetic, gsm8k, mbpp, ...) or a .json/.jsonl/.csv file "
        "of {prompt, answer} records (then rewards.scorer says how its answers are scored).",
    )
    split: str = option("train", "Split of the task to draw prompts from.")
    data_dir: str | None = option(
        None, "Data directory of benchmark tasks (default: $NARA_DATA_DIR or ../shared/data)."
    )
    columns: dict[str, str] = option(
        {}, "For a file: its column names mapped to record fields, field=column."
    )
    max_examples: int | None = option(None, "Use at most this many prompts.")
    chat_template: str = option(
        "auto",
        "Wrap prompts in the model's prompt template: auto, always, never.",
        ("auto", "always", "never"),
    )

    def __post_init__(self) -> None:
        from nara.data.records import parse_columns

        self._check_choices()
        self._check("source", bool(self.source), "a task name or a data file")
        try:
            self.columns = parse_columns(self.columns)
        except ValueError as err:
            raise ConfigError(f"data.columns: {err}") from None
        self._check("max_examples", self.max_examples is None or self.max_examples >= 1, ">= 1")


@dataclass
class RLSection(Section):
    """The algorithm, its groups and inner iterations, and the sampler of the rollouts."""

    NAME = "rl"
    algorithm: str = option(
        "diffu_grpo",
        "diffu_grpo (clipped ratios + KL to the policy at the start), wd1 (ratio-free "
        "weighted log-likelihood) or vrpo (DPO on ELBO estimates of a {prompt, chosen, "
        "rejected} file; docs/preference.md).",
        ALGORITHMS,
    )
    group_size: int = option(6, "Completions sampled per prompt (G); advantages are per group.")
    inner_iterations: int = option(
        1, "Optimizer updates per rollout (μ), each on the same completions and prompt masks."
    )
    prompt_mask_prob: float = option(
        0.15, "Probability p of masking each prompt token in the one-step log-prob estimate."
    )
    beta: float = option(
        0.04, "KL coefficient (diffu_grpo; 0 skips the reference pass), or DPO's β (vrpo, > 0)."
    )
    elbo_samples: int = option(
        8, "Monte-Carlo ELBO samples per answer (vrpo): that many timesteps, one mask each."
    )
    max_length: int | None = option(
        None,
        "Longest preference pair in tokens, prompt + the longer answer (vrpo): a longer pair is "
        "an error naming it, never cut; none = the model's maximum sequence length.",
    )
    clip_eps: float = option(0.2, "Ratio clipping ε (diffu_grpo).")
    wd1_temperature: float = option(1.0, "Temperature of wd1's group softmax weights (wd1).")
    micro_batch_size: int | None = option(
        None,
        "Completions per forward/backward pass, a multiple of group_size (a rollout's gradient "
        "is accumulated over them); none = the whole rollout at once.",
    )
    gen_length: int = option(64, "Completion tokens sampled per prompt.")
    steps: int | None = option(None, "Denoising steps (default: gen_length).")
    block_length: int | None = option(None, "Sampler block length (default: one block).")
    temperature: float = option(0.9, "Sampling temperature (> 0 gives a group diversity).")
    remasking: str = option(
        "low_confidence",
        "Which positions the sampler commits first.",
        ("low_confidence", "random", "margin", "entropy"),
    )
    threshold: float | None = option(
        None, "Confidence-threshold parallel decoding (Fast-dLLM); none = fixed schedule."
    )
    cache: str | None = option(
        None, "Key/value cache of the sampler: none, prefix or dual.", ("prefix", "dual")
    )
    cache_tolerance: float | None = option(
        None, "With a cache: recompute when a sample's λ moved by more than this."
    )

    def __post_init__(self) -> None:
        from nara.diffusion.sampling import check_settings

        self._check_choices()
        self._check("group_size", self.group_size >= 2, ">= 2 (advantages compare a group)")
        self._check("inner_iterations", self.inner_iterations >= 1, ">= 1")
        self._check("prompt_mask_prob", 0.0 <= self.prompt_mask_prob < 1.0, "in [0, 1)")
        self._check("beta", self.beta >= 0, ">= 0")
        self._check("elbo_samples", self.elbo_samples >= 1, ">= 1")
        self._check("max_length", self.max_length is None or self.max_length >= 2, ">= 2 or none")
        if self.algorithm == "vrpo":
            self._check("beta", self.beta > 0, "> 0 with rl.algorithm=vrpo (DPO's β)")
            self._check(
                "inner_iterations",
                self.inner_iterations == 1,
                "1 with rl.algorithm=vrpo (every update takes new pairs)",
            )
        self._check("clip_eps", self.clip_eps > 0, "> 0")
        self._check("wd1_temperature", self.wd1_temperature > 0, "> 0")
        self._check(
            "micro_batch_size",
            self.micro_batch_size is None or self.micro_batch_size % self.group_size == 0,
            f"a multiple of rl.group_size={self.group_size} (whole groups per pass) or none",
        )
        try:
            check_settings(
                self.gen_length,
                self.steps or self.gen_length,
                self.block_length,
                self.temperature,
                self.remasking,
                0.0,
                self.threshold,
                self.cache,
                self.cache_tolerance,
            )
        except ValueError as err:
            raise ConfigError(f"rl (sampler): {err}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RLSection:
        """As :meth:`Section.from_dict`; a key of another algorithm is refused."""
        section = super().from_dict(raw)
        own = ALGORITHM_KEYS[section.algorithm]
        other = {k for keys in ALGORITHM_KEYS.values() for k in keys if k not in own}
        given = sorted(k for k in other if k in (raw or {}))
        if given:
            raise ConfigError(
                f"rl.{given[0]} does not apply to rl.algorithm={section.algorithm}; remove it "
                "or switch the algorithm"
            )
        return section


@dataclass
class RewardSection(Section):
    """A weight per reward; the total reward of a completion is their weighted sum."""

    NAME = "rewards"
    correctness: float = option(
        1.0, "1 when the task's scorer (the one nara eval uses) judges the answer correct."
    )
    code: float = option(0.0, "Code tasks: 1 when the completion passes the tests (sandbox).")
    format: float = option(0.0, "1 when the completion matches rewards.format_pattern.")
    format_pattern: str | None = option(
        None, "Regular expression the whole completion (stripped) must match for the format reward."
    )
    custom: str | None = option(
        None,
        "Your reward as 'module:function' (importable), called as fn(prompts=, completions=, "
        "answers=) and returning one float per completion.",
    )
    custom_weight: float = option(1.0, "Weight of the custom reward.")
    scorer: str | None = option(
        None, "How a data file's answers are scored: keyword, number, choice, exact or code."
    )

    def __post_init__(self) -> None:
        for name in ("correctness", "code", "format", "custom_weight"):
            self._check(name, getattr(self, name) >= 0, ">= 0")
        if self.format > 0 and not self.format_pattern:
            raise ConfigError(
                "rewards.format > 0 needs rewards.format_pattern (a regular expression the "
                "completion must match, e.g. 'The answer is -?\\d+\\.')"
            )
        weights = self.correctness + self.code + self.format
        if weights == 0 and not (self.custom and self.custom_weight > 0):
            raise ConfigError(
                "every reward has weight 0; set rewards.correctness, rewards.code, rewards.format "
                "or rewards.custom to something the policy can learn from"
            )


SECTION_TYPES: dict[str, Any] = {
    "model": ModelSection,
    "adapter": RLAdapterSection,
    "data": PromptSection,
    "rl": RLSection,
    "rewards": RewardSection,
    "training": TrainingSection,
}


@dataclass
class RLConfig:
    """A validated RL recipe."""

    model: ModelSection = field(default_factory=ModelSection)
    adapter: RLAdapterSection = field(default_factory=RLAdapterSection)
    data: PromptSection = field(default_factory=PromptSection)
    rl: RLSection = field(default_factory=RLSection)
    rewards: RewardSection = field(default_factory=RewardSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    output_dir: str = option("runs/rl", "Folder for checkpoints, adapters and metrics.")

    def __post_init__(self) -> None:
        t, mu = self.training, self.rl.inner_iterations
        if t.max_steps is None:
            raise ConfigError("training.max_steps is required by nara rl (optimizer updates)")
        for name in ("max_steps", "save_every"):
            value = getattr(t, name)
            if value is not None and value % mu:
                raise ConfigError(
                    f"training.{name}={value} is not a multiple of rl.inner_iterations={mu}: "
                    "a rollout's updates are never split; pick a multiple"
                )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RLConfig:
        """Validate a nested dict (a loaded YAML file) into an RL recipe.

        Raises:
            ConfigError: on an unknown section or key, a supervised-only training key, or a
                bad value.
        """
        raw = dict(raw or {})
        for key in raw:
            if key not in (*SECTIONS, "output_dir"):
                raise ConfigError(unknown_key(key, key, [*SECTIONS, "output_dir"], "an RL recipe"))
        for key in raw.get("training") or {}:
            if key in SFT_ONLY:
                raise ConfigError(
                    f"training.{key} does not apply to nara rl: {SFT_ONLY[key]}; remove it"
                )
        rl = RLSection.from_dict(raw.get("rl") or {})
        rewards = raw.get("rewards")
        if rl.algorithm == "vrpo" and rewards:
            name = f"rewards.{next(iter(rewards))}" if isinstance(rewards, dict) else "rewards"
            raise ConfigError(
                f"{name} does not apply to rl.algorithm=vrpo: it trains on the preference pairs "
                "of data.source and computes no reward; remove the rewards section"
            )
        sections = {
            name: SECTION_TYPES[name].from_dict(raw[name] or {})
            for name in SECTIONS
            if name in raw and name != "rl"
        }
        output_dir = coerce(raw.get("output_dir", "runs/rl"), str, "output_dir")
        return cls(**sections, rl=rl, output_dir=output_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable), the inverse of :meth:`from_dict`: the rl keys
        of other algorithms and, for vrpo, the rewards section are left out (both refused)."""
        out: dict[str, Any] = {"model": dataclasses.asdict(self.model)}
        out["adapter"] = self.adapter.to_dict()
        out["data"] = dataclasses.asdict(self.data)
        own = ALGORITHM_KEYS[self.rl.algorithm]
        other = {k for keys in ALGORITHM_KEYS.values() for k in keys if k not in own}
        out["rl"] = {k: v for k, v in dataclasses.asdict(self.rl).items() if k not in other}
        if self.rl.algorithm != "vrpo":
            out["rewards"] = dataclasses.asdict(self.rewards)
        training = {k: v for k, v in dataclasses.asdict(self.training).items()}
        out["training"] = {k: v for k, v in training.items() if k not in SFT_ONLY}
        out["training"]["betas"] = list(training["betas"])
        out["output_dir"] = self.output_dir
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_rl_recipe(path: str | Path | None, overrides: list[str] = ()) -> RLConfig:
    """Load an RL recipe (or the defaults when ``path`` is None) with ``key=value`` overrides;
    ``adapter.method=<m>`` drops the recipe's fields that ``m`` lacks, as in ``nara train``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: any invalid key or value (the message names it).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"RL recipe {str(path)!r} not found; pass a YAML path or a name under configs/"
            )
        raw = _read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"RL recipe {path} must be a YAML mapping of sections")
    if "init_from" in (raw.get("adapter") or {}):  # not a method field: keep it out of the switch
        raw = {**raw, "adapter": dict(raw["adapter"])}
        init_from = raw["adapter"].pop("init_from")
        result = switch_method(raw, list(overrides), SECTIONS)
        result["adapter"] = {"init_from": init_from, **(result.get("adapter") or {})}
    else:
        result = switch_method(raw, list(overrides), SECTIONS)
    return RLConfig.from_dict(result)
