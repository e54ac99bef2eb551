"""nara adapters on tiny diffusers models built in code: λ from the timestep, interop, training."""

from __future__ import annotations

import json
import math

import pytest
import torch

import nara
from nara.adapters.inject import adapter_layers, adapter_parameters
from nara.integrations.diffusers import (
    ATTENTION_TARGETS,
    LORA_WEIGHT_NAME,
    add_diffusers_adapters,
    denoising_loss,
    diffusers_targets,
    load_diffusers_adapters,
    save_diffusers_lora,
    timestep_noise,
)

diffusers = pytest.importorskip("diffusers")

B, C, S, D = 3, 4, 8, 8  # batch, latent channels, latent size, text width


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run far faster on one thread than spread over busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=S,
        in_channels=C,
        out_channels=C,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=D,
        attention_head_dim=2,
        norm_num_groups=4,
    ).eval()


def inputs(b: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, S, S, generator=g), torch.randn(b, 3, D, generator=g)


def nara_unet(**kwargs) -> torch.nn.Module:
    """A tiny UNet with NaRA whose hypernetwork is moved off C = I (so λ matters)."""
    unet = add_diffusers_adapters(tiny_unet(), nara.NaRAConfig(r=4, hidden_sizes=[16]), **kwargs)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in adapter_parameters(unet).values():
            p.normal_(0, 0.3)
    return unet


def record_lambda(unet: torch.nn.Module) -> list[torch.Tensor]:
    """Every λ the shared hypernetwork receives, one entry per forward."""
    seen: list[torch.Tensor] = []
    hyper = unet.nara_hub.conditioners["global"]
    hyper.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    return seen


def test_preset_targets_and_identity_at_init():
    base, unet = tiny_unet(), tiny_unet()
    add_diffusers_adapters(unet, nara.NaRAConfig(r=4, hidden_sizes=[16]))
    assert unet.nara_hub.config.target_modules == list(ATTENTION_TARGETS)
    names = list(adapter_layers(unet))
    assert len(names) == 4 * 2 * 4  # 4 transformer blocks (down, mid, 2 up) × (self, cross) × 4
    assert all(n.rsplit(".", 2)[-2:] != ["ff", "net"] for n in names)
    x, e = inputs()
    t = torch.tensor([10, 500, 999])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, e).sample, base(x, t, e).sample)
    assert "ff.net.2" in diffusers_targets(base, feed_forward=True)


def test_lambda_per_sample_from_timestep_positional_and_keyword():
    unet = nara_unet()
    seen = record_lambda(unet)
    x, e = inputs()
    t = torch.tensor([0, 250, 999])
    with torch.no_grad():
        unet(x, t, e)
        unet(sample=x, timestep=t.float(), encoder_hidden_states=e)
        unet(x, 400, e)  # a scalar: one λ for the batch
    for lam in seen[:2]:
        torch.testing.assert_close(lam, t.float() / 1000)
    torch.testing.assert_close(seen[2], torch.tensor([0.4]))
    assert unet.nara_hub.noise == (None, None)  # popped after each call


def test_batch_equals_one_by_one_and_noise_level_overrides():
    unet = nara_unet()
    x, e = inputs()
    t = torch.tensor([20, 600, 990])
    with torch.no_grad():
        batch = unet(x, t, e).sample
        alone = torch.cat([unet(x[i : i + 1], t[i : i + 1], e[i : i + 1]).sample for i in range(B)])
        torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)
        seen = record_lambda(unet)
        with nara.noise_level(unet, 0.3):  # an explicit λ wins over the timestep's
            other = unet(x, t, e).sample
    torch.testing.assert_close(seen[0], torch.tensor([0.3]))
    assert (other - batch).abs().max() > 1e-3  # and λ changes the output


