"""Dream's sampler (its released ``diffusion_generate``), behind :func:`nara.diffusion.generate`.

The whole answer starts masked and is decoded in ``steps`` steps on the time grid
t_i = linspace(1, ε, steps + 1) (ε = 10⁻³). Step i predicts every masked position and, going from
t = t_i to s = t_{i+1}, reveals:

- ``remasking="random"`` (Dream's ``origin``): each masked position independently with
  probability 1 − s/t (all of them at the last step), with its sampled token;
- otherwise (``low_confidence`` = Dream's ``maskgit_plus``, ``margin`` = ``topk_margin``,
  ``entropy``): the k most confident masked positions of each row, k = ⌊n̄·(1 − s/t)⌋ with n̄
  the batch's mean number of masked positions (all of them at the last step). Confidence is the
  probability of the chosen token, its margin over the runner-up, or the negative entropy
  Σ p·log(p + 10⁻¹⁰), computed after temperature, top-p and top-k. With ``alg_temp > 0`` the k
  positions are drawn from softmax(confidence / alg_temp) instead of taken greedily.

Tokens are the argmax at temperature 0, else a draw from the tempered (top-p / top-k filtered)
distribution. As in the release the mask token may be predicted (it then stays masked) and no
block structure or guidance applies. Two deliberate differences, neither of which changes a
sample of a model that never predicts its mask token: the logits are read in float32 whatever
the model's dtype, and a row never re-masks a committed token when it holds fewer masked
positions than k. Each step passes the adapters λ = the masked fraction of the answer, as the
LLaDA sampler does; random draws come from ``generator``, in the order the release takes them
from torch's global generator, so a seeded run repeats the release's run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nara.diffusion._model import check_logits, denoise
from nara.diffusion.cache import KVCache, check_cache_model
from nara.diffusion.masking import answer_canvas, local_mask_density, masked_fraction

EPS = 1e-3  # floor of the released time grid
DREAM_ALGS = {  # nara's remasking name -> the release's alg name
    "low_confidence": "maskgit_plus",
    "margin": "topk_margin",
    "entropy": "entropy",
    "random": "origin",
}


SAMPLERS = ("llada", "dream", "mdlm")

# Options of nara.generate beyond the shared ones, by the sampler that has them, and what each
# sampler is (for the message that refuses an option it lacks).
_OPTIONS = {
    "llada": (
        {"block_length", "cfg_scale", "threshold", "temperature", "remasking", "cache"},
        "LLaDA's: blocks, confidence order, guidance, threshold, KV cache",
    ),
    "dream": (
        {"temperature", "remasking", "top_p", "top_k", "alg_temp", "cache"},
        "Dream's: the whole answer at once on its time grid, prefix KV cache",
    ),
    "mdlm": (
        set(),
        "MDLM's: ancestral, every token drawn from the model's distribution",
    ),
}


def resolve_sampler(
    model: torch.nn.Module,
    sampler: str | None,
    *,
    gen_length: int,
    block_length: int,
    temperature: float,
    remasking: str,
    cfg_scale: float,
    threshold: float | None,
    top_p: float | None,
    top_k: int | None,
    alg_temp: float | None,
    cache: str | None = None,
) -> str:
    """The sampler to run: ``sampler``, or the one released with the model's family when None.

    Raises:
        ValueError: on an unknown sampler, or an option the chosen sampler does not have (each
            message says which samplers have it).
    """
    if sampler is None:
        from nara.models.families import default_sampler

        sampler = default_sampler(model)
    check_sampler_values(sampler, top_p, top_k, alg_temp)
    used = {
        "block_length": block_length != gen_length,
        "cfg_scale": cfg_scale != 0,
        "threshold": threshold is not None,
        "temperature": temperature != 0,
        "remasking": remasking != "low_confidence",
        "top_p": top_p is not None,
        "top_k": top_k is not None,
        "alg_temp": alg_temp is not None,
        "cache": cache is not None,
    }
    allowed, what = _OPTIONS[sampler]
    for name in (n for n, u in used.items() if u and n not in allowed):
        having = [s for s, (options, _) in _OPTIONS.items() if name in options]
        raise ValueError(
            f"{name} does not apply to the {sampler!r} sampler ({what}); drop it, or pass "
            f"sampler={' or '.join(repr(s) for s in having)}"
        )
    if sampler == "dream" and cache == "dual":
        raise ValueError(
            "cache='dual' does not apply to the 'dream' sampler: it decodes the whole answer as "
            "one block, so no masked suffix follows it; use cache='prefix' (reuses the prompt's "
            "keys/values), or sampler='llada' with a block_length for a dual cache"
        )
    return sampler


def check_sampler_values(
    sampler: str | None,
    top_p: float | None = None,
    top_k: int | None = None,
    alg_temp: float | None = None,
) -> None:
    """Raise ValueError, naming the value and the fix, for a sampler name or a Dream option value
    :func:`nara.generate` refuses; needs no model, so settings are checked before one loads."""
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(
            f"sampler must be one of {SAMPLERS} (or None: the family's), got {sampler!r}"
        )
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if alg_temp is not None and alg_temp < 0:
        raise ValueError(f"alg_temp must be >= 0 (0 or None = greedy positions), got {alg_temp}")


def _filter(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Nucleus then top-k filtering: removed logits become the dtype's lowest finite value.

    Top-p keeps the most probable tokens up to and including the first one whose cumulative
    probability exceeds ``top_p``; top-k keeps every token at least as large as the k-th largest.
    """
    lowest = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)  # (N, V)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop_sorted = F.pad(cumulative[..., :-1] > top_p, (1, 0), value=False)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, lowest)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, lowest)
    return logits


