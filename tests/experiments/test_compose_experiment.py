"""scripts/compose_experiment.py: its recipes keep the methods grid's budget, the router's weights
match a hand computation, and the table's mean ± std matches numpy."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "tests" / "training"))
from training_support import build_char_tokenizer  # noqa: E402

from nara.adapters import TrajectoryConfig, add_adapters, save_adapters  # noqa: E402
from nara.adapters.noise import find_hub  # noqa: E402
from nara.adapters.trajectory import compose_trajectories  # noqa: E402
from nara.experiments.grid import load_grid  # noqa: E402
from nara.models import LLaDAModelLM, tiny_config  # noqa: E402
from nara.training.config import RecipeConfig  # noqa: E402


def _script():
    spec = importlib.util.spec_from_file_location("compose_experiment", ROOT / "scripts" / "compose_experiment.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ce = _script()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose")
    args = ce.parse_args(["--seeds", "0", "--output", str(out), "--router-lr", "0.1"])
    grid = ce.load_setup(args)
    return args, grid, ce.part_recipes(grid, 0, out / "seed0", args.lora_rank, args.router_lr)


def test_each_module_is_the_methods_grid_trajectory_run(setup):
    _, _, recipes = setup
    tasks = "tasks=[commonsense,programs]"  # the compose pair (the grid itself runs arithmetic)
    methods = load_grid(ROOT / "configs" / "experiments" / "methods.yaml", [tasks])
    for task in ("commonsense", "programs"):
        (run,) = [r for r in methods.runs(["trajectory"]) if r.task == task and r.seed == 0]
        mine = copy.deepcopy(recipes[f"module_{task}"])
        expected = copy.deepcopy(run.recipe)
        assert mine.pop("output_dir").endswith(f"seed0/module_{task}")
        expected.pop("output_dir")
        assert mine == expected


def test_router_and_lora_train_on_the_mix(setup):
    args, grid, recipes = setup
    steps = grid.recipe["training"]["max_steps"]
    router, fast, lora = recipes["router"], recipes["router_lr"], recipes["lora_mix"]
    mix = "embedded:commonsense+embedded:programs"
    assert router["data"]["source"] == fast["data"]["source"] == lora["data"]["source"] == mix
    assert router["adapter"]["sources"] == [
        str(args.output / "seed0" / f"module_{t}" / "final") for t in ("commonsense", "programs")
    ]
    assert router["training"]["max_steps"] == steps
    assert (
        router["training"]["lr"] == grid.recipe["training"]["lr"] and fast["training"]["lr"] == 0.1
    )
    # LoRA: rank 16 at the methods grid's scale alpha / r = 16 / 8, for the modules' steps together
    assert (lora["adapter"]["r"], lora["adapter"]["alpha"]) == (16, 32)
    assert lora["training"]["max_steps"] == 2 * steps
    for name in ("module_commonsense", "lora_mix"):
        RecipeConfig.from_dict(recipes[name])  # the nara train schema accepts them


def test_router_weights_match_a_softmax_of_the_mean_prompt_embedding(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    sources = []
    for name in ("a", "b"):
        model = add_adapters(LLaDAModelLM(tiny_config()), TrajectoryConfig(r=2))
        sources.append(save_adapters(model, tmp_path / name))
    model = compose_trajectories(LLaDAModelLM(tiny_config()).eval(), sources)
    prompts = ["1+2=", "what is 7*8?", "x"]
    assert np.allclose(ce.router_weights(model, tokenizer, prompts), [0.5, 0.5])  # zero init

    proj = find_hub(model).conditioners["router"].proj
    with torch.no_grad():
        proj.weight.normal_(0.0, 30.0)
        proj.bias.copy_(torch.tensor([0.3, -0.2]))
    table = model.get_input_embeddings().weight.detach()
    expected = np.mean(
        [
            torch.softmax(proj(table[tokenizer(p)["input_ids"]].mean(0)), -1).detach().numpy()
            for p in prompts
        ],
        axis=0,
    )
    got = ce.router_weights(model, tokenizer, prompts)
    assert np.allclose(got, expected, atol=1e-5) and not np.allclose(got, [0.5, 0.5], atol=1e-2)


def test_the_table_reports_mean_and_sample_std_over_seeds():
    accs = {0: (40.0, 10.0), 1: (50.0, 30.0)}
    rows = [
        {"part": "lora_mix", "seed": s, "trainable_params": 98304, "adapter_params": 98304,
         "accuracy": {"arithmetic": a, "programs": p}, "router_weights": {}}
        for s, (a, p) in accs.items()
    ]  # fmt: skip
    text = ce.render(rows, ["arithmetic", "programs"], [0, 1], {"rank": 16, "router_lr": None})
    arith, progs = [40.0, 50.0], [10.0, 30.0]
    avg = [(40 + 10) / 2, (50 + 30) / 2]
    cells = [f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in (arith, progs, avg)]
    assert f"| LoRA r16 trained on the mix | 98,304 | 98,304 | {' | '.join(cells)} |" in text


def test_the_validation_loss_is_paired_across_models():
    """Same masks for every model: a zero-initialised module (no change to the model) gives the
    base's loss exactly, a perturbed one a different loss; mask seeds make it repeatable."""
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    records = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(4)]
    base = LLaDAModelLM(tiny_config()).eval()
    loss = ce.task_loss(base, tokenizer, 127, records, max_length=32)
    assert loss == ce.task_loss(base, tokenizer, 127, records, max_length=32)
    adapted = add_adapters(copy.deepcopy(base), TrajectoryConfig(r=2)).eval()
    assert ce.task_loss(adapted, tokenizer, 127, records, max_length=32) == pytest.approx(loss)
    with torch.no_grad():
        for module in find_hub(adapted).trajectories[0].values():
            module.B.normal_()
    assert ce.task_loss(adapted, tokenizer, 127, records, max_length=32) != pytest.approx(loss)
