"""Logit conventions: Dream's shifted logits are read as the prediction for token i everywhere.

The decisive check is a model that knows the clean sequence and puts a confident prediction of
token i + 1 at logit i (Dream's layout): the diffusion loss is near zero only when nara applies
the shift, and large when the same logits are read as aligned.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nara.diffusion import diffusion_loss, generate, log_likelihood
from nara.models import DreamModel, load_model, logit_convention, tiny_dream_config, token_logits
from nara.models.families import FAMILIES, default_sampler

MASK = 127


class NextTokenOracle(torch.nn.Module):
    """Puts logit 30 on ``clean[i + 1]`` at position i (a perfect shifted-convention model)."""

    def __init__(self, clean: torch.Tensor, convention: str) -> None:
        super().__init__()
        self.config = tiny_dream_config()
        self.config.logit_convention = convention
        self.register_buffer("clean", clean)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, input_ids: torch.Tensor, attention_mask=None) -> SimpleNamespace:
        nxt = torch.cat([self.clean[:, 1:], self.clean[:, -1:]], dim=1)  # (B, T): token i + 1
        nxt = nxt.expand(input_ids.shape[0], -1)  # one clean row serves a batch of its copies
        logits = torch.zeros(*input_ids.shape, 128)
        logits.scatter_(-1, nxt[..., None], 30.0)
        return SimpleNamespace(logits=logits)


def _clean(b: int = 3, t: int = 12) -> torch.Tensor:
    return torch.randint(0, 126, (b, t), generator=torch.Generator().manual_seed(0))


def test_perfect_next_token_model_has_near_zero_loss_only_with_the_shift():
    clean = _clean()
    maskable = torch.ones_like(clean, dtype=torch.bool)
    maskable[:, :2] = False
    t = torch.full((3,), 0.7)
    losses = {}
    for convention in ("shifted", "aligned"):
        out = diffusion_loss(
            NextTokenOracle(clean, convention),
            clean,
            maskable,
            MASK,
            t=t,
            generator=torch.Generator().manual_seed(1),
        )
        losses[convention] = out.loss.item()
        assert out.num_masked > 0
    assert losses["shifted"] < 1e-6
    assert losses["aligned"] > 10.0


def test_likelihood_and_sampler_read_shifted_logits():
    clean = _clean(1, 10)
    prompt, answer = clean[0, :4], clean[0, 4:]
    oracle = NextTokenOracle(clean, "shifted")
    score = log_likelihood(oracle, prompt, answer, mask_token_id=MASK, n_samples=4)
    assert score > -1e-4  # every masked answer token predicted with probability ~1
    sampled = generate(oracle, prompt[None], mask_token_id=MASK, gen_length=6, steps=3)
    assert torch.equal(sampled[0], answer)


def test_token_logits_moves_logit_i_to_position_i_plus_1():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    shifted = token_logits(DreamModel(tiny_dream_config()), logits)
    assert torch.equal(shifted[:, 1:], logits[:, :-1])
    assert torch.equal(shifted[:, 0], logits[:, 0])
    plain = torch.nn.Linear(1, 1)  # no config: nara's own (aligned) convention
    assert token_logits(plain, logits) is logits


def test_conventions_and_samplers_of_the_families():
    assert logit_convention(DreamModel(tiny_dream_config())) == "shifted"
    assert FAMILIES["llada"].logit_convention == "aligned"
    assert default_sampler(DreamModel(tiny_dream_config())) == "dream"
    assert default_sampler(torch.nn.Linear(1, 1)) == "llada"
    config = tiny_dream_config()
    config.logit_convention = "sideways"
    with pytest.raises(ValueError, match="sideways"):
        logit_convention(config)


def _gpt2_folder(tmp_path):
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=32)
    config.mask_token_id = 39
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_generic_path_refuses_an_unknown_convention(tmp_path):
    folder = _gpt2_folder(tmp_path)
    with pytest.raises(ValueError, match=r"'dream', 'llada'.*logit_convention='aligned'"):
        load_model(folder)
    with pytest.raises(ValueError, match="logit_convention must be one of"):
        load_model(folder, logit_convention="left")
    loaded = load_model(folder, logit_convention="shifted")
    assert logit_convention(loaded.model) == "shifted"
