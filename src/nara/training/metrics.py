"""Training metrics: progress (a bar on a terminal, else a plain line every tenth of the run:
step, loss, λ, lr, tokens/s, ETA; see :class:`nara.progress.Progress`), a JSONL file, and
Accelerate trackers when asked for.

Each update's record is ``{"step", "epoch", "loss", "lam", "lr", "lr_<group>", "grad_norm",
"tokens_per_s", "elapsed_s"}`` with the loss and λ averaged over the update's micro-batches and
all processes; evaluations add ``{"step", "val_loss", "best"}`` records.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

_TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_trackers(names: list[str]) -> list[str]:
    """Return ``names`` if each tracker's package is installed.

    Raises:
        RuntimeError: naming the missing package and how to install it.
    """
    for name in names:
        if not any(importlib.util.find_spec(m) for m in _TRACKER_MODULES[name]):
            raise RuntimeError(
                f"training.report_to asks for {name} but it is not installed; "
                f"`pip install {_TRACKER_MODULES[name][0]}` or remove it from report_to"
            )
    return list(names)


class MetricsLogger:
    """Accumulates micro-batch statistics and writes one record per update (main process).

    Args:
        accelerator: the run's Accelerator (for reductions, trackers, the main-process check).
        path: the JSONL file, appended to.
        total, initial: progress range in updates.
        show_progress: show progress (a bar on a terminal, plain lines otherwise).
        every: plain-line interval in updates (default: a tenth of the run).
    """

    def __init__(
        self,
        accelerator: Any,
        path: Path,
        *,
        total: int,
        initial: int = 0,
        show_progress: bool = True,
        every: int | None = None,
    ) -> None:
        from nara.progress import Progress

        self.accelerator = accelerator
        self.path = Path(path)
        self.main = accelerator.is_main_process
        self.bar = Progress(
            total,
            initial=initial,
            desc="train",
            unit="upd",
            enabled=show_progress and self.main,
            every=every,
        )
        self.last_loss: float | None = None
        self.start = self.tick = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.lam_sum, self.tokens, self.micro = 0.0, 0.0, 0, 0

    def add_micro(
        self, loss: torch.Tensor, lam: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Record one micro-batch: its loss, mean λ and real-token count."""
        self.loss_sum += loss.detach().float().item()
        self.lam_sum += lam.float().mean().item()
        self.tokens += int(attention_mask.sum().item())
        self.micro += 1

    def update(
        self,
        step: int,
        epoch: int,
        lrs: dict[str, float],
        grad_norm: Any,
        *,
        write: bool = True,
    ) -> None:
        """Close an update: reduce over processes, advance the bar, write the record."""
        acc = self.accelerator
        local = torch.tensor(
            [self.loss_sum / self.micro, self.lam_sum / self.micro, float(self.tokens)],
            device=acc.device,
            dtype=torch.float64,
        )
        mean = acc.reduce(local.clone(), reduction="mean")  # (3,)
        tokens = acc.reduce(local[2:].clone(), reduction="sum").item()
        now = time.perf_counter()
        record = {
            "step": step,
            "epoch": epoch,
            "loss": mean[0].item(),
            "lam": mean[1].item(),
            "lr": next(iter(lrs.values())),
            **{f"lr_{name}": lr for name, lr in lrs.items()},
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens_per_s": tokens / max(now - self.tick, 1e-9),
            "elapsed_s": now - self.start,
        }
        self.tick = now
        self.last_loss = record["loss"]
        self._reset()
        self.bar.update(
            1,
            loss=f"{record['loss']:.4f}",
            λ=f"{record['lam']:.2f}",
            lr=f"{record['lr']:.2e}",
            tok_s=f"{record['tokens_per_s']:.0f}",
        )
        if write:
            self.record(record)

    def record(self, record: dict[str, Any]) -> None:
        """Append a record to the JSONL file and the trackers (main process only)."""
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.accelerator.log(scalars, step=record["step"])
        if "val_loss" in record and self.bar.enabled:
            self.bar.write(f"step {record['step']}: val_loss {record['val_loss']:.4f}")

    def close(self) -> None:
        self.bar.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file; a torn line (a run killed mid-write) is skipped with a
    warning naming the file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            warnings.warn(
                f"{path}, line {number}: not a JSON record (torn by a killed run?); skipped",
                stacklevel=2,
            )
            continue
        records.append(record)
    return records
