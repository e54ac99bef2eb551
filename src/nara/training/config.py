"""The recipe schema: what ``nara train CONFIG.yaml [key=value ...]`` accepts.

A recipe has five parts — ``model``, ``adapter``, ``data``, ``training`` and ``output_dir`` — each a
dataclass whose fields carry their help text once (``metadata["help"]``); ``nara train --help`` is
generated from it. Values from YAML and from ``section.key=value`` overrides go through one path:
coerced to the field's type, then checked in ``__post_init__``. An unknown key or a bad value is a
:class:`ConfigError` that names the key and lists the valid ones, before any model is loaded.

The ``adapter`` section is ``method`` plus the fields of that method's config class in
:mod:`nara.adapters` (``adapter.r``, ``adapter.alpha``, ...), validated by that class.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("model", "adapter", "data", "training")


class ConfigError(ValueError):
    """A recipe key or value is invalid; the message names the key and the fix."""


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A schema field: its default, its help (written once) and, optionally, its allowed values."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- coercion


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def _parse_sequence(value: Any) -> list:
    if isinstance(value, str):
        text = value.strip()
        loaded = yaml.safe_load(text) if text.startswith("[") else None
        return loaded if isinstance(loaded, list) else [v.strip() for v in text.split(",") if v]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError("expected a list (YAML list or comma-separated)")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the schema type ``annotation``.

    Handles ``bool``, ``int``, ``float``, ``str``, ``X | None``, ``list[X]``, ``tuple[X, ...]`` and
    fixed-length tuples. Strings are parsed (``"1e-4"`` → 1e-4, ``"none"`` → None, ``"a,b"`` →
    ``["a", "b"]``), so YAML 1.1 quirks such as ``1e-4`` being read as a string do not matter.

    Raises:
        ConfigError: naming ``key``, the expected type and the value given.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    try:
        if origin in (typing.Union, types.UnionType):
            if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
                return None
            return coerce(value, _pick_member(value, args), key)
        if annotation is Any or annotation is dict or origin is dict:
            return value
        if annotation is bool:
            return _parse_bool(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return (
                int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
            )
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            if not math.isfinite(number := float(value)):
                raise ValueError("expected a finite number")
            return number
        if annotation is str:
            if isinstance(value, (list, dict, tuple)) or value is None:
                raise ValueError("expected a string")
            return str(value)
        if origin in (list, tuple):
            items = _parse_sequence(value)
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(items) != len(args):
                    raise ValueError(f"expected {len(args)} values")
                return tuple(coerce(v, a, key) for v, a in zip(items, args))
            converted = [coerce(v, args[0], key) for v in items] if args else items
            return tuple(converted) if origin is tuple else converted
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{key}: {err} of type {type_name(annotation)}, got {value!r}; "
            f"fix it in the recipe or pass {key}=<{type_name(annotation)}>"
        ) from None
    return value


_NONE = ("none", "null", "~", "")


def _pick_member(value: Any, members: tuple[Any, ...]) -> Any:
    """The member of a union to coerce ``value`` to: the one its form matches, else the first.

    A list goes to the list member, a mapping to the dict member, a string to ``str`` unless it
    looks like a list (``[a, b]`` or ``a,b``) and a list member exists.
    """
    members = tuple(m for m in members if m is not type(None))
    by_origin = {typing.get_origin(m) or m: m for m in members}
    if isinstance(value, (list, tuple)):
        return by_origin.get(list, by_origin.get(tuple, members[0]))
    if isinstance(value, dict):
        return by_origin.get(dict, members[0])
    if isinstance(value, str) and str in by_origin:
        looks_listy = value.strip().startswith("[") or "," in value
        has_list = list in by_origin or tuple in by_origin
        return by_origin.get(list, by_origin.get(tuple)) if looks_listy and has_list else str
    return members[0]


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


# ----------------------------------------------------------------------------- sections


class Section:
    """Mixin for the schema sections: build from a dict with coercion, and per-field checks."""

    NAME = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Section:
        """Build the section from ``raw``, coercing each value to its field's type.

        Raises:
            ConfigError: on an unknown key (listing the valid ones) or a bad value.
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{cls.NAME} must be a mapping of keys to values, got {raw!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in raw.items():
            if key not in names:
                raise ConfigError(unknown_key(f"{cls.NAME}.{key}", key, names, cls.NAME))
            kwargs[key] = coerce(value, hints[key], f"{cls.NAME}.{key}")
        return cls(**kwargs)

    def _check(self, name: str, ok: bool, requirement: str) -> None:
        if not ok:
            raise ConfigError(
                f"{self.NAME}.{name} = {getattr(self, name)!r} is invalid: it must be {requirement}"
            )

    def _check_choices(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(
                    f"{self.NAME}.{f.name} = {value!r} is not allowed; choose one of: "
                    + ", ".join(choices)
                )


def unknown_key(full_key: str, key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown key {full_key!r}.{hint} Valid keys in {where}: {', '.join(valid)}"


@dataclass
class ModelSection(Section):
    """Which base dLLM to fine-tune."""

    NAME = "model"
    name: str = option(
        "tiny",
        "Base model: 'tiny' (the embedded model), a local LLaDA folder, or a hub id "
        "(e.g. GSAI-ML/LLaDA-8B-Instruct).",
    )
    dtype: str = option(
        "auto",
        "Weight dtype: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16 or float16.",
        ("auto", "float32", "bfloat16", "float16"),
    )
    trust_remote_code: bool = option(
        False, "Allow the checkpoint's own model code (not needed for LLaDA)."
    )
    load_in_4bit: bool = option(
        False,
        "QLoRA: the base's block linears in 4 bits (NF4, double quantisation, bfloat16 "
        "compute; LLaDA and Dream; needs bitsandbytes; docs/memory.md).",
    )
    load_in_8bit: bool = option(False, "The base's block linears in 8 bits (LLM.int8()).")

    def __post_init__(self) -> None:
        self._check_choices()
        self._check("name", bool(self.name), "a model name or path")
        self._check(
            "load_in_8bit",
            not (self.load_in_4bit and self.load_in_8bit),
            "false when load_in_4bit is true (choose one)",
        )


@dataclass
class AdapterSection:
    """The adapter: ``method`` plus that method's config fields (validated by its config class)."""

    NAME = "adapter"
    method: str = option(
        "nara",
        "Adapter method: nara, lora, dora, hira, multi_lora, tlora, nara_dora, nara_c, ... "
        "(`nara train --adapter-help METHOD` lists that method's fields).",
    )
    options: dict[str, Any] = option(
        {},
        "The method's fields, given flat in the section (adapter.r, adapter.alpha, "
        "adapter.target_modules, adapter.dropout, ...).",
    )

    def __post_init__(self) -> None:
        self.build()  # validate now, not after the model is loaded

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AdapterSection:
        """Split ``method`` from the method's fields and validate them against its config class."""
        if not isinstance(raw, dict):
            raise ConfigError(f"adapter must be a mapping with a 'method' key, got {raw!r}")
        raw = dict(raw)
        method = str(raw.pop("method", cls.method))
        return cls(method=method, options=raw)

    def build(self) -> Any:
        """The adapter config object (e.g. ``NaRAConfig(r=32, ...)``) for ``add_adapters``.

        Raises:
            ConfigError: on an unknown method or field, or a value the config class rejects.
        """
        from nara.training.adapters import build_adapter_config

        return build_adapter_config(self.method, self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.options}


@dataclass
class DataSection(Section):
    """Where the (prompt, answer) records come from and how they become token sequences."""

    NAME = "data"
    source: str = option(
        "embedded:arithmetic",
        "Training data: 'embedded:<task>' (nara's embedded tasks), a .json/.jsonl/.csv file of "
        "{prompt, answer} (optionally target: the text to train on) or {instruction, input, "
        "output, answer} (LLM-Adapters) records, or a Hugging Face dataset name; several joined "
        "with '+' are mixed (interleaved), e.g. 'embedded:arithmetic+embedded:programs'.",
    )
    columns: dict[str, str] = option(
        {},
        "Map other column names to record fields, field=column: 'prompt=question,answer=label' "
        "(a YAML mapping in a recipe). Applies to files and hub datasets.",
    )
    split: str = option("train", "Split of the source to train on (embedded tasks, hub datasets).")
    val_source: str | None = option(
        None,
        "Validation data, same syntax as source. Default: the source's val_split if it has one "
        "(embedded tasks), else val_fraction of the training records.",
    )
    val_split: str = option("validation", "Split used for validation when it exists.")
    val_fraction: float = option(
        0.0, "Fraction of training records held out for validation when no validation split."
    )
    max_examples: int | None = option(None, "Use at most this many training records (quick runs).")
    val_max_examples: int | None = option(256, "Use at most this many validation records.")
    max_length: int = option(512, "Maximum tokens per sequence (prompt + answer + EOS).")
    truncation: str = option(
        "drop",
        "Sequences longer than max_length: drop (skip, with a warning), truncate (cut at the "
        "right end, with a warning) or error.",
        ("drop", "truncate", "error"),
    )
    pad_to: str = option(
        "batch",
        "Pad answers with EOS (trained on, as LLaDA does) to the longest sequence in the batch "
        "or always to max_length.",
        ("batch", "max_length"),
    )
    chat_template: str = option(
        "auto",
        "Wrap prompts in the tokenizer's chat template: auto (when it has one), always, never.",
        ("auto", "always", "never"),
    )

    def __post_init__(self) -> None:
        self._check_choices()
        self._check("source", bool(self.source), "a path, a hub dataset name or embedded:<task>")
        from nara.data.records import parse_columns

        try:
            self.columns = parse_columns(self.columns)
        except ValueError as err:
            raise ConfigError(f"data.columns: {err}") from None
        self._check("val_fraction", 0.0 <= self.val_fraction < 1.0, "in [0, 1)")
        self._check("max_length", self.max_length >= 2, ">= 2")
        self._check("max_examples", self.max_examples is None or self.max_examples >= 1, ">= 1")
        self._check(
            "val_max_examples", self.val_max_examples is None or self.val_max_examples >= 0, ">= 0"
        )


@dataclass
class TrainingSection(Section):
    """Optimisation, schedule, evaluation and checkpointing (defaults: the NaRA paper's)."""

    NAME = "training"
    lr: float = option(1e-4, "Peak learning rate of the adapter weights.")
    hyper_lr: float | None = option(
        None, "Learning rate of the hypernetwork parameters (default: lr)."
    )
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas.")
    weight_decay: float = option(0.05, "AdamW weight decay (matrices only; not biases or vectors).")
    warmup_ratio: float = option(0.05, "Fraction of the updates spent in linear warm-up.")
    schedule: str = option(
        "linear",
        "Learning-rate schedule after warm-up.",
        ("linear", "cosine", "constant"),
    )
    max_grad_norm: float | None = option(1.0, "Gradient clipping norm (none to disable).")
    batch_size: int = option(4, "Micro-batch size per device.")
    global_batch_size: int | None = option(
        None,
        "Effective batch (batch_size x grad_accum x devices); when set, grad_accum is derived "
        "from it on the hardware at hand.",
    )
    grad_accum: int | None = option(None, "Gradient accumulation steps (default 1).")
    epochs: float = option(1.0, "Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = option(None, "Stop after this many optimizer updates.")
    eval_every: int | None = option(
        None, "Validation loss every N updates (and at the end); none = only at the end."
    )
    eval_batch_size: int | None = option(None, "Validation batch size (default: batch_size).")
    save_every: int | None = option(None, "Resumable checkpoint every N updates.")
    keep_checkpoints: int = option(2, "How many resumable checkpoints to keep (oldest removed).")
    log_every: int = option(1, "Write metrics every N updates.")
    seed: int = option(0, "Seed of the adapter init, data order, noise draws and dropout.")
    mixed_precision: str = option(
        "auto",
        "Autocast precision: auto (bf16 on a GPU that has it, else none), no, bf16, fp16.",
        ("auto", "no", "bf16", "fp16"),
    )
    gradient_checkpointing: bool = option(False, "Recompute activations to save memory.")
    normalization: str = option(
        "answer_length",
        "Loss normalisation: answer_length (LLaDA SFT), token, batch.",
        ("answer_length", "token", "batch"),
    )
    report_to: list[str] = option(
        [], "Extra trackers: tensorboard and/or wandb (must be installed).", None
    )
    resume: str | None = option(
        None,
        "Continue a run: 'latest' (the newest complete checkpoint under output_dir; with none "
        "yet, the run starts from scratch and says so) or a checkpoint folder. The recipe must "
        "match the checkpoint's (model, adapter, data, optimisation, steps, seed).",
    )
    overwrite: bool = option(
        False,
        "Replace the run in a used output_dir (its checkpoints, best/, final/ and metrics are "
        "deleted first). Without it or resume, a used output_dir is refused.",
    )

    def __post_init__(self) -> None:
        self._check_choices()
        self._check("lr", self.lr > 0, "> 0")
        self._check("hyper_lr", self.hyper_lr is None or self.hyper_lr > 0, "> 0 or none")
        self._check("betas", all(0.0 <= b < 1.0 for b in self.betas), "two numbers in [0, 1)")
        self._check("weight_decay", self.weight_decay >= 0, ">= 0")
        self._check("warmup_ratio", 0.0 <= self.warmup_ratio < 1.0, "in [0, 1)")
        self._check("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0")
        self._check("batch_size", self.batch_size >= 1, ">= 1")
        self._check("grad_accum", self.grad_accum is None or self.grad_accum >= 1, ">= 1")
        self._check("global_batch_size", (self.global_batch_size or 1) >= 1, ">= 1")
        self._check("epochs", self.epochs > 0, "> 0")
        for name in ("max_steps", "eval_every", "save_every", "eval_batch_size"):
            self._check(name, getattr(self, name) is None or getattr(self, name) >= 1, ">= 1")
        self._check("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1")
        self._check("log_every", self.log_every >= 1, ">= 1")
        self._check(
            "overwrite",
            not (self.overwrite and self.resume),
            "false when training.resume is set (continue the run, or replace it, not both)",
        )
        bad = [t for t in self.report_to if t not in ("tensorboard", "wandb")]
        self._check("report_to", not bad, "a list drawn from: tensorboard, wandb")

    def accumulation(self, world_size: int) -> int:
        """Gradient accumulation steps on ``world_size`` devices.

        Raises:
            ConfigError: if global_batch_size is not batch_size x devices x an integer, or
                contradicts an explicit grad_accum.
        """
        if self.global_batch_size is None:
            return self.grad_accum or 1
        per_step = self.batch_size * world_size
        accum, rest = divmod(self.global_batch_size, per_step)
        if rest or accum < 1:
            raise ConfigError(
                f"training.global_batch_size={self.global_batch_size} is not a multiple of "
                f"batch_size x devices = {self.batch_size} x {world_size}; change one of them"
            )
        if self.grad_accum is not None and self.grad_accum != accum:
            raise ConfigError(
                f"training.grad_accum={self.grad_accum} contradicts global_batch_size="
                f"{self.global_batch_size} (which needs {accum} on {world_size} device(s)); "
                "set only one of them"
            )
        return accum


SECTION_TYPES: dict[str, type] = {
    "model": ModelSection,
    "adapter": AdapterSection,
    "data": DataSection,
    "training": TrainingSection,
}


@dataclass
class RecipeConfig:
    """A validated training recipe."""

    model: ModelSection = field(default_factory=ModelSection)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    output_dir: str = option("runs/nara", "Folder for checkpoints, adapters and metrics.")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecipeConfig:
        """Validate a nested dict (a loaded YAML file) into a recipe.

        Raises:
            ConfigError: on an unknown section or key, or a bad value.
        """
        raw = dict(raw or {})
        valid = [*SECTIONS, "output_dir"]
        for key in raw:
            if key not in valid:
                raise ConfigError(unknown_key(key, key, valid, "a recipe"))
        sections = {
            name: SECTION_TYPES[name].from_dict(raw[name] or {}) for name in SECTIONS if name in raw
        }
        output_dir = coerce(raw.get("output_dir", "runs/nara"), str, "output_dir")
        return cls(**sections, output_dir=output_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable), the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"model": dataclasses.asdict(self.model)}
        out["adapter"] = self.adapter.to_dict()
        out["data"] = dataclasses.asdict(self.data)
        training = dataclasses.asdict(self.training)
        training["betas"] = list(training["betas"])
        out["training"] = training
        out["output_dir"] = self.output_dir
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- loading


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], sections: tuple[str, ...] = SECTIONS
) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (values stay strings until coerced);
    ``sections`` are the recipe's section names (``nara rl`` adds its own).

    Raises:
        ConfigError: on a malformed override (no ``=``, or a key that is not ``section.key`` or
            ``output_dir``).
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} is not key=value; write e.g. training.lr=1e-4 or output_dir=runs/x"
            )
        section, dot, name = key.partition(".")
        if not dot:
            if section in sections:
                raise ConfigError(
                    f"override {item!r} sets a whole section; set {section}.<key>=..."
                )
            raw[section] = value
            continue
        if section not in sections:
            raise ConfigError(unknown_key(key, section, list(sections), "overrides (section.key)"))
        if "." in name:
            raise ConfigError(f"override key {key!r} is nested too deep; use section.key=value")
        target = raw.setdefault(section, {}) or {}
        target[name] = value
        raw[section] = target
    return raw


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> RecipeConfig:
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply ``key=value`` overrides.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ConfigError: on any invalid key or value (the message names it).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"recipe {str(path)!r} not found; pass a YAML path or a name from `nara recipes`"
            )
        raw = _read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"recipe {path} must be a YAML mapping of sections")
    return RecipeConfig.from_dict(switch_method(raw, list(overrides)))


