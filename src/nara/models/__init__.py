"""Base models: nara's native LLaDA, the embedded tiny model, and one loader for all of them."""

from nara.models.llada import LLaDAConfig, LLaDAModelLM, tiny_config
from nara.models.loading import LoadedModel, load_model

__all__ = ["LLaDAConfig", "LLaDAModelLM", "LoadedModel", "load_model", "tiny_config"]
