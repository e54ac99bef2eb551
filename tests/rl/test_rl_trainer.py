"""The RL trainer on a tiny random LLaDA: its rewards, losses and reference pass against
independent computations, exact resume, a starting adapter, and clear errors for bad recipes."""

from __future__ import annotations

import copy
import string

import pytest
import torch
from rl_support import EOS, MASK, loaded, recipe, sums_file
from safetensors.torch import load_file

from nara.adapters import LoRAConfig, add_adapters, load_adapters, save_adapters
from nara.cli import main
from nara.evaluation import tasks
from nara.rl import grpo_loss, per_token_logprobs, reference_logprobs, wd1_loss
from nara.rl.config import load_rl_recipe
from nara.rl.trainer import RLTrainer, completion_mask
from nara.training import checkpoint as ckpt
from nara.training.config import ConfigError
from nara.training.metrics import read_metrics


def _trainer(config, seed: int = 0) -> RLTrainer:
    return RLTrainer(config, loaded=loaded(seed), show_progress=False)


def test_completion_mask_keeps_the_first_eos():
    ids = torch.tensor([[5, EOS, EOS, EOS], [5, 6, 7, 8], [EOS, 9, EOS, 1]])
    assert completion_mask(ids, EOS).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_rollout_rewards_and_grpo_loss_match_a_direct_computation(tmp_path):
    trainer = _trainer(recipe(tmp_path, "rl.beta=0.1"))
    base = copy.deepcopy(loaded(0)[0]).eval()  # the same base weights, no adapter
    try:
        with torch.no_grad():  # a non-zero adapter, so policy and reference differ
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.3)
        rollout = trainer.rollout()
    finally:
        trainer.close()
    n = rollout.completion_ids.shape[0]
    assert n == 2 * 4 and rollout.records[0] is rollout.records[3]  # groups of 4 completions

    # rewards: the exact scorer of nara eval, by hand on the decoded texts
    task = tasks.file_task(sums_file(tmp_path), "exact")
    texts = trainer.tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    assert texts == rollout.texts
    expected = [float(tasks.score(task, r, t)[1]) for r, t in zip(rollout.records, texts)]
    assert rollout.rewards.tolist() == expected

    # the same prompt mask at every use: the estimate with a fresh generator of the same seed
    def estimate(model):
        return per_token_logprobs(
            model,
            rollout.prompt_ids,
            rollout.completion_ids,
            mask_token_id=MASK,
            prompt_mask_prob=0.3,
            generator=trainer._mask_generator(rollout, 0),
            prompt_attention=rollout.prompt_attention,
            completion_mask=rollout.completion_mask,
        )

    policy = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rollout.old_logp, estimate(policy), rtol=0, atol=0)
        torch.testing.assert_close(rollout.ref_logp, estimate(base), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rollout.old_logp, rollout.ref_logp)

    # the trainer's loss is grpo_loss on these tensors with hand-made group advantages
    r = rollout.rewards.view(2, 4)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
    logp = estimate(policy)
    want = grpo_loss(logp, rollout.old_logp, adv, rollout.completion_mask, ref_logp=rollout.ref_logp, beta=0.1)  # fmt: skip
    got = trainer.objective(rollout, slice(0, n), logp)
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=0)
    torch.testing.assert_close(got.kl, want.kl, rtol=0, atol=0)
    assert got.kl > 0


def test_wd1_loss_is_the_weighted_likelihood(tmp_path):
    trainer = _trainer(recipe(tmp_path, "rl.algorithm=wd1"))
    try:
        rollout = trainer.rollout()
    finally:
        trainer.close()
    assert rollout.old_logp is None and rollout.ref_logp is None  # no ratio, no reference
    logp = torch.randn(rollout.completion_ids.shape)
    got = trainer.objective(rollout, slice(0, 8), logp)
    want = wd1_loss(logp, rollout.rewards, rollout.completion_mask, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["diffu_grpo", "wd1"])
