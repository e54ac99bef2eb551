"""Reinforcement learning for masked diffusion models with adapters: the one-step per-token
log-probability estimate, the reference policy (the adapter-free base model, or the starting
adapter swapped in), the GRPO and wd1 objectives, and VRPO preference optimisation (DPO on ELBO estimates)."""

from nara.rl.estimators import (
    adapter_snapshot,
    adapter_weights,
    adapters_disabled,
    one_step_inputs,
    per_token_logprobs,
    reference_logprobs,
    reference_policy,
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
    "adapter_snapshot",
    "adapter_weights",
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
    "reference_policy",
    "vrpo_loss",
    "wd1_loss",
    "wd1_weights",
]
