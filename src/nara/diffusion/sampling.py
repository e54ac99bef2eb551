"""Masked-diffusion sampling: LLaDA's low-confidence remasking and its extensions.

The answer region starts all masked and is split into blocks decoded left to right
(semi-autoregressive when a block is shorter than the answer). At each step the model predicts
every position; among the still-masked positions of the current block, the most confident
predictions are committed and never changed again. Extensions: Dream's confidence measures
(margin, entropy), classifier-free guidance, confidence-threshold parallel decoding (Fast-dLLM),
and early stopping at EOS. At every step each sample's λ — the masked fraction of its own
answer region, by :func:`~nara.diffusion.masking.masked_fraction` as in training — is passed to
the adapters.

References: Nie et al. 2025 (LLaDA, Algorithm 5 and Appendix B), Ye et al. 2025 (Dream),
Wu et al. 2025 (Fast-dLLM).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from nara.diffusion._model import check_logits, check_token_id, denoise
from nara.diffusion.cache import KVCache, check_cache_model, check_cache_settings
from nara.diffusion.dream_sampling import dream_sample, resolve_sampler
from nara.diffusion.masking import answer_canvas, local_mask_density, masked_fraction
from nara.diffusion.mdlm_sampling import mdlm_sample

REMASKING = ("low_confidence", "random", "margin", "entropy")


@dataclass
class GenerationOutput:
    """Result of :func:`generate` with ``return_history=True``.

    Attributes:
        sequences: long (B, gen_length), the generated answers.
        history: long (S, B, P + gen_length), the whole sequence (prompt included) after each of
            the S steps run; masked positions hold the mask token id.
    """

    sequences: torch.Tensor
    history: torch.Tensor


def transfer_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens each step commits: ``num_masked`` spread evenly over ``steps``.

    LLaDA's schedule: every step commits ``n // steps`` tokens, the first ``n % steps`` steps
    one more (the linear noise schedule makes the expected number per step constant).

    Args:
        num_masked: long (B,), masked positions in the block at its start.
        steps: steps per block.

    Returns:
        long (B, steps), each row summing to its ``num_masked``.
    """
    base = num_masked // steps  # (B,)
    extra = torch.arange(steps, device=num_masked.device)[None, :] < (num_masked % steps)[:, None]
    return base[:, None] + extra.long()


def _check_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}"
            )
        real = attention_mask.bool()
        if bool((real.int().cummax(-1).values.bool() != real).any()):
            raise ValueError(
                "prompts must be left-padded (attention_mask zeros then ones on every row); "
                "tokenize with padding_side='left'"
            )


def check_settings(
    gen_length: int | None,
    steps: int | None,
    block_length: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    threshold: float | None = None,
    cache: str | None = None,
    cache_tolerance: float | None = None,
) -> None:
    """Raise ValueError, naming the value and the fix, for settings :func:`generate` refuses.

    Callers can check before loading a model: ``None`` for ``gen_length``, ``steps`` or
    ``block_length`` means "not known yet" (e.g. each task's own length) and skips the checks
    that need it.
    """
    for name, value in (
        ("gen_length", gen_length),
        ("steps", steps),
        ("block_length", block_length),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if gen_length is not None and block_length is not None:
        if gen_length % block_length != 0:
            raise ValueError(
                f"gen_length={gen_length} must be a multiple of block_length={block_length}; "
                "choose a block_length that divides gen_length"
            )
        num_blocks = gen_length // block_length
        if steps is not None and steps % num_blocks != 0:
            raise ValueError(
                f"steps={steps} must be a multiple of the number of blocks ({gen_length} // "
                f"{block_length} = {num_blocks}) so every block gets the same steps"
            )
    if gen_length is not None and steps is not None and steps > gen_length:
        raise ValueError(
            f"steps={steps} exceeds gen_length={gen_length}; each step commits at least one "
            "token, so use steps <= gen_length"
        )
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}"
        )
    if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
        raise ValueError(
            f"cfg_scale must be a finite number >= 0 (0 = no guidance), got {cfg_scale}"
        )
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if remasking == "random":
            raise ValueError(
                "threshold decoding needs a model confidence; use remasking='low_confidence', "
                "'margin' or 'entropy' with a threshold"
            )
    check_cache_settings(cache, cache_tolerance)


