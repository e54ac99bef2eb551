"""The key/value cache on nara's Dream: Dream's sampler with a prefix cache, LLaDA's on Dream.

Dream's logit i predicts token i + 1, so a cached step's window starts one position before the
first token it predicts. Dream's sampler decodes the whole answer as one block: with
``cache="prefix"`` its later steps run the answer against the prompt's keys/values recorded at
the first step. Checked against a reference of that loop written here with explicit attention,
and against uncached decoding where the cache is exact: one layer (every key/value is then a
function of its own token, which a step does not change outside the fed window) and λ
tolerance 0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cache_support import assert_alone_equals_batched, prompts, randomize, recorded_and_cached_pass

from nara import LoRAConfig, NaRAConfig, add_adapters, merge_adapters
from nara.diffusion import generate
from nara.models import DreamModel, tiny_dream_config
from nara.models.layers import apply_rotary, rotary_cos_sin

MASK = 127  # tiny_dream_config()
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _dream(layers: int = 2, adapter=None, merged: bool = False) -> torch.nn.Module:
    """Tiny random Dream (grouped-query attention), float64, peaked predictions; ``adapter``
    gets random nonzero weights (zero-initialised ones would hide a stale cache)."""
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config(initializer_range=0.3, num_hidden_layers=layers))
    if adapter is not None:
        model = randomize(add_adapters(model, adapter))
        model = merge_adapters(model) if merged else model
    return model.double().eval()


# ----------------------------------------------------------------------------- reference


def _reference_raw_logits(
    model: DreamModel, ids: torch.Tensor, kv: list | None, first: int
) -> tuple[torch.Tensor, list]:
    """Raw (shifted) logits of positions [first, S) of one unpadded sequence ``ids`` (1, S) and
    every layer's (k, v) over all S positions: with ``kv`` None a whole forward (first = 0);
    else ids[first:] runs and its queries attend to ``kv`` before ``first`` and to their own
    fresh keys/values. Written out: biased projections, rotary, softmax(qkᵀ/√d)v, SwiGLU."""
    cfg, body = model.config, model.model
    cos, sin = rotary_cos_sin(ids.shape[1], cfg.head_dim, cfg.rope_theta, ids.device)
    cos, sin = cos[first:], sin[first:]
    x = body.embed_tokens(ids[:, first:])
    out_kv = []
    for i, layer in enumerate(body.layers):
        att, h = layer.self_attn, layer.input_layernorm(x)
        t = h.shape[1]
        q = att.q_proj(h).view(1, t, cfg.num_attention_heads, -1).transpose(1, 2)
        k = att.k_proj(h).view(1, t, cfg.num_key_value_heads, -1).transpose(1, 2)
        v = att.v_proj(h).view(1, t, cfg.num_key_value_heads, -1).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv is not None:
            k, v = (
                torch.cat([kv[i][0][:, :, :first], k], 2),
                torch.cat([kv[i][1][:, :, :first], v], 2),
            )
        out_kv.append((k, v))
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim), -1)
        x = x + att.o_proj((weights @ v).transpose(1, 2).reshape(1, t, -1))
        h = layer.post_attention_layernorm(x)
        x = x + layer.mlp.down_proj(F.silu(layer.mlp.gate_proj(h)) * layer.mlp.up_proj(h))
    return model.lm_head(body.norm(x)), out_kv


def _reference_generate(
    model: DreamModel, prompt: torch.Tensor, gen_length: int, steps: int, cached: bool
) -> torch.Tensor:
    """Dream's greedy maskgit_plus decoding of one prompt (1, P): step i reveals the
    ⌊n · (1 − t_{i+1}/t_i)⌋ most confident of the n masked positions (all at the last step) on
    t = linspace(1, 10⁻³, steps + 1). With ``cached``, steps after the first run positions
    P − 1 … (the logit of P − 1 predicts token P) against the first step's keys/values."""
    p = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], 1)
    times = torch.linspace(1, 1e-3, steps + 1)
    kv = None
    for i in range(steps):
        if kv is None or not cached:
            raw, kv = _reference_raw_logits(model, x, None, 0)
            logits = raw[0, p - 1 : -1]
        else:
            logits = _reference_raw_logits(model, x, kv, p - 1)[0][0, :-1]
        conf, chosen = torch.softmax(logits.float(), -1).max(-1)  # (G,)
        masked = x[0, p:] == MASK
        fraction = 1 - times[i + 1] / times[i]
        k = int(masked.sum()) if i == steps - 1 else int(masked.sum() / 1 * fraction)
        order = conf.masked_fill(~masked, -math.inf).argsort(descending=True)[:k]
        x[0, p + order] = chosen[order]
    return x[0, p:]


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("adapter", ["none", "lora", "merged lora"])
@pytest.mark.parametrize("steps", [4, 12])
def test_dream_sampler_prefix_cache_equals_the_reference_cached_loop(adapter, steps) -> None:
    config = None if adapter == "none" else LoRAConfig(r=4, target_modules=LINEARS)
    model = _dream(adapter=config, merged=adapter == "merged lora")
    prompt = torch.randint(0, 120, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _reference_generate(model, prompt, 12, steps, cached=True)
        uncached = _reference_generate(model, prompt, 12, steps, cached=False)
    options = dict(mask_token_id=MASK, gen_length=12, steps=steps)
    assert torch.equal(generate(model, prompt, **options)[0], uncached)
    assert torch.equal(generate(model, prompt, cache="prefix", **options)[0], expected)


def test_the_reference_shows_the_cache_is_an_approximation() -> None:
    model = _dream()
    prompt = torch.randint(0, 120, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cached = _reference_generate(model, prompt, 12, 12, cached=True)
        uncached = _reference_generate(model, prompt, 12, 12, cached=False)
    assert not torch.equal(cached, uncached)  # two layers: the prompt's entries go stale


@pytest.mark.parametrize(
    "sampler, modes",
    [("dream", ["prefix"]), ("llada", ["prefix", "dual"])],
)
@pytest.mark.parametrize("merged", [False, True])
def test_one_layer_with_a_static_adapter_is_exact(sampler: str, modes: list, merged: bool) -> None:
    """One layer: a key/value depends only on its own token and position, and a cached step
    reuses entries only of tokens unchanged since recording, so caching changes nothing."""
    model = _dream(layers=1, adapter=LoRAConfig(r=4, target_modules=LINEARS), merged=merged)
    ids, attention, _ = prompts()
    options = dict(mask_token_id=MASK, gen_length=12, steps=12, sampler=sampler)
    if sampler == "llada":
        options["block_length"] = 4
    uncached = generate(model, ids, attention, return_history=True, **options)
    for mode in modes:
        cached = generate(model, ids, attention, cache=mode, return_history=True, **options)
        assert torch.equal(cached.history, uncached.history), mode


@pytest.mark.parametrize("sampler", ["dream", "llada"])
def test_nara_with_tolerance_zero_recomputes_every_step_so_equals_uncached(sampler: str) -> None:
    model = _dream(adapter=NaRAConfig(r=4, input_mode="both", target_modules=LINEARS))
    ids, attention, _ = prompts()
    options = dict(mask_token_id=MASK, gen_length=12, steps=12, sampler=sampler)
    if sampler == "llada":
        options["block_length"] = 4
    uncached = generate(model, ids, attention, return_history=True, **options)
    cached = generate(
        model, ids, attention, cache="prefix", cache_tolerance=0.0, return_history=True, **options
    )
    assert torch.equal(cached.history, uncached.history)


@pytest.mark.parametrize("tolerance", [None, 0.2])
def test_dream_sampler_recomputes_when_lambda_moved_past_the_tolerance(tolerance) -> None:
    model = _dream(adapter=NaRAConfig(r=4, target_modules=LINEARS))
    lengths: list[int] = []
    model.register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    prompt = torch.randint(0, 120, (1, 4), generator=torch.Generator().manual_seed(0))
    out = generate(
        model,
        prompt,
        mask_token_id=MASK,
        gen_length=12,
        steps=6,
        cache="prefix",
        cache_tolerance=tolerance,
        return_history=True,
    )
    lams = [1.0] + [float((h[0, 4:] == MASK).float().mean()) for h in out.history[:-1]]
    expected, recorded = [], None
    for lam in lams:
        whole = recorded is None or (tolerance is not None and recorded - lam > tolerance)
        expected.append(16 if whole else 13)  # prompt 4 + answer 12, or position 3 + the answer
        recorded = lam if whole else recorded
    assert lengths == expected
    assert (tolerance is None) == (expected.count(16) == 1)


@pytest.mark.parametrize(
    "sampler, mode, tolerance",
    [("dream", "prefix", None), ("dream", "prefix", 0.1), ("llada", "dual", None)],
)
def test_a_sample_alone_equals_the_sample_inside_a_padded_batch(sampler, mode, tolerance) -> None:
    model = _dream(adapter=NaRAConfig(r=4, input_mode="both", target_modules=LINEARS))
    kwargs = dict(mask_token_id=MASK, gen_length=12, steps=12, sampler=sampler, cache=mode)
    kwargs["cache_tolerance"] = tolerance
    if sampler == "llada":
        kwargs["block_length"] = 4
    assert_alone_equals_batched(model, **kwargs)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_a_cached_pass_on_unchanged_tokens_equals_the_whole_pass(mode: str) -> None:
    """The window starts one position early (shifted logits); nothing changed since recording,
    so the block's predictions equal the whole pass's, padded batch included."""
    model = _dream()
    whole, cached, x, mask = recorded_and_cached_pass(model, mode)
    with torch.no_grad():
        plain = model(x, attention_mask=mask).logits[:, 6:9]  # logit i predicts token i + 1
    assert torch.equal(whole, plain)
    torch.testing.assert_close(cached, plain)


def test_dual_cache_is_refused_by_dreams_sampler() -> None:
    with pytest.raises(ValueError, match="cache='dual' does not apply to the 'dream' sampler"):
        generate(_dream(), torch.tensor([[3, 4]]), mask_token_id=MASK, gen_length=4, steps=4,
                 cache="dual")  # fmt: skip