def _pick(
    logits: torch.Tensor,
    alg: str,
    temperature: float,
    top_p: float | None,
    top_k: int | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence (N,), token (N,)) for N rows of logits (N, V), as the release computes them."""
    if temperature > 0:
        logits = logits / temperature
    probs = _filter(logits, top_p, top_k).softmax(-1)  # (N, V)
    if temperature > 0 and len(probs):
        normalised = probs / probs.sum(-1, keepdim=True)  # as torch's Categorical draws from
        token = torch.multinomial(normalised, 1, True, generator=generator).squeeze(-1)
        confidence = probs.gather(-1, token[:, None]).squeeze(-1)
    else:
        confidence, token = probs.max(-1)
    if alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
    return confidence, token


def _reveal(
    x: torch.Tensor,
    masked: torch.Tensor,
    logits: torch.Tensor,
    fraction: torch.Tensor,
    last: bool,
    alg: str,
    temperature: float,
    top_p: float | None,
    top_k: int | None,
    alg_temp: float | None,
    generator: torch.Generator | None,
) -> None:
    """One step in place on x (B, T): reveal masked positions with their predictions.

    ``fraction`` is 1 − s/t, the expected fraction of masked positions revealed by this step.
    """
    mask_logits = logits[masked]  # (N, V), row-major over (B, T) like the release
    if alg == "origin":
        p = 1.0 if last else fraction
        chosen = x[masked]  # all mask ids
        reveal = torch.rand(chosen.shape, device=x.device, generator=generator) < p
        chosen[reveal] = _pick(mask_logits[reveal], alg, temperature, top_p, top_k, generator)[1]
        x[masked] = chosen
        return
    confidence, chosen = _pick(mask_logits, alg, temperature, top_p, top_k, generator)
    mean_masked = masked.sum() / masked.shape[0]
    k = int(mean_masked) if last else int(mean_masked * fraction)
    if k <= 0:
        return
    score = torch.full(x.shape, float("-inf"), device=x.device)  # (B, T)
    score[masked] = confidence.float()
    if alg_temp:
        weights = (score / alg_temp).softmax(-1)
        where = torch.multinomial(weights, k, generator=generator)  # (B, k)
    else:
        where = score.topk(k, dim=-1).indices  # (B, k)
    proposal = x.clone()
    proposal[masked] = chosen
    open_ = masked.gather(1, where)  # never overwrite a committed or prompt token
    x.scatter_(1, where, torch.where(open_, proposal.gather(1, where), x.gather(1, where)))


def dream_sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    mask_token_id: int,
    gen_length: int,
    steps: int,
    temperature: float,
    remasking: str,
    top_p: float | None,
    top_k: int | None,
    alg_temp: float | None,
    return_history: bool,
    generator: torch.Generator | None,
    cache: str | None = None,
    cache_tolerance: float | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Dream's sampler on validated arguments (see :func:`nara.diffusion.generate`).

    With ``cache="prefix"`` the answer is one block (:mod:`nara.diffusion.cache`): the first step
    runs the whole sequence and records every layer's keys/values; later steps feed only the
    answer, whose queries attend to the prompt's recorded entries, re-recorded for a sample whose
    λ moved by more than ``cache_tolerance`` (None: never). Positions are then revealed among
    the answer's masked positions only (the same ones unless the prompt holds the mask token).

    Args:
        input_ids: long (B, P), left-padded prompts; attention_mask: (B, P) or None.

    Returns:
        (answers long (B, gen_length), the whole sequence after each step when
        ``return_history``, else an empty list).
    """
    b, prompt_len = input_ids.shape
    x, answer, prompt, attention_mask = answer_canvas(
        input_ids, attention_mask, gen_length, mask_token_id
    )
    alg = DREAM_ALGS[remasking]
    times = torch.linspace(1, EPS, steps + 1, device=x.device)
    if cache is not None:
        check_cache_model(model)
        kv_cache = KVCache(cache, cache_tolerance)
        kv_cache.begin_block()
    region = 0 if cache is None else prompt_len  # first position a step may reveal
    history = []
    for i in range(steps):
        masked = x == mask_token_id  # (B, T)
        in_answer = masked & answer
        lam, density = masked_fraction(in_answer, answer), local_mask_density(in_answer, answer)
        args = (model, x, attention_mask, lam, density, prompt)
        if cache is None:
            logits = denoise(*args).float()  # (B, T, V)
        else:
            logits = kv_cache.logits(*args, prompt_len, x.shape[1]).float()  # (B, G, V)
        check_logits(logits[:, prompt_len - region :], f"step {i}")
        fraction = 1 - times[i + 1] / times[i]
        last = i == steps - 1
        _reveal(
            x[:, region:],  # a view: revealed in place
            masked[:, region:],
            logits,
            fraction,
            last,
            alg,
            temperature,
            top_p,
            top_k,
            alg_temp,
            generator,
        )
        if return_history:
            history.append(x.clone())
    return x[:, prompt_len:], history
