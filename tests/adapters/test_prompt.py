"""Prompt tuning and P-tuning: virtual tokens before the input, logits cut back to its length."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nara.adapters import (
    PromptTuningConfig,
    PTuningConfig,
    add_adapters,
    load_adapters,
    merge_adapters,
    save_adapters,
    trainable_parameters,
)
from nara.diffusion import diffusion_loss, generate, log_likelihood
from nara.models import LLaDAModelLM, tiny_config
from nara.training.adapters import build_adapter_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import (  # noqa: E402
    arith_files,  # noqa: F401  (fixture)
    build_char_tokenizer,
    tiny_model_dir,  # noqa: F401  (fixture)
)

N, MASK = 4, 127
CONFIGS = [
    pytest.param(lambda: PromptTuningConfig(num_virtual_tokens=N), id="prompt_tuning"),
    pytest.param(lambda: PTuningConfig(num_virtual_tokens=N), id="p_tuning_mlp"),
    pytest.param(
        lambda: PTuningConfig(num_virtual_tokens=N, encoder="lstm", encoder_hidden_size=16),
        id="p_tuning_lstm",
    ),
]


def base_and_adapted(config, seed: int = 0) -> tuple[LLaDAModelLM, LLaDAModelLM]:
    """A tiny random LLaDA and an adapted copy with the same base weights."""
    torch.manual_seed(seed)
    base = LLaDAModelLM(tiny_config()).eval()
    adapted = LLaDAModelLM(tiny_config()).eval()
    adapted.load_state_dict(base.state_dict())
    return base, add_adapters(adapted, config)


def virtual(model) -> torch.Tensor:
    return model.nara_hub.prompt().detach()  # (n, d)


def ids(b: int = 2, t: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 120, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", CONFIGS)
def test_logits_and_hidden_states_keep_the_input_length(make):
    _, model = base_and_adapted(make())
    x = ids()
    assert model(x).logits.shape == (2, 9, 128)
    logits, states = model(x, attention_mask=torch.ones(2, 9), output_hidden_states=True)[:2]
    assert logits.shape == (2, 9, 128) and all(h.shape == (2, 9, 64) for h in states)
    assert model(x, return_dict=False)[0].shape == (2, 9, 128)


@pytest.mark.parametrize("make", CONFIGS)
def test_output_equals_the_base_model_on_virtual_then_real_embeddings(make):
    base, model = base_and_adapted(make())
    x = ids()
    v = virtual(model)  # (n, d)
    embeds = torch.cat([v.expand(2, -1, -1), base.get_input_embeddings()(x)], 1)
    with torch.no_grad():
        expected = base(inputs_embeds=embeds).logits[:, N:]
        torch.testing.assert_close(model(x).logits, expected, atol=1e-5, rtol=1e-5)
        # left padding: the virtual tokens sit right before the first real token
        mask = torch.tensor([[0, 0, 0] + [1] * 6])
        wte = base.get_input_embeddings()(x[:1])  # (1, T, d)
        padded = torch.cat([wte[:, :3], v[None], wte[:, 3:]], 1)
        full_mask = torch.cat([mask[:, :3], torch.ones(1, N, dtype=torch.long), mask[:, 3:]], 1)
        expected = base(inputs_embeds=padded, attention_mask=full_mask).logits
        expected = torch.cat([expected[:, :3], expected[:, 3 + N :]], 1)
        got = model(x[:1], attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", CONFIGS)
def test_a_left_padded_batch_equals_one_by_one(make):
    _, model = base_and_adapted(make())
    long, short = ids(1, 8, seed=2)[0], ids(1, 5, seed=3)[0]
    batch = torch.stack([long, torch.cat([torch.full((3,), 126), short])])
    mask = torch.tensor([[1] * 8, [0] * 3 + [1] * 5])
    with torch.no_grad():
        together = model(batch, attention_mask=mask).logits
        alone = [model(long[None]).logits[0], model(short[None]).logits[0]]
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1, 3:], alone[1], atol=1e-5, rtol=1e-5)


def test_init_random_vocab_and_text():
    _, model = base_and_adapted(PromptTuningConfig(num_virtual_tokens=5, init="vocab"))
    words = model.get_input_embeddings().weight
    # every vocab-initialised virtual token is a row of the word embeddings
    assert all((words == row).all(-1).any() for row in virtual(model))
    config = PromptTuningConfig(num_virtual_tokens=5, init="text", init_token_ids=[3, 9])
    _, model = base_and_adapted(config)
    torch.testing.assert_close(virtual(model), words[[3, 9, 3, 9, 3]], rtol=0, atol=0)
    _, model = base_and_adapted(PromptTuningConfig(num_virtual_tokens=64))
    assert virtual(model).std() == pytest.approx(words.std().item(), rel=0.2)  # word scale
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        base_and_adapted(PromptTuningConfig(init="text", init_token_ids=[500]))
    with pytest.raises(ValueError, match="init_text"):
        PromptTuningConfig(init="text")


def test_init_text_is_tokenized_and_its_ids_recorded(tiny_model_dir, tmp_path):  # noqa: F811
    from nara.models import load_model

    model = load_model(tiny_model_dir).model
    add_adapters(model, PromptTuningConfig(num_virtual_tokens=3, init="text", init_text="ab"))
    a, b = build_char_tokenizer().convert_tokens_to_ids(["a", "b"])
    assert model.nara_hub.config.init_token_ids == [a, b]
    words = model.get_input_embeddings().weight
    torch.testing.assert_close(virtual(model), words[[a, b, a]], rtol=0, atol=0)
    save_adapters(model, tmp_path / "a")
    fresh = LLaDAModelLM.from_pretrained(tiny_model_dir)
    fresh.name_or_path = ""  # no tokenizer reachable: the recorded ids are used
    torch.testing.assert_close(virtual(load_adapters(fresh, tmp_path / "a")), virtual(model))


@pytest.mark.parametrize("make", CONFIGS)
def test_only_the_virtual_tokens_and_encoder_train(make):
    config = make()
    _, model = base_and_adapted(config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("nara_hub.prompt.") for n in trainable)
    model(ids()).logits.sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())
    d = 64
    if isinstance(config, PromptTuningConfig):
        expected = N * d
    elif config.encoder == "mlp":  # PEFT's MLP: d → h → h → d, h = d
        expected = N * d + 3 * (d * d + d)
    else:  # 2-layer BiLSTM (h = 16) + MLP 2h → 2h → d
        h = 16
        lstm = 2 * (4 * h * (d + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
        expected = N * d + lstm + (2 * h) * (2 * h) + 2 * h + 2 * h * d + d
    assert trainable_parameters(model).trainable == expected


@pytest.mark.parametrize("make", CONFIGS)
def test_save_load_round_trip_is_exact(make, tmp_path):
    _, model = base_and_adapted(make())
    with torch.no_grad():
        for p in model.nara_hub.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_adapters(model, tmp_path / "a")
    base, _ = base_and_adapted(make())
    loaded = load_adapters(base, tmp_path / "a")
    assert type(loaded.nara_hub.config) is type(model.nara_hub.config)
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    wider = LLaDAModelLM(tiny_config(d_model=32, n_heads=2, n_kv_heads=1))
    with pytest.raises(ValueError, match="different target layers"):
        load_adapters(wider, tmp_path / "a")


def test_merge_is_refused():
    _, model = base_and_adapted(PromptTuningConfig(num_virtual_tokens=N))
    with pytest.raises(ValueError, match="no weight update"):
        merge_adapters(model)


@pytest.mark.parametrize("make", CONFIGS[:2])
def test_loss_generate_and_likelihood_run(make):
    _, model = base_and_adapted(make())
    x = ids(2, 10)
    maskable = torch.zeros(2, 10, dtype=torch.bool)
    maskable[:, 4:] = True
    out = diffusion_loss(model, x, maskable, MASK, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    prompts = torch.tensor([[126, 126, 5, 6], [7, 8, 9, 10]])
    gen = generate(
        model, prompts, torch.tensor([[0, 0, 1, 1], [1] * 4]), mask_token_id=MASK,
        gen_length=6, steps=3,
    )  # fmt: skip
    assert gen.shape == (2, 6) and not (gen == MASK).any()
    ll = log_likelihood(model, [5, 6], [7, 8], mask_token_id=MASK, n_samples=2, batch_size=2)
    assert torch.isfinite(torch.as_tensor(ll)).all()


def test_twenty_steps_lower_the_diffusion_loss():  # P-tuning trains in the trainer test
    _, model = base_and_adapted(PromptTuningConfig(num_virtual_tokens=N))
    model.train()
    x = ids(4, 12, seed=5)
    maskable = torch.ones_like(x, dtype=torch.bool)

    def loss() -> torch.Tensor:  # the same masks every time: a paired comparison
        return diffusion_loss(model, x, maskable, MASK, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        before = loss().loss.item()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss().loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert loss().loss.item() < before - 0.1


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_p_tuning_encoder_matches_peft(encoder):
    from peft import PromptEncoderConfig
    from peft.tuners.p_tuning.model import PromptEncoder as PeftPromptEncoder

    _, model = base_and_adapted(
        PTuningConfig(num_virtual_tokens=N, encoder=encoder, encoder_hidden_size=16)
    )
    ours = model.nara_hub.prompt
    reference = PeftPromptEncoder(
        PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=N,
            token_dim=64,
            num_transformer_submodules=1,
            encoder_reparameterization_type=encoder.upper(),
            encoder_hidden_size=16,
        )
    )
    reference.load_state_dict(ours.state_dict())  # same names and shapes, strict
    with torch.no_grad():
        expected = reference(torch.arange(N)[None])[0]  # (n, d)
    torch.testing.assert_close(ours(), expected)


def test_recipe_route_builds_both_configs():
    config = build_adapter_config("p_tuning", {"num_virtual_tokens": "8", "encoder": "lstm"})
    assert config == PTuningConfig(num_virtual_tokens=8, encoder="lstm")
    assert build_adapter_config("prompt_tuning", {"init": "vocab"}).init == "vocab"


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_trainer_runs_and_its_adapter_reloads(method, tiny_model_dir, arith_files, tmp_path):  # noqa: F811
    from nara.models import load_model
    from nara.training.config import load_recipe
    from nara.training.trainer import Trainer

    train, val = arith_files
    config = load_recipe(
        None,
        [
            f"model.name={tiny_model_dir}",
            f"data.source={train}",
            f"data.val_source={val}",
            "data.max_examples=16",
            "data.val_max_examples=4",
            "data.max_length=16",
            f"adapter.method={method}",
            "adapter.num_virtual_tokens=4",
            "training.batch_size=4",
            "training.max_steps=3",
            "training.eval_every=3",
            "training.save_every=2",
            f"output_dir={tmp_path}",
        ],
    )
    trainer = Trainer(config, show_progress=False)
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    loaded = load_adapters(load_model(tiny_model_dir).model, tmp_path / "final")
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, trained(x).logits)
