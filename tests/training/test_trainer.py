"""The training loop: optimizer groups and schedule, and exact resume of a killed run."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from training_support import run_config

from nara.training import checkpoint as ckpt
from nara.training.metrics import read_metrics
from nara.training.optim import build_optimizer, build_scheduler, parameter_groups
from nara.training.trainer import Trainer


def test_groups_give_the_hypernetwork_its_own_lr_and_no_decay_on_vectors():
    from nara.adapters import NaRAConfig, add_adapters
    from nara.models import LLaDAModelLM, tiny_config

    model = add_adapters(LLaDAModelLM(tiny_config()), NaRAConfig(r=4, hidden_sizes=[8]))
    groups = {
        g["name"]: g for g in parameter_groups(model, lr=1.0, hyper_lr=0.1, weight_decay=0.05)
    }
    hub = {id(p) for p in model.nara_hub.parameters()}
    assert set(groups) == {"adapter", "hyper", "hyper_no_decay"}
    assert all(id(p) in hub for p in groups["hyper"]["params"] + groups["hyper_no_decay"]["params"])
    assert not any(id(p) in hub for p in groups["adapter"]["params"])
    assert groups["hyper"]["lr"] == 0.1 and groups["adapter"]["lr"] == 1.0
    assert (
        groups["hyper_no_decay"]["weight_decay"] == 0.0 and groups["hyper"]["weight_decay"] == 0.05
    )
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_trainable


def test_warmup_then_linear_decay_per_group():
    p, q = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    model = torch.nn.Module()
    model.a, model.b = torch.nn.Parameter(p.data), torch.nn.Parameter(q.data)
    opt = build_optimizer(model, lr=1.0, hyper_lr=None, betas=(0.9, 0.95), weight_decay=0.0)
    sched = build_scheduler(opt, schedule="linear", warmup_ratio=0.2, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = math.ceil(0.2 * 10)
    expected = [s / warm if s < warm else (10 - s) / (10 - warm) for s in range(10)]
    assert seen == pytest.approx(expected)


def _curve(path):
    return [r for r in read_metrics(path)]


def _numbers(record):
    return {k: v for k, v in record.items() if k not in ("elapsed_s", "tokens_per_s")}


class Killed(Exception):
    pass


def test_killed_and_resumed_run_matches_the_uninterrupted_one(
    tiny_model_dir, arith_files, tmp_path, monkeypatch
):
    full = run_config(tiny_model_dir, arith_files, tmp_path / "full")
    Trainer(full, show_progress=False).train()

    # the same run, killed after update 7 (its last checkpoint is update 6, mid-epoch 1) ...
    broken = run_config(tiny_model_dir, arith_files, tmp_path / "broken")
    original = Trainer._after_update

    def dying(self):
        original(self)
        if self.state.step == 7:
            raise Killed

    monkeypatch.setattr(Trainer, "_after_update", dying)
    with pytest.raises(Killed):
        Trainer(broken, show_progress=False).train()
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "broken")] == [
        "step_0000003",
        "step_0000006",
    ]

    # ... and resumed from it
    resumed = run_config(tiny_model_dir, arith_files, tmp_path / "broken", "training.resume=latest")
    trainer = Trainer(resumed, show_progress=False)
    assert (trainer.state.step, trainer.state.epoch, trainer.state.batches_in_epoch) == (6, 1, 4)
    trainer.train()

    a = _curve(tmp_path / "full" / "metrics.jsonl")
    b = _curve(tmp_path / "broken" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b]  # step 7 of the dead run was dropped
    assert len([r for r in a if "loss" in r]) == 10 and len([r for r in a if "val_loss" in r]) == 2
    for ra, rb in zip(a, b):
        na, nb = _numbers(ra), _numbers(rb)
        assert na.keys() == nb.keys()
        for key in na:
            assert nb[key] == pytest.approx(na[key], rel=1e-6, abs=1e-7), (ra["step"], key)
    wa = load_file(tmp_path / "full" / "final" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "broken" / "final" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-6, atol=1e-7)


def test_checkpoints_hold_only_trainable_weights(tiny_model_dir, arith_files, tmp_path):
    config = run_config(tiny_model_dir, arith_files, tmp_path, "training.max_steps=4")
    trainer = Trainer(config, show_progress=False)
    trainer.train()
    saved = load_file(ckpt.checkpoint_dir(tmp_path, 3) / "model.safetensors")
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    assert (tmp_path / "best" / "adapter_config.json").is_file()
    assert (tmp_path / "final" / "adapter_model.safetensors").is_file()