def test_scheduler_range_and_clear_errors():
    sched = diffusers.DDPMScheduler(num_train_timesteps=100)
    unet = nara_unet(scheduler=sched)
    seen = record_lambda(unet)
    x, e = inputs()
    with torch.no_grad():
        unet(x, torch.tensor([0, 50, 100]), e)
        torch.testing.assert_close(seen[0], torch.tensor([0.0, 0.5, 1.0]))
        with pytest.raises(ValueError, match=r"outside the schedule's range \[0, 100\]"):
            unet(x, torch.tensor([0, 50, 101]), e)
        with pytest.raises(ValueError, match="outside"):
            unet(x, torch.tensor([-1.0, 0.0, 1.0]), e)
        with pytest.raises(ValueError, match="outside"):
            timestep_noise(float("nan"), 1000)
        unet(x, 10, e)  # the hooks recovered from the errors: nothing left on the stack
    assert unet.nara_hub.noise == (None, None)

    class NoTimestep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_q = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.to_q(x)

    with pytest.raises(ValueError, match="no `timestep` argument"):
        add_diffusers_adapters(NoTimestep(), nara.NaRAConfig(r=2, target_modules=["to_q"]))


def test_flux_and_sd3_transformers():
    torch.manual_seed(0)
    flux = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=8,
        axes_dims_rope=(0, 2, 2),
    )
    config = nara.NaRAConfig(r=2, hidden_sizes=[8])
    add_diffusers_adapters(flux, config, feed_forward=True)
    assert {"add_q_proj", "to_add_out", "ff_context.net.2"} <= set(
        flux.nara_hub.config.target_modules
    )
    seen = record_lambda(flux)
    sigma = torch.tensor([0.25, 0.9])  # Flux pipelines pass σ = t / 1000
    with torch.no_grad():
        flux(
            hidden_states=torch.randn(2, 16, 4),
            encoder_hidden_states=torch.randn(2, 3, 8),
            pooled_projections=torch.randn(2, 8),
            timestep=sigma,
            img_ids=torch.zeros(16, 3),
            txt_ids=torch.zeros(3, 3),
        )
    torch.testing.assert_close(seen[0], sigma)

    sd3 = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=8,
        caption_projection_dim=8,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=8,
    )
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    add_diffusers_adapters(sd3, config, scheduler=sched)
    seen = record_lambda(sd3)
    sched.set_timesteps(4)
    t = sched.timesteps[1].expand(2)  # SD3's pipeline: σ·1000 per sample
    with torch.no_grad():
        sd3(torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8), torch.randn(2, 8), t)
    torch.testing.assert_close(seen[0], sched.sigmas[1].expand(2))


def test_sampling_loop_runs_end_to_end():
    unet = nara_unet()
    sched = diffusers.DDIMScheduler()
    sched.set_timesteps(4)
    x, e = inputs(2)
    seen = record_lambda(unet)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(torch.cat([x, x]), t, torch.cat([e, torch.zeros_like(e)])).sample
            cond, uncond = eps.chunk(2)
            x = sched.step(uncond + 5.0 * (cond - uncond), t, x).prev_sample
    assert torch.isfinite(x).all()
    torch.testing.assert_close(torch.cat(seen), sched.timesteps.float() / 1000)


def clip_tokenizer(folder):
    """A CLIP tokenizer on single letters, written to ``folder``."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    files = [str(folder / "vocab.json"), str(folder / "merges.txt")]
    return CLIPTokenizer(*files, model_max_length=16)


def clip_text(seed: int, projection_dim: int | None = None) -> torch.nn.Module:
    """A one-layer CLIP text encoder of width D (with a text projection if ``projection_dim``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=2 + 2 * 26,
        hidden_size=D,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim or D,
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config) if projection_dim else CLIPTextModel(config)


