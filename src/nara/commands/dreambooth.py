"""DreamBooth: personalise a Stable Diffusion 1.x/2.x pipeline on a few images of one subject.

Trains nara adapters (LoRA, NaRA, T-LoRA, NaRA-DoRA) on the pipeline's UNet with the denoising
loss on the instance images and the instance prompt; noise-aware adapters take λ = t / T from each
sample's timestep (docs/diffusers.md). The images are resized (shorter side) and centre-cropped to
--resolution, encoded once by the VAE (the latent mean, times its scaling factor); the prompt is
encoded once by the frozen text encoder. Arguments are named as in diffusers' DreamBooth LoRA
scripts. Writes output_dir/final (nara's adapter format; load it with
nara.integrations.diffusers.load_diffusers_adapters) and, for LoRA, output_dir/
pytorch_lora_weights.safetensors for pipe.load_lora_weights. Checkpoints (adapter, optimizer and
random state; no pickles) every --checkpointing_steps under output_dir/checkpoints, resumed exactly
with --resume_from_checkpoint latest. Needs the `diffusers` extra. Not yet: prior preservation,
validation images, SDXL's second text encoder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EXAMPLES = """examples:
  nara dreambooth --pretrained_model_name_or_path /models/stable-diffusion-v1-5 \\
      --instance_data_dir dog/ --instance_prompt "a photo of sks dog" --output_dir runs/dog \\
      --method nara --rank 8 --learning_rate 1e-4 --max_train_steps 500
  nara dreambooth ... --output_dir runs/dog --resume_from_checkpoint latest"""

METHODS = ("lora", "nara", "t_lora", "nara_dora")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--pretrained_model_name_or_path", required=True, help="a local diffusers pipeline folder")
    add("--instance_data_dir", required=True, help="folder of the subject's images")
    add("--instance_prompt", required=True, help='prompt with the identifier, "a photo of sks dog"')
    add("--output_dir", required=True, help="where checkpoints and the final adapter go")
    add("--method", choices=METHODS, default="nara", help="adapter method (default: nara)")
    add("--rank", type=int, default=4, help="adapter rank r (default: 4)")
    add("--feed_forward", action="store_true", help="also adapt the feed-forward layers")
    add("--resolution", type=int, default=512, help="image side in pixels (default: 512)")
    add("--train_batch_size", type=int, default=1, help="images per step (default: 1)")
    add("--learning_rate", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    add("--max_train_steps", type=int, default=500, help="optimizer steps (default: 500)")
    add("--checkpointing_steps", type=int, default=100, help="save every N steps (default: 100)")
    add("--resume_from_checkpoint", default=None, help="'latest' or a checkpoints/step_* folder")
    add("--seed", type=int, default=0, help="seed of noise, timesteps and image order")


def _check(args: argparse.Namespace) -> None:
    for name in ("rank", "resolution", "train_batch_size", "max_train_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.resolution % 8:
        raise ValueError(f"--resolution must be a multiple of 8 (the VAE's), got {args.resolution}")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.checkpointing_steps < 1:
        raise ValueError(f"--checkpointing_steps must be >= 1, got {args.checkpointing_steps}")


def instance_images(folder: Path, resolution: int) -> torch.Tensor:
    """The images of ``folder`` as (N, 3, resolution, resolution) in [-1, 1]: the shorter side
    resized to ``resolution``, then centre-cropped."""
    import numpy as np
    import torch
    from PIL import Image

    if not folder.is_dir():
        raise FileNotFoundError(f"--instance_data_dir {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"--instance_data_dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    out = []
    for file in files:
        try:
            image = Image.open(file).convert("RGB")
        except OSError as err:
            raise ValueError(
                f"{file} is not a readable image ({err}); remove or replace it"
            ) from err
        scale = resolution / min(image.size)
        w, h = (
            max(resolution, round(image.width * scale)),
            max(resolution, round(image.height * scale)),
        )
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def run(args: argparse.Namespace) -> int:
    _check(args)
    import torch

    try:
        from diffusers import DiffusionPipeline
    except ImportError as err:
        raise RuntimeError(
            "nara dreambooth needs diffusers: pip install 'nara-peft[diffusers]'"
        ) from err
    import nara
    from nara.adapters.config import config_class
    from nara.adapters.inject import adapter_parameters
    from nara.integrations.diffusers import (
        add_diffusers_adapters,
        denoising_loss,
        save_diffusers_lora,
    )
    from nara.training import checkpoint as ckpt

    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    source = Path(args.pretrained_model_name_or_path)
    if not source.is_dir():
        raise FileNotFoundError(f"--pretrained_model_name_or_path {source} is not a local folder")
    pixels = instance_images(Path(args.instance_data_dir), args.resolution)
    pipe = DiffusionPipeline.from_pretrained(source)
    if getattr(pipe, "text_encoder_2", None) is not None or not hasattr(pipe, "unet"):
        raise ValueError(
            f"{type(pipe).__name__} is not a Stable Diffusion 1.x/2.x pipeline; nara dreambooth "
            "trains those only for now (use nara.integrations.diffusers in Python for others)"
        )
    unet, scheduler = pipe.unet, pipe.scheduler
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(
            args.instance_prompt,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        text = pipe.text_encoder(ids)[0]
    config = config_class(args.method)(r=args.rank, alpha=float(args.rank))
    add_diffusers_adapters(unet, config, scheduler=scheduler, feed_forward=args.feed_forward)
    params = adapter_parameters(unet)
    trainable = [p for p in params.values() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    resume = ckpt.resolve_resume(args.resume_from_checkpoint, out)
    if resume is not None:
        weights = ckpt.load_weights(resume / ckpt.WEIGHTS)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        opt.load_state_dict(ckpt.load_tensors(resume / ckpt.OPTIMIZER))
        gen.set_state(ckpt.load_weights(resume / ckpt.rng_name(0))["generator"])
        step = int(ckpt.load_json(resume / ckpt.TRAINER_STATE)["step"])
        print(f"resumed from {resume} at step {step}")
    unet.train()
    log = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    ckpt.remove_partial(out)
    ckpt.truncate_metrics(log, step)
    while step < args.max_train_steps:
        pick = torch.randint(0, latents.shape[0], (args.train_batch_size,), generator=gen)
        loss = denoising_loss(
            unet, scheduler, latents[pick], text.expand(len(pick), -1, -1), generator=gen
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        with log.open("a") as f:
            f.write(f'{{"step": {step}, "loss": {loss.item():.6f}}}\n')
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            final = ckpt.checkpoint_dir(out, step)
            tmp = ckpt.temporary_dir(final, os.getpid())
            tmp.mkdir(parents=True)
            with ckpt.writing(tmp, f"checkpoint {final}"):
                ckpt.save_weights(tmp / ckpt.WEIGHTS, params)
                ckpt.save_tensors(tmp / ckpt.OPTIMIZER, opt.state_dict())
                ckpt.save_weights(tmp / ckpt.rng_name(0), {"generator": gen.get_state()})
                ckpt.save_json(tmp / ckpt.TRAINER_STATE, {"step": step})
                ckpt.seal(tmp, final, step)
        if step == 1 or step % max(1, args.max_train_steps // 10) == 0:
            print(f"step {step}/{args.max_train_steps} loss {loss.item():.4f}")
    nara.save_adapters(unet, out / "final")
    if args.method == "lora":
        save_diffusers_lora(unet, out)
    print(f"adapter saved to {out / 'final'}")
    return 0
