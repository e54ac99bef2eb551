"""Base models: nara's native LLaDA and Dream, the embedded tiny model, and one loader for all."""

from nara.models.dream import DreamConfig, DreamModel, tiny_dream_config
from nara.models.families import FAMILIES, logit_convention, token_logits
from nara.models.llada import LLaDAConfig, LLaDAModelLM, tiny_config
from nara.models.loading import LoadedModel, load_model

__all__ = [
    "FAMILIES",
    "DreamConfig",
    "DreamModel",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LoadedModel",
    "load_model",
    "logit_convention",
    "tiny_config",
    "tiny_dream_config",
    "token_logits",
]