def t5_text(seed: int, width: int) -> tuple[object, torch.nn.Module]:
    """A T5 tokenizer on letters and a one-layer T5 encoder of ``width``."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(c, -1.0) for c in "▁abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=width,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=4,
    )
    return tokenizer, T5EncoderModel(config)


def tiny_vae(shift: float | None = None) -> torch.nn.Module:
    """A one-block VAE with C latent channels (SD3/Flux VAEs have a shift factor)."""
    torch.manual_seed(6)
    return diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=C,
        norm_num_groups=4,
        shift_factor=shift,
        scaling_factor=1.5 if shift is not None else 0.18215,
    )


def tiny_pipeline(unet: torch.nn.Module, folder) -> object:
    """A StableDiffusionPipeline of tiny random parts (a CLIP tokenizer on letters)."""
    pipe = diffusers.StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=clip_text(5),
        tokenizer=clip_tokenizer(folder),
        unet=unet,
        scheduler=diffusers.DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    kwargs = {"num_inference_steps": 3, "height": S, "width": S, "output_type": "pt"}
    return pipe("a cat", generator=g, **kwargs).images


def test_pipeline_call_sets_lambda_with_no_user_code(tmp_path):
    unet = nara_unet()
    seen = record_lambda(unet)
    pipe = tiny_pipeline(unet, tmp_path)
    images = generate(pipe)
    assert images.shape == (1, 3, S, S) and torch.isfinite(images).all()
    # one λ per step (a scalar timestep over the doubled guidance batch): t / 1000
    torch.testing.assert_close(torch.cat(seen), pipe.scheduler.timesteps.float() / 1000)


def test_lora_loads_in_diffusers_own_loader(tmp_path):
    pytest.importorskip("peft")
    ours = add_diffusers_adapters(tiny_unet(), nara.LoRAConfig(r=4, alpha=8.0))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter_parameters(ours).values():
            p.normal_(0, 0.3)
    file = save_diffusers_lora(ours, tmp_path)
    theirs = tiny_unet()
    theirs.load_lora_adapter(str(tmp_path), prefix="unet", weight_name=file.name)
    x, e = inputs()
    t = torch.tensor([5, 300, 800])
    with torch.no_grad():
        want = ours(x, t, e).sample
        got = theirs(x, t, e).sample
        base = tiny_unet()(x, t, e).sample
    assert (want - base).abs().max() > 1e-2  # the LoRA changes the output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the same file through the pipeline loader gives the same images as nara's adapted UNet
    (tmp_path / "tok").mkdir()
    fresh = tiny_pipeline(tiny_unet(), tmp_path / "tok")
    fresh.load_lora_weights(str(tmp_path), weight_name=file.name)
    theirs_images = generate(fresh)
    ours_images = generate(tiny_pipeline(ours, tmp_path / "tok"))
    torch.testing.assert_close(theirs_images, ours_images, atol=1e-5, rtol=1e-4)


def test_nara_save_load_exact_and_merge_refused(tmp_path):
    unet = nara_unet()
    with pytest.raises(ValueError, match="plain LoRA only, not nara"):
        save_diffusers_lora(unet, tmp_path / "lora")
    with pytest.raises(ValueError, match="cannot be merged for all λ"):
        nara.merge_adapters(unet)
    nara.save_adapters(unet, tmp_path / "nara")
    back = load_diffusers_adapters(tiny_unet(), tmp_path / "nara")
    x, e = inputs()
    t = torch.tensor([1, 444, 999])
    with torch.no_grad():
        torch.testing.assert_close(back(x, t, e).sample, unet(x, t, e).sample, rtol=0, atol=0)
    # plain nara.load_adapters restores the weights too; λ then comes from noise_level
    plain = nara.load_adapters(tiny_unet(), tmp_path / "nara")
    with torch.no_grad(), nara.noise_level(plain, t.float() / 1000):
        torch.testing.assert_close(plain(x, t, e).sample, unet(x, t, e).sample, rtol=0, atol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_training_steps_lower_the_denoising_loss(prediction):
    config = nara.NaRAConfig(r=4, hidden_sizes=[16])
    unet = add_diffusers_adapters(tiny_unet(), config, feed_forward=True)  # C = I, B = 0
    sched = diffusers.DDPMScheduler(prediction_type=prediction)
    x, e = inputs(4)
    t = torch.tensor([100, 300, 600, 900])
    seen = record_lambda(unet)
    opt = torch.optim.Adam([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    unet.train()
    losses = []
    for _ in range(12):
        g = torch.Generator().manual_seed(0)  # the same noise every step: a fixed batch
        loss = denoising_loss(unet, sched, x, e, timesteps=t, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    torch.testing.assert_close(seen[-1], t.float() / 1000)  # λ from the sampled timesteps
    assert unet.nara_hub.conditioners["global"].net[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["lora", "dora", "t_lora", "nara_dora", "multi_lora", "foura"])
def test_every_method_equals_the_base_at_init_and_trains(method):
    from nara.adapters.config import config_class

    unet = add_diffusers_adapters(tiny_unet(), config_class(method)(r=2))
    x, e = inputs()
    t = torch.tensor([50, 500, 950])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, e).sample, tiny_unet()(x, t, e).sample)
    loss = denoising_loss(unet, diffusers.DDPMScheduler(), x, e, timesteps=t)
    loss.backward()
    assert all(p.grad is not None for p in adapter_parameters(unet).values() if p.requires_grad)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, e = inputs()
    t = torch.tensor([50, 500, 950])
    grads = []
    for checkpointing in (False, True):
        unet = nara_unet()
        if checkpointing:
            unet.enable_gradient_checkpointing()
            assert any(getattr(m, "gradient_checkpointing", False) for m in unet.modules())
        unet.train()
        g = torch.Generator().manual_seed(0)
        denoising_loss(unet, diffusers.DDPMScheduler(), x, e, timesteps=t, generator=g).backward()
        grads.append(
            {k: p.grad.clone() for k, p in adapter_parameters(unet).items() if p.grad is not None}
        )
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-4, atol=1e-6)


def test_dreambooth_command_trains_saves_and_resumes_exactly(tmp_path):
    from PIL import Image

    from nara.adapters.save import read_tensors
    from nara.cli import main

    (tmp_path / "tok").mkdir()
    tiny_pipeline(tiny_unet(), tmp_path / "tok").save_pretrained(tmp_path / "pipe")
    images = tmp_path / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):  # not square, not the training size: resized and centre-cropped
        pixels = (torch.rand(12, 10, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{i}.png")
    common = [
        "dreambooth",
        "--pretrained_model_name_or_path", str(tmp_path / "pipe"),
        "--instance_data_dir", str(images),
        "--instance_prompt", "a photo of sks cat",
        "--resolution", str(S),
        "--rank", "2",
        "--learning_rate", "1e-2",
        "--checkpointing_steps", "2",
        "--train_batch_size", "2",
    ]  # fmt: skip
    assert main([*common, "--output_dir", str(tmp_path / "a"), "--max_train_steps", "4"]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "b"), "--max_train_steps", "2"]) == 0
    resume = ["--resume_from_checkpoint", "latest", "--max_train_steps", "4"]
    assert main([*common, "--output_dir", str(tmp_path / "b"), *resume]) == 0
    a = read_tensors(tmp_path / "a" / "final" / "adapter_model.safetensors")
    b = read_tensors(tmp_path / "b" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # it trained
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [1, 2, 3, 4]
    back = load_diffusers_adapters(tiny_unet(), tmp_path / "a" / "final")
    assert back.nara_hub.config.r == 2


def test_dreambooth_prior_preservation_validation_bf16_and_resume_mismatch(tmp_path, capsys):
    from PIL import Image

    from nara.adapters.save import read_tensors
    from nara.cli import main

    (tmp_path / "tok").mkdir()
    tiny_pipeline(tiny_unet(), tmp_path / "tok").save_pretrained(tmp_path / "pipe")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (S, S), (200, 30, 30)).save(images / "0.png")
    common = [
        "dreambooth",
        "--pretrained_model_name_or_path", str(tmp_path / "pipe"),
        "--instance_data_dir", str(images),
        "--instance_prompt", "a photo of sks cat",
        "--output_dir", str(tmp_path / "out"),
        "--resolution", str(S),
        "--max_train_steps", "2",
        "--checkpointing_steps", "2",
        "--class_inference_steps", "2",
    ]  # fmt: skip
    extra = [
        "--with_prior_preservation",
        "--class_data_dir", str(tmp_path / "class"),
        "--class_prompt", "a photo of a cat",
        "--num_class_images", "2",
        "--validation_prompt", "a photo of sks cat",
        "--num_validation_images", "3",
        "--validation_steps", "1",
        "--mixed_precision", "bf16",
    ]  # fmt: skip
    assert main([*common, *extra]) == 0
    final = read_tensors(tmp_path / "out" / "final" / "adapter_model.safetensors")
    assert {v.dtype for v in final.values()} == {torch.float32}  # adapters stay in float32
    assert any(v.abs().sum() > 0 for k, v in final.items() if "lora_B" in k)
    assert sorted(p.name for p in (tmp_path / "class").iterdir()) == [
        "class_00000.png",
        "class_00001.png",
    ]
    grids = sorted((tmp_path / "out" / "validation").iterdir())
    assert [g.name for g in grids] == ["step_0000001.png", "step_0000002.png"]
    assert Image.open(grids[0]).size == (3 * S, S)
    capsys.readouterr()
    resume = ["--resume_from_checkpoint", "latest", "--max_train_steps", "3", "--rank", "8"]
    assert main([*common, *resume]) == 2
    assert "holds other adapter tensors than --method nara --rank 8" in capsys.readouterr().err


def test_dreambooth_help_and_errors_before_loading(tmp_path, capsys):
    from nara.cli import main

    with pytest.raises(SystemExit) as info:
        main(["dreambooth", "--help"])
    assert info.value.code == 0
    assert "examples:" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    base = ["dreambooth", "--instance_prompt", "p", "--output_dir", str(tmp_path / "o")]
    base += ["--pretrained_model_name_or_path", str(tmp_path / "missing")]
    assert main([*base, "--instance_data_dir", str(tmp_path), "--resolution", "12"]) == 2
    assert "--resolution must be a multiple of 8" in capsys.readouterr().err
    assert main([*base, "--instance_data_dir", str(tmp_path / "empty")]) == 2
    assert "is not a local folder" in capsys.readouterr().err
    base[-1] = str(tmp_path)  # a folder, but not a pipeline: the images are checked first
    assert main([*base, "--instance_data_dir", str(tmp_path / "empty")]) == 2
    assert "holds no images" in capsys.readouterr().err
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    assert main([*base, "--instance_data_dir", str(tmp_path / "empty")]) == 2
    assert "broken.png is not a readable image" in capsys.readouterr().err
    assert main([*base, "--instance_data_dir", str(tmp_path), "--with_prior_preservation"]) == 2
    assert "needs --class_data_dir and --class_prompt" in capsys.readouterr().err


# ---------------------------------------------------------------- SDXL, SD3 and Flux

P = 4  # CLIP text projection width of the SD3 encoders (pooled: 2P)


def tiny_sdxl_unet() -> torch.nn.Module:
    """SDXL's UNet: cross-attention on both encoders' states (2D), pooled text + size ids."""
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=S,
        in_channels=C,
        out_channels=C,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=2 * D,
        attention_head_dim=2,
        norm_num_groups=4,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + D,
    ).eval()


def tiny_sd3_transformer() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.SD3Transformer2DModel(
        sample_size=S,
        patch_size=2,
        in_channels=C,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=2 * D,  # the two CLIP encoders' states, concatenated
        caption_projection_dim=8,
        pooled_projection_dim=2 * P,
        out_channels=C,
        pos_embed_max_size=S,
    ).eval()


def tiny_flux_transformer() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * C,  # packed 2×2 latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=2 * D,  # the T5 encoder's width
        pooled_projection_dim=D,  # CLIP's pooled output
        axes_dims_rope=(0, 2, 2),
        guidance_embeds=True,
    ).eval()


def build_pipeline(kind: str, model: torch.nn.Module, folder) -> object:
    """A tiny SDXL, SD3 or Flux pipeline around ``model`` (its encoders and VAE random)."""
    tok = clip_tokenizer(folder / "tok")
    if kind == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=tiny_vae(),
            text_encoder=clip_text(5),
            text_encoder_2=clip_text(7, projection_dim=D),
            tokenizer=tok,
            tokenizer_2=tok,
            unet=model,
            scheduler=diffusers.EulerDiscreteScheduler(),
            add_watermarker=False,
        )
    elif kind == "sd3":
        t5_tok, t5 = t5_text(8, 2 * D)
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=model,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=tiny_vae(shift=0.1),
            text_encoder=clip_text(5, projection_dim=P),
            tokenizer=tok,
            text_encoder_2=clip_text(7, projection_dim=P),
            tokenizer_2=tok,
            text_encoder_3=t5,
            tokenizer_3=t5_tok,
        )
    else:
        t5_tok, t5 = t5_text(8, 2 * D)
        pipe = diffusers.FluxPipeline(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=tiny_vae(shift=0.1),
            text_encoder=clip_text(5),
            tokenizer=tok,
            text_encoder_2=t5,
            tokenizer_2=t5_tok,
            transformer=model,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


BUILDERS = {"sdxl": tiny_sdxl_unet, "sd3": tiny_sd3_transformer, "flux": tiny_flux_transformer}


def pipe_images(pipe, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    kwargs = {"num_inference_steps": 2, "height": S, "width": S, "output_type": "pt"}
    if kind != "sdxl":
        kwargs["max_sequence_length"] = 8
    return pipe("a cat", generator=g, **kwargs).images


def conditioning(pipe, kind: str, n: int) -> dict:
    """The denoiser's inputs for n copies of one prompt, as nara dreambooth builds them."""
    from argparse import Namespace

    from nara.commands.dreambooth import batched, encode_prompt

    args = Namespace(
        resolution=S, crops_coords_top_left_h=0, crops_coords_top_left_w=0, max_sequence_length=8
    )
    with torch.no_grad():
        return batched(encode_prompt(pipe, kind, "a cat", args), n)


