"""How the diffusion code calls a model: under the adapters' noise context, with checked ids.

``nara.adapters`` is imported when first needed rather than at module import, so importing
``nara.diffusion`` stays light and cannot form an import cycle with the adapters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch


def noise_context(
    model: torch.nn.Module, lam: torch.Tensor, density: torch.Tensor | None = None
) -> AbstractContextManager:
    """``nara.adapters.noise.noise_level(model, lam, density)``: per-sample λ for the adapters."""
    from nara.adapters.noise import noise_level

    return noise_level(model, lam, density=density)


def denoise(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    lam: torch.Tensor,
    density: torch.Tensor,
    prompt: torch.Tensor,
    **model_kwargs: object,
) -> torch.Tensor:
    """Logits (B, T, V) of ``model(input_ids, attention_mask=..., **model_kwargs)`` (e.g. a
    sampler's ``kv_cache``) with λ (B,) set on the
    adapters (and the local mask density, for NaRA's density input), and the prompt positions,
    bool (B, T), given to a trajectory router (LoRA-Diffusion composition) if the model has one.

    Position i of the result is the prediction for token i whatever the model family's logit
    convention (:func:`nara.models.families.token_logits`): every caller reads it that way."""
    from nara.models.families import token_logits

    with denoise_context(model, lam, density, prompt):
        output = model(input_ids, attention_mask=attention_mask, **model_kwargs)
        return token_logits(model, output.logits)


@contextmanager
def denoise_context(
    model: torch.nn.Module, lam: torch.Tensor, density: torch.Tensor, prompt: torch.Tensor
) -> Iterator[None]:
    """The contexts of :func:`denoise`'s model call (λ and density for the adapters, the prompt
    positions for a trajectory router), for callers that run the model's head apart."""
    from nara.adapters.trajectory import route_context

    with noise_context(model, lam, density), route_context(model, prompt):
        yield


def check_token_id(model: torch.nn.Module, token_id: int, name: str = "mask_token_id") -> None:
    """Raise ValueError unless ``token_id`` is a non-negative int inside the model's vocabulary
    (when the model has a ``config.vocab_size``)."""
    if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
        raise ValueError(f"{name} must be a non-negative int, got {token_id!r}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and token_id >= vocab:
        raise ValueError(
            f"{name}={token_id} is outside the model's vocabulary ({vocab} tokens); pass the "
            "model's own id (e.g. LoadedModel.mask_token_id)"
        )


def check_logits(logits: torch.Tensor, where: str) -> None:
    """Raise ValueError if a sampler got NaN or +inf logits, or a position with no finite logit
    (``where`` names the step); sampling from them silently gives garbage, often an empty answer.
    """
    bad = logits.isnan().any() | logits.isposinf().any() | (logits.amax(-1) == -math.inf).any()
    if bool(bad):
        raise ValueError(
            f"the model returned non-finite logits (NaN or inf) at {where}: its weights or the "
            "adapter's likely hold NaN/inf (a diverged training run), or the dtype overflowed "
            "(float16); check the weights, or run in bfloat16/float32"
        )
