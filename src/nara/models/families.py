"""The model families nara runs natively, and which logit predicts which token in each.

A masked-diffusion model predicts every masked token from the whole sequence, but families
disagree on *where* that prediction sits. LLaDA (and any masked LM) puts the prediction for token
i at logit i: the **aligned** convention. Dream, initialised from an autoregressive model, kept
the autoregressive layout: the logit at position i predicts token i + 1, the **shifted**
convention. Reading shifted logits as aligned ones trains and samples silently wrong, so every
consumer of logits in nara — the loss, both samplers, the likelihood estimate, the noise profile
and lm-eval — goes through :func:`token_logits`, and a model whose convention cannot be
established is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Tokenizer,
)

from nara.models.dream import DreamModel
from nara.models.llada import LLaDAModelLM
from nara.models.mdlm import MDLMModel

ALIGNED = "aligned"  # logit i predicts token i (LLaDA, MDLM, masked LMs)
SHIFTED = "shifted"  # logit i predicts token i + 1 (Dream)
LOGIT_CONVENTIONS = (ALIGNED, SHIFTED)


@dataclass(frozen=True)
class Family:
    """A model family nara implements natively.

    Attributes:
        model_class: nara's class for it, loaded without remote code.
        logit_convention: ``"aligned"`` or ``"shifted"`` (see the module docstring).
        sampler: the sampler :func:`nara.diffusion.generate` uses by default: the one released
            with the family (``"llada"``: LLaDA's blocks of low-confidence remasking;
            ``"dream"``: Dream's ``diffusion_generate``; ``"mdlm"``: MDLM's ancestral sampler).
        hub_ids: released checkpoints of the family.
        tokenizer_class: the transformers class that reads the family's tokenizer files when
            they name a remote-code class (Dream ships Qwen2's byte-level BPE as
            ``DreamTokenizer``); None: ``AutoTokenizer``.
        noise_schedule: the training objective's schedule (:func:`nara.diffusion.diffusion_loss`):
            ``"linear"`` (LLaDA's) or ``"loglinear"`` (MDLM's continuous-time NELBO).
    """

    model_class: type[PreTrainedModel]
    logit_convention: str
    sampler: str
    hub_ids: tuple[str, ...]
    tokenizer_class: type[PreTrainedTokenizerBase] | None = None
    noise_schedule: str = "linear"


# Keyed by the lower-cased ``model_type`` of the released config.json.
FAMILIES: dict[str, Family] = {
    "llada": Family(
        LLaDAModelLM,
        ALIGNED,
        "llada",
        ("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"),
    ),
    "dream": Family(
        DreamModel,
        SHIFTED,
        "dream",
        ("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"),
        Qwen2Tokenizer,
    ),
    "mdlm": Family(
        MDLMModel, ALIGNED, "mdlm", ("kuleshov-group/mdlm-owt",), noise_schedule="loglinear"
    ),
}


def family_of(raw_config: dict[str, Any]) -> Family | None:
    """The native family of a config.json (as a dict), by ``model_type`` or architecture name."""
    family = FAMILIES.get(str(raw_config.get("model_type", "")).lower())
    if family is not None:
        return family
    names = set(raw_config.get("architectures") or [])
    return next((f for f in FAMILIES.values() if f.model_class.__name__ in names), None)


def _config(model_or_config: Any) -> Any:
    return (
        model_or_config
        if isinstance(model_or_config, PretrainedConfig)
        else getattr(model_or_config, "config", None)
    )


def logit_convention(model_or_config: Any) -> str:
    """``"aligned"`` or ``"shifted"``: where the prediction for token i sits in the logits.

    In order: ``config.logit_convention`` when set (``load_model(..., logit_convention=...)``
    sets it), the native family of ``config.model_type``, ``"aligned"`` for a masked-LM class
    of transformers (it predicts the token at its own position by construction), and
    ``"aligned"`` for a module with no ``config`` at all (a test double written for nara).

    Raises:
        ValueError: the convention is unknown or cannot be established; the message lists the
            families nara knows and how to state the convention.
    """
    config = _config(model_or_config)
    if config is None:
        return ALIGNED
    declared = getattr(config, "logit_convention", None)
    if declared is not None:
        if declared not in LOGIT_CONVENTIONS:
            raise ValueError(
                f"config.logit_convention={declared!r} is not one of {LOGIT_CONVENTIONS}"
            )
        return declared
    model_type = str(getattr(config, "model_type", "")).lower()
    if model_type in FAMILIES:
        return FAMILIES[model_type].logit_convention
    masked_lm = AutoModelForMaskedLM._model_mapping.get(type(config), None)
    if masked_lm is not None and (
        model_or_config is config or isinstance(model_or_config, masked_lm)
    ):
        return ALIGNED
    raise ValueError(
        f"cannot establish which logit predicts token i for model_type {model_type or None!r}: "
        f"nara runs the families {sorted(FAMILIES)} natively and knows the masked LMs of "
        "transformers. For another model, state it: load_model(..., logit_convention='aligned') "
        "if logit i predicts token i (as LLaDA), or 'shifted' if logit i predicts token i + 1 "
        "(as Dream); or set model.config.logit_convention"
    )


def token_logits(model: Any, logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) realigned so that ``[:, i]`` is the prediction for token i.

    Aligned models pass through unchanged. For shifted ones position i takes logit i − 1, and
    position 0 (which has no left neighbour; a prompt token in every use) keeps its own logit,
    as Dream's released sampler does.
    """
    if logit_convention(model) == ALIGNED:
        return logits
    return logits[:, logit_positions(model, torch.arange(logits.shape[1], device=logits.device))]


def logit_positions(model: Any, positions: torch.Tensor) -> torch.Tensor:
    """The logit positions (same shape) that hold the predictions for the token ``positions``
    (long, any shape): the same ones for aligned models; i − 1 for shifted ones, position 0
    keeping its own logit. :func:`token_logits` reads logits through it, and so does the loss
    that computes the head only at masked positions."""
    if logit_convention(model) == ALIGNED:
        return positions
    return (positions - 1).clamp_min(0)


def _family(model: Any) -> Family | None:
    return FAMILIES.get(str(getattr(_config(model), "model_type", "")).lower())


def noise_schedule(model: Any) -> str:
    """The training schedule of the model's family; ``"linear"`` for other models."""
    family = _family(model)
    return "linear" if family is None else family.noise_schedule


def default_sampler(model: Any) -> str:
    """The sampler released with the model's family; ``"llada"`` for other models."""
    family = _family(model)
    return "llada" if family is None else family.sampler
