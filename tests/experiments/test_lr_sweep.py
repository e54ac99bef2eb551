"""The grid's per-method learning-rate sweep: the rate is chosen by validation loss only (a test
score planted at another rate changes nothing), the chosen rate reaches the recipe and the run
folder, the sweep run at the chosen rate is the sweep seed's run (not trained twice), finished
sweep runs are skipped on a rerun and a killed one resumes from its checkpoint."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from test_experiment_runner import _grid_file  # noqa: E402  (the same micro grid)
from training_support import tiny_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402
from nara.experiments.grid import grid_from_dict, load_grid  # noqa: E402
from nara.experiments.runner import METRICS, SWEEP, report, select_lrs  # noqa: E402

RATES = [1e-4, 1e-3, 1e-2]


def _raw(tmp_path: Path, model: str = "tiny") -> dict:
    """The runner tests' micro grid (base, LoRA, NaRA; seeds 0, 1) with a three-rate sweep."""
    raw = yaml.safe_load(_grid_file(tmp_path, Path(model)).read_text())
    return {
        **raw,
        "name": "sweep",
        "lr_sweep": {"lrs": RATES, "seed": 0},
        "profile": {"enabled": False},
    }


def _write(spec, name: str, **fields) -> None:
    """A run record (sweep.json or metrics.json) of ``spec`` with ``fields``."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    record = {"task": spec.task, "method": spec.label, "seed": spec.seed, "lr": spec.lr, **fields}
    (spec.run_dir / name).write_text(json.dumps(record))


def test_the_rate_is_chosen_by_validation_loss_never_by_test_accuracy(tmp_path):
    grid = grid_from_dict(_raw(tmp_path))
    val = {("lora", 1e-4): 0.9, ("lora", 1e-3): 0.5, ("lora", 1e-2): 0.7,
           ("nara", 1e-4): math.nan, ("nara", 1e-3): 0.4, ("nara", 1e-2): 0.4}  # fmt: skip
    for run in grid.sweep_runs():
        _write(run, SWEEP, run={"recipe": run.recipe}, best_val_loss=val[run.label, run.lr])
        # a planted test score that would pick another rate if the test split were read
        _write(run, METRICS, accuracy=100.0 if run.lr == 1e-2 else 0.0)
    # lora: lowest validation loss; nara: NaN never wins, a tie goes to the earlier rate
    assert select_lrs(grid) == {("arithmetic", "lora"): 1e-3, ("arithmetic", "nara"): 1e-3}


def test_an_unfinished_sweep_chooses_nothing_and_a_diverged_one_is_an_error(tmp_path):
    grid = grid_from_dict(_raw(tmp_path))
    lora = [r for r in grid.sweep_runs() if r.label == "lora"]
    for run in lora[:2]:
        _write(run, SWEEP, run={"recipe": run.recipe}, best_val_loss=0.5)
    assert select_lrs(grid) == {}  # one rate still missing
    _write(lora[2], SWEEP, run={"recipe": lora[2].recipe}, best_val_loss=None)
    assert select_lrs(grid) == {("arithmetic", "lora"): RATES[0]}
    for run in lora:
        _write(run, SWEEP, run={"recipe": run.recipe}, best_val_loss=math.inf)
    with pytest.raises(ValueError, match=r"lora on arithmetic: no rate .* smaller rates"):
        select_lrs(grid)


def test_the_chosen_rate_reaches_each_seeds_recipe_and_folder(tmp_path):
    from nara.training.config import RecipeConfig

    grid = grid_from_dict(_raw(tmp_path))
    runs = grid.runs(lrs={("arithmetic", "lora"): 1e-2})
    lora = [r for r in runs if r.label == "lora"]
    assert [r.seed for r in lora] == [0, 1]
    for run in lora:
        assert RecipeConfig.from_dict(run.recipe).training.lr == 1e-2 and run.lr == 1e-2
        assert run.run_dir == grid.root / "arithmetic" / "lora" / "lr0.01" / f"seed{run.seed}"
    nara = [r for r in runs if r.label == "nara"]  # not chosen yet: the recipe's rate
    assert {r.recipe["training"]["lr"] for r in nara} == {1e-3}
    (base,) = [r for r in runs if r.is_base]
    assert base.run_dir == grid.root / "arithmetic" / "base" / "seed0" and base.lr is None
    sweep = grid.sweep_runs(["lora"])
    assert [(r.lr, r.seed, r.recipe["training"]["lr"]) for r in sweep] == [
        (lr, 0, lr) for lr in RATES
    ]
    # the sweep seed's run at the chosen rate IS the sweep run: same folder, same recipe
    assert (lora[0].run_dir, lora[0].recipe) == (sweep[2].run_dir, sweep[2].recipe)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"lrs": []}, "non-empty list"),
        ({"lrs": [1e-3, -1.0]}, r"-1.0 is not a positive learning rate"),
        ({"lrs": [1e-3, 0.001]}, "repeats a rate"),
        ({"lrs": [1e-3], "steps": 5}, "optionally 'seed'"),
        ({"lrs": [1e-3], "seed": "zero"}, "integer seed"),
    ],
)
def test_bad_sweeps_are_refused_by_name(tmp_path, sweep, message):
    with pytest.raises(ValueError, match=message):
        grid_from_dict({**_raw(tmp_path), "lr_sweep": sweep})


def test_a_sweep_needs_validation(tmp_path):
    raw = _raw(tmp_path)
    raw["recipe"]["data"]["val_max_examples"] = 0
    with pytest.raises(ValueError, match="val_max_examples is 0; set it above 0"):
        grid_from_dict(raw)


def test_sweep_end_to_end_reuses_skips_and_resumes(tiny_model_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    from nara.training.trainer import Trainer

    raw = _raw(tmp_path, str(tiny_model_dir))
    raw["lr_sweep"]["lrs"] = [1e-4, 1e-2]
    raw["methods"] = {k: raw["methods"][k] for k in ("base", "lora")}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    trained, original_train, original_save = [], Trainer.train, Trainer._save_checkpoint

    def counted(self):
        trained.append((self.cfg.lr, self.cfg.seed))
        return original_train(self)

    def killed(self):
        original_save(self)
        raise RuntimeError("killed after the first checkpoint")

    monkeypatch.setattr(Trainer, "train", counted)
    monkeypatch.setattr(Trainer, "_save_checkpoint", killed)
    assert main(["experiment", str(path)]) == 2  # the first sweep run dies mid-way
    first = tmp_path / "results" / "sweep" / "arithmetic" / "lora" / "lr0.0001" / "seed0"
    assert (first / "checkpoints").is_dir() and not (first / SWEEP).exists()
    monkeypatch.setattr(Trainer, "_save_checkpoint", original_save)
    capsys.readouterr()
    assert main(["experiment", str(path)]) == 0
    assert "resumed from" in capsys.readouterr().out

    grid = load_grid(path)
    ((pair, lr),) = select_lrs(grid).items()
    records = {r.lr: json.loads((r.run_dir / SWEEP).read_text()) for r in grid.sweep_runs()}
    assert lr == min(records, key=lambda rate: records[rate]["best_val_loss"])
    # two sweep runs (the first twice: killed, resumed), then only seed 1: seed 0 is the sweep's
    assert trained == [(1e-4, 0), (1e-4, 0), (1e-2, 0), (lr, 1)]
    other = next(r for r in grid.sweep_runs() if r.lr != lr)
    assert not (other.run_dir / METRICS).exists()  # a rate not chosen is never test-scored
    for run in grid.runs(lrs=select_lrs(grid)):
        metrics = json.loads((run.run_dir / METRICS).read_text())
        assert metrics["lr"] == (None if run.is_base else lr)
    seed0 = json.loads((first.parent.parent / f"lr{lr:g}" / "seed0" / METRICS).read_text())
    assert seed0["train_seconds"] == records[lr]["train_seconds"]  # the sweep's training time
    text = (grid.root / "results.md").read_text()
    assert f"(lr {lr:g})" in text and "Learning-rate sweep (seed 0)" in text
    assert f" | {lr:g} |" in text  # the sweep table's chosen column

    lines: list[str] = []
    from nara.experiments.runner import run_grid

    run_grid(grid, log=lines.append)
    assert len(trained) == 4  # nothing trained again
    assert sum("done, skipped" in line for line in lines) == 2 + 3  # sweep runs, then runs
    assert report(grid) + "\n" == text  # the same report from the files alone
