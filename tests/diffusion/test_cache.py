"""The sampler's key/value cache (nara.diffusion.cache): prefix and dual cache on nara's LLaDA.

The cache is an approximation of uncached decoding, so its tokens are checked against a
reference implementation of the same cached algorithm (Fast-dLLM's loop: a whole forward at each
block start, then the block's queries against [recorded keys/values outside the fed window,
fresh ones inside]) written here from scratch with explicit attention; and where it is exact
(one step per block, λ tolerance 0) against uncached decoding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cache_support import assert_alone_equals_batched, prompts, randomize, recorded_and_cached_pass
from diffusion_support import EOS, MASK, ScriptedModel

from nara import (
    LoRAConfig,
    MultiLoRAConfig,
    NaRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    TLoRAConfig,
    add_adapters,
    merge_adapters,
)
from nara.diffusion import generate
from nara.models import LLaDAModelLM, tiny_config
from nara.models.layers import apply_rotary, rotary_cos_sin

# ----------------------------------------------------------------------------- reference


def _reference_logits(
    model: LLaDAModelLM, ids: torch.Tensor, kv: list | None, start: int, end: int
) -> tuple[torch.Tensor, list]:
    """Logits of positions [start, end) of one unpadded sequence ``ids`` (1, S), and every
    layer's (k, v) over all S positions: with ``kv`` None a whole forward (start = 0, end = S);
    else only ids[start:end] is run and its queries attend to ``kv`` outside [start, end) and to
    its own fresh keys/values inside. Written out: projections, rotary, softmax(qkᵀ/√d)v, MLP."""
    cfg = model.config
    tr = model.model.transformer
    s = ids.shape[1]
    cos, sin = rotary_cos_sin(s, cfg.head_dim, cfg.rope_theta, ids.device)
    cos, sin = cos[start:end], sin[start:end]
    x = tr["wte"](ids[:, start:end])
    out_kv = []
    for i, blk in enumerate(tr["blocks"]):
        h = blk.attn_norm(x)
        t = h.shape[1]
        q = blk.q_proj(h).view(1, t, cfg.n_heads, -1).transpose(1, 2)
        k = blk.k_proj(h).view(1, t, cfg.n_kv_heads, -1).transpose(1, 2)
        v = blk.v_proj(h).view(1, t, cfg.n_kv_heads, -1).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv is not None:
            k = torch.cat([kv[i][0][:, :, :start], k, kv[i][0][:, :, end:]], 2)
            v = torch.cat([kv[i][1][:, :, :start], v, kv[i][1][:, :, end:]], 2)
        out_kv.append((k, v))
        group = cfg.n_heads // cfg.n_kv_heads
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim), -1)
        x = x + blk.attn_out((weights @ v).transpose(1, 2).reshape(1, t, -1))
        h = blk.ff_norm(x)
        x = x + blk.ff_out(F.silu(blk.ff_proj(h)) * blk.up_proj(h))
    return tr["ff_out"](tr["ln_f"](x)), out_kv


def _reference_generate(
    model: LLaDAModelLM,
    prompt: torch.Tensor,
    mode: str | None,
    gen_length: int,
    steps: int,
    block_length: int,
    threshold: float | None,
) -> torch.Tensor:
    """Greedy low-confidence decoding of one prompt (1, P), with the cache ``mode`` (None,
    "prefix", "dual") done the plain way: logits from a whole forward at every block start,
    then (with a cache) from the block run against that forward's keys/values."""
    p = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], 1)
    per_block = steps // (gen_length // block_length)
    for start in range(p, p + gen_length, block_length):
        end = start + block_length
        n = int((x[:, start:end] == MASK).sum())
        counts = [n // per_block + (j < n % per_block) for j in range(per_block)]
        kv, step = None, 0
        while bool((masked := x[0, start:end] == MASK).any()):
            if kv is None or mode is None:
                logits, kv = _reference_logits(model, x, None, 0, x.shape[1])
                logits = logits[:, start:end]
            else:
                window_end = x.shape[1] if mode == "prefix" else end
                logits, _ = _reference_logits(model, x, kv, start, window_end)
                logits = logits[:, : end - start]
            logits = logits[0].float()
            logits[:, MASK] = -math.inf
            conf, chosen = torch.softmax(logits, -1).max(-1)
            conf = conf.masked_fill(~masked, -math.inf)
            k = counts[step] if threshold is None else max(int((conf >= threshold).sum()), 1)
            for j in conf.argsort(descending=True, stable=True)[:k].tolist():
                x[0, start + j] = chosen[j]
            step += 1
    return x[0, p:]


# ----------------------------------------------------------------------------- models


@pytest.fixture
def model() -> LLaDAModelLM:
    """Tiny random LLaDA (grouped-query attention), float64, peaked predictions."""
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config(init_std=0.3)).double().eval()


