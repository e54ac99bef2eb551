"""Reinforcement learning for masked diffusion models with adapters: the one-step per-token
log-probability estimate, the reference policy as the adapter-free base model, the GRPO
and wd1 objectives, and VRPO preference optimisation (DPO on ELBO estimates)."""

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
from nara.rl.preference import (
    PreferenceOutput,
    PreferencePair,
    dpo_loss,
    elbo_estimates,
    encode_preferences,
    load_preferences,
    vrpo_loss,
)

__all__ = [
    "GRPOOutput",
    "PreferenceOutput",
    "PreferencePair",
    "adapters_disabled",
    "dpo_loss",
    "elbo_estimates",
    "encode_preferences",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "load_preferences",
    "one_step_inputs",
    "per_token_logprobs",
    "reference_logprobs",
    "vrpo_loss",
    "wd1_loss",
    "wd1_weights",
]
