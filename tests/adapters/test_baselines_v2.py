"""BitFit, (IA)³, bottleneck adapters, prefix tuning and FouRA (issue 17).

Each layer against its formula written out by hand, (IA)³ and prefix tuning against PEFT on the
same tensors, and every method training on a tiny LLaDA. The shared behaviour (identity at init,
save/load, mixed-λ batches, checkpointing, merging) runs in test_methods.py through adapters_util.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from adapters_util import randomize
from peft import IA3Config as PeftIA3Config
from peft import PrefixTuningConfig as PeftPrefixConfig
from peft import get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import nara
from nara.adapters import adapter_layers, inject
from nara.diffusion import diffusion_loss
from nara.models import LLaDAModelLM, tiny_config

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
from reference_llada import reference_logits  # noqa: E402


class OneLinear(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.q_proj = nn.Linear(12, 10, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)


def one_linear(config, seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    model = nara.add_adapters(OneLinear(bias), config)
    randomize(model, std=0.5)
    return model


def llada(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides)).eval()


def ids(b: int = 2, t: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 120, (b, t), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- BitFit


def test_bitfit_adds_a_trained_bias_and_llada_gets_zero_biases():
    model = one_linear(nara.BitFitConfig())
    layer, x = model.q_proj, torch.randn(3, 12)
    expected = x @ layer.weight.T + layer.bias + layer.bitfit_bias
    torch.testing.assert_close(model(x), expected)

    base = llada()
    model = nara.add_adapters(llada(), nara.BitFitConfig())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    linears = adapter_layers(model)
    assert set(trainable) == {f"{n}.bitfit_bias" for n in linears}
    assert "model.transformer.ff_out" not in linears  # the head is not adapted
    assert nara.trainable_parameters(model).trainable == sum(
        m.out_features for m in linears.values()
    )
    assert all(m.bias is None for m in linears.values())  # LLaDA has no biases: b = 0
    torch.testing.assert_close(model(ids()).logits, base(ids()).logits, rtol=0, atol=0)
    randomize(model)
    expected = model(ids()).logits
    nara.merge_adapters(model)  # δ becomes each layer's (new, frozen) bias
    for m in linears.values():
        assert torch.equal(m.bias, m.bitfit_bias) and not m.bias.requires_grad
    torch.testing.assert_close(model(ids()).logits, expected, rtol=1e-5, atol=1e-6)
    nara.unmerge_adapters(model)
    assert all(m.bias is None for m in linears.values())


# ----------------------------------------------------------------------------- (IA)³

IA3_TARGETS = r".*blocks\.\d+\.(k_proj|v_proj|ff_out)"  # PEFT's suffix match would take the head


def test_ia3_equals_peft_ia3_given_the_same_vectors_and_merges_like_it():
    reference = get_peft_model(
        llada(), PeftIA3Config(target_modules=IA3_TARGETS, feedforward_modules=r".*\.ff_out")
    ).eval()
    model = nara.add_adapters(llada(), nara.IA3Config()).eval()  # k_proj, v_proj, ff_out
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            theirs = reference.base_model.model.get_submodule(name).ia3_l["default"]
            theirs.copy_(1 + 0.5 * torch.randn(theirs.shape, generator=g))
            layer.ia3_l.copy_(theirs.view(-1))
    widths = {n.rsplit(".", 1)[-1]: m.ia3_l.numel() for n, m in adapter_layers(model).items()}
    assert widths == {"k_proj": 32, "v_proj": 32, "ff_out": 128}  # ff_out: its input, d_mlp
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, rtol=1e-5, atol=1e-6)
        merged = reference.merge_and_unload()
        nara.merge_adapters(model)
        for name, layer in adapter_layers(model).items():
            torch.testing.assert_close(layer.weight, merged.get_submodule(name).weight)


def test_ia3_feedforward_modules_must_be_targets():
    config = nara.IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=["ff_out"])
    with pytest.raises(ValueError, match=r"feedforward_modules entry \['ff_out'\] matches none"):
        nara.add_adapters(llada(), config)
    with pytest.raises(ValueError, match="feedforward_modules must be"):
        nara.IA3Config(feedforward_modules=[""])
    model = nara.add_adapters(llada(), nara.IA3Config(feedforward_modules=r".*\.ff_out"))  # regex
    roles = {n.rsplit(".", 1)[-1]: m.feedforward for n, m in adapter_layers(model).items()}
    assert roles == {"k_proj": False, "v_proj": False, "ff_out": True}


# ----------------------------------------------------------------------------- bottleneck


@pytest.mark.parametrize(
    ("variant", "nonlinearity", "f"),
    [("series", "tanh", torch.tanh), ("parallel", "relu", torch.relu), ("series", "gelu", F.gelu)],
)
def test_bottleneck_output_equals_its_formula(variant, nonlinearity, f):
    config = nara.BottleneckConfig(
        r=3, scale=0.7, variant=variant, nonlinearity=nonlinearity, target_modules=["q_proj"]
    )
    model = one_linear(config)
    L, x = model.q_proj, torch.randn(4, 5, 12)
    h = x @ L.weight.T + L.bias
    z = h if variant == "series" else x
    adapter = f(z @ L.adapter_down.T + L.adapter_down_bias) @ L.adapter_up.T + L.adapter_up_bias
    torch.testing.assert_close(model(x), h + 0.7 * adapter)
    assert L.adapter_down.shape == (3, 10 if variant == "series" else 12)
    with pytest.raises(ValueError, match="variant must be one of"):
        nara.BottleneckConfig(variant="sequential")


# ----------------------------------------------------------------------------- FouRA


def sinusoidal(lam: float, dim: int) -> torch.Tensor:
    """nara's sinusoidal noise embedding, by hand: [sin(1000λ·f_k), cos(1000λ·f_k)]."""
    half = dim // 2
    f = torch.tensor([10000.0 ** (-k / half) for k in range(half)], dtype=torch.float64)
    return torch.cat([torch.sin(1000 * lam * f), torch.cos(1000 * lam * f)])


