"""VRPO preference optimisation against hand computations on tiny random LLaDA models."""

from __future__ import annotations

import contextlib
import itertools
import json
import math

import pytest
import torch
from rl_support import loaded, recipe
from safetensors.torch import load_file

from nara import LoRAConfig, NaRAConfig, add_adapters, noise_level
from nara.adapters.inject import adapter_layers, adapter_parameters
from nara.data.records import RecordFormatError
from nara.diffusion import log_likelihood
from nara.diffusion.masking import local_mask_density
from nara.models import LLaDAModelLM, tiny_config
from nara.rl import adapters_disabled
from nara.rl.config import RLConfig, load_rl_recipe
from nara.rl.preference import (
    PreferencePair,
    VRPOTrainer,
    dpo_loss,
    elbo_estimates,
    encode_preferences,
    load_preferences,
    parse_preferences,
    vrpo_loss,
)
from nara.rl.trainer import train_rl
from nara.training import checkpoint as ckpt
from nara.training.config import ConfigError
from nara.training.metrics import read_metrics
from nara.training.trainer import noise_seed

MASK = 127
CONFIGS = [LoRAConfig(r=4), NaRAConfig(r=4)]
IDS = ["lora", "nara"]


def _model(config, scale: float = 0.0) -> torch.nn.Module:
    """Tiny LLaDA with adapters; ``scale`` > 0 draws every B ~ N(0, scale) (0: identity)."""
    torch.manual_seed(0)
    model = add_adapters(LLaDAModelLM(tiny_config()), config).eval()
    if scale:
        with torch.no_grad():
            for layer in adapter_layers(model).values():
                layer.lora_B.normal_(0.0, scale)
    return model


def _hand_bound(model, prompt: list[int], answer: list[int]) -> float:
    """The ELBO by enumeration: Σ_l (1/L)·(L/l)·mean over the l-subsets M of Σ_{i∈M} log p,
    each forward with λ = l/L and the mask's local density set on the adapters."""
    n = len(answer)
    ids = torch.tensor([prompt + answer])
    answer_region = torch.zeros_like(ids, dtype=torch.bool)
    answer_region[0, len(prompt) :] = True
    total = 0.0
    for count in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), count))
        for subset in subsets:
            masked = torch.zeros_like(answer_region)
            masked[0, [len(prompt) + i for i in subset]] = True
            density = local_mask_density(masked, answer_region)
            with torch.no_grad(), noise_level(model, torch.tensor([count / n]), density=density):
                logits = model(ids.masked_fill(masked, MASK)).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            score = sum(logp[len(prompt) + i, answer[i]].item() for i in subset)
            total += (1 / n) * (n / count) * score / len(subsets)
    return total


def test_expectation_equals_the_enumerated_bound_and_log_likelihood() -> None:
    model = _model(NaRAConfig(r=4), scale=0.3)  # a noise-aware adapter that matters
    prompt, answer = [5, 6, 7], [20, 21, 22]
    exact = _hand_bound(model, prompt, answer)
    k = 150  # the pair repeated k times: k independent estimates of 3 timesteps each
    with torch.no_grad():
        draws = elbo_estimates(
            model, [prompt] * k, [answer] * k, 3, mask_token_id=MASK, batch_size=k
        )
    mean, sem = draws.mean().item(), draws.std().item() / math.sqrt(k)
    assert sem > 0  # the masks do vary between rows
    assert mean == pytest.approx(exact, abs=4 * sem)
    n = 900
    ll = log_likelihood(
        model,
        prompt,
        answer,
        mask_token_id=MASK,
        n_samples=n,
        batch_size=n // 3,
        generator=torch.Generator().manual_seed(1),
    )
    # one estimate of n_samples=3 has std σ; log_likelihood with n averages n/3 such draws
    ll_sem = draws.std().item() / math.sqrt(n / 3)
    assert ll == pytest.approx(mean, abs=4 * math.hypot(sem, ll_sem))


