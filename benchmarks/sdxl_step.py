"""Time one DreamBooth training step of an SDXL-shaped UNet (random weights) with LoRA and NaRA.

    python benchmarks/sdxl_step.py                      # a GPU: SDXL's UNet in bf16, 1024² images
    python benchmarks/sdxl_step.py --tiny --device cpu  # the same code on a small UNet (seconds)

The UNet has SDXL's architecture (2.6 B parameters, text-time conditioning) and random weights in
--dtype; adapters (rank --rank on to_q, to_k, to_v, to_out.0, float32) are added by
nara.integrations.diffusers, and one step is the DDPM loss (λ from each sample's timestep),
backward and AdamW. Per method: --warmup steps, then the median of --steps timed steps
(synchronised), the peak memory, and the trainable parameters; the last line is NaRA / LoRA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SDXL = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
TINY = SDXL | {
    "sample_size": 16,
    "block_out_channels": (32, 64, 64),
    "transformer_layers_per_block": (1, 1, 2),
    "attention_head_dim": (2, 4, 4),
    "cross_attention_dim": 64,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + 32,
    "norm_num_groups": 8,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a small UNet of the same design")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def build(args: argparse.Namespace, method: str) -> torch.nn.Module:
    """The SDXL-shaped UNet, built on the device in --dtype, with the method's adapters."""
    from diffusers import UNet2DConditionModel

    import nara
    from nara.integrations.diffusers import add_diffusers_adapters

    torch.manual_seed(0)
    with torch.device(args.device):
        unet = UNet2DConditionModel(**(TINY if args.tiny else SDXL))
    unet.to(getattr(torch, args.dtype)).requires_grad_(False)
    config = {"lora": nara.LoRAConfig, "nara": nara.NaRAConfig}[method]
    add_diffusers_adapters(unet, config(r=args.rank, alpha=float(args.rank)))
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet.train()


def time_method(args: argparse.Namespace, method: str) -> dict:
    from diffusers import DDPMScheduler

    from nara.adapters.inject import trainable_parameters
    from nara.integrations.diffusers import denoising_loss, sdxl_time_ids

    unet = build(args, method)
    config = TINY if args.tiny else SDXL
    dtype, dev, b = getattr(torch, args.dtype), torch.device(args.device), args.batch
    size = config["sample_size"]
    latents = torch.randn(b, 4, size, size, device=dev, dtype=dtype)
    text = torch.randn(b, 77, config["cross_attention_dim"], device=dev, dtype=dtype)
    pooled_dim = (
        config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    )
    added = {
        "text_embeds": torch.randn(b, pooled_dim, device=dev, dtype=dtype),
        "time_ids": sdxl_time_ids((8 * size,) * 2, (0, 0), (8 * size,) * 2, b).to(dev, dtype),
    }
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    sched = DDPMScheduler()
    gen = torch.Generator(dev).manual_seed(0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        loss = denoising_loss(unet, sched, latents, text, generator=gen, added_cond_kwargs=added)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return {
        "method": method,
        "step_s": statistics.median(times),
        "trainable": trainable_parameters(unet).trainable,
        "base": sum(p.numel() for p in unet.parameters() if not p.requires_grad),
        "peak_gib": peak,
        "loss": loss.item(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [time_method(args, method) for method in ("lora", "nara")]
    for row in rows:
        print(json.dumps(row))
    ratio = rows[1]["step_s"] / rows[0]["step_s"]
    print(f"NaRA / LoRA step time: {ratio:.3f} ({args.dtype}, batch {args.batch}, r {args.rank})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "ratio": ratio}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