def foura_reference(layer, proj: torch.Tensor, x: torch.Tensor, lam: float, hard: bool):
    """y = xWᵀ + b + s·Re(IDFT(B·(g ⊙ A·DFT(x)))), with the transforms applied to x itself."""
    x = x.double()
    x_hat = torch.fft.fft(x, dim=-1, norm="ortho")  # (T, d_in), per token
    h = x_hat @ layer.foura_A.double().T.to(torch.complex128)  # (T, r)
    logits = h.abs() @ layer.gate_weight.double().T + layer.gate_bias.double()
    g = torch.sigmoid(logits + proj.double() @ sinusoidal(lam, proj.shape[1]))
    g = (g > 0.5).double() if hard else g
    u = (g * h) @ layer.foura_B.double().T.to(torch.complex128)  # (T, d_out)
    delta = torch.fft.ifft(u, dim=-1, norm="ortho").real
    return x @ layer.weight.double().T + layer.bias.double() + layer.scaling * delta


@pytest.mark.parametrize("gate", ["hard", "soft"])
def test_foura_output_equals_its_frequency_domain_formula(gate):
    lams = [0.0, 0.3, 0.7, 1.0]
    config = nara.FouRAConfig(r=4, alpha=6, gate=gate, embedding_dim=8, target_modules=["q_proj"])
    model = one_linear(config)
    layer = model.q_proj
    proj = model.nara_hub.conditioners["q_proj"].proj.weight  # U (r, dim e), moved off zero
    with torch.no_grad():
        layer.gate_weight.mul_(20)  # a gate that opens and closes ranks token by token
        proj.mul_(40)
    x = torch.randn(len(lams), 6, 12)
    with nara.noise_level(model, torch.tensor(lams)):
        out = model(x)
    for i, lam in enumerate(lams):
        expected = foura_reference(layer, proj.detach(), x[i], lam, gate == "hard")
        torch.testing.assert_close(out[i].double(), expected, rtol=1e-5, atol=1e-5)


