"""LoRA-Diffusion trajectory modules: h ← h + s·B_k·A_k·h with k the noise phase of λ (issue 8)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

import nara
from nara.adapters import inject
from nara.adapters.trajectory import (
    PhaseIndex,
    TrajectoryConfig,
    TrajectoryModule,
    TrajectoryRouterConfig,
    compose_trajectories,
    regularizer_terms,
    route_context,
    trajectory_regularizer,
)
from nara.models import LLaDAModelLM, tiny_config

D, LAYERS = 64, 2  # tiny_config(): d_model 64, 2 blocks
BLOCKS = [f"model.transformer.blocks.{i}" for i in range(LAYERS)]
LAM = torch.tensor([0.9, 0.05, 0.5, 0.7])  # phases 0, 2, 1, 0 with 3 equal phases


def base_model(seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config()).eval()


def adapted(config: TrajectoryConfig, seed: int = 0, randomize: int | None = 1) -> LLaDAModelLM:
    """Base model + trajectory modules; ``randomize`` seeds non-zero B (None keeps B = 0)."""
    model = nara.add_adapters(base_model(seed), config)
    if randomize is not None:
        g = torch.Generator().manual_seed(randomize)
        with torch.no_grad():
            for p in model.nara_hub.trajectories.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 / p.shape[-1] ** 0.5)
    return model


def logits(model, ids, lam=LAM, prompt=None):
    routing = nullcontext() if prompt is None else route_context(model, prompt)
    with nara.noise_level(model, lam), routing:
        return model(ids).logits


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 120, (4, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def prompt() -> torch.Tensor:
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, :4] = True
    return mask


CONFIGS = {
    "decreasing": lambda: TrajectoryConfig(),
    "list": lambda: TrajectoryConfig(rank_schedule=[16, 8, 4]),
    "shared": lambda: TrajectoryConfig(rank_schedule=[16, 8, 4], shared=True),
    "two_phases_block1": lambda: TrajectoryConfig(
        num_phases=2, boundaries=[0.3], rank_schedule="increasing", target_modules=[1]
    ),
    "dropout_scale": lambda: TrajectoryConfig(dropout=0.1, scale=None, alpha=4.0),
}
CONFIG_PARAMS = [pytest.param(make, id=name) for name, make in CONFIGS.items()]


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("make_config", CONFIG_PARAMS)
def test_zero_initialised_modules_leave_the_model_unchanged(make_config, ids):
    expected = base_model()(ids).logits
    model = adapted(make_config(), randomize=None).train()  # dropout active, still exact
    assert torch.equal(logits(model, ids), expected)


@pytest.mark.parametrize("make_config", CONFIG_PARAMS)
def test_mixed_batch_equals_one_by_one(make_config, ids):
    model = adapted(make_config())
    batch = logits(model, ids)
    assert not torch.allclose(batch, base_model()(ids).logits, atol=1e-3)  # modules act
    for i in range(len(ids)):
        one = logits(model, ids[i : i + 1], LAM[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], one, rtol=1e-5, atol=1e-5)


def test_phase_index_follows_the_boundaries():
    lam = torch.tensor([0.0, 0.2, 1 / 3, 0.34, 0.5, 2 / 3, 0.7, 1.0])
    # equal thirds: (2/3, 1] → 0 (high noise), (1/3, 2/3] → 1, [0, 1/3] → 2; a boundary goes low
    assert PhaseIndex([1 / 3, 2 / 3])(lam, None).tolist() == [2, 2, 2, 1, 1, 1, 0, 0]
    assert PhaseIndex([0.2, 0.9])(lam, None).tolist() == [2, 2, 1, 1, 1, 1, 1, 0]
    assert PhaseIndex([])(lam, None).tolist() == [0] * 8
    config = TrajectoryConfig(num_phases=4)
    assert config.phase_boundaries == [0.25, 0.5, 0.75]
    b = config.phase_boundaries
    expected = [4 - 1 - sum(float(x) > bj for bj in b) for x in lam]  # the documented formula
    assert PhaseIndex(b)(lam, None).tolist() == expected


@pytest.mark.parametrize("shared", [False, True], ids=["per_phase", "shared_rank_mask"])
def test_module_equals_each_samples_phase_computed_by_hand(shared):
    config = TrajectoryConfig(rank_schedule=[16, 8, 4], shared=shared, scale=0.7)
    module = TrajectoryModule(D, config, torch.device("cpu"))
    torch.nn.init.normal_(module.B)
    h = torch.randn(3, 5, D)
    phase = torch.tensor([2, 0, 1])
    offsets = [0, 0, 0] if shared else [0, 16, 24]
    for i, k in enumerate(phase.tolist()):
        rows = slice(offsets[k], offsets[k] + config.ranks[k])  # shared: the first r_k ranks
        a, b = module.A[rows], module.B[:, rows]  # (r_k, d), (d, r_k)
        expected = 0.7 * (h[i] @ a.T) @ b.T  # (T, d)
        torch.testing.assert_close(module(h, phase)[i], expected, rtol=1e-5, atol=1e-6)
    single = module(h, torch.tensor([1]))  # one phase for the whole batch
    torch.testing.assert_close(single, module(h, torch.tensor([1, 1, 1])))


def test_hook_adds_the_perturbation_after_the_chosen_block(ids):
    model = adapted(TrajectoryConfig(rank_schedule=[16, 8, 4], shared=True, target_modules=[1]))
    block = model.model.transformer["blocks"][1]
    seen = {}
    block.register_forward_pre_hook(lambda m, args: seen.update(args=args))
    block.register_forward_hook(lambda m, args, out: seen.update(out=out))  # after ours
    logits(model, ids)
    h = block.forward(*seen["args"])  # the block without hooks, (B, T, d)
    module = model.nara_hub.trajectories[0]["model__transformer__blocks__1"]
    for i, k in enumerate([0, 2, 1, 0]):  # phases of LAM
        r = [16, 8, 4][k]
        expected = h[i] + (h[i] @ module.A[:r].T) @ module.B[:, :r].T
        torch.testing.assert_close(seen["out"][i], expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- rank schedules


@pytest.mark.parametrize(
    ("config", "ranks", "per_place"),
    [
        (TrajectoryConfig(rank_schedule=[16, 8, 4]), [16, 8, 4], 2 * D * 28),
        (TrajectoryConfig(r=8, rank_schedule="decreasing"), [12, 8, 4], 2 * D * 24),
        (TrajectoryConfig(r=8, rank_schedule="constant"), [8, 8, 8], 2 * D * 24),
        (TrajectoryConfig(r=8, rank_schedule="increasing"), [4, 8, 12], 2 * D * 24),
        (TrajectoryConfig(r=8, num_phases=4), [13, 10, 6, 3], 2 * D * 32),
        (TrajectoryConfig(rank_schedule=[16, 8, 4], shared=True), [16, 8, 4], 2 * D * 16),
    ],
    ids=["list", "decreasing", "constant", "increasing", "four_phases", "shared"],
)
def test_rank_schedule_gives_the_stated_parameter_count(config, ranks, per_place):
    assert config.ranks == ranks
    if not config.shared:
        assert per_place == sum(2 * D * r for r in ranks)  # Σ_k 2·d·r_k per place
    model = adapted(config, randomize=None)
    count = nara.trainable_parameters(model)
    assert count.trainable == LAYERS * per_place
    assert count.hypernetwork == 0
    subset = adapted(dataclass_replace(config, target_modules=["blocks.1"]), randomize=None)
    assert nara.trainable_parameters(subset).trainable == per_place


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_only_trajectory_modules_train_and_get_gradients(ids):
    model = adapted(TrajectoryConfig(rank_schedule=[8, 4, 2]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("nara_hub.trajectories.0.") for n in trainable)
    loss = nara.diffusion_loss(
        model, ids, torch.ones_like(ids, dtype=torch.bool), mask_token_id=127
    ).loss
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip_is_exact(ids, tmp_path):
    config = TrajectoryConfig(rank_schedule=[8, 4, 2], boundaries=[0.2, 0.6], target_modules=[0])
    model = adapted(config)
    expected = logits(model, ids)
    nara.save_adapters(model, tmp_path)
    torch.manual_seed(123)  # the fresh modules draw a different A
    loaded = nara.load_adapters(base_model(), tmp_path)
    assert loaded.nara_hub.config == config
    assert torch.equal(logits(loaded, ids), expected)


def test_loading_into_a_model_of_other_width_says_so(tmp_path):
    nara.save_adapters(adapted(TrajectoryConfig()), tmp_path)
    other = LLaDAModelLM(tiny_config(d_model=32))
    with pytest.raises(ValueError, match="different target layers"):
        nara.load_adapters(other, tmp_path)


# ----------------------------------------------------------------------------- composition


@pytest.fixture
def two_tasks(tmp_path):
    dirs = []
    for seed, schedule in [(1, [16, 8, 4]), (2, "constant")]:
        path = tmp_path / f"task{seed}"
        nara.save_adapters(adapted(TrajectoryConfig(rank_schedule=schedule), randomize=seed), path)
        dirs.append(path)
    return dirs


@pytest.mark.parametrize("winner", [0, 1])
def test_composed_pair_with_one_hot_router_equals_the_single_module(winner, two_tasks, ids, prompt):
    single = logits(nara.load_adapters(base_model(), two_tasks[winner]), ids)
    model = compose_trajectories(base_model(), two_tasks)
    with torch.no_grad():
        model.nara_hub.conditioners["router"].proj.bias.copy_(
            torch.tensor([1e4, -1e4] if winner == 0 else [-1e4, 1e4])
        )
    torch.testing.assert_close(logits(model, ids, prompt=prompt), single, rtol=1e-5, atol=1e-5)


def test_router_alone_trains_and_reads_only_the_prompt(two_tasks, ids, prompt):
    model = compose_trajectories(base_model(), two_tasks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "nara_hub.conditioners.router.proj.weight",
        "nara_hub.conditioners.router.proj.bias",
    }
    count = nara.trainable_parameters(model)
    assert count.trainable == count.hypernetwork == (D + 1) * 2
    torch.nn.init.normal_(model.nara_hub.conditioners["router"].proj.weight)
    out = logits(model, ids, prompt=prompt)
    out.square().mean().backward()
    assert model.nara_hub.conditioners["router"].proj.weight.grad.abs().sum() > 0
    changed = ids.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 120  # answer positions only
    weights = []
    for x in (ids, changed):
        with nara.noise_level(model, LAM), route_context(model, prompt):
            model(x)
            weights.append(model.nara_hub.lookup("router"))  # (B, 2) of this forward
    assert not torch.allclose(weights[0], torch.full((4, 2), 0.5))
    torch.testing.assert_close(weights[1], weights[0])  # the answer positions do not matter


def test_composition_save_load_is_self_contained(two_tasks, ids, prompt, tmp_path):
    model = compose_trajectories(base_model(), two_tasks)
    torch.nn.init.normal_(model.nara_hub.conditioners["router"].proj.weight)
    expected = logits(model, ids, prompt=prompt)
    nara.save_adapters(model, tmp_path / "composed")
    for d in two_tasks:  # the sources are not needed any more
        for f in d.iterdir():
            f.unlink()
    loaded = nara.load_adapters(base_model(), tmp_path / "composed")
    assert isinstance(loaded.nara_hub.config, TrajectoryRouterConfig)
    assert torch.equal(logits(loaded, ids, prompt=prompt), expected)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_composed_model_gradient_checkpointing_gives_same_router_gradients(
    reentrant, two_tasks, ids, prompt
):
    def grads(checkpointing: bool) -> torch.Tensor:
        model = compose_trajectories(base_model(), two_tasks).train()
        torch.manual_seed(5)
        torch.nn.init.normal_(model.nara_hub.conditioners["router"].proj.weight)
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)({"use_reentrant": reentrant})
        logits(model, ids, prompt=prompt).square().mean().backward()
        return model.nara_hub.conditioners["router"].proj.weight.grad

    torch.testing.assert_close(grads(True), grads(False), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- regularisers


def test_regularisers_match_their_formulas():
    config = TrajectoryConfig(
        rank_schedule=[16, 8, 4], orthogonality_weight=0.3, nuclear_weight=0.2
    )
    model = adapted(config)
    orth = nuc = 0.0
    for module in model.nara_hub.trajectories[0].values():
        for start, stop in [(0, 16), (16, 24), (24, 28)]:
            a, b = module.A[start:stop], module.B[:, start:stop]
            orth += (a @ a.T - torch.eye(stop - start)).norm() ** 2
            nuc += torch.linalg.matrix_norm(b @ a, ord="nuc")
    terms = regularizer_terms(model)
    torch.testing.assert_close(terms["orthogonality"], orth)
    torch.testing.assert_close(terms["nuclear"], nuc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        trajectory_regularizer(model), 0.3 * orth + 0.2 * nuc, rtol=1e-4, atol=1e-5
    )
    assert trajectory_regularizer(adapted(TrajectoryConfig())).item() == 0.0


def test_regulariser_gradients_are_finite_at_zero_init():
    model = adapted(TrajectoryConfig(orthogonality_weight=1.0, nuclear_weight=1.0), randomize=None)
    trajectory_regularizer(model).backward()
    for p in model.nara_hub.trajectories.parameters():
        assert torch.isfinite(p.grad).all()


# ----------------------------------------------------------------------------- errors


def test_call_without_noise_level_says_how_to_set_it(ids):
    model = adapted(TrajectoryConfig())
    with pytest.raises(RuntimeError, match=r"no noise level is set.*nara\.noise_level"):
        model(ids)


def test_composed_call_without_prompt_mask_says_how_to_set_it(two_tasks, ids):
    model = compose_trajectories(base_model(), two_tasks)
    context = nara.noise_level(model, LAM)
    with context, pytest.raises(RuntimeError, match="no prompt mask is set; wrap the call in"):
        model(ids)


def test_lambda_batch_mismatch_is_reported(ids):
    model = adapted(TrajectoryConfig())
    with pytest.raises(ValueError, match="noise_level got 2 noise values .* batch size 4"):
        logits(model, ids, torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank_schedule": [8, 4]}, r"has 2 ranks but num_phases=3; .*num_phases=2"),
        ({"rank_schedule": "falling"}, r"one of \('decreasing', 'constant', 'increasing'\)"),
        ({"rank_schedule": [8, 0, 4]}, "positive integer rank"),
        ({"r": 1, "num_phases": 4}, r"\[2, 1, 1, 0\].*raise r"),
        ({"boundaries": [0.6, 0.3]}, r"2 increasing values in \(0, 1\)"),
        ({"boundaries": [0.5]}, r"2 increasing values .* e\.g\. \[0\.333, 0\.667\]"),
        ({"num_phases": 0}, "num_phases must be an integer >= 1"),
        ({"nuclear_weight": -1.0}, "nuclear_weight must be >= 0"),
    ],
)
def test_bad_configs_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrajectoryConfig(**kwargs)


def test_bad_places_and_ranks_say_what_to_fix():
    with pytest.raises(ValueError, match="block index 5 is out of range.*0 … 1"):
        adapted(TrajectoryConfig(target_modules=[5]))
    with pytest.raises(ValueError, match="'nope' matches no module"):
        adapted(TrajectoryConfig(target_modules=["nope"]))
    with pytest.raises(ValueError, match=r"ranks \[96, 8, 4\] exceed the hidden size 64"):
        adapted(TrajectoryConfig(rank_schedule=[96, 8, 4]))
    with pytest.raises(ValueError, match="at least 2 modules"):
        TrajectoryRouterConfig(sources=["only_one"])


def test_merge_is_refused_and_adding_twice_too():
    model = adapted(TrajectoryConfig())
    with pytest.raises(ValueError, match="perturb hidden states, not weights"):
        nara.merge_adapters(model, lam=0.5)
    with pytest.raises(ValueError, match="already has nara adapters"):
        nara.add_adapters(model, TrajectoryConfig())


def test_config_round_trips_and_builds_from_a_recipe():
    from nara.training.adapters import build_adapter_config

    config = build_adapter_config(
        "trajectory", {"rank_schedule": "64,32,8", "target_modules": "0,3", "shared": "true"}
    )
    assert config == TrajectoryConfig(rank_schedule=[64, 32, 8], target_modules=[0, 3], shared=True)
    assert nara.adapters.AdapterConfig.from_dict(config.to_dict()) == config
    assert "rank_schedule" in TrajectoryConfig.field_help()


def test_adapter_parameters_include_the_modules():
    model = adapted(TrajectoryConfig(rank_schedule=[4, 2, 1]), randomize=None)
    names = set(inject.adapter_parameters(model))
    assert names == {
        f"nara_hub.trajectories.0.{b.replace('.', '__')}.{t}" for b in BLOCKS for t in "AB"
    }