def test_flux_packing_matches_the_pipeline():
    from nara.integrations.diffusers import latent_image_ids, pack_latents

    x = torch.randn(2, C, 6, 4)
    want = diffusers.FluxPipeline._pack_latents(x, 2, C, 6, 4)
    torch.testing.assert_close(pack_latents(x), want, rtol=0, atol=0)
    ids = diffusers.FluxPipeline._prepare_latent_image_ids(2, 3, 2, "cpu", torch.float32)
    torch.testing.assert_close(latent_image_ids(6, 4), ids, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be even, got 5×4"):
        pack_latents(torch.randn(1, C, 5, 4))


def test_sdxl_unet_identity_lambda_and_lora_through_the_pipeline(tmp_path):
    pytest.importorskip("peft")
    pipe = build_pipeline("sdxl", tiny_sdxl_unet(), tmp_path)
    cond = conditioning(pipe, "sdxl", B)
    assert cond["added_cond_kwargs"]["time_ids"].tolist() == [[S, S, 0, 0, S, S]] * B
    x, _ = inputs()
    t = torch.tensor([3, 400, 990])
    base = tiny_sdxl_unet()
    unet = add_diffusers_adapters(tiny_sdxl_unet(), nara.NaRAConfig(r=2, hidden_sizes=[8]))
    seen = record_lambda(unet)
    with torch.no_grad():
        want = base(x, t, **cond).sample
        torch.testing.assert_close(unet(x, t, **cond).sample, want)
    torch.testing.assert_close(seen[0], t.float() / 1000)
    # a LoRA trained by nara reads into the SDXL pipeline with diffusers' loader
    ours = add_diffusers_adapters(tiny_sdxl_unet(), nara.LoRAConfig(r=2, alpha=4.0))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter_parameters(ours).values():
            p.normal_(0, 0.3)
    save_diffusers_lora(ours, tmp_path / "lora")
    theirs = build_pipeline("sdxl", tiny_sdxl_unet(), tmp_path)
    theirs.load_lora_weights(str(tmp_path / "lora"))
    got = pipe_images(theirs, "sdxl")
    torch.testing.assert_close(got, pipe_images(build_pipeline("sdxl", ours, tmp_path), "sdxl"))
    assert (got - pipe_images(pipe, "sdxl")).abs().max() > 1e-3  # and the LoRA matters


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_flow_matching_loss_lambda_is_sigma_and_lora_loads(kind, tmp_path):
    pytest.importorskip("peft")
    from nara.commands.dreambooth import training_loss
    from nara.integrations.diffusers import flow_matching_loss, latent_image_ids, pack_latents

    pipe = build_pipeline(kind, BUILDERS[kind](), tmp_path)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    config = nara.NaRAConfig(r=4, hidden_sizes=[8])
    model = add_diffusers_adapters(BUILDERS[kind](), config, feed_forward=True)
    seen = record_lambda(model)
    latents = torch.randn(2, C, S, S, generator=torch.Generator().manual_seed(4))
    cond = conditioning(pipe, kind, 2)
    # by hand: x_σ = (1 − σ)·x₀ + σ·ε, target ε − x₀; the model gets σ·1000 (SD3) or σ (Flux)
    sigmas = torch.tensor([0.2, 0.7])
    x0 = pack_latents(latents) if kind == "flux" else latents
    extra = {"img_ids": latent_image_ids(S, S), "guidance": torch.tensor([3.5, 3.5])}
    extra = extra if kind == "flux" else {}
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    s = sigmas.reshape(-1, *[1] * (x0.dim() - 1))
    scale = 1000.0 if kind == "sd3" else 1.0
    with torch.no_grad():
        pred = model(
            hidden_states=(1 - s) * x0 + s * noise, timestep=sigmas * scale, **cond, **extra
        ).sample
        want = torch.nn.functional.mse_loss(pred, noise - x0)
        g = torch.Generator().manual_seed(9)
        got = flow_matching_loss(model, sched, x0, sigmas=sigmas, generator=g, **cond, **extra)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(seen[-1], sigmas)  # λ = σ
    # drawn σ come from the shifted training schedule; a few steps lower the loss on one batch
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    losses = []
    for _ in range(12):
        g = torch.Generator().manual_seed(0)
        loss = training_loss(model, kind, sched, latents, cond, g, scale, 3.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert bool(torch.isin(seen[-1], sched.sigmas).all())
    with pytest.raises(ValueError, match="needs a flow-matching scheduler"):
        flow_matching_loss(model, diffusers.DDPMScheduler(), x0, **cond, **extra)
    # NaRA round trip; a static LoRA reads into diffusers' loader, model and pipeline
    nara.save_adapters(model, tmp_path / "nara")
    back = load_diffusers_adapters(BUILDERS[kind](), tmp_path / "nara", scheduler=sched)
    with torch.no_grad():
        kw = {"hidden_states": x0, "timestep": sigmas * scale, **cond, **extra}
        torch.testing.assert_close(back(**kw).sample, model(**kw).sample, rtol=0, atol=0)
    ours = add_diffusers_adapters(BUILDERS[kind](), nara.LoRAConfig(r=2, alpha=4.0))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter_parameters(ours).values():
            p.normal_(0, 0.3)
    save_diffusers_lora(ours, tmp_path / "lora")
    theirs = BUILDERS[kind]()
    theirs.load_lora_adapter(
        str(tmp_path / "lora"), prefix="transformer", weight_name=LORA_WEIGHT_NAME
    )
    with torch.no_grad():
        torch.testing.assert_close(theirs(**kw).sample, ours(**kw).sample, atol=1e-5, rtol=1e-4)
    fresh = build_pipeline(kind, BUILDERS[kind](), tmp_path)
    fresh.load_lora_weights(str(tmp_path / "lora"))
    torch.testing.assert_close(
        pipe_images(fresh, kind), pipe_images(build_pipeline(kind, ours, tmp_path), kind)
    )


@pytest.mark.parametrize("kind", ["sdxl", "sd3", "flux"])
def test_dreambooth_command_on_sdxl_sd3_flux(kind, tmp_path):
    pytest.importorskip("peft")
    from PIL import Image

    from nara.cli import main

    build_pipeline(kind, BUILDERS[kind](), tmp_path).save_pretrained(tmp_path / "pipe")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (S, S), (200, 30, 30)).save(images / "0.png")
    args = [
        "dreambooth",
        "--pretrained_model_name_or_path", str(tmp_path / "pipe"),
        "--instance_data_dir", str(images),
        "--instance_prompt", "a sks cat",
        "--output_dir", str(tmp_path / "out"),
        "--resolution", str(S),
        "--method", "lora",
        "--rank", "2",
        "--learning_rate", "1e-2",
        "--max_train_steps", "3",
        "--gradient_accumulation_steps", "2",
        "--max_sequence_length", "8",
        "--validation_prompt", "a sks cat",
        "--num_validation_images", "1",
        "--validation_steps", "3",
        "--class_inference_steps", "2",
    ]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "out" / "validation" / "step_0000003.png").is_file()
    losses = [json.loads(x)["loss"] for x in (tmp_path / "out" / "metrics.jsonl").open()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    # the exported LoRA reads into a fresh pipeline and gives nara's images
    fresh = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    fresh.set_progress_bar_config(disable=True)
    base_images = pipe_images(fresh, kind)
    fresh.load_lora_weights(str(tmp_path / "out"))
    ours = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    ours.set_progress_bar_config(disable=True)
    load_diffusers_adapters(getattr(ours, "unet", None) or ours.transformer, tmp_path / "out/final")
    got = pipe_images(fresh, kind)
    torch.testing.assert_close(got, pipe_images(ours, kind), atol=1e-5, rtol=1e-4)
    assert (got - base_images).abs().max() > 0  # it trained


def test_pipeline_kind_refuses_other_pipelines():
    from types import SimpleNamespace

    from nara.commands.dreambooth import pipeline_kind

    other = SimpleNamespace(unet=None, transformer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"denoiser Linear\) is not a Stable Diffusion"):
        pipeline_kind(other)


def test_digits_experiment_matches_parameter_budgets():
    """benchmarks/dreambooth_digits.py: NaRA (rank r − 1 + hypernetwork) is within one
    hypernetwork width step of LoRA's and T-LoRA's count at rank r."""
    import importlib.util
    from pathlib import Path

    from nara.adapters.inject import trainable_parameters

    pytest.importorskip("sklearn")
    path = Path(__file__).parents[2] / "benchmarks" / "dreambooth_digits.py"
    spec = importlib.util.spec_from_file_location("dreambooth_digits", path)
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    configs = digits.adapter_configs(digits.make_unet(), rank=4)
    counts = {
        name: trainable_parameters(add_diffusers_adapters(digits.make_unet(), c)).trainable
        for name, c in configs.items()
    }
    assert counts["lora"] == counts["t_lora"]
    step = configs["nara"].embedding_dim + 1 + 3 * 3  # parameters per hidden unit at r = 3
    assert abs(counts["nara"] - counts["lora"]) <= step / 2
    cond = digits.prompt(digits.SKS, 3, 5)
    assert cond.shape == (5, 2, digits.TEXT_DIM)
    torch.testing.assert_close(cond[:, 0], digits.TOKENS[digits.SKS].expand(5, -1))
