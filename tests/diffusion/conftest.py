"""Shared fixtures for the diffusion tests: tiny LLaDA models and a spy on the noise context."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nara.diffusion import _model
from nara.models import LLaDAModelLM, tiny_config


@pytest.fixture
def model() -> LLaDAModelLM:
    """Tiny random LLaDA with peaked predictions (init_std 0.3), float64 so padding-invariance
    comparisons are not decided by rounding."""
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config(init_std=0.3)).double().eval()


@pytest.fixture
def noise_calls(monkeypatch: pytest.MonkeyPatch) -> list[SimpleNamespace]:
    """Record every (λ, density) the diffusion code passes to the adapters' noise context."""
    calls: list[SimpleNamespace] = []
    real = _model.noise_context

    def spy(model, lam, density=None):
        calls.append(SimpleNamespace(lam=lam.clone(), density=density.clone()))
        return real(model, lam, density)

    monkeypatch.setattr(_model, "noise_context", spy)
    return calls