def test_foura_gate_follows_the_noise_level_and_hard_gates_close_ranks():
    model = nara.add_adapters(llada(), nara.FouRAConfig(r=4, gate="soft"))
    x = ids()
    randomize(model)  # U moves off zero: the gate now reads λ
    low, high = (nara.noise_level(model, lam) for lam in (0.1, 0.9))
    with torch.no_grad(), low:
        y_low = model(x).logits
    with torch.no_grad(), high:
        y_high = model(x).logits
    assert (y_low - y_high).abs().max() > 1e-4
    layer = next(iter(adapter_layers(model).values()))
    with torch.no_grad():
        layer.gate_bias.fill_(-100.0)  # every rank of this layer closed: it is the base layer
        h = torch.randn(2, 3, 4)
        gate = layer.gate(h.abs(), torch.zeros(1, 4))
    assert torch.equal(gate, torch.zeros_like(gate))
    with pytest.raises(ValueError, match="foura adapters cannot be merged: its rank gate"):
        nara.merge_adapters(model, lam=0.5)


# ----------------------------------------------------------------------------- prefix tuning

_LLAMA_NAMES = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}
_LLAMA_TOP = {"wte": "model.embed_tokens", "ln_f": "model.norm", "ff_out": "lm_head"}


def llama_twin(model: LLaDAModelLM) -> LlamaForCausalLM:
    """The same weights in transformers' LLaMA: LLaDA's architecture with causal attention."""
    c = model.config
    twin = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=c.d_model,
            num_attention_heads=c.n_heads,
            num_key_value_heads=c.n_kv_heads,
            num_hidden_layers=c.n_layers,
            intermediate_size=c.mlp_hidden_size,
            vocab_size=c.padded_vocab_size,
            rope_theta=c.rope_theta,
            rms_norm_eps=c.rms_norm_eps,
            max_position_embeddings=c.max_sequence_length,
            tie_word_embeddings=False,
        )
    )
    state = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("model.transformer.")
        if key.startswith("blocks."):
            _, i, module, kind = key.split(".")
            state[f"model.layers.{i}.{_LLAMA_NAMES[module]}.{kind}"] = value
        else:
            module, kind = key.split(".")
            state[f"{_LLAMA_TOP[module]}.{kind}"] = value
    twin.load_state_dict(state)
    return twin.eval()


@pytest.mark.parametrize(
    ("layers", "length", "projection"),
    [(1, 6, False), (2, 1, True)],
    ids=["1_layer_every_position", "2_layers_projection"],
)
def test_prefix_tuning_equals_peft_prefix_tuning_on_the_same_prefixes(layers, length, projection):
    """PEFT cannot wrap nara's LLaDA for prefix tuning (it passes the prefixes as a KV cache),
    so it runs on the LLaMA twin, whose attention is causal: a query there reads the prefix and
    the tokens up to itself. Bidirectional and causal agree on the last position of a 1-layer
    model, so position i is compared with nara on the first i + 1 tokens, and on one token with
    2 layers."""
    base = llada(n_layers=layers)
    kwargs = dict(num_virtual_tokens=5, prefix_projection=projection, encoder_hidden_size=24)
    reference = get_peft_model(
        llama_twin(base), PeftPrefixConfig(task_type="CAUSAL_LM", **kwargs)
    ).eval()
    model = nara.add_adapters(llada(n_layers=layers), nara.PrefixTuningConfig(**kwargs))
    encoder = reference.prompt_encoder["default"]
    model.nara_hub.prefix.load_state_dict(encoder.state_dict())  # same names and shapes
    x = ids(t=length)
    with torch.no_grad():
        expected = reference(x).logits
        for i in range(length):
            got = model(x[:, : i + 1]).logits[:, -1]
            torch.testing.assert_close(got, expected[:, i], rtol=1e-5, atol=1e-6)
        assert (model(x).logits - base(x).logits).abs().max() > 1e-3  # the prefix matters


