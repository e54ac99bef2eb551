"""nara adapters on diffusers models: λ from the denoising time, LoRA export, a denoising loss.

``add_diffusers_adapters(model, config)`` adapts a ``UNet2DConditionModel`` (SD 1.x/2.x, SDXL),
``SD3Transformer2DModel`` or ``FluxTransformer2DModel`` (or any model whose forward takes a
``timestep``) and installs a forward pre-hook that turns that ``timestep`` into the noise level:

    λ = timestep / max_timestep,  per sample (a scalar timestep gives one λ for the batch)

``max_timestep`` is read from the scheduler: ``scheduler.config.num_train_timesteps`` (1000 when
no scheduler is given). For discrete schedulers (DDPM, DDIM, Euler, DPM-Solver on SD/SDXL) this
is λ = t / T. Flow-matching schedulers (SD3) give the model t = σ·T, so λ = σ ∈ [0, 1], the
shifted σ the sampler uses. Flux pipelines pass σ itself (t / 1000) to the transformer, so for
``FluxTransformer2DModel`` max_timestep is 1. An explicit ``nara.noise_level`` around the call
takes precedence over the hook. See docs/diffusers.md.

diffusers itself is never imported here: models are recognised by their forward signature and
class name, schedulers by their ``config``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from nara.adapters.config import DEFAULT_TARGETS, AdapterConfig
from nara.adapters.inject import _require_hub, adapter_layers, add_adapters
from nara.adapters.lora import LoRALayer
from nara.adapters.noise import find_hub
from nara.adapters.save import load_adapters

# attention projections of every diffusers attention block (self- and cross-attention)
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# the text stream of the joint (MM-DiT) attention in SD3 and Flux
CONTEXT_ATTENTION_TARGETS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
# feed-forward layers: GEGLU/GELU projection in and out, for the image and the text stream
FEED_FORWARD_TARGETS = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")

# models whose pipelines pass σ ∈ [0, 1] as the timestep (and scale it by 1000 inside)
_SIGMA_TIMESTEP_MODELS = ("FluxTransformer2DModel",)
# the key prefix diffusers' pipelines strip before giving a LoRA state dict to the model
_UNET_MODELS = ("UNet2DConditionModel",)
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def diffusers_targets(model: nn.Module, feed_forward: bool = False) -> list[str]:
    """The target preset for ``model``: the attention projections it has (with the text stream's
    in joint-attention transformers), plus the feed-forward layers if ``feed_forward``.

    Raises:
        ValueError: the model has none of these layers (not a diffusers attention model).
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    wanted = ATTENTION_TARGETS + CONTEXT_ATTENTION_TARGETS
    if feed_forward:
        wanted += FEED_FORWARD_TARGETS
    present = [e for e in wanted if any(n.endswith("." + e) for n in names)]
    if not present:
        raise ValueError(
            f"{type(model).__name__} has none of the diffusers attention layers {list(wanted)}; "
            "pass config.target_modules naming its linear layers"
        )
    return present


def _timestep_index(model: nn.Module) -> int:
    """Position of ``timestep`` among the forward's arguments (self excluded)."""
    params = list(inspect.signature(model.forward).parameters)
    if "timestep" not in params:
        raise ValueError(
            f"{type(model).__name__}.forward has no `timestep` argument, so nara cannot set λ "
            "from the denoising time; use nara.add_adapters and wrap calls in "
            "`with nara.noise_level(model, lam):` instead"
        )
    return params.index("timestep")


def default_max_timestep(model: nn.Module, scheduler: Any = None) -> float:
    """The timestep value that means λ = 1 (see the module docstring for the rule)."""
    if type(model).__name__ in _SIGMA_TIMESTEP_MODELS:
        return 1.0
    if scheduler is None:
        return 1000.0
    config = getattr(scheduler, "config", None)
    steps = getattr(config, "num_train_timesteps", None)
    if steps is None and isinstance(config, dict):
        steps = config.get("num_train_timesteps")
    if not steps:
        raise ValueError(
            f"scheduler {type(scheduler).__name__} has no config.num_train_timesteps; pass "
            "max_timestep= (the timestep value that means pure noise) instead"
        )
    return float(steps)


def timestep_noise(timestep: Any, max_timestep: float) -> torch.Tensor:
    """λ = timestep / max_timestep as float32 of shape (B,) (or (1,) for a scalar timestep).

    Raises:
        ValueError: a timestep that is not finite or lies outside [0, max_timestep].
    """
    t = torch.as_tensor(timestep).detach().float().reshape(-1)
    bad = ~((t >= 0) & (t <= max_timestep))  # also catches NaN
    if bool(bad.any()):
        raise ValueError(
            f"timestep values {t[bad][:4].tolist()} lie outside the schedule's range "
            f"[0, {max_timestep:g}] that nara maps to λ ∈ [0, 1]; pass the scheduler the model "
            "runs with (scheduler=...) or max_timestep= to add_diffusers_adapters"
        )
    return t / max_timestep


