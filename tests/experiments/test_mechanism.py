"""The mechanism test (nara.experiments.mechanism) on a tiny random LLaDA built in code: the
teachers' λ-dependence against updates applied by hand, exact students at KL 0, distillation
lowering the KL, the per-bin aggregation and the KL against hand computations, and the
``nara experiment`` entry point end to end (report against numpy, resume, dry run)."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import nara
from nara.adapters import LoRAConfig, MultiLoRAConfig, NaRAConfig, adapter_layers, add_adapters
from nara.evaluation.profile import draw_masks, shared_copy
from nara.experiments.mechanism import (
    METRICS,
    bin_summary,
    build_teacher,
    chunk_kl,
    distil,
    load_mechanism,
    mechanism_from_dict,
    score_kl,
    teacher_factors,
)
from nara.models import LLaDAModelLM, tiny_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import tiny_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402

MASK = 127
TARGETS = ["q_proj", "v_proj", "attn_out"]
_IDS = torch.randint(0, 120, (6, 12), generator=torch.Generator().manual_seed(5))
R90 = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # rotation by π/2, written out


@pytest.fixture(scope="module")
def base() -> LLaDAModelLM:
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config()).eval()


@pytest.fixture(scope="module")
def factors(base):
    return teacher_factors(base, TARGETS, _IDS, rank=2, strength=2.0, seed=3)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 120, (4, 12), generator=torch.Generator().manual_seed(1))


def _with_update(base, factors, mix: torch.Tensor) -> LLaDAModelLM:
    """An independent copy of the base with W ← W + B·mix·A written into every target."""
    model = copy.deepcopy(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in factors.items():
            modules[name].weight += b @ mix @ a
    return model


def _logits(model, ids, lam) -> torch.Tensor:
    with torch.no_grad(), nara.noise_level(model, lam):
        return model(ids).logits


def test_factors_have_the_stated_singular_values(base, factors):
    modules = dict(base.named_modules())
    assert len(factors) == 2 * len(TARGETS)  # two layers
    for name, (a, b) in factors.items():
        expected = 2.0 * torch.linalg.matrix_norm(modules[name].weight.detach(), 2)
        sv = torch.linalg.svdvals(b @ a)
        torch.testing.assert_close(sv[:2], expected.repeat(2), rtol=1e-4, atol=1e-5)
        assert float(sv[2]) < 1e-4  # rank 2


def test_step_teacher_switches_at_one_half(base, factors, ids):
    teacher = build_teacher(base, "step", factors)
    low = _with_update(base, factors, torch.eye(2))  # ΔW_a = B·A
    high = _with_update(base, factors, R90)  # ΔW_b = B·R(π/2)·A
    low_out, high_out = _logits(low, ids, 0.0), _logits(high, ids, 0.0)
    assert (low_out - high_out).abs().max() > 1e-2  # the two updates really differ
    for lam in (0.0, 0.2, 0.5):
        torch.testing.assert_close(_logits(teacher, ids, lam), low_out, rtol=1e-4, atol=1e-5)
    for lam in (0.51, 0.8, 1.0):
        torch.testing.assert_close(_logits(teacher, ids, lam), high_out, rtol=1e-4, atol=1e-5)
    mixed = _logits(teacher, ids, torch.tensor([0.1, 0.9, 0.5, 0.6]))  # one batch, both sides
    expected = torch.stack([low_out[0], high_out[1], low_out[2], high_out[3]])
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-5)


def test_smooth_teacher_rotates_with_lambda(base, factors, ids):
    teacher = build_teacher(base, "smooth", factors)
    c = math.cos(math.pi / 8)  # λ = 0.25 → θ = π/8
    s = math.sin(math.pi / 8)
    for lam, mix in ((0.0, torch.eye(2)), (0.25, torch.tensor([[c, -s], [s, c]])), (1.0, R90)):
        expected = _logits(_with_update(base, factors, mix), ids, 0.0)
        torch.testing.assert_close(_logits(teacher, ids, lam), expected, rtol=1e-4, atol=1e-5)


def test_control_teacher_ignores_lambda(base, factors, ids):
    teacher = build_teacher(base, "control", factors)
    expected = _logits(_with_update(base, factors, torch.eye(2)), ids, 0.0)
    for lam in (0.0, 0.3, 0.5, 0.7, 1.0):
        torch.testing.assert_close(_logits(teacher, ids, lam), expected, rtol=1e-4, atol=1e-5)
    assert (_logits(base, ids, 0.0) - expected).abs().max() > 1e-2  # but differs from the base


def test_teacher_leaves_the_base_untouched(base, factors, ids):
    before = _logits(base, ids, 0.0)
    build_teacher(base, "step", factors)
    torch.testing.assert_close(_logits(base, ids, 0.0), before, rtol=0, atol=0)


def _masks(ids: torch.Tensor, bins: int = 5) -> torch.Tensor:
    return draw_masks(torch.ones_like(ids, dtype=torch.bool), bins=bins, seed=0).masked[:, 0]


def _student(base, config, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    model = add_adapters(shared_copy(base), config)
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            layer.lora_A.copy_(weights[name][0])
            layer.lora_B.copy_(weights[name][1])
    return model


def test_students_holding_the_exact_update_have_zero_kl(base, factors, ids):
    masks = _masks(ids)
    control = build_teacher(base, "control", factors)
    exact = {
        "lora": LoRAConfig(r=2, scale=1.0, target_modules=TARGETS),
        "nara": NaRAConfig(r=2, scale=1.0, target_modules=TARGETS, hidden_sizes=[4]),  # C = I
        "nara_c": NaRAConfig(r=2, scale=1.0, target_modules=TARGETS, input_mode="constant"),
    }
    for name, config in exact.items():
        student = _student(base, config, factors)
        kl = score_kl(control, student, ids, masks, mask_token_id=MASK)
        assert float(kl.abs().max()) < 1e-5, name
    # Multi-LoRA with 4 bins holds the step teacher: bins 1-2 (λ ≤ 0.5) ΔW_a, bins 3-4 ΔW_b
    step = build_teacher(base, "step", factors)
    stacked = {
        n: (a.expand(4, -1, -1), torch.stack([b, b, b @ R90, b @ R90]))
        for n, (a, b) in factors.items()
    }
    config = MultiLoRAConfig(r=2, num_bins=4, scale=1.0, target_modules=TARGETS)
    kl = score_kl(step, _student(base, config, stacked), ids, masks, mask_token_id=MASK)
    assert float(kl.abs().max()) < 1e-5
    # the same Multi-LoRA against the control teacher is wrong exactly above λ = 0.5
    lam = nara.masked_fraction(masks, torch.ones_like(masks)).view(masks.shape[:2])  # (K, N)
    kl = score_kl(control, _student(base, config, stacked), ids, masks, mask_token_id=MASK)
    assert float(kl[lam <= 0.5].abs().max()) < 1e-5
    assert bool((kl[lam > 0.5] > 1e-4).all())


def test_distillation_lowers_the_kl(base, factors, ids):
    teacher = build_teacher(base, "step", factors)
    torch.manual_seed(0)
    student = add_adapters(shared_copy(base), LoRAConfig(r=4, target_modules=TARGETS))
    masks = _masks(ids)
    before = score_kl(teacher, student, ids, masks, mask_token_id=MASK).mean()
    chunks = torch.randint(0, 120, (32, 12), generator=torch.Generator().manual_seed(2))
    trace = distil(student, teacher, chunks, mask_token_id=MASK, steps=6, batch_size=8, lr=1e-2,
                   seed=0)  # fmt: skip
    after = score_kl(teacher, student, ids, masks, mask_token_id=MASK).mean()
    assert len(trace) == 6
    assert float(after) < 0.9 * float(before)


def test_chunk_kl_matches_a_hand_computation(base, factors, ids):
    teacher = build_teacher(base, "smooth", factors)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[0, [1, 4, 5]] = True  # λ = 3/12
    masked[1, :9] = True  # λ = 9/12
    masked[3, 2] = True  # sample 2 has no masked position: KL 0
    got = chunk_kl(teacher, base, ids, masked, MASK)
    noisy = ids.masked_fill(masked, MASK)
    lam = masked.float().mean(-1)
    log_t = _logits(teacher, noisy, lam).log_softmax(-1)
    log_s = _logits(base, noisy, lam).log_softmax(-1)
    per_pos = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)  # (B, T)
    expected = torch.stack([per_pos[i][masked[i]].mean() for i in (0, 1)] + [torch.tensor(0.0)]
                           + [per_pos[3][masked[3]].mean()])  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_bin_summary_matches_a_hand_computation():
    kl = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    valid = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    out = bin_summary(kl, valid)
    assert out["bins"] == [1.5, 4.0, None]
    assert out["counts"] == [2, 1, 0]
    assert out["overall"] == pytest.approx((1 + 2 + 4) / 3)
    assert bin_summary(kl)["overall"] == pytest.approx(5.0)


def test_bad_settings_fail_with_the_value():
    with pytest.raises(ValueError, match="'wobble'"):
        mechanism_from_dict({"teachers": ["wobble"], "students": {"l": {"method": "lora"}}})
    with pytest.raises(ValueError, match="even"):
        teacher_factors(LLaDAModelLM(tiny_config()), TARGETS, _IDS, rank=3, strength=1.0, seed=0)
    with pytest.raises(ValueError, match="strength"):
        teacher_factors(LLaDAModelLM(tiny_config()), TARGETS, _IDS, rank=2, strength=0.0, seed=0)
    with pytest.raises(ValueError, match="bogus"):
        mechanism_from_dict({"students": {"l": {"method": "lora", "bogus": 1}}})
    with pytest.raises(ValueError, match="unknown mechanism key"):
        mechanism_from_dict({"students": {"l": {"method": "lora"}}, "recipe": {}})


def _config(tmp_path: Path, model_dir: Path) -> Path:
    raw = {
        "kind": "mechanism",
        "name": "micro",
        "output": str(tmp_path / "results"),
        "model": str(model_dir),
        "seeds": [0, 1],
        "teachers": ["step", "control"],
        "teacher": {"rank": 2, "strength": 2.0, "seed": 0},
        "target_modules": ["q_proj", "v_proj"],
        "adapter": {"alpha": 4},
        "students": {"lora": {"method": "lora", "r": 2},
                     "nara": {"method": "nara", "r": 2, "eta": 1.0, "hidden_sizes": [4]}},
        "data": {"tasks": ["arithmetic"], "length": 10, "train_chunks": 16, "eval_chunks": 3},
        "training": {"steps": 2, "batch_size": 4, "lr": 1e-2, "log_every": 0},
        "evaluation": {"bins": 4, "seed": 0, "batch_size": 5},
    }  # fmt: skip
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_experiment_command_runs_reports_and_resumes(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    path = _config(tmp_path, tiny_model_dir)
    assert main(["experiment", str(path), "--dry-run"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 8 and listed[0].startswith("step\tlora\tseed 0")
    assert main(["experiment", str(path)]) == 0
    mech = load_mechanism(path)
    root = tmp_path / "results" / "micro"
    runs = [json.loads((mech.run_dir(*r) / METRICS).read_text()) for r in mech.runs()]
    assert len(runs) == 8 and all(len(r["bins"]) == 4 for r in runs)
    summary = json.loads((root / "results.json").read_text())
    for kind in ("step", "control"):
        for label in ("lora", "nara"):
            mine = [r for r in runs if (r["teacher"], r["method"]) == (kind, label)]
            overall = [r["overall"] for r in mine]
            got = summary["teachers"][kind][label]
            assert got["overall"] == pytest.approx([np.mean(overall), np.std(overall, ddof=1)])
            bin2 = [r["bins"][2] for r in mine]
            assert got["bins"][2] == pytest.approx([np.mean(bin2), np.std(bin2, ddof=1)])
        by = {m: [r["overall"] for r in runs if (r["teacher"], r["method"]) == (kind, m)]
              for m in ("lora", "nara")}  # fmt: skip
        diff = np.subtract(by["nara"], by["lora"])  # paired by seed
        got = summary["teachers"][kind]["nara"]["minus_lora"]
        assert got == pytest.approx([diff.mean(), diff.std(ddof=1)])
        if kind == "step":  # nara's KL on the step teacher minus its KL on the control
            ctrl = [
                r["overall"] for r in runs if (r["teacher"], r["method"]) == ("control", "nara")
            ]
            diff = np.subtract(by["nara"], ctrl)
            got = summary["teachers"]["step"]["nara"]["minus_control"]
            assert got == pytest.approx([diff.mean(), diff.std(ddof=1)])
        base = json.loads((root / kind / "teacher.json").read_text())
        assert summary["teachers"][kind]["base"]["overall"][0] == base["overall"] > 0
    assert (root / "mechanism.png").stat().st_size > 0
    assert "| lora | " in (root / "results.md").read_text()
    stamp = (mech.run_dir("step", "lora", 0) / METRICS).stat().st_mtime_ns
    capsys.readouterr()
    assert main(["experiment", str(path)]) == 0  # resumed: every run is skipped
    assert capsys.readouterr().out.count("done, skipped") == 8
    assert (mech.run_dir("step", "lora", 0) / METRICS).stat().st_mtime_ns == stamp
