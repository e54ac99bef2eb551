"""QLoRA: the 4/8-bit options, their errors where bitsandbytes cannot run, adapters on a
quantised base layer, and NaRA training on a real 4- and 8-bit tiny LLaDA and a 4-bit tiny Dream.

bitsandbytes (>= 0.46.1, the test extra installs it) runs its 4- and 8-bit layers on the CPU, so
the real quantised loads and training steps run here; a missing, too old or broken bitsandbytes is
simulated. The adapters' dispatch to a quantised layer's own forward is also checked exactly, with
an int8 stand-in layer against the same adapter on its dequantised float weight.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from models_support import two_step_overrides
from safetensors import safe_open
from torch import nn

from nara import DoRAConfig, LoRAConfig, NaRAConfig, add_adapters
from nara.cli import main
from nara.diffusion import diffusion_loss
from nara.models import (
    DreamModel,
    LLaDAModelLM,
    load_model,
    quantize,
    tiny_config,
    tiny_dream_config,
)
from nara.training.config import ConfigError, ModelSection

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import arith_files, tiny_model_dir  # noqa: E402,F401  (fixtures)

TARGETS = ["q_proj", "v_proj"]
RECIPES = Path(__file__).parents[2] / "configs" / "llada8b"


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
    with pytest.raises(ImportError, match=r"bitsandbytes package.*nara-peft\[qlora\]"):
        quantize.quantization_config(load_in_4bit=True)
    with pytest.raises(ImportError, match="model.load_in_8bit=true"):
        quantize.quantization_config(load_in_8bit=True)
    with pytest.raises(ImportError, match="bitsandbytes"):  # before any weight is read
        load_model("tiny", load_in_4bit=True)


def test_too_old_bitsandbytes_names_its_version_and_the_minimum(monkeypatch) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "0.45.5" if name == "bitsandbytes" else real(name),
    )
    with pytest.raises(ImportError, match=r">= 0\.46\.1 .*bitsandbytes 0\.45\.5 is installed"):
        quantize.quantization_config(load_in_4bit=True)


def test_bitsandbytes_that_does_not_import_is_named(monkeypatch) -> None:
    real = importlib.import_module

    def broken(name: str, *args):  # as when its native library does not load on a platform
        if name == "bitsandbytes":
            raise OSError("libbitsandbytes_cpu.so: cannot open shared object file")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(
        ImportError,
        match=r"0\.\d+.* is installed but does not import on this machine \(OSError: libbits",
    ):
        quantize.quantization_config(load_in_8bit=True)


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


def _frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every frozen tensor: the quantised codes and their bitsandbytes scales too."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        quant_state = getattr(weight, "quant_state", None)  # 4 bits: absmax per block of 64
        if quant_state is not None:
            state[name + ".absmax"] = quant_state.absmax.clone()
        # 8 bits: one scale per row, moved from the weight to the layer's state at its first use
        scale = getattr(getattr(module, "state", None), "SCB", None)
        scale = scale if scale is not None else getattr(weight, "SCB", None)
        if scale is not None:
            state[name + ".SCB"] = scale.clone()
    return state


FAMILIES = {
    "llada": lambda: LLaDAModelLM(tiny_config()),
    "dream": lambda: DreamModel(tiny_dream_config()),
}


@pytest.mark.parametrize(
    ("family", "bits", "storage"),
    [
        ("llada", "load_in_4bit", torch.uint8),
        ("llada", "load_in_8bit", torch.int8),
        ("dream", "load_in_4bit", torch.uint8),
    ],
)
def test_quantised_tiny_model_trains_nara(tmp_path, family, bits, storage) -> None:
    torch.manual_seed(0)
    FAMILIES[family]().save_pretrained(tmp_path)
    model = load_model(tmp_path, **{bits: True}).model.train()  # on the CPU here
    device = quantize.quantized_device()
    # the block linears are stored quantised, the head and the embeddings are not
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
    assert len(linears) == 14 and {m.weight.dtype for m in linears} == {storage}
    assert head.weight.dtype == model.get_input_embeddings().weight.dtype == torch.bfloat16
    ids = torch.randint(0, 120, (4, 24), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        model(ids)  # 8 bits: the first use moves the row scales from the weight to the layer
    add_adapters(model, NaRAConfig(r=4, target_modules=TARGETS))
    frozen = _frozen_state(model)
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert params and all(p.dtype == torch.float32 for p in params.values())
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    losses = []
    for step in range(6):
        out = diffusion_loss(model, ids, maskable, 127, t=torch.full((4,), 0.5, device=device),
                             generator=torch.Generator(device).manual_seed(0))  # fmt: skip
        out.loss.backward()
        if step > 1:  # B and the hypernetwork's last layer start at zero (as on a float base)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.05
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    after = _frozen_state(model)
    assert after.keys() == frozen.keys() and any(k.endswith((".absmax", ".SCB")) for k in after)
    assert all(torch.equal(after[k], frozen[k]) for k in frozen)


def test_nara_train_on_a_4bit_base_from_the_command_line(tiny_model_dir, arith_files, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    overrides = two_step_overrides(
        tiny_model_dir, arith_files, out, "model.load_in_4bit=true", "data.max_examples=8",
        "data.val_max_examples=4", "adapter.hidden_sizes=[16]",
    )  # fmt: skip
    recipe = str(RECIPES / "math_nara.yaml")  # gradient checkpointing on, as at 8B
    assert main(["train", recipe, *overrides, "--no-progress"]) == 0
    with safe_open(out / "final" / "adapter_model.safetensors", "pt") as saved:
        tensors = {key: saved.get_tensor(key) for key in saved.keys()}  # noqa: SIM118
    assert any(".q_proj." in key for key in tensors) and any("nara_hub" in key for key in tensors)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values())


def test_quantize_linears_in_memory_equals_the_4bit_load(tmp_path) -> None:
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config(d_model=128, n_heads=4, n_kv_heads=4, mlp_hidden_size=256))
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, load_in_4bit=True).model
    quantised = quantize.quantize_linears(model.to(torch.bfloat16)).eval()
    # compared before any forward: on the CPU the first inference forward repacks the codes
    mine, theirs = dict(quantised.named_parameters()), dict(loaded.named_parameters())
    assert mine.keys() == theirs.keys()
    assert all(mine[k].dtype == theirs[k].dtype and torch.equal(mine[k], theirs[k]) for k in mine)
    for name, module in loaded.named_modules():
        if hasattr(getattr(module, "weight", None), "quant_state"):
            ours = quantised.get_submodule(name).weight.quant_state
            assert torch.equal(ours.absmax, module.weight.quant_state.absmax)
            assert torch.equal(ours.state2.absmax, module.weight.quant_state.state2.absmax)
    assert quantised.model.transformer["ff_out"].weight.dtype == torch.bfloat16  # head kept
    ids = torch.randint(0, 120, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(quantised(ids).logits, loaded(ids).logits)
