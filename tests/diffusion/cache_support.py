"""Helpers shared by the key/value cache tests on LLaDA (test_cache.py) and Dream
(test_dream_cache.py); both tiny configs put the mask at 127 and EOS = pad at 126."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusion_support import EOS, MASK

from nara.diffusion import generate
from nara.diffusion.cache import KVCache


def randomize(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> torch.nn.Module:
    """Random nonzero values for every trainable (adapter) parameter: zero-initialised adapters
    would leave the model unchanged and hide stale caches."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data = torch.randn(p.shape, generator=gen, dtype=p.dtype) * std
    return model.eval()


def prompts() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Two left-padded prompts (lengths 3 and 5) and the same prompts alone."""
    gen = torch.Generator().manual_seed(3)
    alone = [torch.randint(0, 120, (n,), generator=gen) for n in (3, 5)]
    ids = torch.stack([F.pad(a, (5 - len(a), 0), value=EOS) for a in alone])
    attention = torch.stack([(torch.arange(5) >= 5 - len(a)).long() for a in alone])
    return ids, attention, alone


def assert_alone_equals_batched(model: torch.nn.Module, **options) -> None:
    """Each of :func:`prompts` sampled alone gives the answer it gets inside the padded batch."""
    ids, attention, alone = prompts()
    batched = generate(model, ids, attention, **options)
    for i, prompt in enumerate(alone):
        single = generate(model, prompt[None], **options)
        assert torch.equal(batched[i], single[0]), f"sample {i} differs"


def recorded_and_cached_pass(
    model: torch.nn.Module, mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits of the block [7, 10) of a padded batch (:func:`prompts` + 8 partly masked
    answer tokens) from a recording whole pass and then from a cached pass on the same tokens,
    and that batch (2, 13) with its attention mask."""
    ids, attention, _ = prompts()
    x = torch.cat([ids, torch.randint(0, 120, (2, 8)).masked_fill(torch.rand(2, 8) < 0.5, MASK)], 1)
    mask = torch.cat([attention, torch.ones(2, 8, dtype=torch.long)], 1)
    lam, density = torch.full((2,), 0.5), torch.full((2,), 0.5)
    prompt = mask.bool() & (torch.arange(13) < 5)
    cache = KVCache(mode)
    cache.begin_block()
    with torch.no_grad():
        whole = cache.logits(model, x, mask, lam, density, prompt, 7, 10)
        cached = cache.logits(model, x, mask, lam, density, prompt, 7, 10)
    return whole, cached, x, mask
