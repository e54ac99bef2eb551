"""Each method's layer output equals its ΔW formula, written out by hand (docs/design.md §1-2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from adapters_util import randomize, run
from torch import nn

import nara
from nara.adapters import adapter_layers

LAMS = [0.0, 0.3, 1 / 3, 0.7, 1.0]


class OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)


def hand_c(hub, lam: float) -> torch.Tensor:
    """C(λ) = I + η·reshape(F([sin(λw), cos(λw)])), the MLP written out layer by layer."""
    hyper = hub.conditioners["global"]
    w = hyper.noise_embed.freqs.double()
    h = torch.cat([torch.sin(lam * w), torch.cos(lam * w)])
    linears = [m for m in hyper.net if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        h = lin.weight.double() @ h + lin.bias.double()
        h = h if i == len(linears) - 1 else F.silu(h)
    return torch.eye(hyper.r, dtype=torch.float64) + hyper.eta * h.view(hyper.r, hyper.r)


def dora(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """m · V / ‖V‖ per row."""
    return m[:, None] * v / v.norm(dim=1, keepdim=True)


def low_rank(layer, a: torch.Tensor, b: torch.Tensor, mid=None) -> torch.Tensor:
    """s · B · (mid ·) A in float64."""
    a, b = a.double(), b.double()
    return layer.scaling * (b @ (a if mid is None else mid @ a))


def w_lora(L, hub, lam):
    return L.weight.double() + low_rank(L, L.lora_A, L.lora_B)


def w_dora(L, hub, lam):
    return dora(w_lora(L, hub, lam), L.magnitude.double())


def w_hira(L, hub, lam):
    return L.weight.double() * (1 + L.scaling * L.hira_B.double() @ L.hira_A.double())


def w_nara(L, hub, lam):
    return L.weight.double() + low_rank(L, L.lora_A, L.lora_B, hand_c(hub, lam))


def w_nara_dora(L, hub, lam):
    return dora(w_nara(L, hub, lam), L.magnitude.double())


def w_multi_lora(L, hub, lam):
    k = max(math.ceil(lam * 3), 1) - 1  # bin ⌈λ·K⌉, K = 3, λ = 0 in bin 1
    return L.weight.double() + low_rank(L, L.lora_A[k], L.lora_B[k])


def w_t_lora(L, hub, lam):
    rank = 1 + math.floor((1 - lam) ** 1.0 * (11 - 1))  # r_min + ⌊(1−λ)^p·(r − r_min)⌋
    return L.weight.double() + low_rank(L, L.lora_A[:rank], L.lora_B[:, :rank])


FORMULAS = {  # method: (config, W_eff(layer, hub, λ))
    "lora": (nara.LoRAConfig(r=3, alpha=6, target_modules=["q_proj"]), w_lora),
    "dora": (nara.DoRAConfig(r=3, target_modules=["q_proj"]), w_dora),
    "hira": (nara.HiRAConfig(r=3, target_modules=["q_proj"]), w_hira),
    "nara": (nara.NaRAConfig(r=3, scale=0.7, target_modules=["q_proj"]), w_nara),
    "nara_dora": (nara.NaRADoRAConfig(r=3, target_modules=["q_proj"]), w_nara_dora),
    "multi_lora": (nara.MultiLoRAConfig(r=3, num_bins=3, target_modules=["q_proj"]), w_multi_lora),
    "t_lora": (nara.TLoRAConfig(r=11, r_min=1, power=1.0, target_modules=["q_proj"]), w_t_lora),
}


@pytest.mark.parametrize("method", list(FORMULAS))
def test_layer_output_equals_hand_written_formula(method):
    config, w_eff = FORMULAS[method]
    torch.manual_seed(0)
    model = nara.add_adapters(OneLinear(), config)
    randomize(model)
    layer = model.q_proj
    x = torch.randn(len(LAMS), 5, 12)  # (B, T, d_in), one λ per sample
    out = run(model, x, lam=torch.tensor(LAMS), density=None)
    for i, lam in enumerate(LAMS):
        expected = x[i].double() @ w_eff(layer, model.nara_hub, lam).T + layer.bias.double()
        torch.testing.assert_close(out[i].double(), expected, rtol=1e-5, atol=1e-5, msg=method)


def test_nara_at_init_equals_lora_with_same_factors_then_depends_on_noise(tiny_lm):
    ids = torch.randint(0, 32, (2, 5))
    targets = ["q_proj", "v_proj"]
    lora = nara.add_adapters(tiny_lm(), nara.LoRAConfig(r=4, target_modules=targets))
    randomize(lora)
    naramodel = nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4, target_modules=targets))
    with torch.no_grad():
        for name, layer in adapter_layers(naramodel).items():
            layer.lora_A.copy_(lora.get_submodule(name).lora_A)
            layer.lora_B.copy_(lora.get_submodule(name).lora_B)
    expected = lora(ids)
    for lam in [0.0, 0.25, 0.5, 1.0, torch.tensor([0.1, 0.9])]:
        torch.testing.assert_close(run(naramodel, ids, lam=lam, density=None), expected)
    last = naramodel.nara_hub.conditioners["global"].net[-1]
    with torch.no_grad():
        last.weight.normal_(0, 0.1)
    low = run(naramodel, ids, lam=0.1, density=None)
    high = run(naramodel, ids, lam=0.9, density=None)
    assert (low - high).abs().max() > 1e-3


def test_nara_c_is_the_same_for_every_noise_level(tiny_lm):
    ids = torch.randint(0, 32, (2, 5))
    model = nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4, input_mode="constant"))
    randomize(model)
    torch.testing.assert_close(
        run(model, ids, lam=0.1, density=None), run(model, ids, lam=0.9, density=None)
    )
    assert not torch.allclose(model(ids), tiny_lm()(ids))  # works without a noise level too