def test_one_seed_gives_one_estimate_and_another_differs() -> None:
    model = _model(LoRAConfig(r=4), scale=0.3)
    args = ([[5, 6], [7]], [[20, 21, 22, 23], [30, 31]], 4)
    with torch.no_grad():
        a = elbo_estimates(model, *args, mask_token_id=MASK, seed=3)
        b = elbo_estimates(model, *args, mask_token_id=MASK, seed=3)
        c = elbo_estimates(model, *args, mask_token_id=MASK, seed=4)
    assert a.shape == (2,) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_identity_adapter_gives_exactly_zero_difference_and_loss_log2(config) -> None:
    model = _model(config)  # zero-initialised B: the adapted model is the base model
    prompts, answers = [[5, 6, 7], [8, 9]], [[20, 21, 22], [30, 31, 32, 33]]
    for seed in range(3):
        with torch.no_grad():
            policy = elbo_estimates(model, prompts, answers, 4, mask_token_id=MASK, seed=seed)
            with adapters_disabled(model):
                ref = elbo_estimates(model, prompts, answers, 4, mask_token_id=MASK, seed=seed)
        assert torch.equal(policy, ref)
    out = vrpo_loss(model, [[5, 6]], [[20, 21]], [[40, 41]], mask_token_id=MASK, seed=1)
    assert out.margin.item() == 0.0
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_antithetic_sampling_has_lower_variance_than_independent_masks() -> None:
    """A policy near its reference (VRPO's regime): shared masks cancel the mask noise in
    B̂_π − B̂_ref, independent ones add it (measured here: variance 0.0033 against 0.10)."""
    model = _model(LoRAConfig(r=4), scale=0.003)
    k = 40  # one pair repeated: k estimates of 2 timesteps each per call
    prompts, answers = [[5, 6, 7]] * k, [[20, 21, 22, 23, 24, 25]] * k

    def elbo(seed: int, ref: bool) -> torch.Tensor:
        with torch.no_grad(), adapters_disabled(model) if ref else contextlib.nullcontext():
            return elbo_estimates(
                model, prompts, answers, 2, mask_token_id=MASK, seed=seed, batch_size=2 * k
            )

    shared = elbo(0, False) - elbo(0, True)
    independent = elbo(0, False) - elbo(1, True)
    assert shared.var() < 0.1 * independent.var()


def test_dpo_loss_equals_a_hand_computation() -> None:
    pw, pl = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rw, rl = torch.tensor([-3.5, -4.0]), torch.tensor([-4.5, -2.5])
    out = dpo_loss(pw, pl, rw, rl, beta=0.5)
    margins = [0.5 * ((-3.0 + 3.5) - (-4.0 + 4.5)), 0.5 * ((-5.0 + 4.0) - (-2.0 + 2.5))]
    want = -sum(math.log(1 / (1 + math.exp(-m))) for m in margins) / 2
    assert out.loss.item() == pytest.approx(want, rel=1e-6)
    assert out.margin.item() == pytest.approx(sum(margins) / 2, rel=1e-6)
    assert out.accuracy.item() == 0.0  # margins 0 and -0.75: neither is positive
    assert out.chosen_reward.item() == pytest.approx(0.5 * (0.5 - 1.0) / 2, rel=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_vrpo_loss_and_gradient_equal_the_hand_composition(config) -> None:
    model = _model(config, scale=0.2)
    prompts, chosen, rejected = [[5, 6, 7], [8, 9]], [[20, 21], [30, 31, 32]], [[40], [50, 51]]
    kw = {"mask_token_id": MASK, "seed": 7}
    out = vrpo_loss(model, prompts, chosen, rejected, beta=0.3, n_samples=3, **kw)
    params = adapter_parameters(model)
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    model.zero_grad()

    both = ([*prompts, *prompts], [*chosen, *rejected])
    policy = elbo_estimates(model, *both, 3, **kw)
    with torch.no_grad(), adapters_disabled(model):
        ref = elbo_estimates(model, *both, 3, **kw)
    margin = 0.3 * ((policy[:2] - ref[:2]) - (policy[2:] - ref[2:]))
    hand = -torch.log(torch.sigmoid(margin)).mean()
    hand.backward()
    assert out.loss.item() == pytest.approx(hand.item(), rel=1e-9)
    assert got and set(got) == {n for n, p in params.items() if p.grad is not None}
    for name, grad in got.items():
        torch.testing.assert_close(grad, params[name].grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradients_reach_only_adapter_parameters(config) -> None:
    model = _model(config, scale=0.2)
    out = vrpo_loss(model, [[5, 6]], [[20, 21, 22]], [[40, 41]], mask_token_id=MASK)
    out.loss.backward()
    adapter = set(adapter_parameters(model))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= adapter
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in with_grad)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n not in adapter)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_a_few_steps_lower_the_loss_on_toy_pairs(config) -> None:
    """Chosen answers repeat token 40, rejected ones token 50: the adapter learns to prefer 40."""
    model = _model(config)
    prompts = [[5, 6, 7], [8, 9, 10], [11, 12, 13], [14, 15, 16]]
    chosen = [[40, 40, 40, 126]] * 4
    rejected = [[50, 50, 50, 126]] * 4
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def loss(seed: int, n_samples: int = 4) -> torch.Tensor:
        kw = {"mask_token_id": MASK, "beta": 0.5, "seed": seed, "batch_size": 64}
        return vrpo_loss(model, prompts, chosen, rejected, n_samples=n_samples, **kw).loss

    with torch.no_grad():
        before = loss(1000, n_samples=8).item()
    for step in range(5):
        opt.zero_grad()
        loss(step).backward()
        opt.step()
    with torch.no_grad():
        after = loss(1000, n_samples=8).item()
    assert before == pytest.approx(math.log(2), abs=1e-9)
    assert after < before - 0.1