def test_prefix_tuning_equals_the_reference_llada_and_padding_changes_nothing():
    """Against tests/models/reference_llada.py, an independent LLaDA forward with explicit
    softmax attention over the concatenated prefix, on 2 bidirectional layers."""
    model = nara.add_adapters(llada(), nara.PrefixTuningConfig(num_virtual_tokens=3))
    table = model.nara_hub.prefix().detach().view(3, 2, 2, 2, 16)  # (n, L, K/V, H_kv, D)
    keys, values = table[:, :, 0].permute(1, 2, 0, 3), table[:, :, 1].permute(1, 2, 0, 3)
    long, short = ids(1, 8, seed=2), ids(1, 5, seed=3)
    c = model.config
    with torch.no_grad():
        alone = [model(long).logits, model(short).logits]
        expected = reference_logits(
            llada().state_dict(),
            long,
            n_layers=c.n_layers,
            n_heads=c.n_heads,
            n_kv_heads=c.n_kv_heads,
            theta=c.rope_theta,
            eps=c.rms_norm_eps,
            prefix=(keys, values),
        )
        torch.testing.assert_close(alone[0].double(), expected, atol=1e-5, rtol=0)
        pad = torch.full((1, 3), 126)
        for batch, mask, where in [
            (torch.cat([short, pad], 1), [1] * 5 + [0] * 3, slice(0, 5)),  # right padding
            (torch.cat([pad, short], 1), [0] * 3 + [1] * 5, slice(3, 8)),  # left padding
        ]:
            mask = torch.tensor([[1] * 8, mask])
            together = model(torch.cat([long, batch]), attention_mask=mask).logits
            torch.testing.assert_close(together[:1], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(together[1:, where], alone[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reentrant", [False, True])
def test_prefix_tuning_gradients_are_the_same_under_gradient_checkpointing(reentrant):
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        config = nara.PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=True)
        model = nara.add_adapters(llada().train(), config)
        if checkpointing:
            kwargs = {"use_reentrant": reentrant}
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model(ids()).logits.square().mean().backward()
        return {n: p.grad for n, p in inject.adapter_parameters(model).items()}

    plain, checkpointed = grads(False), grads(True)
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_prefix_vocab_init_is_the_cache_of_real_tokens():
    """1 layer: the prefix model on x equals the base model on [w; x], w the n random tokens
    whose keys and values initialised the prefix (found back through the value rows)."""
    base = llada(n_layers=1)
    config = nara.PrefixTuningConfig(num_virtual_tokens=4, init="vocab")
    model = nara.add_adapters(llada(n_layers=1), config)
    block = base.model.transformer["blocks"][0]
    with torch.no_grad():
        values = model.nara_hub.prefix().view(4, 2, 32)[:, 1]  # (n, H_kv·D), layer 0
        every = block.v_proj(block.attn_norm(base.get_input_embeddings().weight))  # (V, H_kv·D)
        w = torch.cdist(values, every).argmin(1)
        torch.testing.assert_close(every[w], values, rtol=0, atol=1e-6)
        x = ids()
        expected = base(torch.cat([w.expand(2, -1), x], 1)).logits[:, 4:]
        torch.testing.assert_close(model(x).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="use init='random' with prefix_projection"):
        nara.PrefixTuningConfig(prefix_projection=True, init="vocab")


@pytest.mark.parametrize("projection", [False, True], ids=["direct", "projection"])
def test_prefix_tuning_trains_only_the_prefix_and_round_trips(projection, tmp_path):
    config = nara.PrefixTuningConfig(
        num_virtual_tokens=4, prefix_projection=projection, init="random" if projection else "vocab"
    )
    model = nara.add_adapters(llada(), config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("nara_hub.prefix.") for n in trainable)
    width = 2 * 2 * 32  # L · 2 · H_kv · D per virtual token
    expected = 4 * 32 + (32 * 32 + 32) + (32 * width + width) if projection else 4 * width
    assert nara.trainable_parameters(model).trainable == expected
    x = ids()
    out = model(x).logits
    nara.save_adapters(model, tmp_path)
    torch.manual_seed(5)
    loaded = nara.load_adapters(llada(), tmp_path)
    assert torch.equal(loaded(x).logits, out)
    with pytest.raises(ValueError, match="perturb hidden states, not weights"):
        nara.merge_adapters(loaded)
    with pytest.raises(ValueError, match="needs attention layers with a kv_prefix hook"):
        nara.add_adapters(OneLinear(), config)


# ----------------------------------------------------------------------------- all five


TRAINING_CASES = [
    pytest.param(lambda: nara.BitFitConfig(), 3e-2, id="bitfit"),
    pytest.param(lambda: nara.IA3Config(), 1e-1, id="ia3"),
    pytest.param(lambda: nara.BottleneckConfig(r=8), 1e-2, id="bottleneck_series"),
    pytest.param(lambda: nara.BottleneckConfig(r=8, variant="parallel"), 1e-2, id="parallel"),
    pytest.param(lambda: nara.PrefixTuningConfig(num_virtual_tokens=8), 1e-1, id="prefix"),
    pytest.param(
        lambda: nara.PrefixTuningConfig(num_virtual_tokens=8, prefix_projection=True),
        1e-2,
        id="prefix_projection",
    ),
    pytest.param(lambda: nara.FouRAConfig(r=8), 1e-2, id="foura"),
]


@pytest.mark.parametrize(("make_config", "lr"), TRAINING_CASES)
def test_the_diffusion_loss_falls_on_a_tiny_llada(make_config, lr):
    model = nara.add_adapters(llada(), make_config()).train()
    x = (torch.arange(12) % 3 + 10).repeat(4, 1)  # a pattern of 3 tokens: learnable
    maskable = torch.ones_like(x, dtype=torch.bool)

    def loss(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return diffusion_loss(model, x, maskable, 127, generator=gen).loss

    with torch.no_grad():
        before = sum(loss(s) for s in range(4)).item()  # fixed masks and λ, before and after
    opt = torch.optim.Adam(inject.adapter_parameters(model).values(), lr=lr)
    for step in range(25):
        opt.zero_grad()
        loss(100 + step).backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss(s) for s in range(4)).item()
    assert after < 0.95 * before, (before, after)  # measured: 0.84 to 0.90 of before


def test_the_methods_grid_and_recipes_build_each_method():
    from nara.experiments.grid import load_grid
    from nara.training.config import RecipeConfig, load_recipe

    grid = load_grid(ROOT / "configs" / "experiments" / "methods.yaml")
    recipes = {r.label: r.recipe for r in grid.runs() if r.seed == 0}
    counts = {}
    for label in ("foura", "bottleneck", "bottleneck_parallel", "prefix_tuning", "bitfit", "ia3"):
        config = RecipeConfig.from_dict(recipes[label]).adapter.build()
        counts[label] = nara.trainable_parameters(nara.add_adapters(llada(), config)).trainable
    d, mlp, kv, layers = 64, 128, 32, 2  # tiny_config()
    tokens = grid.methods["prefix_tuning"]["num_virtual_tokens"]
    r, rp = grid.methods["bottleneck"]["r"], grid.methods["bottleneck_parallel"]["r"]
    assert counts["prefix_tuning"] == tokens * layers * 2 * kv
    assert counts["bottleneck"] == layers * 2 * (2 * r * d + r + d)  # attn_out, ff_out: d → d
    assert counts["bottleneck_parallel"] == layers * (
        (2 * rp * d + rp + d) + (rp * mlp + rp + rp * d + d)  # parallel ff_out reads d_mlp
    )
    assert counts["bitfit"] == layers * (d + kv + kv + d + mlp + mlp + d)  # every block linear
    assert counts["ia3"] == layers * (kv + kv + mlp)
    for method, cls in [
        ("bitfit", nara.BitFitConfig),
        ("ia3", nara.IA3Config),
        ("bottleneck", nara.BottleneckConfig),
        ("prefix_tuning", nara.PrefixTuningConfig),
        ("foura", nara.FouRAConfig),
    ]:  # what `nara train adapter.method=...` builds
        assert type(load_recipe(None, [f"adapter.method={method}"]).adapter.build()) is cls
