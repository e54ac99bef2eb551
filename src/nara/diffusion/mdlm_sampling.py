"""MDLM's ancestral sampler (its released ``ddpm_cache`` sampler), behind :func:`nara.generate`.

The answer starts masked; ``steps`` steps walk the time grid t_i = linspace(1, ε, steps + 1)
(ε = 10⁻⁵, step dt = (1 − ε)/steps). From t to s = t − dt, with p(x₀) the model's SUBS
probabilities, every masked position draws from the unnormalised distribution
p(x₀)·(t − s) with mass s on the mask token: it stays masked with probability s/t, else it takes
a token drawn from p(x₀) (Gumbel-max on q / (−log u), as released). Unmasked positions are
carried over. A final pass replaces any position still masked by the argmax of p(x₀).

The cache: when a step changes nothing, the next step's input is the same, so p(x₀) is reused
instead of recomputed. That holds when nothing the network sees depends on t. MDLM's own time
conditioning would break it; it is off in the released checkpoint, and nara refuses an MDLM with
it on (it passes no σ). nara's noise-aware adapters do not break it: they see λ, the masked
fraction of the answer, a function of the input, so an unchanged input gives them the same λ
(the tests check that cached and uncached samples agree with a NaRA adapter attached). Random draws come from ``generator`` in the order the release takes them
from torch's global generator, so a seeded run repeats the release's.
"""

from __future__ import annotations

import torch

from nara.diffusion._model import denoise
from nara.diffusion.masking import answer_canvas, local_mask_density, masked_fraction

EPS = 1e-5  # end of the released time grid


def _draw(q: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """argmax of q / (−log u) per position: a draw proportional to q (B, T, V) → (B, T)."""
    u = torch.rand(q.shape, device=q.device, generator=generator)
    return (q / (1e-10 - (u + 1e-10).log())).argmax(-1)


def mdlm_sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    mask_token_id: int,
    gen_length: int,
    steps: int,
    return_history: bool,
    generator: torch.Generator | None,
    cache: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """MDLM's sampler on validated arguments (see :func:`nara.diffusion.generate`).

    Args:
        input_ids: long (B, P), left-padded prompts (P may be 0: unconditional samples, as
            the release draws them); attention_mask: (B, P) or None.
        cache: reuse p(x₀) while the input does not change (False recomputes it every step).

    Returns:
        (answers long (B, gen_length), the whole sequence after each step when
        ``return_history``, else an empty list).
    """
    b, prompt_len = input_ids.shape
    x, answer, prompt, attention_mask = answer_canvas(
        input_ids, attention_mask, gen_length, mask_token_id
    )

    def p_x0(x: torch.Tensor) -> torch.Tensor:
        masked = (x == mask_token_id) & answer
        lam, density = masked_fraction(masked, answer), local_mask_density(masked, answer)
        return denoise(model, x, attention_mask, lam, density, prompt).float().exp()

    times = torch.linspace(1, EPS, steps + 1, device=x.device)
    dt = (1 - EPS) / steps
    probs = None
    history = []
    for i in range(steps):
        t = times[i] * torch.ones(b, 1, device=x.device)
        move_t, move_s = t[:, :, None], (t - dt)[:, :, None]  # (B, 1, 1)
        if probs is None:
            probs = p_x0(x)  # (B, T, V)
        q = probs * (move_t - move_s)
        q[:, :, mask_token_id] = move_s[:, :, 0]
        step = torch.where(x != mask_token_id, x, _draw(q, generator))
        if not cache or not torch.equal(step, x):
            probs = None
        x = step
        if return_history:
            history.append(x.clone())
    x = p_x0(x).argmax(-1)  # the released final pass (SUBS keeps every unmasked token)
    return x[:, prompt_len:], history