def test_records_load_from_jsonl_and_keep_extra_fields(tmp_path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "2+2=", "chosen": "4", "rejected": "5", "source": "toy"},
        {"prompt": "3+3=", "chosen": "6", "rejected": "7"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("2+2=", "4", "5"),
        ("3+3=", "6", "7"),
    ]
    assert pairs[0].meta == {"source": "toy", "id": "0"} and pairs[1].meta == {"id": "1"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["a", "b"]', r"line 2\) is a list, not an object"),
        ('{"prompt": "p", "chosen": "c"}', r"line 2\): missing field 'rejected'"),
        ('{"prompt": "p", "chosen": 4, "rejected": "r"}', r"line 2\): field 'chosen' is a int"),
        ('{"prompt": " ", "chosen": "c", "rejected": "r"}', r"'prompt' is empty; write its text"),
        ('{"prompt": "p", "chosen": "c", "rejected": "c"}', r"the same text.*drop it"),
        ('{"prompt": "p", "chosen": ', r"line 2 is not valid JSON"),
    ],
)
def test_malformed_records_name_file_line_and_fix(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n' + line + "\n")
    with pytest.raises(RecordFormatError, match=message) as err:
        load_preferences(path)
    assert str(path) in str(err.value)


def test_empty_and_missing_files_raise(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RecordFormatError, match="no preference records"):
        load_preferences(empty)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_preferences(tmp_path / "nope.jsonl")


class _CharTokenizer:
    """Characters to ids (ord % 100); EOS 126; no chat template."""

    eos_token_id = 126
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 100 for c in text]}


def test_encoding_tokenizes_both_answers_with_eos() -> None:
    pairs = parse_preferences([("r0", {"prompt": "ab", "chosen": "c", "rejected": "de"})])
    (enc,) = encode_preferences(_CharTokenizer(), pairs)
    assert enc.prompt_ids == [97, 98]
    assert enc.chosen_ids == [99, 126] and enc.rejected_ids == [0, 1, 126]


def test_bad_arguments_name_the_value_and_the_fix() -> None:
    model = _model(LoRAConfig(r=4))
    with pytest.raises(ValueError, match="n_samples must be an int >= 1, got 0"):
        elbo_estimates(model, [[1]], [[2]], 0, mask_token_id=MASK)
    with pytest.raises(ValueError, match="sequences of prompts and answers"):
        elbo_estimates(model, [1], [2], mask_token_id=MASK)
    with pytest.raises(ValueError, match="beta must be a positive number, got 0"):
        vrpo_loss(model, [[1]], [[2]], [[3]], mask_token_id=MASK, beta=0)
    with pytest.raises(ValueError, match="one chosen and one rejected answer per prompt"):
        vrpo_loss(model, [[1], [2]], [[2]], [[3]], mask_token_id=MASK)
    with pytest.raises(ValueError, match="contains mask_token_id"):
        vrpo_loss(model, [[1]], [[MASK]], [[3]], mask_token_id=MASK)
    assert isinstance(PreferencePair("p", "c", "r").meta, dict)


