"""Masked diffusion: the forward process and λ, the training loss, samplers and likelihood.

λ, the noise level every noise-aware adapter sees, is defined once, by
:func:`masked_fraction` (the masked fraction of the maskable region); the loss, the sampler and
the likelihood estimate all compute it from the mask they actually use.
"""

from nara.diffusion.likelihood import log_likelihood
from nara.diffusion.loss import NORMALIZATIONS, LossOutput, diffusion_loss, sft_maskable
from nara.diffusion.masking import (
    EPS,
    forward_process,
    local_mask_density,
    masked_fraction,
    masking_probability,
)
from nara.diffusion.sampling import REMASKING, GenerationOutput, generate, transfer_schedule

__all__ = [
    "EPS",
    "NORMALIZATIONS",
    "REMASKING",
    "GenerationOutput",
    "LossOutput",
    "diffusion_loss",
    "forward_process",
    "generate",
    "local_mask_density",
    "log_likelihood",
    "masked_fraction",
    "masking_probability",
    "sft_maskable",
    "transfer_schedule",
]
