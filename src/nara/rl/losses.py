"""Policy objectives for RL on masked diffusion models: GRPO (clipped ratios, k3 KL) and wd1.

All take per-token log-probabilities (B, L) from :func:`nara.rl.per_token_logprobs` and a
completion mask (B, L); rows come in groups of ``group_size`` consecutive completions of one
prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) → (B / G, G), checking that B is a multiple of G >= 2."""
    if values.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor (batch,), got shape {tuple(values.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(
            f"group_size must be an int >= 2 (completions per prompt), got {group_size!r}"
        )
    if values.shape[0] % group_size:
        raise ValueError(
            f"the batch of {values.shape[0]} rewards is not a multiple of group_size={group_size};"
            " keep every prompt's completions together, group after group"
        )
    return values.float().view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages (B,): (r − mean) / (std + eps) within each group of ``group_size``
    consecutive rewards, with the unbiased (n − 1) standard deviation. A group whose rewards
    are all equal gets advantage 0: it carries no learning signal."""
    g = _groups(rewards, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(π ‖ π_ref) per token: exp(ref − logp) − (ref − logp) − 1.
    Non-negative, unbiased for tokens sampled from π, 0 where the two agree."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's real tokens, then over rows: GRPO's 1/G Σ_i 1/|o_i| Σ_t."""
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()


def _check_shapes(mask: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.shape != mask.shape:
            raise ValueError(
                f"{name} {tuple(t.shape)} must have the (batch, completion length) shape of "
                f"completion_mask {tuple(mask.shape)}"
            )


@dataclass
class GRPOOutput:
    """What :func:`grpo_loss` returns; all but ``loss`` are detached scalars.

    Attributes:
        loss: the scalar to back-propagate (the negated objective).
        kl: mean k3 KL to the reference (0 when no reference is given).
        clip_fraction: fraction of real tokens where the clipped term is the minimum (those
            tokens give no gradient).
    """

    loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    beta: float = 0.04,
) -> GRPOOutput:
    """GRPO's clipped objective with a per-token KL penalty, negated for minimisation.

    Per token, with ratio ρ = exp(logp − old_logp) and the sequence's advantage A:
    ``min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) − β·k3(logp, ref_logp)``; averaged over each
    completion's real tokens, then over the batch. ``old_logp`` is the policy's estimate when
    the completions were sampled (detached), ``ref_logp`` the base model's
    (:func:`nara.rl.reference_logprobs`); without it the KL term is left out.

    Args:
        logp, old_logp, ref_logp: float (B, L) per-token log-probabilities.
        advantages: float (B,), e.g. :func:`group_advantages`.
        completion_mask: (B, L), 1 for real completion tokens.
        clip_eps: ε > 0.
        beta: KL coefficient >= 0.
    """
    _check_shapes(completion_mask, logp=logp, old_logp=old_logp, ref_logp=ref_logp)
    if advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"advantages {tuple(advantages.shape)} must have one value per completion "
            f"({logp.shape[0]},)"
        )
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}; GRPO uses 0.2")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}; 0 drops the KL term")
    ratio = torch.exp(logp - old_logp.detach())
    a = advantages.detach()[:, None]
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    objective = torch.minimum(ratio * a, clipped * a)
    kl = torch.zeros_like(logp) if ref_logp is None else kl_k3(logp, ref_logp.detach())
    loss = -_masked_mean(objective - beta * kl, completion_mask)
    with torch.no_grad():
        real = completion_mask.bool()
        was_clipped = (clipped * a < ratio * a) & real  # the clipped term won: no gradient
        return GRPOOutput(
            loss=loss,
            kl=_masked_mean(kl.detach(), completion_mask),
            clip_fraction=was_clipped.sum() / real.sum().clamp_min(1),
        )


def wd1_weights(rewards: torch.Tensor, group_size: int, temperature: float = 1.0) -> torch.Tensor:
    """wd1's per-completion weights (B,): w = softmax_G(A / τ) − softmax_G(−A / τ), with A the
    group-normalised advantages (:func:`group_advantages`) and the softmaxes taken within each
    group. Completions better than their group get positive weight, worse ones negative."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = group_advantages(rewards, group_size).view(-1, group_size) / temperature
    return (torch.softmax(a, 1) - torch.softmax(-a, 1)).view(-1)


def wd1_loss(
    logp: torch.Tensor,
    rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The ratio-free weighted log-likelihood loss of wd1:
    ``−(1/B) Σ_i w_i · (1/|o_i|) Σ_t logp_{i,t}``, with w = :func:`wd1_weights` (constants).
    It raises the likelihood of better-than-group completions and lowers that of worse ones,
    with no importance ratio, no old policy and no reference pass."""
    _check_shapes(completion_mask, logp=logp)
    w = wd1_weights(rewards, group_size, temperature).to(logp.device)
    if w.shape != logp.shape[:1]:
        raise ValueError(f"rewards must have one value per completion ({logp.shape[0]},)")
    mask = completion_mask.to(logp.dtype)
    seq = (logp * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return -(w * seq).mean()
