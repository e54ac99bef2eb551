"""Bridges from nara's adapters to other libraries' models (optional extras).

Nothing here imports the other library at import time: ``nara.integrations.diffusers`` works on
diffusers models by their forward signature and module names, so ``import nara`` stays light.
"""
