"""Per-token log-probabilities of sampled completions for RL on masked diffusion models.

A masked diffusion model has no autoregressive factorisation, so policy-gradient methods need
an estimate of log π(o_k | q) for each completion token. The one-step estimate (diffu-GRPO)
masks the whole completion and each prompt token with probability p, runs the model once and
reads the log-softmax at the completion tokens. Masking part of the prompt at random makes the
estimate a different perturbation of the policy at each outer step; a fixed seed keeps the
same mask over the inner iterations that reuse one batch, so the importance ratios compare
like with like. The reference policy is the policy at the start of RL without a second copy of
the base weights: the same model with its adapters switched off (a fresh adapter), or with a
frozen copy of the starting adapter's tensors swapped in (an adapter trained before, e.g. SFT).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.nn.functional as F

from nara.diffusion._model import check_token_id, denoise
from nara.diffusion.masking import local_mask_density, masked_fraction


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` as its base model (every adapter layer returns its base output) inside
    the block, so the reference policy of RL needs no second copy of the weights.

    It uses the layers' own merged-state switch (a merged layer returns the base product
    alone) on unmerged adapters, and restores every flag on exit, also after an exception.

    Raises:
        ValueError: the model has no nara adapters, its adapters are merged (the base weight
            then holds the update), or the method perturbs hidden states (prompt, prefix,
            trajectory tuning), which has no per-layer switch.
    """
    from nara.adapters.inject import HIDDEN_STATE_METHODS, adapter_layers
    from nara.adapters.noise import find_hub

    hub = find_hub(model)
    if hub is None:
        raise ValueError("this model has no nara adapters; call nara.add_adapters(model, config)")
    if hub.method in HIDDEN_STATE_METHODS:
        raise ValueError(
            f"{hub.method} adapters act on hidden states and cannot be switched off per layer; "
            "use a weight adapter (lora, nara, dora, ...) for RL with a reference policy, or "
            "set the KL coefficient beta=0"
        )
    layers = list(adapter_layers(model).values())
    if hub.merged or any(layer.merged for layer in layers):
        raise ValueError(
            "the adapters are merged into the base weights, so the base model is not available; "
            "call nara.unmerge_adapters(model) first"
        )
    hub.merged = True
    for layer in layers:
        layer.merged = True
    try:
        yield model
    finally:
        hub.merged = False
        for layer in layers:
            layer.merged = False


def _check(
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    prompt_mask_prob: float,
    prompt_attention: torch.Tensor | None,
    completion_mask: torch.Tensor | None,
) -> None:
    if prompt_ids.dim() != 2 or completion_ids.dim() != 2:
        raise ValueError(
            f"prompt_ids {tuple(prompt_ids.shape)} and completion_ids "
            f"{tuple(completion_ids.shape)} must both be (batch, length)"
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has "
            f"{completion_ids.shape[0]}; repeat each prompt once per completion of its group"
        )
    if prompt_attention is not None and prompt_attention.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_attention {tuple(prompt_attention.shape)} must have the shape of prompt_ids "
            f"{tuple(prompt_ids.shape)}"
        )
    if completion_mask is not None and completion_mask.shape != completion_ids.shape:
        raise ValueError(
            f"completion_mask {tuple(completion_mask.shape)} must have the shape of "
            f"completion_ids {tuple(completion_ids.shape)}"
        )
    if not 0.0 <= prompt_mask_prob < 1.0:  # NaN fails too
        raise ValueError(
            f"prompt_mask_prob must lie in [0, 1), got {prompt_mask_prob}; diffu-GRPO uses 0.15"
        )