class TimestepNoise:
    """The forward hooks that push λ(timestep) on the NoiseHub's stack and pop it after."""

    def __init__(self, model: nn.Module, max_timestep: float) -> None:
        if not max_timestep > 0:
            raise ValueError(f"max_timestep must be > 0, got {max_timestep}")
        self.index = _timestep_index(model)
        self.max_timestep = float(max_timestep)
        self._pushed: list[bool] = []  # one entry per forward in progress (nested calls)

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pushed.append(False)  # ``after`` runs even when this hook raises
        hub = find_hub(module)
        if hub is None or hub.noise[0] is not None:  # an explicit noise_level wins
            return
        if "timestep" in kwargs:
            t = kwargs["timestep"]
        else:
            t = args[self.index] if len(args) > self.index else None
        if t is None:
            raise ValueError(
                f"{type(module).__name__} was called without a timestep, so nara cannot set λ; "
                "pass timestep=, or wrap the call in `with nara.noise_level(model, lam):`"
            )
        hub.push(timestep_noise(t, self.max_timestep), None)
        self._pushed[-1] = True

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._pushed.pop():
            find_hub(module).pop()


def attach_timestep_noise(
    model: nn.Module, scheduler: Any = None, max_timestep: float | None = None
) -> TimestepNoise:
    """Make ``model`` (already adapted) set λ from its ``timestep`` argument on every call.

    ``max_timestep`` defaults to :func:`default_max_timestep` of ``scheduler``. The hooks run
    before nara's own pre-hook, so the noise-aware adapters see λ in the same forward pass.

    Raises:
        ValueError: no nara adapters, no ``timestep`` argument, hooks already attached.
    """
    hub = _require_hub(model)
    if getattr(hub, "timestep_noise", None) is not None:
        raise ValueError("this model already sets λ from its timestep (hooks are attached once)")
    if max_timestep is None:
        max_timestep = default_max_timestep(model, scheduler)
    hooks = TimestepNoise(model, max_timestep)
    model.register_forward_pre_hook(hooks.before, with_kwargs=True, prepend=True)
    model.register_forward_hook(hooks.after, with_kwargs=True, always_call=True)
    hub.timestep_noise = hooks
    return hooks


def add_diffusers_adapters(
    model: nn.Module,
    config: AdapterConfig,
    scheduler: Any = None,
    max_timestep: float | None = None,
    feed_forward: bool = False,
) -> nn.Module:
    """``nara.add_adapters`` for a diffusers model, with λ taken from the timestep argument.

    A config that keeps nara's default ``target_modules`` (LLaDA's projection names) gets the
    diffusers preset :func:`diffusers_targets` (with ``feed_forward``); explicit targets are used
    as given. Noise-aware methods get :func:`attach_timestep_noise`, so ``pipe(prompt)`` runs the
    adapted model with no further code. Returns the same model.
    """
    if config.target_modules == list(DEFAULT_TARGETS):
        config = dataclasses.replace(config, target_modules=diffusers_targets(model, feed_forward))
    add_adapters(model, config)
    if find_hub(model).needs_noise:
        attach_timestep_noise(model, scheduler, max_timestep)
    return model


def load_diffusers_adapters(
    model: nn.Module, path: str | Path, scheduler: Any = None, max_timestep: float | None = None
) -> nn.Module:
    """``nara.load_adapters`` plus the timestep hooks for noise-aware methods; same model back."""
    load_adapters(model, path)
    if find_hub(model).needs_noise:
        attach_timestep_noise(model, scheduler, max_timestep)
    return model


def lora_prefix(model: nn.Module) -> str:
    """The component name diffusers' pipelines file the model's LoRA keys under."""
    return "unet" if type(model).__name__ in _UNET_MODELS else "transformer"


def save_diffusers_lora(model: nn.Module, path: str | Path, prefix: str | None = None) -> Path:
    """Write a nara LoRA as ``path``/pytorch_lora_weights.safetensors in diffusers' format.

    Keys are ``<prefix>.<module>.lora_A.weight`` and ``...lora_B.weight`` (PEFT names, prefix
    "unet" or "transformer", see :func:`lora_prefix`), read by ``pipe.load_lora_weights(path)``
    and ``model.load_lora_adapter(path, prefix=...)``. The scale s is folded into B (diffusers
    reads a file without alphas as scale 1). Returns the file.

    Raises:
        ValueError: a method other than plain LoRA (NaRA's update depends on λ, which diffusers'
            loader cannot represent: save it with nara.save_adapters), or merged adapters.
    """
    hub = _require_hub(model)
    layers = adapter_layers(model)
    if hub.method != "lora" or not all(type(m) is LoRALayer for m in layers.values()):
        raise ValueError(
            f"diffusers' LoRA format holds plain LoRA only, not {hub.method}; save "
            f"{hub.method} adapters with nara.save_adapters and load them with "
            "nara.integrations.diffusers.load_diffusers_adapters"
        )
    if hub.merged:
        raise ValueError("the adapters are merged; call nara.unmerge_adapters before exporting")
    prefix = lora_prefix(model) if prefix is None else prefix
    state = {}
    for name, layer in layers.items():
        state[f"{prefix}.{name}.lora_A.weight"] = layer.lora_A.detach().contiguous()
        state[f"{prefix}.{name}.lora_B.weight"] = (layer.scaling * layer.lora_B).detach()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    file = path / LORA_WEIGHT_NAME
    meta = {"format": "pt", "nara": json.dumps(hub.config.to_dict())}
    save_file({k: v.contiguous() for k, v in state.items()}, file, metadata=meta)
    return file


