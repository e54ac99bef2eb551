"""Helpers shared by the diffusion tests (a uniquely named module, importable from any test)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

MASK = 127  # tiny_config(): vocabulary 128, mask 127, EOS = pad = 126
EOS = 126


class ScriptedModel(torch.nn.Module):
    """Predicts a fixed token per position with a fixed logit: scripts the sampler's choices.

    ``targets`` long (B, T) and ``scores`` float (B, T): logits are 0 except ``scores`` at the
    target token, so the predicted token and its confidence are known in advance.
    """

    def __init__(self, targets: torch.Tensor, scores: torch.Tensor, vocab: int = 128) -> None:
        super().__init__()
        self.register_buffer("targets", targets)
        self.register_buffer("scores", scores.double())
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor, attention_mask=None) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, self.vocab, dtype=torch.float64)
        logits.scatter_(-1, self.targets[..., None], self.scores[..., None])
        return SimpleNamespace(logits=logits)