def one_step_inputs(
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    mask_token_id: int,
    prompt_mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    prompt_attention: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model input of the one-step estimate and its mask, both (B, P + L).

    Every completion position holds ``mask_token_id``; each real prompt token (attention 1) is
    replaced by it with probability ``prompt_mask_prob``, drawn on the CPU from ``generator``
    so one seed gives the same mask on any device. Returns ``(noisy_ids, masked)``.
    """
    b, p = prompt_ids.shape
    real = torch.ones_like(prompt_ids, dtype=torch.bool)
    if prompt_attention is not None:
        real = prompt_attention.bool()
    draw = torch.rand(b, p, generator=generator).to(prompt_ids.device)
    masked = torch.cat(
        [(draw < prompt_mask_prob) & real, torch.ones_like(completion_ids, dtype=torch.bool)], 1
    )
    ids = torch.cat([prompt_ids, completion_ids], 1)
    return ids.masked_fill(masked, mask_token_id), masked


def per_token_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    mask_token_id: int,
    prompt_mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    prompt_attention: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one-step estimate of log π(o_k | q) for every completion token: float32 (B, L).

    The input is :func:`one_step_inputs` (completion fully masked, prompt tokens masked with
    probability ``prompt_mask_prob``); one forward through :func:`nara.diffusion._model.denoise`
    (so every family's logit convention holds) with λ = :func:`nara.masked_fraction` of the
    completion region (1 for every sample with a real completion token) and its local mask
    density for noise-aware adapters; the result is the float32 log-softmax at the completion
    tokens. Pass a generator seeded the same way to reuse one mask over inner iterations.

    Args:
        model: a masked diffusion model (with or without adapters).
        prompt_ids: long (B, P), left-padded prompts (row i repeated for its group).
        completion_ids: long (B, L), right-padded completions.
        mask_token_id: the model's mask token id.
        prompt_mask_prob: probability p of masking each real prompt token, in [0, 1).
        generator: CPU RNG of the prompt mask.
        prompt_attention: optional (B, P), 1 real prompt token, 0 left padding.
        completion_mask: optional (B, L), 1 real completion token, 0 padding; padding is
            hidden from attention and gets log-probability 0.

    Raises:
        ValueError: on inconsistent shapes, a p outside [0, 1) or a bad mask token id.
    """
    check_token_id(model, mask_token_id)
    _check(prompt_ids, completion_ids, prompt_mask_prob, prompt_attention, completion_mask)
    noisy, masked = one_step_inputs(
        prompt_ids,
        completion_ids,
        mask_token_id=mask_token_id,
        prompt_mask_prob=prompt_mask_prob,
        generator=generator,
        prompt_attention=prompt_attention,
    )
    real_prompt = (
        torch.ones_like(prompt_ids, dtype=torch.bool)
        if prompt_attention is None
        else prompt_attention.bool()
    )
    real_completion = (
        torch.ones_like(completion_ids, dtype=torch.bool)
        if completion_mask is None
        else completion_mask.bool()
    )
    zeros_p = torch.zeros_like(real_prompt)
    answer = torch.cat([zeros_p, real_completion], 1)  # (B, P + L), the maskable region
    attention = torch.cat([real_prompt, real_completion], 1)
    lam = masked_fraction(masked, answer)
    density = local_mask_density(masked, answer)
    prompt = torch.cat([real_prompt, torch.zeros_like(real_completion)], 1)
    logits = denoise(model, noisy, attention.long(), lam, density, prompt)  # (B, P + L, V)
    p = prompt_ids.shape[1]
    logp = F.log_softmax(logits[:, p:].float(), -1)
    logp = logp.gather(-1, completion_ids[..., None]).squeeze(-1)  # (B, L)
    return logp.masked_fill(~real_completion, 0.0)


def _adapted(model: torch.nn.Module) -> torch.nn.Module:
    """The adapted model inside wrappers such as DDP (their ``.module``), so parameter names do
    not depend on the wrapping."""
    while not hasattr(model, "nara_hub") and isinstance(
        getattr(model, "module", None), torch.nn.Module
    ):
        model = model.module
    return model


def adapter_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable adapter tensor of ``model`` (names as
    :func:`nara.adapters.inject.adapter_parameters`): the reference policy of an RL run that
    starts from a trained adapter, at the cost of one adapter, not of the base weights.

    Raises:
        ValueError: the model has no nara adapters.
    """
    from nara.adapters.inject import adapter_parameters

    return {name: p.detach().clone() for name, p in adapter_parameters(_adapted(model)).items()}


@contextmanager
def adapter_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> Iterator[torch.nn.Module]:
    """Run ``model`` with the adapter tensors ``state`` (an :func:`adapter_snapshot`) in place
    of its own inside the block. The parameters' storages are swapped, nothing is copied, and
    the model's own tensors are back on exit, also after an exception.

    Raises:
        ValueError: ``state`` does not hold exactly the model's adapter tensors, with their
            shapes, dtypes and devices (take the snapshot after the model moved to its device).
    """
    from nara.adapters.inject import adapter_parameters

    params = adapter_parameters(_adapted(model))
    if state.keys() != params.keys():
        missing, unexpected = sorted(params.keys() - state), sorted(state.keys() - params)
        raise ValueError(
            f"the reference adapter does not fit the model: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}; take it with adapter_snapshot(model) of this adapted model"
        )
    for name, p in params.items():
        t = state[name]
        if (t.shape, t.dtype, t.device) != (p.shape, p.dtype, p.device):
            raise ValueError(
                f"reference tensor {name} is {tuple(t.shape)} {t.dtype} on {t.device}, the model's "
                f"{tuple(p.shape)} {p.dtype} on {p.device}; take the snapshot after the model "
                "moved to its device and dtype"
            )
    own = {name: p.data for name, p in params.items()}
    try:
        for name, p in params.items():
            p.data = state[name]
        yield model
    finally:
        for name, p in params.items():
            p.data = own[name]


def reference_policy(
    model: torch.nn.Module, reference: dict[str, torch.Tensor] | None
) -> AbstractContextManager[torch.nn.Module]:
    """The context in which ``model`` is RL's reference policy: its adapters switched off
    (``reference=None``, :func:`adapters_disabled`) or the starting adapter's tensors swapped in
    (``reference`` = an :func:`adapter_snapshot`, :func:`adapter_weights`)."""
    if reference is None:
        return adapters_disabled(model)
    return adapter_weights(model, reference)


@torch.no_grad()
def reference_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    reference: dict[str, torch.Tensor] | None = None,
    **kwargs: object,
) -> torch.Tensor:
    """:func:`per_token_logprobs` of the reference policy (:func:`reference_policy`: the base
    model, or the model with the starting adapter ``reference``), without gradient: the
    reference of the KL term. Pass the same generator seed as the policy's estimate so both
    see one mask."""
    with reference_policy(model, reference):
        return per_token_logprobs(model, prompt_ids, completion_ids, **kwargs)
