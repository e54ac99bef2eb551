"""Base models: nara's native LLaDA, Dream and MDLM, the embedded tiny model, and one loader for all."""

from nara.models.dream import DreamConfig, DreamModel, tiny_dream_config
from nara.models.families import FAMILIES, logit_convention, token_logits
from nara.models.llada import LLaDAConfig, LLaDAModelLM, tiny_config
from nara.models.loading import LoadedModel, load_model
from nara.models.mdlm import MDLMConfig, MDLMModel, mdlm_tokenizer, tiny_mdlm_config

__all__ = [
    "FAMILIES",
    "DreamConfig",
    "DreamModel",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LoadedModel",
    "MDLMConfig",
    "MDLMModel",
    "load_model",
    "logit_convention",
    "mdlm_tokenizer",
    "tiny_config",
    "tiny_dream_config",
    "tiny_mdlm_config",
    "token_logits",
]