def max_length(model_or_config: Any) -> int | None:
    """The longest sequence (prompt + answer) a model allows, None if its config states none.

    Takes a model (its ``.config``), a config object or a config dict (a config.json read
    before loading). Read from ``max_sequence_length`` (LLaDA), ``max_position_embeddings``
    (most Hugging Face models, Dream) or ``n_positions``.
    """
    config = getattr(model_or_config, "config", model_or_config)
    for key in ("max_sequence_length", "max_position_embeddings", "n_positions"):
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_length(limit: int | None, prompt_len: int, gen_length: int) -> None:
    """Raise ValueError if ``prompt_len + gen_length`` exceeds ``limit`` (:func:`max_length`)."""
    if limit is not None and prompt_len + gen_length > limit:
        prompt = f"the prompt ({prompt_len} tokens) plus " if prompt_len else ""
        raise ValueError(
            f"{prompt}gen_length={gen_length} is {prompt_len + gen_length} tokens, more than "
            f"this model's maximum sequence length {limit}; use gen_length <= "
            f"{max(limit - prompt_len, 0)}{' or a shorter prompt' if prompt_len else ''}"
        )


def _sample(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Token choice per position: argmax, or a Gumbel-max draw at ``temperature`` in float64.

    argmax(logits + T·g) with g ~ Gumbel(0, 1) is the same draw as LLaDA's
    argmax(exp(logits) / (−log u)^T) (take its log), without overflowing exp. float64 because
    low-precision Gumbel noise degrades masked-diffusion samples (Zheng et al. 2024).
    """
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(u))
    return (logits.double() + temperature * gumbel).argmax(-1)


def _confidence(
    logits: torch.Tensor,
    chosen: torch.Tensor,
    remasking: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Confidence in [0, 1] per position (B, L); higher is committed first.

    low_confidence: probability of the chosen token (LLaDA, untempered softmax); margin: top-1
    minus top-2 probability (Dream's topk_margin); entropy: exp(−H), ordered like Dream's
    negative entropy but in (0, 1] so a threshold applies; random: uniform noise.
    """
    if remasking == "random":
        return torch.rand(chosen.shape, device=chosen.device, generator=generator)
    probs = torch.softmax(logits.float(), dim=-1)  # (B, L, V)
    if remasking == "low_confidence":
        return probs.gather(-1, chosen[..., None]).squeeze(-1)
    if remasking == "margin":
        top2 = probs.topk(2, dim=-1).values  # (B, L, 2)
        return top2[..., 0] - top2[..., 1]
    return torch.special.xlogy(probs, probs).sum(-1).exp()


def _top_k(confidence: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """bool (B, L): the k[i] most confident candidate positions of row i (ties: leftmost)."""
    score = confidence.masked_fill(~candidates, float("-inf"))
    order = score.argsort(dim=-1, descending=True, stable=True)  # (B, L)
    keep = torch.arange(score.shape[-1], device=score.device)[None, :] < k[:, None]  # by rank
    return torch.zeros_like(candidates).scatter(-1, order, keep) & candidates


def _block_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_real: torch.Tensor,
    answer: torch.Tensor,
    mask_token_id: int,
    cfg_scale: float,
    start: int,
    end: int,
    cache: KVCache | None = None,
) -> torch.Tensor:
    """float32 (B, end − start, V) logits of the current block, guided when cfg_scale > 0, from
    the whole sequence or, with ``cache``, from cached keys/values where they are valid.

    Sets each sample's λ (masked fraction of its answer region) and local mask density on the
    adapters. Guidance runs the batch twice, the second copy with its real prompt tokens masked
    (padding and the attention mask unchanged), with a doubled λ, and mixes
    uncond + (w + 1)·(cond − uncond).
    """
    masked = (x == mask_token_id) & answer  # (B, T)
    lam = masked_fraction(masked, answer)  # (B,)
    density = local_mask_density(masked, answer)
    prompt = prompt_real
    if cfg_scale > 0:
        uncond = x.masked_fill(prompt_real, mask_token_id)
        x = torch.cat([x, uncond])  # (2B, T)
        attention_mask = None if attention_mask is None else attention_mask.repeat(2, 1)
        lam, density, prompt = lam.repeat(2), density.repeat(2), prompt.repeat(2, 1)
    if cache is None:
        logits = denoise(model, x, attention_mask, lam, density, prompt)[:, start:end].float()
    else:
        logits = cache.logits(model, x, attention_mask, lam, density, prompt, start, end).float()
    if cfg_scale > 0:
        cond, unc = logits.chunk(2)
        logits = unc + (cfg_scale + 1.0) * (cond - unc)
    # Never predict the mask token itself: a committed mask would stay masked forever.
    logits[..., mask_token_id] = float("-inf")
    return logits


def _finish_at_eos(answer_ids: torch.Tensor, eos_token_id: int, mask_token_id: int) -> torch.Tensor:
    """Fill everything after the first EOS with EOS in rows whose answer is decided.

    A row is decided when it holds a committed EOS and no masked position precedes the first
    one; committed tokens before it never change again, so the answer is final.

    Args:
        answer_ids: long (B, G), the answer region.

    Returns:
        long (B, G).
    """
    g = answer_ids.shape[-1]
    pos = torch.arange(g, device=answer_ids.device)[None, :]  # (1, G)
    first = torch.where(answer_ids == eos_token_id, pos, g).min(-1).values[:, None]  # (B, 1)
    open_before = ((answer_ids == mask_token_id) & (pos < first)).any(-1, keepdim=True)
    fill = (first < g) & ~open_before & (pos > first)
    return answer_ids.masked_fill(fill, eos_token_id)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    mask_token_id: int,
    gen_length: int = 128,
    steps: int = 128,
    block_length: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    eos_token_id: int | None = None,
    threshold: float | None = None,
    cache: str | None = None,
    cache_tolerance: float | None = None,
    return_history: bool = False,
    generator: torch.Generator | None = None,
    sampler: str | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    alg_temp: float | None = None,
) -> torch.Tensor | GenerationOutput:
    """Generate answers by iterative unmasking (LLaDA's sampler, batched).

    The answer region (``gen_length`` positions after the prompt) starts all masked and is split
    into ``gen_length // block_length`` blocks decoded left to right, ``steps // num_blocks``
    steps each. A step runs the model once (twice with guidance), draws a token for every
    position of the block (argmax at temperature 0, else float64 Gumbel-max), and commits among
    the block's masked positions the ones with the highest confidence; committed tokens and the
    prompt never change. The mask token is never predicted. Call ``model.eval()`` first.

    - Fixed schedule (``threshold=None``): step s of a block commits exactly
      :func:`transfer_schedule` (n // steps, +1 for the first n % steps steps) tokens.
    - Threshold decoding: each step commits every masked block position whose confidence is
      ``>= threshold``, or the single most confident one if none is; a block ends when it is
      fully committed, so it takes 1 to ``block_length`` steps whatever ``steps`` says (which
      is then only validated). This is Fast-dLLM's parallel decoding.
    - EOS (``eos_token_id``): once a sample holds a committed EOS with no masked position before
      its first EOS, everything after that EOS becomes EOS and the sample is done; sampling
      stops when every sample is done. Batched and alone give the same answer.

    At every step sample i's adapters see λᵢ = masked_fraction(masked, answer region) and its
    local mask density, through ``noise_level(model, λ, density)`` (a doubled batch of λ with
    guidance).

    Args:
        model: returns an object with ``.logits`` float (B, T, V); bidirectional.
        input_ids: long (B, P), prompts, left-padded when their lengths differ. P may be 0
            (or a row all padding): an empty prompt samples unconditionally.
        attention_mask: optional (B, P), 1 real, 0 padding (left padding only).
        mask_token_id: the mask token id.
        gen_length: answer positions to generate.
        steps: total denoising steps (a multiple of the number of blocks, <= gen_length).
        block_length: block size; None = one block of ``gen_length``.
        temperature: 0 = greedy; > 0 samples with Gumbel noise.
        remasking: confidence that orders commits: ``"low_confidence"`` (probability of the
            chosen token), ``"margin"`` (top-1 minus top-2 probability), ``"entropy"``
            (exp(−entropy)) or ``"random"``.
        cfg_scale: classifier-free guidance weight w (0 = off).
        eos_token_id: stop early at EOS (see above); None = decode every position.
        threshold: confidence in (0, 1] for parallel decoding; None = fixed schedule.
        cache: key/value cache (nara's LLaDA or Dream): None = every step runs the
            whole sequence; ``"prefix"`` = later steps of a block reuse the keys/values of the
            positions before it, recorded at the block's first step; ``"dual"`` = also those
            after it (LLaDA's sampler only: Dream's decodes the answer as one block)
            (:mod:`nara.diffusion.cache`, docs/cache.md). An approximation.
        cache_tolerance: with a cache, also recompute a sample's keys/values when its λ has
            moved by more than this since they were recorded (None = only at block starts;
            0 = whenever λ changes, i.e. uncached).
        return_history: also return the sequence after every step.
        generator: RNG for Gumbel noise and random remasking.
        sampler: ``"llada"`` (the above), ``"dream"`` (Dream's released sampler,
            :mod:`nara.diffusion.dream_sampling`: whole answer at once on Dream's time grid, with
            ``remasking`` = low_confidence / margin / entropy / random standing for Dream's
            maskgit_plus / topk_margin / entropy / origin), ``"mdlm"`` (MDLM's ancestral sampler
            with its p(x₀) cache, :mod:`nara.diffusion.mdlm_sampling`; no other option applies),
            or None for the one released with the model's family (else LLaDA's). With Dream's
            and MDLM's, ``eos_token_id`` only fills each answer after its first EOS once
            sampling ends.
        top_p, top_k: nucleus / top-k filtering of each prediction (Dream's sampler only).
        alg_temp: > 0 draws the positions to reveal from softmax(confidence / alg_temp)
            instead of taking the most confident ones (Dream's sampler only).

    Returns:
        long (B, gen_length) answers, or a :class:`GenerationOutput` with ``return_history``.

    Raises:
        ValueError: on invalid arguments (each message says how to fix it), a prompt plus
            ``gen_length`` longer than the model's maximum sequence length (:func:`max_length`),
            or non-finite logits from the model (NaN weights, float16 overflow).
    """
    block_length = gen_length if block_length is None else block_length
    check_token_id(model, mask_token_id)
    if eos_token_id is not None:
        check_token_id(model, eos_token_id, "eos_token_id")
    _check_prompt(input_ids, attention_mask)
    check_settings(
        gen_length,
        steps,
        block_length,
        temperature,
        remasking,
        cfg_scale,
        threshold,
        cache,
        cache_tolerance,
    )
    b, prompt_len = input_ids.shape
    check_length(max_length(model), prompt_len, gen_length)
    sampler = resolve_sampler(
        model,
        sampler,
        gen_length=gen_length,
        block_length=block_length,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        top_p=top_p,
        top_k=top_k,
        alg_temp=alg_temp,
        cache=cache,
    )
    if sampler != "llada":
        shared = {
            "mask_token_id": mask_token_id,
            "gen_length": gen_length,
            "steps": steps,
            "return_history": return_history,
            "generator": generator,
        }
        if sampler == "dream":
            answers, steps_taken = dream_sample(
                model,
                input_ids,
                attention_mask,
                temperature=temperature,
                remasking=remasking,
                top_p=top_p,
                top_k=top_k,
                alg_temp=alg_temp,
                cache=cache,
                cache_tolerance=cache_tolerance,
                **shared,
            )
        else:
            answers, steps_taken = mdlm_sample(model, input_ids, attention_mask, **shared)
        if eos_token_id is not None:  # after sampling: the steps stay the release's
            answers = _finish_at_eos(answers, eos_token_id, mask_token_id)
        if return_history:
            return GenerationOutput(sequences=answers, history=torch.stack(steps_taken))
        return answers
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks

    x, answer, prompt_real, attention_mask = answer_canvas(
        input_ids, attention_mask, gen_length, mask_token_id
    )

    if cache is not None:
        check_cache_model(model)
    kv_cache = None if cache is None else KVCache(cache, cache_tolerance)
    history = []
    for block in range(num_blocks):
        start = prompt_len + block * block_length
        end = start + block_length
        if kv_cache is not None:
            kv_cache.begin_block()
        schedule = transfer_schedule((x[:, start:end] == mask_token_id).sum(-1), steps_per_block)
        step = 0
        while bool((candidates := x[:, start:end] == mask_token_id).any()):  # (B, L)
            logits = _block_logits(
                model,
                x,
                attention_mask,
                prompt_real,
                answer,
                mask_token_id,
                cfg_scale,
                start,
                end,
                kv_cache,
            )
            check_logits(logits, f"step {step} of block {block}")
            chosen = _sample(logits, temperature, generator)  # (B, L)
            confidence = _confidence(logits, chosen, remasking, generator)
            if threshold is None:
                commit = _top_k(confidence, candidates, schedule[:, step])
            else:
                at_least_one = _top_k(confidence, candidates, candidates.any(-1).long())
                commit = (candidates & (confidence >= threshold)) | at_least_one
            x[:, start:end] = torch.where(commit, chosen, x[:, start:end])
            if eos_token_id is not None:
                x[:, prompt_len:] = _finish_at_eos(x[:, prompt_len:], eos_token_id, mask_token_id)
            if return_history:
                history.append(x.clone())
            step += 1

    answers = x[:, prompt_len:]
    if return_history:
        return GenerationOutput(sequences=answers, history=torch.stack(history))
    return answers