@pytest.mark.parametrize("method", ["lora", "nara"])
def test_a_few_steps_train_the_adapter_and_log_rewards(tmp_path, algorithm, method):
    extra = ["adapter.hidden_sizes=[8]"] if method == "nara" else []
    config = recipe(
        tmp_path,
        f"rl.algorithm={algorithm}",
        f"adapter.method={method}",
        "rewards.custom=rl_support:letter_count",  # rewards vary within groups: gradients flow
        "rl.micro_batch_size=4",  # 8 completions in two passes of one group each
        *extra,
    )
    trainer = _trainer(config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    result = trainer.train()
    assert result.steps == 4 and (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    changed = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]  # fmt: skip
    assert changed
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    updates = [r for r in records if "loss" in r]
    rollouts = [r for r in records if "rollout" in r]
    assert [r["step"] for r in updates] == [1, 2, 3, 4]
    assert [(r["step"], r["rollout"]) for r in rollouts] == [(2, 1), (4, 2)]
    assert all(0.0 <= r["reward_correctness"] <= 1.0 and "reward_custom" in r for r in rollouts)
    assert ("kl" in rollouts[0]) == (algorithm == "diffu_grpo")


class Killed(Exception):
    pass


def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch):
    extra = ("adapter.method=nara", "adapter.hidden_sizes=[8]", "adapter.dropout=0.1")
    extra += ("rewards.custom=rl_support:letter_count",)
    _trainer(recipe(tmp_path / "full", *extra)).train()

    original = RLTrainer._after_update

    def dying(self):
        original(self)
        if self.state.step == 3:  # mid-way through the second rollout
            raise Killed

    monkeypatch.setattr(RLTrainer, "_after_update", dying)
    with pytest.raises(Killed):
        _trainer(recipe(tmp_path / "broken", *extra)).train()
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "broken" / "run")] == ["step_0000002"]
    resumed = _trainer(recipe(tmp_path / "broken", *extra, "training.resume=latest"))
    assert (resumed.state.step, resumed.state.micro_batches) == (2, 1)
    resumed.train()

    a = load_file(tmp_path / "full" / "run" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "broken" / "run" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    rewards = [
        [
            r["reward"]
            for r in read_metrics(tmp_path / d / "run" / "metrics.jsonl")
            if "rollout" in r
        ]
        for d in ("full", "broken")
    ]
    assert rewards[0] == rewards[1] and len(rewards[0]) == 2


def _sft_adapter(folder, seed: int = 1, scale: float = 1.0) -> torch.nn.Module:
    """A non-zero LoRA r=4 adapter on ``loaded(seed)``'s weights, saved to ``folder``."""
    model = add_adapters(loaded(seed)[0], LoRAConfig(r=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    save_adapters(model, folder)
    return model


def test_init_from_starts_at_the_saved_adapter(tmp_path):
    model = _sft_adapter(tmp_path / "sft")
    saved = {n: p for n, p in model.named_parameters() if p.requires_grad}
    trainer = _trainer(recipe(tmp_path, f"adapter.init_from={tmp_path / 'sft'}"))
    trainer.close()
    got = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert got.keys() == saved.keys()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    with pytest.raises(ConfigError, match="r: folder 4 vs recipe 8"):
        _trainer(recipe(tmp_path, f"adapter.init_from={tmp_path / 'sft'}", "adapter.r=8"))


def test_with_init_from_the_reference_is_the_starting_adapter(tmp_path):
    """KL is exactly 0 at the first update (dropout off, μ = 1), the policy then moves, and the
    reference stays the SFT adapter: its estimate equals the saved adapter loaded into a fresh
    copy of the base model, after the RL steps too."""
    _sft_adapter(tmp_path / "sft", seed=0, scale=0.3)
    config = recipe(
        tmp_path,
        f"adapter.init_from={tmp_path / 'sft'}",
        "adapter.dropout=0",
        "rewards.custom=rl_support:letter_count",  # rewards differ in a group: the policy moves
        "rl.inner_iterations=1",
        "rl.beta=0.1",
        "training.save_every=none",
    )
    trainer = _trainer(config)
    trainer.train()
    kl = [r["kl"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout" in r]
    assert len(kl) == 4 and kl[0] == 0.0 and kl[-1] > 0

    sft = load_adapters(loaded(0)[0], tmp_path / "sft").eval()
    prompts = trainer.tokenizer([r.prompt for r in trainer.records[:3]], return_tensors="pt")
    completions = torch.tensor([[5, 6, 7, 8], [9, 10, 11, EOS], [12, 13, 14, 15]])
    kw = {"mask_token_id": MASK, "prompt_mask_prob": 0.3}
    gen = torch.Generator
    policy = trainer.model.eval()
    got = reference_logprobs(policy, prompts["input_ids"], completions, reference=trainer.reference, generator=gen().manual_seed(3), **kw)  # fmt: skip
    with torch.no_grad():
        want = per_token_logprobs(sft, prompts["input_ids"], completions, generator=gen().manual_seed(3), **kw)  # fmt: skip
        moved = per_token_logprobs(policy, prompts["input_ids"], completions, generator=gen().manual_seed(3), **kw)  # fmt: skip
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (moved - want).abs().max() > 1e-4  # the RL steps changed the policy


@pytest.mark.parametrize(
    "override, message",
    [
        ("rl.group_sise=4", "unknown key 'rl.group_sise'. Did you mean 'group_size'"),
        ("rl.group_size=1", "rl.group_size = 1 is invalid"),
        ("rl.micro_batch_size=6", "a multiple of rl.group_size=4"),
        ("rl.algorithm=ppo", "choose one of: diffu_grpo, wd1"),
        ("training.normalization=token", "training.normalization does not apply to nara rl"),
        ("training.max_steps=3", "not a multiple of rl.inner_iterations=2"),
        ("rl.wd1_temperature=2", "does not apply to rl.algorithm=diffu_grpo"),
        ("rewards.bonus=1", "unknown key 'rewards.bonus'"),
        ("reward.format=1", "unknown key 'reward.format'"),
        ("rl.gen_length=4 rl.block_length=3", "multiple of block_length=3"),
        ("adapter.init_from=/no/such/folder", "is not a folder"),
    ],
)
def test_bad_recipe_keys_are_clear_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        recipe(tmp_path, *override.split())


def test_cli_refuses_a_bad_reward_before_the_model_loads(tmp_path, capsys):
    args = ["rl", "rl/embedded_arithmetic_grpo", "rewards.custom=nowhere_xyz:fn"]
    assert main([*args, f"output_dir={tmp_path}/run"]) == 2
    assert "module 'nowhere_xyz' cannot be imported" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["train", "rl/embedded_arithmetic_grpo"]) == 2
    assert "is run by nara rl, not nara train" in capsys.readouterr().err


def test_shipped_rl_recipes_validate():
    from nara.training.recipes import find_recipes

    found = {r.name: r for r in find_recipes("rl")}
    assert {"rl/embedded_arithmetic_grpo", "rl/embedded_arithmetic_wd1"} <= found.keys()
    assert "llada8b/gsm8k_diffu_grpo" in found
    for r in found.values():
        assert f"nara rl {r.name}" in r.path.read_text().split("\n\n")[0], r.path
    d1 = load_rl_recipe(found["llada8b/gsm8k_diffu_grpo"].path)
    a = d1.adapter.build()
    assert (a.r, a.alpha, d1.model.load_in_4bit) == (128, 64, True)
    rl = d1.rl
    assert (rl.group_size, rl.inner_iterations, rl.prompt_mask_prob, rl.beta) == (6, 12, 0.15, 0.04)
    assert (rl.gen_length, rl.block_length, rl.steps, rl.temperature) == (256, 32, 128, 0.9)
    assert d1.training.lr == 3e-6


def test_a_few_steps_raise_the_reward_on_a_toy_task(tmp_path):
    """Reward = letters in the completion: 12 updates move probability onto the letter tokens
    (measured without sampling noise: the policy's letter mass at a masked position)."""
    config = recipe(
        tmp_path,
        "rewards.correctness=0",
        "rewards.custom=rl_support:letter_count",
        "adapter.target_modules=all-linear",
        "rl.group_size=8",
        "rl.gen_length=2",
        "rl.steps=1",
        "rl.beta=0",
        "rl.clip_eps=10",  # let each rollout's two updates move far
        "training.max_steps=12",
        "training.save_every=none",
        "training.lr=1e-1",
    )
    trainer = _trainer(config)
    tok = trainer.tokenizer
    letters = tok.convert_tokens_to_ids(list(string.ascii_letters))
    prompts = tok([r.prompt for r in trainer.records], return_tensors="pt")["input_ids"]
    ids = torch.cat([prompts, torch.full((prompts.shape[0], 2), MASK)], 1)  # all "d+d=": width 4

    @torch.no_grad()
    def letter_mass() -> float:
        probs = trainer.model.eval()(ids).logits[:, prompts.shape[1] :].softmax(-1)
        return probs[..., letters].sum(-1).mean().item()

    before = letter_mass()
    trainer.train()
    rewards = [
        r["reward"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout" in r
    ]
    assert letter_mass() > before + 0.02 and sum(rewards[3:]) > sum(rewards[:3])


def test_ctrl_c_in_nara_rl_exits_130_with_the_command_that_continues(
    tmp_path, monkeypatch, capsys
) -> None:
    import nara.rl.trainer as rl_trainer
    from nara.cli import main
    from nara.training.trainer import TrainingInterrupted

    saved = tmp_path / "run" / "checkpoint-4"

    def interrupted(config, show_progress=True):
        raise TrainingInterrupted(5, saved)

    monkeypatch.setattr(rl_trainer, "train_rl", interrupted)
    args = ["rl", "rl/embedded_arithmetic_wd1", "training.overwrite=true", "training.lr=1e-5"]
    assert main([*args, "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"nara rl: interrupted at update 5; its newest complete checkpoint is {saved}" in err
    assert err.split("continue with: ")[1].strip() == (
        "nara rl rl/embedded_arithmetic_wd1 training.lr=1e-5 training.resume=latest"
    )
