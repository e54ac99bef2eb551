"""Monte-Carlo estimate of log p(answer | prompt) under a masked diffusion model.

A masked diffusion model gives no exact likelihood; LLaDA (Nie et al. 2025, eq. 6) scores an
answer of L tokens with the lower bound

    log p(a | q) >= E_{l ~ U{1..L}} E_{M: l answer positions masked} [ (L / l) · Σ_{i in M} log p(a_i | q, a_M̄) ]

estimated by sampling. Mask counts are stratified (systematic sampling over 1..L) to cut the
variance; everything else is uniform. Used for multiple-choice scoring and lm-eval loglikelihood.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nara.diffusion._model import check_token_id, denoise
from nara.diffusion.masking import local_mask_density, masked_fraction

TokenIds = Sequence[int] | torch.Tensor


def _is_single(ids: TokenIds | Sequence[TokenIds]) -> bool:
    if isinstance(ids, torch.Tensor):
        return ids.dim() == 1
    return len(ids) == 0 or isinstance(ids[0], int)


def _as_ids(ids: TokenIds, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1)


def _mask_counts(
    lengths: torch.Tensor, n_samples: int, generator: torch.Generator | None
) -> torch.Tensor:
    """long (N, n): stratified mask counts in 1..L per pair; each is marginally uniform."""
    offset = torch.rand(len(lengths), 1, generator=generator)  # (N, 1)
    u = (offset + torch.arange(n_samples)[None, :]) / n_samples  # (N, n), one per stratum
    counts = (u * lengths[:, None]).floor().long() + 1
    return counts.clamp(max=lengths[:, None])


def _score_rows(
    model: torch.nn.Module,
    rows: list[tuple[torch.Tensor, torch.Tensor]],
    counts: torch.Tensor,
    mask_token_id: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """float64 (R,): −(L/l)·Σ CE of the masked tokens, for one left-padded batch of rows."""
    device = rows[0][0].device
    width = max(len(q) + len(a) for q, a in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)  # (R, T)
    real = torch.zeros(len(rows), width, dtype=torch.bool, device=device)
    answer = torch.zeros_like(real)
    for r, (q, a) in enumerate(rows):
        n = len(q) + len(a)
        ids[r, width - n :] = torch.cat([q, a])
        real[r, width - n :] = True
        answer[r, width - len(a) :] = True
    keys = torch.rand(ids.shape, generator=generator).to(device).masked_fill(~answer, 2.0)
    rank = keys.argsort(-1).argsort(-1)  # answer positions take ranks 0..L-1 in random order
    counts = counts.to(device)
    masked = rank < counts[:, None]  # (R, T): l uniformly chosen answer positions
    noisy = ids.masked_fill(masked, mask_token_id)
    lam = masked_fraction(masked, answer)  # = l / L
    density = local_mask_density(masked, answer)
    logits = denoise(model, noisy, real.long(), lam, density, real & ~answer)  # (R, T, V)
    ce = F.cross_entropy(logits[masked].float(), ids[masked], reduction="none")  # (M,)
    per_row = torch.zeros(len(rows), dtype=torch.float64, device=device)
    per_row.index_add_(0, masked.nonzero(as_tuple=True)[0], ce.double())
    lengths = answer.sum(-1).double()
    return -(lengths / counts.double()) * per_row


@torch.no_grad()
def log_likelihood(
    model: torch.nn.Module,
    prompt_ids: TokenIds | Sequence[TokenIds],
    answer_ids: TokenIds | Sequence[TokenIds],
    *,
    mask_token_id: int,
    n_samples: int = 64,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> float | torch.Tensor:
    """Monte-Carlo lower bound on log p(answer | prompt) (LLaDA's estimator, stratified).

    For each pair, ``n_samples`` mask counts l are drawn stratified over 1..L (L = answer
    length); each sample masks l answer tokens chosen uniformly (the prompt never), runs the
    model with λ = masked_fraction (= l / L) set on the adapters, and scores
    −(L / l)·Σ CE over the masked tokens; the estimate is the mean. For L = 1 it is exact:
    log p(a | q) with the single answer token masked. Rows of all pairs are packed into
    left-padded batches of ``batch_size``. Call ``model.eval()`` first.

    Args:
        model: returns an object with ``.logits`` float (B, T, V).
        prompt_ids: one prompt (1-D tensor or list of ints) or a sequence of them.
        answer_ids: the matching answer(s), non-empty.
        mask_token_id: the mask token id.
        n_samples: Monte-Carlo samples per pair (more = lower variance).
        batch_size: rows per forward pass.
        generator: RNG for the mask counts and positions.

    Returns:
        a float for one pair, or a float64 tensor (N,) for N pairs.

    Raises:
        ValueError: on mismatched inputs, an empty answer, a mask token inside the inputs, or
            non-positive ``n_samples`` / ``batch_size``.
    """
    single, pairs = checked_pairs(model, prompt_ids, answer_ids, mask_token_id)
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples ({n_samples}) and batch_size ({batch_size}) must be >= 1")
    scores = elbo_samples_mean(model, pairs, mask_token_id, n_samples, batch_size, generator)
    return float(scores[0]) if single else scores.cpu()


def checked_pairs(
    model: torch.nn.Module,
    prompt_ids: TokenIds | Sequence[TokenIds],
    answer_ids: TokenIds | Sequence[TokenIds],
    mask_token_id: int,
) -> tuple[bool, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(whether one pair was given, the (prompt, answer) pairs as long tensors on the model's
    device), after checking what :func:`log_likelihood` documents under Raises."""
    check_token_id(model, mask_token_id)
    single = _is_single(prompt_ids)
    if single != _is_single(answer_ids):
        raise ValueError("pass one prompt with one answer, or equally long sequences of both")
    prompts = [prompt_ids] if single else list(prompt_ids)
    answers = [answer_ids] if single else list(answer_ids)
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers; pair them up")
    device = next(model.parameters()).device
    pairs = [(_as_ids(q, device), _as_ids(a, device)) for q, a in zip(prompts, answers)]
    for i, (q, a) in enumerate(pairs):
        if len(a) == 0:
            raise ValueError(f"answer {i} is empty; log p of an empty answer is 0 by definition")
        if bool((q == mask_token_id).any() | (a == mask_token_id).any()):
            raise ValueError(
                f"pair {i} contains mask_token_id={mask_token_id}; pass clean token ids and "
                "the model's mask token id"
            )
    return single, pairs


def elbo_samples_mean(
    model: torch.nn.Module,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    mask_token_id: int,
    n_samples: int,
    batch_size: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """float64 (N,) on the model's device: the mean of ``n_samples`` stratified draws of the
    bound per pair (one mask per drawn count), differentiable unless run under no_grad, so
    the likelihood score and preference training (:mod:`nara.rl.preference`) share it."""
    lengths = torch.tensor([len(a) for _, a in pairs])
    counts = _mask_counts(lengths, n_samples, generator).reshape(-1)  # (N·n,)
    owners = torch.arange(len(pairs)).repeat_interleave(n_samples)  # (N·n,) pair of each row
    device = next(model.parameters()).device
    scores = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    for start in range(0, len(owners), batch_size):
        chunk = owners[start : start + batch_size]
        rows = [pairs[i] for i in chunk.tolist()]
        part = _score_rows(
            model, rows, counts[start : start + batch_size], mask_token_id, generator
        )
        scores = scores.index_add(0, chunk.to(device), part)
    return scores / n_samples
