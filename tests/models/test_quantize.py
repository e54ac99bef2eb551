"""QLoRA: the 4/8-bit options, their errors where bitsandbytes cannot run, and adapters on a
quantised base layer.

bitsandbytes is not installed on the CPU machine the suite runs on, so its absence and the
missing GPU are simulated both ways; the adapters' dispatch to a quantised layer's own forward is
checked with an int8 stand-in layer against the same adapter on its dequantised float weight.
The real 4-bit training steps need bitsandbytes and a CUDA GPU and are skipped elsewhere.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nara import DoRAConfig, LoRAConfig, NaRAConfig, add_adapters
from nara.diffusion import diffusion_loss
from nara.models import LLaDAModelLM, load_model, quantize, tiny_config
from nara.training.config import ConfigError, ModelSection

HAS_GPU_BNB = importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available()
TARGETS = ["q_proj", "v_proj"]


def test_neither_is_no_quantisation_and_both_is_an_error() -> None:
    assert quantize.quantization_config() is None
    with pytest.raises(ValueError, match="both true; choose one"):
        quantize.quantization_config(load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ConfigError, match="load_in_8bit"):
        ModelSection.from_dict({"load_in_4bit": True, "load_in_8bit": True})


def test_absent_bitsandbytes_names_the_package_and_the_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(ImportError, match=r"bitsandbytes package.*nara\[qlora\]"):
        quantize.quantization_config(load_in_4bit=True)
    with pytest.raises(ImportError, match="model.load_in_8bit=true"):
        quantize.quantization_config(load_in_8bit=True)
    with pytest.raises(ImportError, match="bitsandbytes"):  # before any weight is read
        load_model("tiny", load_in_4bit=True)


def test_no_gpu_is_named(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*is_available\(\) is False"):
        quantize.quantization_config(load_in_4bit=True)


class Int8Linear(nn.Linear):
    """A stand-in for a quantised layer: int8 codes and a per-row scale, dequantised in forward."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__(base.in_features, base.out_features, bias=False)
        scale = base.weight.detach().abs().amax(1, keepdim=True) / 127
        codes = (base.weight.detach() / scale).round().to(torch.int8)
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("scale", scale)

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized().to(x.dtype))


def _pair() -> tuple[LLaDAModelLM, LLaDAModelLM]:
    """A tiny LLaDA with int8 stand-ins at the targets, and its float twin (dequantised)."""
    torch.manual_seed(0)
    quant = LLaDAModelLM(tiny_config(init_std=0.3))
    float_twin = LLaDAModelLM(tiny_config(init_std=0.3))
    float_twin.load_state_dict(quant.state_dict())
    for (name, module), twin in zip(quant.named_modules(), float_twin.modules(), strict=True):
        if name.rsplit(".", 1)[-1] in TARGETS:
            parent = quant.get_submodule(name.rsplit(".", 1)[0])
            stand_in = Int8Linear(module)
            setattr(parent, name.rsplit(".", 1)[1], stand_in)
            with torch.no_grad():
                twin.weight.copy_(stand_in.dequantized())
    return quant, float_twin


@pytest.mark.parametrize("config", [LoRAConfig, NaRAConfig])
def test_adapters_on_a_quantised_layer_equal_the_float_twin(config) -> None:
    quant, twin = _pair()
    for model in (quant, twin):
        torch.manual_seed(1)
        add_adapters(model, config(r=2, target_modules=TARGETS))
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    ids = torch.randint(0, 120, (2, 10), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    grads = []
    for model in (quant, twin):
        out = diffusion_loss(model, ids, maskable, 127, t=torch.tensor([0.4, 0.7]),
                             generator=torch.Generator().manual_seed(2))  # fmt: skip
        out.loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
    layer = quant.model.transformer["blocks"][0].q_proj
    with pytest.raises(ValueError, match="cannot merge into a quantised"):
        layer.merge(None)


def test_methods_that_read_the_base_weight_are_refused_on_a_quantised_layer() -> None:
    quant, _ = _pair()
    with pytest.raises(ValueError, match="dora reads the base weight W"):
        add_adapters(quant, DoRAConfig(r=2, target_modules=TARGETS))


@pytest.mark.skipif(not HAS_GPU_BNB, reason="needs bitsandbytes and a CUDA GPU")
@pytest.mark.parametrize("bits", ["load_in_4bit", "load_in_8bit"])
def test_quantised_tiny_llada_trains_nara(tmp_path, bits) -> None:  # pragma: no cover (GPU)
    torch.manual_seed(0)
    LLaDAModelLM(tiny_config(d_model=128, mlp_hidden_size=256)).save_pretrained(tmp_path)
    model = load_model(tmp_path, mask_token_id=127, **{bits: True}).model.train()
    assert any(not p.dtype.is_floating_point for p in model.parameters())  # quantised storage
    add_adapters(model, NaRAConfig(r=4, target_modules=TARGETS))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    ids = torch.randint(0, 120, (4, 32), device="cuda")
    maskable = torch.ones_like(ids, dtype=torch.bool)
    losses = []
    for step in range(20):
        gen = torch.Generator("cuda").manual_seed(step % 2)
        out = diffusion_loss(model, ids, maskable, 127, t=torch.full((4,), 0.5, device="cuda"),
                             generator=gen)  # fmt: skip
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