def _adapted(config, merged: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    base = LLaDAModelLM(tiny_config(init_std=0.3))
    model = randomize(add_adapters(base, config)).double()
    return merge_adapters(model) if merged else model


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize(
    "options",
    [
        dict(gen_length=12, steps=12, block_length=4, threshold=None),
        dict(gen_length=12, steps=6, block_length=6, threshold=None),
        dict(gen_length=12, steps=12, block_length=4, threshold=0.2),
    ],
)
@pytest.mark.parametrize("adapter", ["none", "lora", "merged lora"])
def test_cached_decoding_equals_the_reference_cached_loop(
    model, mode: str, options: dict, adapter: str
) -> None:
    if adapter != "none":
        model = _adapted(LoRAConfig(r=4), merged=adapter == "merged lora")
    prompt = torch.randint(0, 120, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _reference_generate(model, prompt, mode, **options)
    out = generate(model, prompt, mask_token_id=MASK, cache=mode, **options)
    assert torch.equal(out[0], expected)


def test_the_reference_without_a_cache_is_the_sampler_without_one(model) -> None:
    prompt = torch.randint(0, 120, (1, 5), generator=torch.Generator().manual_seed(0))
    options = dict(gen_length=12, steps=12, block_length=4, threshold=None)
    with torch.no_grad():
        expected = _reference_generate(model, prompt, None, **options)
        cached = _reference_generate(model, prompt, "dual", **options)
    assert torch.equal(generate(model, prompt, mask_token_id=MASK, **options)[0], expected)
    assert not torch.equal(cached, expected)  # the cache is an approximation: visible here


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("adapter", [None, NaRAConfig(r=4, input_mode="both")])
def test_one_step_per_block_is_uncached_decoding(model, mode: str, adapter) -> None:
    if adapter is not None:
        model = _adapted(adapter)
    ids, attention, _ = prompts()
    options = dict(mask_token_id=MASK, gen_length=12, steps=3, block_length=4)
    assert torch.equal(
        generate(model, ids, attention, cache=mode, **options),
        generate(model, ids, attention, **options),
    )


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize(
    "adapter",
    [
        NaRAConfig(r=4, input_mode="both"),
        MultiLoRAConfig(r=4),
        TLoRAConfig(r=4),
        PrefixTuningConfig(num_virtual_tokens=3),
    ],
    ids=["nara", "multilora", "tlora", "prefix-tuning"],
)
def test_tolerance_zero_recomputes_every_step_so_equals_uncached(mode: str, adapter) -> None:
    model = _adapted(adapter)
    ids, attention, _ = prompts()
    options = dict(mask_token_id=MASK, gen_length=12, steps=12, block_length=4)
    uncached = generate(model, ids, attention, return_history=True, **options)
    cached = generate(
        model, ids, attention, cache=mode, cache_tolerance=0.0, return_history=True, **options
    )
    assert torch.equal(cached.history, uncached.history)


@pytest.mark.parametrize("tolerance", [None, 0.1, 0.2, 0.3])
def test_a_sample_is_recomputed_exactly_when_its_lambda_moved_past_the_tolerance(
    tolerance,
) -> None:
    model = _adapted(NaRAConfig(r=4))
    lengths: list[int] = []
    model.register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    prompt = torch.randint(0, 120, (1, 4), generator=torch.Generator().manual_seed(0))
    # 12 answer tokens in 3 blocks of 4, one token per step: λ after step j is (12 − j) / 12
    generate(
        model,
        prompt,
        mask_token_id=MASK,
        gen_length=12,
        steps=12,
        block_length=4,
        cache="dual",
        cache_tolerance=tolerance,
    )
    expected = []
    for block in range(3):
        recorded = None
        for step in range(4):
            lam = (12 - 4 * block - step) / 12
            whole = recorded is None or (tolerance is not None and lam - recorded < -tolerance)
            expected.append(16 if whole else 4)  # prompt 4 + answer 12, or the block of 4
            recorded = lam if whole else recorded
    assert lengths == expected


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize(
    "options",
    [
        dict(threshold=None, cache_tolerance=None),
        dict(threshold=0.2, cache_tolerance=0.1, eos_token_id=EOS),
    ],
)
def test_a_sample_alone_equals_the_sample_inside_a_padded_batch(mode: str, options: dict) -> None:
    model = _adapted(NaRAConfig(r=4, input_mode="both"))
    kwargs = dict(mask_token_id=MASK, gen_length=12, steps=12, block_length=4, cache=mode)
    assert_alone_equals_batched(model, **kwargs, **options)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("adapter", [None, PrefixTuningConfig(num_virtual_tokens=3)])
def test_a_cached_pass_on_unchanged_tokens_equals_the_whole_pass(model, mode: str, adapter) -> None:
    """Nothing changed since recording: the spliced keys/values are the whole pass's own."""
    if adapter is not None:
        model = _adapted(adapter)
    whole, cached, x, mask = recorded_and_cached_pass(model, mode)
    with torch.no_grad():
        plain = model(x, attention_mask=mask).logits[:, 7:10]
    assert torch.equal(whole, plain)
    torch.testing.assert_close(cached, plain)


def test_classifier_free_guidance_with_the_cache_equals_uncached_at_one_step_per_block(
    model,
) -> None:
    ids, attention, _ = prompts()
    options = dict(mask_token_id=MASK, gen_length=8, steps=2, block_length=4, cfg_scale=1.5)
    assert torch.equal(
        generate(model, ids, attention, cache="dual", **options),
        generate(model, ids, attention, **options),
    )
    generate(model, ids, attention, **{**options, "steps": 8}, cache="prefix", cache_tolerance=0.1)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(cache="full"), "cache must be None, 'prefix' or 'dual'"),
        (dict(cache_tolerance=0.1), "needs a cache"),
        (dict(cache="dual", cache_tolerance=-1.0), "cache_tolerance must be a finite number"),
        (dict(cache="dual", cache_tolerance=float("nan")), "cache_tolerance must be a finite"),
        (dict(cache="dual", sampler="dream"), "cache='dual' does not apply to the 'dream'"),
        (dict(cache="prefix", sampler="mdlm"), "cache does not apply to the 'mdlm' sampler"),
    ],
)
def test_bad_cache_settings_are_refused(model, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        generate(model, torch.tensor([[3, 4]]), mask_token_id=MASK, gen_length=4, steps=4, **change)


def test_models_the_cache_cannot_serve_are_refused() -> None:
    scripted = ScriptedModel(torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6))
    with pytest.raises(ValueError, match="needs nara's native LLaDA or Dream"):
        generate(
            scripted,
            torch.tensor([[3, 4]]),
            mask_token_id=MASK,
            gen_length=4,
            steps=4,
            cache="dual",
        )
    prompted = _adapted(PromptTuningConfig(num_virtual_tokens=2))
    with pytest.raises(ValueError, match="virtual tokens"):
        generate(
            prompted,
            torch.tensor([[3, 4]]),
            mask_token_id=MASK,
            gen_length=4,
            steps=4,
            cache="dual",
        )


