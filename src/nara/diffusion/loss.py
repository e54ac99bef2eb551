"""The masked-diffusion training objective (LLaDA, Nie et al. 2025, eq. 3 and its SFT variant).

Mask every maskable token with probability p = (1 − ε)·t + ε, predict the masked tokens, and
weight each masked token's cross-entropy by 1/p. The adapters see the sample's noise level
λ = :func:`~nara.diffusion.masking.masked_fraction` of the mask actually drawn (never t itself),
through the noise context that the loss enters around the model call, so a trainer only calls
:func:`diffusion_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from nara.diffusion._model import check_token_id, denoise, denoise_context
from nara.diffusion.masking import EPS, forward_process, local_mask_density, masked_fraction

NORMALIZATIONS = ("answer_length", "token", "batch")
SCHEDULES = ("linear", "loglinear")


@dataclass
class LossOutput:
    """What :func:`diffusion_loss` returns. All fields but ``loss`` are detached.

    Attributes:
        loss: scalar to back-propagate.
        lam: float (B,), λ of each sample (masked fraction of its maskable region).
        density: float (B,), local mask density of each sample (NaRA's ``density`` input).
        t: float (B,), the noise times drawn (or given).
        p: float (B,), masking probabilities p = (1 − ε)·t + ε.
        masked: bool (B, T), the positions that were masked.
        num_masked: long scalar, number of masked positions in the batch.
        sample_loss: float (B,), each sample's Σ CE/p over its masked positions (its negative
            ELBO); ``loss`` is this sum normalised as requested.
        masked_ce: float (B,), mean unweighted cross-entropy over each sample's masked positions
            (0 when none), for loss-per-noise-level analyses.
        accuracy: scalar, fraction of masked positions whose argmax prediction is right
            (0 when nothing is masked).
    """

    loss: torch.Tensor
    lam: torch.Tensor
    density: torch.Tensor
    t: torch.Tensor
    p: torch.Tensor
    masked: torch.Tensor
    num_masked: torch.Tensor
    sample_loss: torch.Tensor
    masked_ce: torch.Tensor
    accuracy: torch.Tensor


def sft_maskable(prompt_lengths: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The maskable region of supervised fine-tuning: every real token after the prompt.

    Works for right padding (the layout training usually uses): position j of sample i is
    maskable when ``j >= prompt_lengths[i]`` and ``attention_mask[i, j] == 1``. The answer's EOS
    padding is real (attention 1) and therefore maskable, which teaches the model where to stop.

    Args:
        prompt_lengths: long (B,), number of prompt tokens at the start of each sequence.
        attention_mask: (B, T), 1 for real tokens, 0 for padding.

    Returns:
        bool (B, T).
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return (positions[None, :] >= prompt_lengths[:, None]) & attention_mask.bool()


def _check_inputs(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    attention_mask: torch.Tensor | None,
    normalization: str,
    eps: float,
) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if maskable.shape != input_ids.shape:
        raise ValueError(
            f"maskable {tuple(maskable.shape)} must have the shape of input_ids "
            f"{tuple(input_ids.shape)}"
        )
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}"
            )
        if bool((maskable.bool() & ~attention_mask.bool()).any()):
            raise ValueError(
                "maskable marks padding positions (attention_mask == 0); AND it with the "
                "attention mask when building it"
            )
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not 0.0 <= eps < 1.0:  # NaN fails too
        raise ValueError(f"eps must lie in [0, 1), got {eps}; LLaDA uses eps={EPS}")
    if bool((input_ids[maskable.bool()] == mask_token_id).any()):
        raise ValueError(
            f"the clean input already holds mask_token_id={mask_token_id} at maskable positions; "
            "pass the model's mask token id (e.g. LoadedModel.mask_token_id) and clean input_ids"
        )


def _loglinear_time(
    model: torch.nn.Module, schedule: str | None, t: torch.Tensor, eps: float
) -> torch.Tensor | None:
    """MDLM's time t' = (1 − ε)·t + ε (B,) on the log-linear schedule (docs/backbones.md);
    None on the linear one. ``schedule`` None: the model family's."""
    if schedule is None:
        from nara.models.families import noise_schedule

        schedule = noise_schedule(model)
    if schedule not in SCHEDULES:
        raise ValueError(
            f"schedule must be one of {SCHEDULES} (or None: the family's), got {schedule!r}"
        )
    return (1.0 - eps) * t + eps if schedule == "loglinear" else None


