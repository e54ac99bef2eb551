"""Map a recipe's ``adapter`` section (``method`` + fields) to a :mod:`nara.adapters` config.

The methods are discovered from :mod:`nara.adapters` itself — every subclass of ``AdapterConfig``
with a ``method`` name — so a new adapter method is usable from recipes without touching this
file. ``nara_c`` (NaRA with the constant input mode, the paper's control) is an alias of NaRA.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from nara.training.config import ConfigError, coerce, type_name, unknown_key

# method name -> (registered method whose config class to use, fixed field values)
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "nara_c": ("nara", {"input_mode": "constant"}),
    "tlora": ("t_lora", {}),
}


def adapter_methods() -> dict[str, type]:
    """``{method name: config class}`` of every config class that :mod:`nara.adapters` defines.

    Walks the subclasses of ``AdapterConfig`` after importing the package, so a method added in
    its own module is found without a list to keep in sync.
    """
    import nara.adapters  # noqa: F401  (defines every method's config class)
    from nara.adapters.config import AdapterConfig

    found: dict[str, type] = {}
    pending = list(AdapterConfig.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "method", ""):
            found[cls.method] = cls
    return found


def _resolve(method: str) -> tuple[type, dict[str, Any]]:
    methods = adapter_methods()
    base, fixed = ALIASES.get(method, (method, {}))
    if base not in methods:
        valid = sorted({*methods, *(a for a, (b, _) in ALIASES.items() if b in methods)})
        close = difflib.get_close_matches(method, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"adapter.method = {method!r} is not a known adapter method.{hint} "
            f"Valid methods: {', '.join(valid)}"
        )
    return methods[base], fixed


def adapter_fields(method: str) -> list[dataclasses.Field]:
    """The settable fields of ``method``'s config class (``method`` itself excluded)."""
    cls, fixed = _resolve(method)
    return [
        f for f in dataclasses.fields(cls) if f.init and f.name != "method" and f.name not in fixed
    ]


def split_fields(
    method: str, options: dict[str, Any], previous: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(the ``options`` that ``method`` accepts, the names of the others): what carries over when
    a recipe written for one method (``previous``) is run with another.

    ``target_modules`` carries over only between methods whose default targets agree (LoRA,
    NaRA, DoRA, ... adapt the same projections, so a comparison keeps them); a method that
    adapts other layers by design ((IA)³, bottleneck adapters, BitFit) takes its own default.

    Raises:
        ConfigError: ``method`` or ``previous`` is not a known method.
    """
    valid = {f.name for f in adapter_fields(method)}
    if previous is not None and _default_targets(previous) != _default_targets(method):
        valid.discard("target_modules")
    return {k: v for k, v in options.items() if k in valid}, [k for k in options if k not in valid]


def _default_targets(method: str) -> Any:
    """The default ``target_modules`` of ``method``'s config (None if it has no such field)."""
    for f in adapter_fields(method):
        if f.name == "target_modules":
            return (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
    return None


def build_adapter_config(method: str, options: dict[str, Any]) -> Any:
    """Instantiate ``method``'s config class from recipe values (coerced to the field types).

    Raises:
        ConfigError: on an unknown method or field (listing the valid ones), or a value the
            config class rejects (its own message, prefixed with the section).
    """
    cls, fixed = _resolve(method)
    fields = {f.name: f for f in adapter_fields(method)}
    hints = typing.get_type_hints(cls)
    kwargs = dict(fixed)
    for key, value in options.items():
        if key not in fields:
            where = f"adapter fields of method {method!r} ({cls.__name__})"
            raise ConfigError(unknown_key(f"adapter.{key}", key, list(fields), where))
        kwargs[key] = coerce(value, hints.get(key, Any), f"adapter.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"adapter (method {method!r}): {err}") from None


def adapter_help(method: str) -> str:
    """One line per field of ``method``'s config: name, type, default and help when given."""
    cls, _ = _resolve(method)
    hints = typing.get_type_hints(cls)
    lines = [f"adapter.method={method}  ({cls.__name__})"]
    for f in adapter_fields(method):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        lines.append(
            f"  adapter.{f.name}  ({type_name(hints.get(f.name, Any))}; default {default!r})"
        )
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)
