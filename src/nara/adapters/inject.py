"""Putting adapters into a model: targeting, wrapping, freezing, merging and counting.

Works on any PyTorch model whose target layers are ``nn.Linear`` (a Hugging Face transformer or a
plain ``nn.Module``). The model gets one ``nara_hub`` submodule (a NoiseHub) that records the
config and owns the noise conditioners (NaRA's hypernetworks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.layer import LAYERS, AdapterLayer, matches
from nara.adapters.noise import NoiseHub, as_noise_tensor, find_hub

try:
    from re import _parser as _regex_parser  # Python >= 3.11
except ImportError:  # Python 3.10
    import sre_parse as _regex_parser  # type: ignore[no-redef]

_REPEATS = {
    getattr(_regex_parser, op)
    for op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_regex_parser, op)
}

# last names of output heads, recognised when the model has no get_output_embeddings()
_HEAD_NAMES = ("lm_head", "ff_out", "output", "head", "embed_out")


def _output_head(model: nn.Module, linears: dict[str, nn.Linear]) -> set[str]:
    """Names of the output head: get_output_embeddings() if the model has it, else a head-like
    name outside any ModuleList (LLaDA's ``model.transformer.ff_out``, not ``blocks.0.ff_out``)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is not None:
        return {name for name, m in linears.items() if m is head}
    return {
        name
        for name in linears
        if name.rsplit(".", 1)[-1] in _HEAD_NAMES and not any(p.isdigit() for p in name.split("."))
    }


def _examples(linears: dict[str, nn.Linear]) -> str:
    last = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in linears))
    full = list(linears)[:3]
    return f"linear layers here are named e.g. {full} (last names: {last[:12]})"


def _children(value: object) -> Iterator[Any]:
    """The parsed sub-patterns inside one node's argument (nested in tuples and lists)."""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(item, _regex_parser.SubPattern):
            yield item
        elif isinstance(item, (tuple, list)):
            yield from _children(item)


def _nodes(parsed: Any) -> Iterator[tuple[Any, Any]]:
    """Every (opcode, argument) node of a parsed regex, depth first."""
    for op, value in parsed:
        yield op, value
        for child in _children(value):
            yield from _nodes(child)


def _repeats(op: Any, value: Any) -> bool:
    return op in _REPEATS and value[1] > 1


