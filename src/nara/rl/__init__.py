"""Reinforcement learning for masked diffusion models with adapters: the one-step per-token
log-probability estimate, the reference policy as the adapter-free base model, and the GRPO
and wd1 objectives."""

from nara.rl.estimators import (
    adapters_disabled,
    one_step_inputs,
    per_token_logprobs,
    reference_logprobs,
)
from nara.rl.losses import (
    GRPOOutput,
    group_advantages,
    grpo_loss,
    kl_k3,
    wd1_loss,
    wd1_weights,
)

__all__ = [
    "GRPOOutput",
    "adapters_disabled",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "one_step_inputs",
    "per_token_logprobs",
    "reference_logprobs",
    "wd1_loss",
    "wd1_weights",
]
