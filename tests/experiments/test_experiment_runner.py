"""The experiment runner end to end, in-process, on a tiny random model: a 2-method × 2-seed ×
1-task grid (plus the base), the mean ± std table against numpy, skipping finished runs, and
resuming a run killed after its first checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import tiny_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402
from nara.experiments.grid import load_grid  # noqa: E402
from nara.experiments.runner import METRICS, report, run_grid  # noqa: E402


def _grid_file(tmp_path: Path, model_dir: Path) -> Path:
    grid = {
        "name": "micro",
        "output": str(tmp_path / "results"),
        "tasks": ["arithmetic"],
        "seeds": [0, 1],
        "recipe": {
            "model": {"name": str(model_dir), "dtype": "float32"},
            "adapter": {"alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "data": {"max_examples": 16, "val_max_examples": 4, "max_length": 160},
            "training": {"lr": 1e-3, "batch_size": 4, "max_steps": 2, "save_every": 1},
        },
        "methods": {
            "base": {"method": "base"},
            "lora": {"method": "lora", "r": 2},
            "nara": {"method": "nara", "r": 2, "hidden_sizes": [8]},
        },
        "evaluation": {"limit": 3, "batch_size": 3, "gen_length": 4},
        "profile": {"examples": 3, "bins": 3},
    }
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):  # noqa: F811
    tmp_path = tmp_path_factory.mktemp("grid")
    path = _grid_file(tmp_path, tiny_model_dir)
    assert main(["experiment", str(path)]) == 0
    return path, load_grid(path)


def test_grid_layout_and_files(finished):
    _, grid = finished
    runs = grid.runs()
    assert [(r.label, r.seed) for r in runs] == [
        ("base", 0),
        ("lora", 0),
        ("nara", 0),
        ("lora", 1),
        ("nara", 1),
    ]  # fmt: skip  (seed-major: a grid stopped early holds whole seeds)
    for run in runs:
        assert run.run_dir == grid.root / "arithmetic" / run.label / f"seed{run.seed}"
        metrics = json.loads((run.run_dir / METRICS).read_text())
        assert metrics["examples"] == 3
        assert list((run.run_dir / "eval").glob("*.jsonl"))  # per-example predictions
        if not run.is_base:
            assert metrics["steps"] == 2 and metrics["trainable_params"] > 0
            assert (run.run_dir / "final" / "adapter_config.json").is_file()
            assert (
                yaml.safe_load((run.run_dir / "config.yaml").read_text())["training"]["seed"]
                == run.seed
            )
            assert not (run.run_dir / "checkpoints").exists()  # pruned once the run finished
    profile = json.loads((grid.root / "arithmetic" / "profile" / "profile.json").read_text())
    assert set(profile["gain"]) == {"lora", "nara"} and len(profile["loss"]["base"]) == 3
    assert (grid.root / "arithmetic" / "profile" / "profile.png").is_file()  # fmt: skip


def test_table_mean_std_match_numpy(finished):
    _, grid = finished
    summary = json.loads((grid.root / "results.json").read_text())
    text = (grid.root / "results.md").read_text()
    for label in ("lora", "nara"):
        rows = [json.loads((grid.root / "arithmetic" / label / f"seed{s}" / METRICS).read_text())
                for s in (0, 1)]  # fmt: skip
        acc = np.array([r["accuracy"] for r in rows])
        assert summary[label]["tasks"]["arithmetic"]["accuracy"] == acc.tolist()
        assert f"| {label} | {rows[0]['trainable_params']:,} | " in text
        assert f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}" in text
        val = np.array([r["best_val_loss"] for r in rows])
        assert f"{val.mean():.4f} ± {val.std(ddof=1):.4f}" in text
    assert "![arithmetic](arithmetic/profile/profile.png)" in text


def test_rerun_skips_finished_runs(finished):
    path, grid = finished
    before = {r.run_dir: (r.run_dir / METRICS).stat().st_mtime_ns for r in grid.runs()}
    lines: list[str] = []
    run_grid(load_grid(path), log=lines.append)
    assert sum("done, skipped" in line for line in lines) == len(before)
    assert before == {r.run_dir: (r.run_dir / METRICS).stat().st_mtime_ns for r in grid.runs()}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("evaluation.limit=2", "evaluation.limit"),
        ("evaluation.sampler=dream", "evaluation.sampler"),
        ("recipe.training.lr=0.002", "training.lr"),
    ],
)
def test_rerun_with_other_settings_is_refused(finished, override, field):
    """A finished run is never reported for a grid whose settings changed since."""
    from nara.runs import RunFolderError

    path, grid = finished
    before = {r.run_dir: (r.run_dir / METRICS).read_bytes() for r in grid.runs()}
    with pytest.raises(RunFolderError, match=rf"other settings \(.*{field}.*\).*output="):
        run_grid(load_grid(path, [override]), log=lambda _: None)
    with pytest.raises(RunFolderError, match=field):  # `--report` alone checks the same
        report(load_grid(path, [override]))
    assert before == {r.run_dir: (r.run_dir / METRICS).read_bytes() for r in grid.runs()}


def test_killed_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    from nara.training.trainer import Trainer

    path = _grid_file(tmp_path, tiny_model_dir)
    overrides = ["seeds=[0]", "profile.enabled=false"]
    original = Trainer._save_checkpoint

    def killed(self):
        original(self)
        raise RuntimeError("killed after the first checkpoint")

    monkeypatch.setattr(Trainer, "_save_checkpoint", killed)
    assert main(["experiment", str(path), *overrides, "--methods", "lora"]) == 2
    run_dir = tmp_path / "results" / "micro" / "arithmetic" / "lora" / "seed0"
    assert (run_dir / "checkpoints").is_dir() and not (run_dir / METRICS).exists()
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    capsys.readouterr()
    assert main(["experiment", str(path), *overrides, "--methods", "lora"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((run_dir / METRICS).read_text())["steps"] == 2
    report(load_grid(path, overrides))  # the report works on a partial grid (no nara runs)


def test_evaluation_sampler_keys_reach_the_sampler(tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    """evaluation.sampler / top_p / top_k / alg_temp are checked on load and passed to the
    sampler call (a spy around the real one: the base run still generates and scores)."""
    import nara.commands._common as common

    path = _grid_file(tmp_path, tiny_model_dir)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\], got 1.5"):
        load_grid(path, ["evaluation.top_p=1.5"])
    with pytest.raises(ValueError, match="sampler must be one of"):
        load_grid(path, ["evaluation.sampler=ar"])
    calls = []
    real = common.make_generate_fn
    monkeypatch.setattr(
        common, "make_generate_fn", lambda *a, **kw: calls.append(kw) or real(*a, **kw)
    )
    options = ["evaluation.sampler=dream", "evaluation.top_k=2", "evaluation.alg_temp=0.5"]
    grid = load_grid(path, [*options, "profile.enabled=false"])
    run_grid(grid, only=["base"], log=lambda _: None)
    assert [(c["sampler"], c["top_p"], c["top_k"], c["alg_temp"]) for c in calls] == [
        ("dream", None, 2, 0.5)
    ]
    (base,) = [r for r in grid.runs() if r.is_base]
    assert json.loads((base.run_dir / METRICS).read_text())["examples"] == 3