def denoising_loss(
    model: nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """The DDPM training loss: MSE between the model output and the scheduler's target.

    Samples noise and (unless given) one timestep per sample uniformly from the scheduler's
    training range, noises ``latents`` with ``scheduler.add_noise`` and predicts with
    ``model(noisy, timesteps, encoder_hidden_states)``; the target is the noise for
    ``prediction_type`` "epsilon" and ``scheduler.get_velocity`` for "v_prediction". The
    timestep hook sets λ = t / T per sample, so noise-aware adapters need no extra code.

    Raises:
        ValueError: a prediction type other than epsilon or v_prediction.
    """
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"denoising_loss supports prediction_type 'epsilon' or 'v_prediction', got {kind!r}"
        )
    b = latents.shape[0]
    # drawn where the generator lives (a CPU generator gives the same draws on any device)
    draw = latents.device if generator is None else generator.device
    noise = torch.randn(latents.shape, generator=generator, device=draw)
    noise = noise.to(latents.device, latents.dtype)
    if timesteps is None:
        total = scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, total, (b,), generator=generator, device=draw)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = noise if kind == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    pred = model(noisy, timesteps, encoder_hidden_states, **model_kwargs).sample
    return F.mse_loss(pred.float(), target.float())


def flow_matching_loss(
    model: nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    sigmas: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_timestep: float | None = None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """The rectified-flow training loss of SD3 and Flux: MSE between the model output and ε − x₀.

    Noises ``latents`` (in the model's input layout: (B, C, H, W) for SD3, packed (B, tokens, C)
    for Flux) as x_σ = (1 − σ)·x₀ + σ·ε. Unless ``sigmas`` (B,) are given, each sample draws an
    index of the training schedule uniformly and takes that σ of ``scheduler.sigmas`` (a
    ``FlowMatchEulerDiscreteScheduler`` before ``set_timesteps``: the shifted σ of training). The
    model gets ``timestep = σ·max_timestep`` (:func:`default_max_timestep`: σ·1000 for SD3, σ for
    Flux), by keyword with ``model_kwargs``, so the timestep hook gives λ = σ.

    Raises:
        ValueError: a scheduler without flow-matching σ, or σ outside [0, 1].
    """
    if sigmas is None:
        table = getattr(scheduler, "sigmas", None)
        if table is None or not hasattr(scheduler.config, "shift"):
            raise ValueError(
                f"flow_matching_loss needs a flow-matching scheduler (σ table and shift, e.g. "
                f"FlowMatchEulerDiscreteScheduler), got {type(scheduler).__name__}; use "
                "denoising_loss for DDPM-type schedulers"
            )
        total = scheduler.config.num_train_timesteps
        draw = "cpu" if generator is None else generator.device
        index = torch.randint(0, total, (latents.shape[0],), generator=generator, device=draw)
        sigmas = table.float()[index.cpu()]
    sigmas = sigmas.to(latents.device, torch.float32).reshape(-1)
    if not bool(((sigmas >= 0) & (sigmas <= 1)).all()):
        raise ValueError(f"σ must lie in [0, 1], got {sigmas[:4].tolist()}")
    draw = latents.device if generator is None else generator.device
    noise = torch.randn(latents.shape, generator=generator, device=draw)
    noise = noise.to(latents.device, latents.dtype)
    s = sigmas.reshape(-1, *([1] * (latents.dim() - 1))).to(latents.dtype)
    noisy = (1 - s) * latents + s * noise
    if max_timestep is None:
        max_timestep = default_max_timestep(model, scheduler)
    timestep = (sigmas * max_timestep).to(latents.dtype)
    pred = model(hidden_states=noisy, timestep=timestep, **model_kwargs).sample
    return F.mse_loss(pred.float(), (noise - latents).float())


def sdxl_time_ids(
    original_size: tuple[int, int],
    crop_top_left: tuple[int, int],
    target_size: tuple[int, int],
    batch: int,
) -> torch.Tensor:
    """SDXL's size conditioning ``added_cond_kwargs["time_ids"]``: (batch, 6) rows of
    (original h, w, crop top, left, target h, w), as its pipelines build them."""
    row = torch.tensor([[*original_size, *crop_top_left, *target_size]], dtype=torch.float32)
    return row.expand(batch, -1)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """Flux's token layout: (B, C, H, W) → (B, H/2·W/2, 4C), each token a 2×2 patch (row-major
    over patches; channels, then the patch's rows and columns)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(
            f"Flux packs 2×2 patches: latent height and width must be even, got {h}×{w}"
        )
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def latent_image_ids(height: int, width: int) -> torch.Tensor:
    """Flux's ``img_ids`` for a latent of ``height`` × ``width``: (tokens, 3) rows (0, row, col)
    over the 2×2 patches, in :func:`pack_latents`' order."""
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