def compile_target_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``target_modules`` regex, refusing the ones that can backtrack catastrophically.

    A repetition whose body holds another repetition or an alternation (``(a+)+``, ``(.|.)*``)
    can take exponential time on a name it does not match, so it would hang adding or loading
    adapters; such patterns are refused before any matching. Patterns that only chain
    repetitions (``.*\\.(q|v)_proj``, ``layers\\.\\d+\\.q_proj``) are accepted.

    Raises:
        ValueError: the pattern is not a valid regex, or it nests repetitions.
    """
    try:
        compiled = re.compile(pattern)
        parsed = _regex_parser.parse(pattern)
    except re.error as err:
        raise ValueError(
            f"target_modules {pattern!r} is not a valid regex ({err}); fix it, or pass a list of "
            "module names such as ['q_proj', 'v_proj']"
        ) from err
    for op, value in _nodes(parsed):
        if _repeats(op, value) and any(
            _repeats(o, v) or o == _regex_parser.BRANCH for o, v in _nodes(value[2])
        ):
            raise ValueError(
                f"target_modules regex {pattern!r} repeats a group that itself repeats or "
                "alternates, which can take exponential time to match (catastrophic "
                "backtracking); write it without nested repetition (e.g. '.*\\.(q|v)_proj') or "
                "pass a list of module names"
            )
    return compiled


def _check_new_targets(modules: dict[str, nn.Module], picked: list[str]) -> None:
    """Raise unless every picked module is a plain nn.Linear that has no adapter yet."""
    linears = {n for n, m in modules.items() if isinstance(m, nn.Linear)}
    adapted = [n for n in picked if isinstance(modules[n], AdapterLayer)]
    if adapted:
        raise ValueError(
            f"module(s) {adapted[:4]} already have nara adapters; adapters can be added once per "
            "module: start from a fresh base model, or load a saved adapter with nara.load_adapters"
        )
    wrong = [f"{n} ({type(modules[n]).__name__})" for n in picked if n not in linears]
    if wrong:
        examples = _examples({n: m for n, m in modules.items() if n in linears})
        raise ValueError(
            f"target_modules selected {wrong[:4]}, which are not nn.Linear; nara adapts linear "
            f"layers only: name the linear layers inside them. {examples}"
        )


def resolve_targets(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    """Full names of the nn.Linear modules that ``target_modules`` selects.

    A list entry matches a module whose name equals it or ends with ``"." + entry``; the output
    head is only matched by its exact full name. A string is a regex matched against full names
    (``re.fullmatch``, checked by :func:`compile_target_regex`), except "all-linear": every
    nn.Linear but the output head.

    Raises:
        ValueError: entries that match nothing (with names that do exist), a regex that nests
            repetitions, a match that is not an nn.Linear, or a module that already has adapters.
    """
    modules = dict(model.named_modules())
    linears = {n: m for n, m in modules.items() if isinstance(m, nn.Linear)}
    head = _output_head(model, linears)
    if target_modules == "all-linear":
        picked = [n for n in linears if n not in head]
    elif isinstance(target_modules, str):
        pattern = compile_target_regex(target_modules)
        picked = [n for n in modules if n and pattern.fullmatch(n)]
        if not picked:
            raise ValueError(
                f"target_modules regex {target_modules!r} matches no module name (it must match "
                f"a full name, like re.fullmatch); {_examples(linears)}. To match last names, pass "
                "a list such as ['q_proj', 'v_proj']"
            )
    else:
        hits = {
            e: [n for n in modules if n and matches(n, e) and (n == e or n not in head)]
            for e in target_modules
        }
        unmatched = [e for e, names in hits.items() if not names]
        if unmatched:
            raise ValueError(
                f"target_modules entries {unmatched} match no module of this model; "
                f"{_examples(linears)}. Fix the names, or pass 'all-linear'"
            )
        picked = [n for n in modules if any(n in names for names in hits.values())]
    _check_new_targets(modules, picked)
    return picked


@dataclass(frozen=True)
class HiddenStateMethod:
    """A method that perturbs hidden states instead of wrapping nn.Linear layers (trajectory).

    ``add(model, config)`` installs it (``add_adapters`` dispatches to it); ``target_shapes(model,
    config)`` gives the place name → shape map that save/load fingerprint.
    """

    add: Callable[[nn.Module, AdapterConfig], nn.Module]
    target_shapes: Callable[[nn.Module, AdapterConfig], dict[str, list[int]]]


# method name → HiddenStateMethod, filled by the modules that define such methods
HIDDEN_STATE_METHODS: dict[str, HiddenStateMethod] = {}


def add_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap the targeted linear layers with ``config``'s adapter; freeze everything else.

    Returns the same model object: base weights frozen, adapter tensors (and hypernetworks)
    trainable. Noise-aware adapters then need ``with nara.noise_level(model, lam):`` around calls.

    Raises:
        ValueError: bad targets (see ``resolve_targets``) or a model that already has adapters.
    """
    if isinstance(config, AdapterConfig) and config.method in HIDDEN_STATE_METHODS:
        return HIDDEN_STATE_METHODS[config.method].add(model, config)
    if not isinstance(config, AdapterConfig) or config.method not in LAYERS:
        raise TypeError(f"config must be a nara adapter config (e.g. LoRAConfig), got {config!r}")
    return wrap_linears(model, config, resolve_targets(model, config.target_modules))