HEAD_CHUNK_BYTES = 1 << 25  # float32 logits of one head chunk under the masked-head loss


def splits_head(model: torch.nn.Module) -> bool:
    """Whether the model can compute its output head apart from its trunk: it has
    ``head_logits`` and takes ``head=False`` (nara's native families), and no forward hook on
    the root rewrites its output (prompt tuning cuts its virtual positions from the logits)."""
    return callable(getattr(model, "head_logits", None)) and not model._forward_hooks


def _full_logits_ce(
    model: torch.nn.Module, context: tuple, masked: torch.Tensor, input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 CE (N,) at the masked positions (row-major order) and the number of right
    argmax predictions, from the model's full (B, T, V) logits."""
    logits = denoise(model, *context)  # (B, T, V)
    masked_logits = logits[masked].float()  # (N, V): float32 only where it is needed
    targets = input_ids[masked]  # (N,)
    ce = F.cross_entropy(masked_logits, targets, reduction="none")  # (N,)
    return ce, (masked_logits.detach().argmax(-1) == targets).sum()


def _head_chunk_ce(
    model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE (B, C) float32 and right-argmax flags (B, C) of one chunk of C positions per sample."""
    logits = model.head_logits(hidden, ids).float()  # (B, C, V)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return ce.view_as(targets), (logits.detach().argmax(-1) == targets)


def _masked_head_ce(
    model: torch.nn.Module,
    context: tuple,
    masked: torch.Tensor,
    input_ids: torch.Tensor,
    head_chunk: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_full_logits_ce` returns, with the head run only at the masked positions.

    Each sample's K_max first slots hold its masked token positions in order (the rest are
    padding, dropped after); the hidden states are read at the logit positions that predict
    them (:func:`~nara.models.families.logit_positions`, so every family's convention holds),
    keeping the batch dimension so per-sample conditioning broadcasts as in the full forward.
    Needs at least one masked position.
    """
    from nara.models.families import logit_positions

    noisy = context[0]
    counts = masked.sum(-1)  # (B,)
    k = int(counts.max())
    order = masked.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :k]  # (B, K)
    valid = torch.arange(k, device=masked.device)[None, :] < counts[:, None]  # (B, K)
    source = logit_positions(model, order)  # (B, K) logit position of each masked token
    with denoise_context(model, *context[2:]):
        hidden = model(noisy, attention_mask=context[1], head=False).last_hidden_state
        hidden = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
        ids, targets = noisy.gather(1, source), input_ids.gather(1, order)  # (B, K)
        per_position = 4 * model.config.vocab_size * noisy.shape[0]  # float32 bytes
        size = head_chunk or max(1, HEAD_CHUNK_BYTES // per_position)
        parts = [
            checkpoint(
                _head_chunk_ce,
                model,
                hidden[:, i : i + size],
                ids[:, i : i + size],
                targets[:, i : i + size],
                use_reentrant=False,
            )
            for i in range(0, k, size)
        ]
    ce, right = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
    return ce[valid], right[valid].sum()


def diffusion_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    *,
    attention_mask: torch.Tensor | None = None,
    normalization: str = "answer_length",
    eps: float = EPS,
    t: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    schedule: str | None = None,
    masked_head: bool = True,
    head_chunk: int | None = None,
) -> LossOutput:
    """LLaDA's masked-diffusion loss with the noise context set for noise-aware adapters.

    Masks the maskable positions (:func:`~nara.diffusion.masking.forward_process`), runs
    ``model(noisy_ids, attention_mask=attention_mask)`` inside
    ``noise_level(model, λ, density=density)``, and computes the float32 cross-entropy at the
    masked positions, each divided by its sample's p. Writing ``S_i = Σ_masked CE / p_i``:

    - ``"answer_length"`` (LLaDA SFT): mean over the batch of ``S_i / n_i``, with ``n_i`` the
      number of maskable tokens of sample i. With maskable = every real token (pre-training)
      this is LLaDA's per-token pre-training normalisation.
    - ``"token"``: ``Σ_i S_i / Σ_i n_i``, long samples weigh more.
    - ``"batch"``: ``Σ_i S_i / B``, the mean per-sequence negative ELBO (a bound on
      −log p(answer)), whose scale grows with the answer length.

    A sample with no maskable token contributes 0 (and still counts in B).

    Args:
        model: returns an object with ``.logits`` float (B, T, V).
        input_ids: long (B, T), clean sequences.
        maskable: bool (B, T), positions that may be masked: the answer (with its EOS padding)
            in SFT, every real token in pre-training; never prompt or padding.
        mask_token_id: id of the mask token.
        attention_mask: optional (B, T), 1 real, 0 padding.
        normalization: ``"answer_length"``, ``"token"`` or ``"batch"`` (see above).
        eps: floor of the masking probability.
        t: optional float (B,) noise times in [0, 1]; drawn from U(0, 1) when None.
        generator: optional RNG for t and the mask.
        schedule: ``"linear"`` (LLaDA, the above) or ``"loglinear"`` (MDLM's continuous-time
            NELBO: t' = (1 − ε)·t + ε, masking probability (1 − ε)·t', and each masked token's
            CE weighted by dσ/expm1(σ) = 1/t' instead of 1/p); None: the model family's
            (log-linear for MDLM, linear otherwise).
        masked_head: compute the output head and the cross-entropy only at the masked
            positions, in chunks of ``head_chunk`` positions per sample, each recomputed in
            backward, instead of materialising (B, T, V) logits: the same loss and gradients,
            with logits memory bounded by one chunk (docs/memory.md). Used when the model
            splits its head (:func:`splits_head`: nara's LLaDA, Dream and MDLM without
            output hooks); other models, and False, take the full logits.
        head_chunk: positions per sample in one chunk; None sizes a chunk to about
            :data:`HEAD_CHUNK_BYTES` of float32 logits.

    Returns:
        :class:`LossOutput`.

    Raises:
        ValueError: on inconsistent shapes, an unknown normalisation, padding marked maskable,
            a mask token id that is out of the vocabulary or already present in the input, a t
            outside [0, 1] or NaN, an eps outside [0, 1), or a head_chunk below 1.
    """
    if head_chunk is not None and (isinstance(head_chunk, bool) or head_chunk < 1):
        raise ValueError(
            f"head_chunk must be a positive int (or None: automatic), got {head_chunk!r}"
        )
    check_token_id(model, mask_token_id)
    _check_inputs(input_ids, maskable, mask_token_id, attention_mask, normalization, eps)
    maskable = maskable.bool()
    if t is None:
        t = torch.rand(input_ids.shape[0], device=input_ids.device, generator=generator)
    t_nelbo = _loglinear_time(model, schedule, t, eps)  # None on the linear schedule
    if t_nelbo is None:  # p = (1 − ε)t + ε; each masked CE divided by p
        noisy, masked, p = forward_process(
            input_ids, maskable, mask_token_id, t=t, eps=eps, generator=generator
        )
        weight = p
    else:  # p = (1 − ε)t'; each masked CE divided by t' (times dσ/expm1(σ) = 1/t')
        noisy, masked, p = forward_process(
            input_ids,
            maskable,
            mask_token_id,
            t=(1.0 - eps) * t_nelbo,
            eps=0.0,
            generator=generator,
        )
        weight = t_nelbo
    lam = masked_fraction(masked, maskable)  # (B,)
    density = local_mask_density(masked, maskable)  # (B,)
    prompt = ~maskable if attention_mask is None else attention_mask.bool() & ~maskable
    context = (noisy, attention_mask, lam, density, prompt)
    if masked_head and splits_head(model) and bool(masked.any()):
        ce, correct = _masked_head_ce(model, context, masked, input_ids, head_chunk)
    else:
        ce, correct = _full_logits_ce(model, context, masked, input_ids)

    rows = masked.nonzero(as_tuple=True)[0]  # (N,) sample index of each masked position
    b = input_ids.shape[0]
    sample_loss = torch.zeros(b, device=ce.device).index_add(0, rows, ce / weight[rows])
    n_maskable = maskable.sum(-1).float()  # (B,)
    if normalization == "answer_length":
        loss = (sample_loss / n_maskable.clamp_min(1.0)).mean()
    elif normalization == "token":
        loss = sample_loss.sum() / n_maskable.sum().clamp_min(1.0)
    else:
        loss = sample_loss.sum() / b

    with torch.no_grad():
        n_masked = masked.sum(-1)  # (B,)
        ce_sum = torch.zeros(b, device=ce.device).index_add(0, rows, ce.detach())
    return LossOutput(
        loss=loss,
        lam=lam,
        density=density,
        t=t.detach(),
        p=p.detach(),
        masked=masked,
        num_masked=n_masked.sum(),
        sample_loss=sample_loss.detach(),
        masked_ce=ce_sum / n_masked.clamp_min(1).float(),
        accuracy=correct.float() / n_masked.sum().clamp_min(1).float(),
    )