def switch_method(
    raw: dict[str, Any], overrides: list[str], sections: tuple[str, ...] = SECTIONS
) -> dict[str, Any]:
    """Apply ``overrides``; when one changes ``adapter.method``, the recipe's adapter fields that
    the new method does not have are dropped, with a one-line notice on stderr (fields given as
    overrides are kept and checked), so ``adapter.method=<m>`` works on any recipe.

    Raises:
        ConfigError: as :func:`apply_overrides`, or an unknown method.
    """
    before = (raw or {}).get("adapter") or {}
    result = apply_overrides(raw, overrides, sections)
    after = result.get("adapter") or {}
    old_method = str(before.get("method", AdapterSection.method))
    new_method = str(after.get("method", old_method))
    if not isinstance(after, dict) or new_method == old_method:
        return result
    from nara.training.adapters import split_fields

    given = {i.partition("=")[0].strip()[len("adapter.") :] for i in overrides}
    recipe_fields = {k: v for k, v in before.items() if k != "method" and k not in given}
    _, dropped = split_fields(new_method, recipe_fields, previous=old_method)
    if dropped:
        result["adapter"] = {k: v for k, v in after.items() if k not in dropped}
        print(
            f"note: adapter.method={new_method} (the recipe's is {old_method}): dropped the "
            f"recipe's {old_method} adapter fields {', '.join(dropped)} ({new_method} uses its "
            "own defaults for them)",
            file=sys.stderr,
        )
    return result


