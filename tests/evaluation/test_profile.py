"""The noise-level profile: fixed masks inside their λ bins, paired across models, losses equal to
an independent cross-entropy computation and to the diffusion loss on the same masks, and zero
gain for adapters that start at zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import (  # noqa: E402
    MASK,
    arithmetic_records,
    build_char_tokenizer,
    tiny_model_dir,  # noqa: F401  (fixture)
)

from nara.adapters import LoRAConfig, NaRAConfig, add_adapters, save_adapters  # noqa: E402
from nara.adapters.noise import find_hub  # noqa: E402
from nara.adapters.trajectory import TrajectoryConfig, compose_trajectories  # noqa: E402
from nara.cli import main  # noqa: E402
from nara.diffusion import diffusion_loss, masked_fraction  # noqa: E402
from nara.evaluation.profile import (  # noqa: E402
    ProfileMasks,
    draw_masks,
    encode_examples,
    noise_profile,
    score_masks,
    shared_copy,
)
from nara.models import LLaDAModelLM, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    tokenizer = build_char_tokenizer()
    records = [{"prompt": f"Q{r['prompt']}", "answer": r["answer"] * 6} for r in
               arithmetic_records(6)]  # fmt: skip
    return model, tokenizer, records


def _maskable(lengths, prompt=5, total=40):
    m = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, n in enumerate(lengths):
        m[i, prompt : prompt + n] = True
    return m


def test_masks_lie_in_their_bins_inside_the_answer():
    maskable = _maskable([3, 11, 17, 30])
    bins = 10
    masks = draw_masks(maskable, bins=bins, samples_per_bin=3, seed=1)
    assert masks.masked.shape == (bins, 3, 4, 40)
    n = maskable.sum(-1)
    for k in range(bins):
        for s in range(3):
            m = masks.masked[k, s]
            assert not (m & ~maskable).any()  # the prompt and padding are never masked
            c = m.sum(-1)
            for i in range(4):
                if not masks.valid[k, s, i]:
                    assert c[i] == 0
                    continue
                # exact rational check: k/K <= c/n < (k+1)/K (c/n <= 1 in the last bin)
                assert k * n[i] <= c[i] * bins
                assert c[i] * bins < (k + 1) * n[i] or (k == bins - 1 and c[i] <= n[i])
                assert c[i] >= 1
            lam = masked_fraction(m, maskable)
            torch.testing.assert_close(
                masks.lam[k, s][masks.valid[k, s]], lam[masks.valid[k, s]], rtol=0, atol=0
            )
    # answers of > 10 tokens reach every bin (c >= 1); 3 tokens cannot reach [0.1, 0.2)
    assert masks.valid[:, :, 1:].all()
    assert not masks.valid[1, :, 0].any() and masks.valid[3, :, 0].all()


def test_same_seed_same_masks_other_seed_other_masks():
    maskable = _maskable([12, 25])
    a = draw_masks(maskable, bins=5, samples_per_bin=2, seed=7)
    b = draw_masks(maskable, bins=5, samples_per_bin=2, seed=7)
    c = draw_masks(maskable, bins=5, samples_per_bin=2, seed=8)
    assert torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, c.masked)


def test_bin_losses_equal_direct_cross_entropy(setup):
    model, tokenizer, records = setup
    batch = encode_examples(tokenizer, records)
    masks = draw_masks(batch["maskable"], bins=4, seed=0)
    result = noise_profile(model, tokenizer, records, mask_token_id=MASK, bins=4, batch_size=5)
    with torch.no_grad():
        for k in range(4):
            per_example = []
            for i in range(len(records)):
                m = masks.masked[k, 0, i]
                noisy = torch.where(m, MASK, batch["input_ids"][i])
                logits = model(noisy[None], attention_mask=batch["attention_mask"][i][None]).logits
                ce = F.cross_entropy(logits[0][m], batch["input_ids"][i][m], reduction="none")
                lam = m.sum() / batch["maskable"][i].sum()  # p = λ: Σ CE/λ over n = mean CE
                per_example.append((ce.sum() / lam / batch["maskable"][i].sum()).item())
            assert result.loss["base"][k] == pytest.approx(np.mean(per_example), rel=1e-5)


def test_per_mask_loss_matches_diffusion_loss_on_the_same_mask(setup):
    model, tokenizer, records = setup
    batch = encode_examples(tokenizer, records)
    t = torch.linspace(0.2, 0.9, len(records))
    out = diffusion_loss(
        model,
        batch["input_ids"],
        batch["maskable"],
        MASK,
        attention_mask=batch["attention_mask"],
        t=t,
        generator=torch.Generator().manual_seed(3),
    )
    keep = out.masked.any(-1)
    lam = masked_fraction(out.masked, batch["maskable"])
    masks = ProfileMasks(torch.tensor([0.0, 1.0]), out.masked[None, None], lam[None, None],
                         keep[None, None])  # fmt: skip
    scores = score_masks(model, batch["input_ids"], batch["attention_mask"], batch["maskable"],
                         masks, mask_token_id=MASK)  # fmt: skip
    n = batch["maskable"].sum(-1)
    ce_sum_profile = scores.loss[0, 0][keep] * lam[keep] * n[keep]
    ce_sum_loss = out.sample_loss[keep] * out.p[keep]  # the loss weights each CE by 1/p
    torch.testing.assert_close(ce_sum_profile, ce_sum_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [LoRAConfig(r=4), NaRAConfig(r=4, hidden_sizes=[8])])
def test_zero_init_adapter_gives_exactly_the_base_profile(setup, tmp_path, config):
    model, tokenizer, records = setup
    save_adapters(add_adapters(shared_copy(model), config), tmp_path / "zero")  # B = 0, C = I
    result = noise_profile(model, tokenizer, records, adapters={"zero": tmp_path / "zero"},
                           mask_token_id=MASK, bins=5, samples_per_bin=2)  # fmt: skip
    assert result.loss["zero"] == result.loss["base"]
    assert result.accuracy["zero"] == result.accuracy["base"]
    assert all(g == 0.0 for g in result.gain["zero"] if g is not None)
    assert not hasattr(model, "nara_hub")  # the base model itself never got adapters


def test_gain_and_paired_standard_error(setup, tmp_path):
    model, tokenizer, records = setup
    adapted = add_adapters(shared_copy(model), LoRAConfig(r=4))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if name.endswith("lora_B") or "B" in name.rsplit(".", 1)[-1]:
                p.normal_(0, 0.5)
    save_adapters(adapted, tmp_path / "lora")
    result = noise_profile(model, tokenizer, records, adapters={"lora": tmp_path / "lora"},
                           mask_token_id=MASK, bins=3, samples_per_bin=2)  # fmt: skip
    diff = (result.scores["base"].loss - result.scores["lora"].loss).numpy().mean(axis=1)  # (K, N)
    assert np.abs(diff).max() > 0  # the perturbed adapter changes the loss
    for k in range(3):
        assert result.gain["lora"][k] == pytest.approx(diff[k].mean(), rel=1e-5)
        se = diff[k].std(ddof=1) / np.sqrt(len(diff[k]))
        assert result.gain_se["lora"][k] == pytest.approx(se, rel=1e-5)


def test_cli_writes_json_png_and_prints_table(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "profile"
    code = main(["profile", "--model", str(tiny_model_dir), "--task", "arithmetic", "--limit", "4",
                 "--bins", "4", "--output", str(out)])  # fmt: skip
    assert code == 0
    assert "| λ bin |" in capsys.readouterr().out
    data = json.loads((out / "profile.json").read_text())
    assert len(data["loss"]["base"]) == 4 and (out / "profile.png").stat().st_size > 0


def test_composed_trajectories_are_profiled_as_their_router_mixes_them(setup, tmp_path):
    """The profile gives a composed model its prompt mask (the router needs it): with the
    untrained router each module weighs 1/2, so a composition of a perturbed module and a zero
    one scores exactly as the perturbed module with its B halved."""
    model, tokenizer, records = setup
    perturbed = add_adapters(shared_copy(model), TrajectoryConfig(r=2))
    with torch.no_grad():
        for module in find_hub(perturbed).trajectories[0].values():
            module.B.normal_(0, 0.5)
    save_adapters(perturbed, tmp_path / "perturbed")
    save_adapters(add_adapters(shared_copy(model), TrajectoryConfig(r=2)), tmp_path / "zero")
    with torch.no_grad():
        for module in find_hub(perturbed).trajectories[0].values():
            module.B.mul_(0.5)
    save_adapters(perturbed, tmp_path / "halved")
    composed = compose_trajectories(shared_copy(model), [tmp_path / "perturbed", tmp_path / "zero"])
    save_adapters(composed, tmp_path / "composed")
    adapters = {name: tmp_path / name for name in ("composed", "halved")}
    result = noise_profile(model, tokenizer, records, adapters=adapters, mask_token_id=MASK,
                           bins=3, samples_per_bin=2)  # fmt: skip
    assert any(abs(g) > 0 for g in result.gain["halved"] if g is not None)
    torch.testing.assert_close(result.scores["composed"].loss, result.scores["halved"].loss,
                               rtol=1e-4, atol=1e-5, equal_nan=True)  # fmt: skip


def test_plot_draws_bins_with_fewer_than_two_examples(setup, tmp_path):
    """One example: every paired standard error is undefined (None in the JSON); the plot and
    the files are still written."""
    model, tokenizer, records = setup
    adapted = add_adapters(shared_copy(model), LoRAConfig(r=4))
    save_adapters(adapted, tmp_path / "lora")
    result = noise_profile(model, tokenizer, records[:1], adapters={"lora": tmp_path / "lora"},
                           mask_token_id=MASK, bins=4)  # fmt: skip
    assert all(se is None for se in result.gain_se["lora"])
    json_path, png_path = result.save(tmp_path / "out")
    assert json.loads(json_path.read_text())["gain_se"]["lora"] == result.gain_se["lora"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