# ----------------------------------------------------------------------------- plumbing


@pytest.fixture
def sampler_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every keyword set ``nara.diffusion.generate`` is called with (answers all EOS)."""
    import nara.diffusion

    calls: list[dict] = []

    def spy(model, ids, mask=None, **kwargs):
        calls.append(kwargs)
        return torch.zeros(ids.shape[0], kwargs["gen_length"], dtype=torch.long)

    monkeypatch.setattr(nara.diffusion, "generate", spy)
    return calls


def test_cli_eval_and_lm_eval_settings_reach_the_sampler_and_the_fingerprint(
    sampler_calls,
) -> None:
    import argparse

    from nara.commands import eval as eval_command
    from nara.commands._common import generate_fn_from_args
    from nara.evaluation.runner import GenerationSettings, make_generate_fn
    from nara.models import load_model

    loaded = load_model("tiny")
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    flags = ["--task", "arithmetic", "--cache", "dual", "--cache-tolerance", "0.05"]
    args = parser.parse_args([*flags, "--threshold", "0.9"])
    generate_fn_from_args(args, loaded.model, loaded.tokenizer, loaded.mask_token_id)(["1+1"], 4)
    settings = GenerationSettings(cache="prefix", cache_tolerance=0.1, threshold=0.8)
    make_generate_fn(loaded.model, loaded.tokenizer, mask_token_id=1, settings=settings)(["a"], 4)
    picked = [{k: c[k] for k in ("cache", "cache_tolerance", "threshold")} for c in sampler_calls]
    assert picked == [
        {"cache": "dual", "cache_tolerance": 0.05, "threshold": 0.9},
        {"cache": "prefix", "cache_tolerance": 0.1, "threshold": 0.8},
    ]
    recorded = eval_command.generator_identity(args)[0]["sampler"]
    assert (recorded["cache"], recorded["cache_tolerance"]) == ("dual", 0.05)
    plain = eval_command.generator_identity(parser.parse_args(["--task", "arithmetic"]))[0]
    assert plain["sampler"]["cache"] == "none"


def test_grid_evaluation_takes_cache_settings_and_refuses_bad_ones() -> None:
    from nara.experiments.grid import _evaluation

    assert _evaluation({"cache": "dual", "cache_tolerance": 0.1})["cache"] == "dual"
    assert "cache" not in _evaluation({"steps": 8})  # unset: older grids keep their settings
    with pytest.raises(ValueError, match="unknown evaluation key"):
        _evaluation({"cahce": "dual"})
    with pytest.raises(ValueError, match="cache must be None, 'prefix' or 'dual'"):
        _evaluation({"cache": "full"})