def _vrpo_recipe(folder, *extra: str):
    """vrpo with LoRA r=4 on 8 pairs "a+b=" → right sum / sum + 1: 2 pairs per update, 4
    updates, a checkpoint every 2."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
        for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (0, 3), (4, 4), (6, 2), (1, 1)]
    ]
    data = folder / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"data.source={data}", "rl.algorithm=vrpo", "rl.inner_iterations=1"]
    return recipe(folder, *overrides, "rl.beta=0.5", "rl.elbo_samples=4", *extra, scorer=None)


def test_trainer_loss_is_vrpo_loss_on_its_pairs(tmp_path) -> None:
    trainer = VRPOTrainer(_vrpo_recipe(tmp_path), loaded=loaded(0), show_progress=False)
    try:
        with torch.no_grad():  # a non-zero adapter, so the loss is not log 2
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.3)
        batch = trainer.rollout()
        assert len(batch.pairs) == 2 and batch.pairs[0].chosen_ids[-1] == 126  # EOS
        seen = []
        trainer.accelerator.backward = lambda loss: seen.append(loss.detach())
        trainer._optimizer_step = lambda: None  # keep the weights: compare with them below
        trainer._after_update = lambda: None
        trainer._update_on(batch)
        want = vrpo_loss(
            trainer.model,
            [p.prompt_ids for p in batch.pairs],
            [p.chosen_ids for p in batch.pairs],
            [p.rejected_ids for p in batch.pairs],
            mask_token_id=MASK,
            beta=0.5,
            n_samples=4,
            seed=noise_seed(batch.seed, 0),
        )
    finally:
        trainer.close()
    assert len(seen) == 1 and seen[0].item() == pytest.approx(want.loss.item(), rel=1e-9)
    assert want.loss.item() != pytest.approx(math.log(2))


@pytest.mark.parametrize("method", ["lora", "nara"])
def test_nara_rl_vrpo_trains_and_logs_margins(tmp_path, method) -> None:
    extra = ["adapter.hidden_sizes=[8]"] if method == "nara" else []
    config = _vrpo_recipe(tmp_path, f"adapter.method={method}", "rl.micro_batch_size=4", *extra)
    result = train_rl(config, loaded=loaded(0), show_progress=False)
    assert result.steps == 4 and (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    margins = [r for r in records if "margin" in r]
    assert [r["step"] for r in margins] == [1, 2, 3, 4]
    assert margins[0]["margin"] == 0.0  # the zero-initialised adapter is the reference
    assert all({"accuracy", "chosen_reward", "rejected_reward"} <= r.keys() for r in margins)


def test_vrpo_from_an_sft_adapter_has_it_as_the_reference(tmp_path) -> None:
    """With adapter.init_from the reference is the starting adapter, not the base: the first
    update's margin is exactly 0 although the adapter is far from zero."""
    from nara import save_adapters

    sft = add_adapters(loaded(0)[0], LoRAConfig(r=4))
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    save_adapters(sft, tmp_path / "sft")
    config = _vrpo_recipe(tmp_path, f"adapter.init_from={tmp_path / 'sft'}", "adapter.dropout=0")
    train_rl(config, loaded=loaded(0), show_progress=False)
    margins = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "margin" in r]
    assert margins[0]["margin"] == 0.0 and margins[0]["chosen_reward"] == 0.0
    assert margins[-1]["margin"] != 0.0


class Killed(Exception):
    pass