def wrap_linears(model: nn.Module, config: AdapterConfig, names: list[str]) -> nn.Module:
    """``add_adapters`` on the nn.Linear modules with these exact full ``names``.

    No target rule is applied: loading passes the names an adapter file records, so a saved
    ``target_modules`` regex is never evaluated on load.
    """
    if find_hub(model) is not None:
        raise ValueError(
            "this model already has nara adapters on other modules; nara keeps one adapter config "
            "per model: start from a fresh base model"
        )
    layer_cls = LAYERS[config.method]
    conditioners, keys = layer_cls.conditioners(config, names)
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(iter(model.get_submodule(names[0]).parameters())).device
    hub = NoiseHub(config.method, conditioners).to(device)
    hub.config = config
    hub.targets = names
    model.nara_hub = hub
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = layer_cls.build(getattr(parent, child), config, name)
        layer.attach(hub, keys.get(name))
        setattr(parent, child, layer)
    for p in adapter_parameters(model).values():
        p.requires_grad_(True)
    if conditioners:
        model.register_forward_pre_hook(hub.begin_forward)
    return model


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Name → adapted layer, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every trainable adapter tensor by name: each layer's ``adapter_names`` and the hub's."""
    params = {
        f"{name}.{attr}": getattr(layer, attr)
        for name, layer in adapter_layers(model).items()
        for attr in layer.adapter_names
    }
    params.update({f"nara_hub.{n}": p for n, p in _require_hub(model).named_parameters()})
    return params


def _require_hub(model: nn.Module) -> NoiseHub:
    hub = find_hub(model)
    if hub is None:
        raise ValueError("this model has no nara adapters; call nara.add_adapters(model, config)")
    return hub


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of an adapted model (``nara.trainable_parameters``)."""

    trainable: int
    total: int
    hypernetwork: int

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    @property
    def hypernetwork_percent(self) -> float:
        return 100.0 * self.hypernetwork / max(self.total, 1)

    def __str__(self) -> str:
        return (
            f"trainable {self.trainable:,} of {self.total:,} parameters "
            f"({self.trainable_percent:.4f}%), of which hypernetwork {self.hypernetwork:,} "
            f"({self.hypernetwork_percent:.4f}% of all)"
        )


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """Count trainable, total and hypernetwork (NoiseHub) parameters of ``model``."""
    params = list(model.parameters())  # deduplicated by torch
    hub = find_hub(model)
    return ParameterCount(
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
        hypernetwork=0 if hub is None else sum(p.numel() for p in hub.conditioners.parameters()),
    )


def merge_adapters(
    model: nn.Module,
    lam: float | None = None,
    density: float | None = None,
) -> nn.Module:
    """Fold every adapter into its base weight; returns the same model.

    Static methods (LoRA, DoRA, HiRA, NaRA-C, (IA)³, BitFit) merge exactly. Noise-aware ones have
    a different ΔW for every λ, so they merge only the ΔW(lam) of one fixed ``lam`` (and
    ``density`` for NaRA input modes that use it). Undo with ``unmerge_adapters``.

    Raises:
        ValueError: a noise-aware adapter and no ``lam``; a method that is not a weight update
            (hidden-state methods, bottleneck adapters, FouRA's input-gated update).
    """
    hub = _require_hub(model)
    if hub.method in HIDDEN_STATE_METHODS:
        raise ValueError(
            f"{hub.method} adapters perturb hidden states, not weights: there is no weight update "
            "to merge. Keep the adapters unmerged and run the model inside nara.noise_level"
        )
    refusals = [layer.merge_refusal for layer in adapter_layers(model).values()]
    if any(refusals):  # before asking for a λ that would not help (FouRA is noise-aware)
        raise ValueError(f"{hub.method} adapters cannot be merged: {next(filter(None, refusals))}")
    if hub.needs_noise and lam is None:
        raise ValueError(
            f"{hub.method} adapters depend on the noise level, so they cannot be merged for all λ; "
            "pass a fixed one, nara.merge_adapters(model, lam=0.5), to merge ΔW(0.5)"
        )
    lam_t = None if lam is None else as_noise_tensor(lam, "lam")[:1].to(hub._anchor.device)
    dens_t = None if density is None else as_noise_tensor(density, "density")[:1]
    with torch.no_grad():
        conds = hub.compute(lam_t, None if dens_t is None else dens_t.to(hub._anchor.device))
        for layer in adapter_layers(model).values():
            layer.merge(None if layer.cond_key is None else conds[layer.cond_key])
    hub.merged = True
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Restore the original base weights bit-exactly after ``merge_adapters``."""
    hub = _require_hub(model)
    for layer in adapter_layers(model).values():
        layer.unmerge()
    hub.merged = False
    return model
