"""The forward (masking) process of masked diffusion, and the one definition of the noise level λ.

λ for a sample is the fraction of its *maskable* region that is currently masked: the answer in
supervised fine-tuning and at sampling time, the whole sequence in pre-training. The loss, the
sampler, the likelihood estimate and the noise profile all call :func:`masked_fraction`, so
training and inference feed adapters the same quantity (the released NaRA code did not).
"""

from __future__ import annotations

import torch

EPS = 1e-3  # LLaDA's floor on the masking probability: p = (1 - eps) * t + eps


def answer_canvas(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gen_length: int,
    mask_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The start of every sampler: the prompts followed by an all-masked answer.

    Args:
        input_ids: long (B, P), left-padded prompts; attention_mask: (B, P) or None.

    Returns:
        (x long (B, P + gen_length) with the answer all mask tokens, answer bool (B, T) marking
        the answer region, prompt bool (B, T) marking the real prompt tokens, the attention mask
        extended over the answer or None).
    """
    b, prompt_len = input_ids.shape
    x = torch.cat([input_ids, input_ids.new_full((b, gen_length), mask_token_id)], dim=1)
    answer = torch.zeros_like(x, dtype=torch.bool)  # (B, T)
    answer[:, prompt_len:] = True
    if attention_mask is None:
        return x, answer, ~answer, None
    prompt = torch.cat([attention_mask.bool(), answer.new_zeros(b, gen_length)], dim=1)
    attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, gen_length)], dim=1)
    return x, answer, prompt, attention_mask


def masked_fraction(masked: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
    """The noise level λ of each sample: masked maskable positions over maskable positions.

    Args:
        masked: bool (B, T), positions currently holding the mask token.
        maskable: bool (B, T), positions that belong to the region being denoised.

    Returns:
        float32 (B,) in [0, 1]. A sample with an empty maskable region gets λ = 0.

    Raises:
        ValueError: if the shapes differ.
    """
    if masked.shape != maskable.shape:
        raise ValueError(
            f"masked {tuple(masked.shape)} and maskable {tuple(maskable.shape)} must have the same "
            "(batch, length) shape"
        )
    maskable = maskable.bool()
    hits = (masked.bool() & maskable).sum(-1, dtype=torch.float32)
    total = maskable.sum(-1, dtype=torch.float32)
    return hits / total.clamp_min(1.0)


def local_mask_density(
    masked: torch.Tensor, maskable: torch.Tensor, radius: int = 8
) -> torch.Tensor:
    """Average fraction of masked neighbours around each masked position, per sample.

    For every masked maskable position, count the masked positions among the maskable positions
    within ``radius`` on either side (itself excluded) and divide by the number of those
    neighbours; average over the sample's masked positions. This is NaRA's alternative input
    (``input_mode="density"``): it sees *where* the masks are, not only how many.

    Args:
        masked, maskable: bool (B, T).
        radius: half-width of the window, >= 1.

    Returns:
        float32 (B,) in [0, 1]; 0 for a sample with no masked position.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    m = (masked.bool() & maskable.bool()).float().unsqueeze(1)  # (B, 1, T)
    valid = maskable.bool().float().unsqueeze(1)
    kernel = torch.ones(1, 1, 2 * radius + 1, device=m.device)
    kernel[..., radius] = 0.0  # exclude the position itself
    masked_near = torch.nn.functional.conv1d(m, kernel, padding=radius).squeeze(1)  # (B, T)
    valid_near = torch.nn.functional.conv1d(valid, kernel, padding=radius).squeeze(1)
    per_pos = masked_near / valid_near.clamp_min(1.0)
    m = m.squeeze(1)
    return (per_pos * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def masking_probability(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """LLaDA's per-sample masking probability p = (1 − ε)·t + ε, so no sample is left unmasked."""
    return (1.0 - eps) * t + eps


def forward_process(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    *,
    t: torch.Tensor | None = None,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask each maskable token independently with probability p(t), t ~ U(0, 1) per sample.

    Args:
        input_ids: long (B, T), the clean sequence.
        maskable: bool (B, T), where masking may happen (never the prompt or padding).
        mask_token_id: id written into masked positions.
        t: optional float (B,) of noise times in [0, 1]; drawn uniformly when None.
        eps: floor of the masking probability.
        generator: optional RNG for reproducible masks.

    Returns:
        ``(noisy_ids, masked, p)``: long (B, T), bool (B, T), float (B,).
    """
    b, n = input_ids.shape
    device = input_ids.device
    if t is None:
        t = torch.rand(b, device=device, generator=generator)
    elif not isinstance(t, torch.Tensor) or t.shape != (b,):
        raise ValueError(f"t must be a tensor of shape ({b},), got {t!r}")
    elif not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails both comparisons
        raise ValueError(f"every t must lie in [0, 1] (no NaN), got {t[:8].tolist()}")
    p = masking_probability(t.float(), eps)
    draw = torch.rand(b, n, device=device, generator=generator)
    masked = (draw < p[:, None]) & maskable.bool()
    noisy = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    return noisy, masked, p