def test_killed_and_resumed_vrpo_run_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch):
    extra = ("adapter.method=nara", "adapter.hidden_sizes=[8]", "adapter.dropout=0.1")
    train_rl(_vrpo_recipe(tmp_path / "full", *extra), loaded=loaded(0), show_progress=False)
    original = VRPOTrainer._after_update

    def dying(self):
        original(self)
        if self.state.step == 3:
            raise Killed

    monkeypatch.setattr(VRPOTrainer, "_after_update", dying)
    with pytest.raises(Killed):
        train_rl(_vrpo_recipe(tmp_path / "broken", *extra), loaded=loaded(0), show_progress=False)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "broken" / "run")] == ["step_0000002"]
    again = _vrpo_recipe(tmp_path / "broken", *extra, "training.resume=latest")
    train_rl(again, loaded=loaded(0), show_progress=False)
    a = load_file(tmp_path / "full" / "run" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "broken" / "run" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.beta=0", "rl.beta = 0.0 is invalid"),
        ("rl.inner_iterations=2", "1 with rl.algorithm=vrpo"),
        ("rl.clip_eps=0.1", "rl.clip_eps does not apply to rl.algorithm=vrpo"),
        ("rl.elbo_samples=0", "rl.elbo_samples = 0 is invalid"),
        ("rl.max_length=1", "rl.max_length = 1 is invalid"),
        ("rewards.correctness=1", "rewards.correctness does not apply to rl.algorithm=vrpo"),
        ("rewards.scorer=exact", "rewards.scorer does not apply to rl.algorithm=vrpo"),
    ],
)
def test_bad_vrpo_recipe_keys_are_clear_errors(tmp_path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _vrpo_recipe(tmp_path, override)
    with pytest.raises(ConfigError, match="rl.elbo_samples does not apply to rl.algorithm=wd1"):
        load_rl_recipe(None, ["rl.algorithm=wd1", "rl.elbo_samples=4", "training.max_steps=2"])
    with pytest.raises(ConfigError, match="rl.max_length does not apply to rl.algorithm=diffu_"):
        load_rl_recipe(None, ["rl.max_length=64", "training.max_steps=2"])


@pytest.mark.parametrize("algorithm", ["vrpo", "wd1", "diffu_grpo"])
def test_the_written_recipe_reads_back_as_the_same_recipe(tmp_path, algorithm) -> None:
    """config.yaml and --print-config hold what from_dict accepts: no key the algorithm
    refuses (another algorithm's rl keys; vrpo's rewards)."""
    if algorithm == "vrpo":
        config = _vrpo_recipe(tmp_path, "rl.max_length=40")
    else:
        config = recipe(tmp_path, f"rl.algorithm={algorithm}")
    raw = config.to_dict()
    assert ("rewards" in raw) == (algorithm != "vrpo")
    assert RLConfig.from_dict(raw) == config


def test_pairs_longer_than_the_limit_are_refused_never_cut(tmp_path) -> None:
    """Pair "1+2=" → "3" is 4 + 2 tokens (answers end in EOS); the limit is rl.max_length or
    the model's maximum sequence length (128 for the tiny config)."""
    short = _vrpo_recipe(tmp_path, "rl.max_length=5")
    with pytest.raises(ValueError, match=r"8 preference pair\(s\) are longer than rl.max_length 5 tokens.*id '0' \(6 tokens\).*raise rl.max_length"):  # fmt: skip
        VRPOTrainer(short, loaded=loaded(0), show_progress=False)
    VRPOTrainer(_vrpo_recipe(tmp_path, "rl.max_length=6"), loaded=loaded(0), show_progress=False).close()  # fmt: skip
    with pytest.raises(ConfigError, match="rl.max_length=200 is more than the model's maximum sequence length 128"):  # fmt: skip
        VRPOTrainer(_vrpo_recipe(tmp_path, "rl.max_length=200"), loaded=loaded(0), show_progress=False)  # fmt: skip
    rows = [{"prompt": "1+2=", "chosen": "3" * 130, "rejected": "4", "id": "long"}]
    (tmp_path / "long.jsonl").write_text(json.dumps(rows[0]) + "\n")
    config = _vrpo_recipe(tmp_path, f"data.source={tmp_path / 'long.jsonl'}")
    with pytest.raises(ValueError, match="longer than the model's maximum sequence length 128 tokens.*id 'long' \\(135 tokens\\)"):  # fmt: skip
        VRPOTrainer(config, loaded=loaded(0), show_progress=False)


def test_a_malformed_preference_file_fails_before_the_model_loads(tmp_path) -> None:
    config = _vrpo_recipe(tmp_path)
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "1+1=", "chosen": "2"}\n')
    with pytest.raises(RecordFormatError, match=r"line 1\): missing field 'rejected'"):
        train_rl(config, loaded=None, show_progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="'embedded:arithmetic' is no file.*make_pref"):
        train_rl(_vrpo_recipe(tmp_path, "data.source=embedded:arithmetic"), loaded=None)
    with pytest.raises(ConfigError, match="data.columns does not apply to rl.algorithm=vrpo"):
        train_rl(_vrpo_recipe(tmp_path, "data.columns=prompt=question"), loaded=None)


def test_shipped_vrpo_recipe_and_pair_script(tmp_path) -> None:
    import importlib.util
    import random
    from pathlib import Path

    root = Path(__file__).parents[2]
    config = load_rl_recipe(root / "configs/rl/embedded_arithmetic_vrpo.yaml")
    assert (config.rl.algorithm, config.rl.beta, config.rl.elbo_samples) == ("vrpo", 0.1, 8)
    spec = importlib.util.spec_from_file_location("mp", root / "scripts/make_preferences.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = random.Random(0)
    for _ in range(20):
        wrong = script.wrong_answer("The answer is 2.", rng)
        number = int(wrong.removeprefix("The answer is ").removesuffix("."))
        assert number >= 0 and 1 <= abs(number - 2) <= 3
    with pytest.raises(ValueError, match="no number to change"):
        script.wrong_answer("true", rng)
    out = tmp_path / "p.jsonl"
    script.main(["--out", str(out)])
    pairs = load_preferences(out)
    assert len(pairs) > 100 and all(p.chosen != p.rejected for p in pairs)