def _read_yaml(path: Path) -> Any:
    """The YAML document of ``path``.

    Raises:
        ConfigError: naming the file, the line and the parser's message.
    """
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(
            str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p
        )
        raise ConfigError(
            f"recipe {path}{where} is not valid YAML: {what or err}; fix the file"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"recipe {path} is not UTF-8 text ({err.reason}); fix the file") from None


def schema_help(recipe: type | None = None) -> str:
    """Every recipe key with its type, default and help: the body of ``nara train --help``
    (of ``nara rl --help`` with ``recipe`` = the RL recipe class; default :class:`RecipeConfig`).
    """
    recipe = recipe or RecipeConfig
    lines = []
    for f in dataclasses.fields(recipe):
        if f.name == "output_dir":
            continue
        name, cls = f.name, typing.get_type_hints(recipe)[f.name]
        lines.append(f"{name}:  {cls.__doc__.strip().splitlines()[0]}")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if name == "adapter" and f.name == "options":
                lines.append(f"  adapter.<field>  {f.metadata['help']}")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices = f.metadata.get("choices")
            kind = "|".join(choices) if choices else type_name(hints[f.name])
            lines.append(f"  {name}.{f.name}  ({kind}; default {default!r})")
            lines.append(f"      {f.metadata['help']}")
    out = recipe.__dataclass_fields__["output_dir"]
    lines.append(f"output_dir  (str; default {out.default!r})")
    lines.append(f"      {out.metadata['help']}")
    return "\n".join(lines)
