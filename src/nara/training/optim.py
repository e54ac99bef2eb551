"""AdamW with a separate learning rate for the hypernetwork, and warm-up + decay schedules.

Parameter groups: adapter weights vs hypernetwork weights (the parameters of the model's noise
hub, ``model.nara_hub``: NaRA's hypernetworks or NaRA-C's learned C), each split into decayed
matrices and undecayed vectors (biases, DoRA magnitudes), as Hugging Face's Trainer does for
biases and norms.
"""

from __future__ import annotations

import math

import torch


def _hypernetwork_ids(model: torch.nn.Module) -> set[int]:
    from nara.adapters.noise import find_hub

    hub = find_hub(model)
    return set() if hub is None else {id(p) for p in hub.conditioners.parameters()}


def parameter_groups(
    model: torch.nn.Module, *, lr: float, hyper_lr: float | None, weight_decay: float
) -> list[dict]:
    """Optimizer groups of the trainable parameters, each with a ``name`` for logging.

    Raises:
        ValueError: if the model has no trainable parameter (adapters not added?).
    """
    hyper = _hypernetwork_ids(model)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            key = (id(param) in hyper, param.ndim >= 2)
            groups.setdefault(key, []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters; add adapters before training")
    out = []
    for (is_hyper, decay), params in sorted(groups.items()):
        out.append(
            {
                "name": ("hyper" if is_hyper else "adapter") + ("" if decay else "_no_decay"),
                "params": params,
                "lr": (hyper_lr or lr) if is_hyper else lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return out


def build_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    hyper_lr: float | None,
    betas: tuple[float, float],
    weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`."""
    groups = parameter_groups(model, lr=lr, hyper_lr=hyper_lr, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: str, warmup_ratio: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``ceil(warmup_ratio * total_steps)`` updates, then ``schedule``.

    ``linear`` decays to 0 at ``total_steps``, ``cosine`` follows half a cosine to 0,
    ``constant`` stays at the peak. Each group keeps its own peak learning rate.
    """
    from transformers import get_scheduler

    warmup = math.ceil(warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
