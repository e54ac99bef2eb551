"""Fine-tune a dLLM with an adapter on Hugging Face Accelerate: one code path for 1 CPU, 1 GPU and
many GPUs (DDP, FSDP, DeepSpeed — pick one with ``accelerate launch --config_file``).

Run it::

    nara train configs/demo.yaml
    nara train configs/llada8b/math_nara.yaml training.lr=5e-5 output_dir=runs/math
    torchrun --nproc_per_node 8 -m nara.cli train configs/llada8b/math_nara.yaml

The recipe reads init → setup (accelerator, then model + adapters, data, optimizer, in that order
because each needs the previous one) → train → finish. The loop itself only draws micro-batches
and calls small named steps: loss + backward, optimizer update, logging, evaluation, checkpoint.

Determinism (what makes resume and data parallelism exact): the data order is a permutation seeded
by (seed, epoch); the noise of global micro-batch g is drawn from a generator seeded by (seed, g),
so it does not depend on which process runs the micro-batch; dropout uses the global RNG, which
the checkpoint restores (each process's own).

Runs never mix: the output folder is locked for the run (a second run into it fails at once) and
holds a ``run.json`` fingerprint (:func:`run_fields`). A used folder is refused unless
``training.resume=latest`` continues the same run or ``training.overwrite=true`` replaces it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nara.data.collate import Collator
from nara.training import checkpoint as ckpt
from nara.training.config import ConfigError, RecipeConfig
from nara.training.data import (
    EpochSampler,
    check_sources,
    no_validation_notice,
    split_records,
    tokenize,
)
from nara.training.metrics import MetricsLogger
from nara.training.optim import build_optimizer, build_scheduler

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, index) over 63 bits

# what a training run writes into output_dir (training.overwrite removes exactly these)
OUTPUTS = ("checkpoints", "best", "final", "metrics.jsonl", "config.yaml", "run_info.json")
# recipe keys that do not change the trained weights: they may differ when a run is resumed
_BOOKKEEPING = (
    "resume",
    "overwrite",
    "report_to",
    "log_every",
    "eval_every",
    "save_every",
    "keep_checkpoints",
    "gradient_checkpointing",
)


def noise_seed(seed: int, index: int, salt: int = 0) -> int:
    """Seed of the noise draw for micro-batch ``index`` (validation uses ``salt=1``)."""
    return (seed * _SEED_MIX + index * 2 + salt) % (2**63)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: nothing was left half-written; ``checkpoint`` is the newest
    complete one (None when none was saved yet)."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step, checkpoint)
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainResult:
    """Where a run ended: steps done, last training loss, best validation, adapter folders."""

    output_dir: Path
    steps: int
    final_loss: float | None
    best_val_loss: float | None
    final_adapter: Path
    best_adapter: Path | None


class Trainer:
    """One fine-tuning run of a recipe.

    Args:
        config: the validated recipe.
        loaded: optional ``(model, tokenizer, mask_token_id)`` to use instead of
            ``load_model(config.model.name)`` (tests and the demo pass an in-memory model).
        show_progress: show progress on the main process (a bar on a terminal, else lines).
    """

    def __init__(
        self, config: RecipeConfig, *, loaded: Any = None, show_progress: bool = True
    ) -> None:
        self.config = config
        self.cfg = config.training
        self.output_dir = Path(config.output_dir)
        self.state = ckpt.TrainerState()
        self._lock: Any = None
        self._check_inputs()
        self._setup_accelerator()
        try:
            resume = self._claim_output_dir()
            self._setup_model(loaded)
            self._setup_model_data()
            self._setup_optimization()
            self._resume(resume)
            self.log = MetricsLogger(
                self.accelerator,
                self.output_dir / "metrics.jsonl",
                total=self.total_steps,
                initial=self.state.step,
                show_progress=show_progress,
            )
        except BaseException:
            self.close()
            raise

    def _check_inputs(self) -> None:
        """Checks that need no model: a missing data file fails here, not after the model loaded."""
        check_sources(self.config.data)

    def _setup_model_data(self) -> None:
        """Data that needs the model's tokenizer (SFT: the token batches)."""
        self._setup_data()

    def close(self) -> None:
        """Release the output folder's lock (done by :meth:`train`; call it for a Trainer that is
        built but never trained)."""
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    # ------------------------------------------------------------------ setup

    def _setup_accelerator(self) -> None:
        """Accelerator first: the world size fixes the accumulation, the seed the adapter init."""
        from accelerate import Accelerator, PartialState
        from accelerate.utils import set_seed

        from nara.training.metrics import check_trackers

        # Accelerate treats a torchrun launch without GPUs as multi-CPU (gloo) only if told so
        cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accum = self.cfg.accumulation(PartialState(cpu=cpu).num_processes)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=_mixed_precision(self.cfg.mixed_precision),
            gradient_accumulation_steps=self.accum,
            step_scheduler_with_optimizer=False,  # we step it once per update, any world size
            log_with=check_trackers(self.cfg.report_to) or None,
            project_dir=str(self.output_dir),
        )
        set_seed(self.cfg.seed)

    def _claim_output_dir(self) -> Path | None:
        """Lock ``output_dir`` and check what it holds, on the main process before the model
        loads; every process gets the outcome. Returns the checkpoint to resume from."""
        from accelerate.utils import DistributedType, broadcast_object_list

        acc = self.accelerator
        sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if sharded and (self.cfg.save_every or self.cfg.resume):
            raise ConfigError(
                f"training.save_every / training.resume under {acc.distributed_type}: nara's "
                "resumable checkpoints (pickle-free, every process's RNG) support single-process "
                "and DDP runs; add training.save_every=none training.resume=none, or launch with "
                "configs/accelerate/ddp.yaml"
            )
        outcome: list[Any] = [None]
        if acc.is_main_process:
            try:
                outcome = [self._claim_on_main()]
            except Exception as err:  # re-raised on every process below
                outcome = [err]
        if acc.num_processes > 1:
            outcome = broadcast_object_list(outcome)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        path, self.token = outcome[0]
        return None if path is None else Path(path)

    def _claim_on_main(self) -> tuple[str | None, int]:
        """(checkpoint to resume or None, this run's token for temporary folder names)."""
        from nara.runs import RunLock, claim_run_folder

        c = self.cfg
        self._lock = RunLock(self.output_dir).__enter__()
        ckpt.remove_partial(self.output_dir)
        path = ckpt.resolve_resume(c.resume, self.output_dir)
        fields = self._run_fields()
        if path is not None:
            check_same_run(path, fields)

        def claim(overwrite: bool) -> bool:
            return claim_run_folder(
                self.output_dir,
                fields,
                kind="train",
                outputs=OUTPUTS,
                overwrite=overwrite,
                resume=c.resume is not None,
            )

        continues = claim(c.overwrite)
        if c.resume == "latest" and path is None:
            if continues:  # this run's outputs, but killed before its first complete checkpoint
                claim(True)
            print(
                f"training.resume=latest: no complete checkpoint in {self.output_dir}; "
                "starting from scratch"
            )
        return (None if path is None else str(path)), os.getpid()

    def _run_fields(self) -> dict[str, Any]:
        """The fields that identify this run (``run.json``, checked on resume)."""
        return run_fields(self.config)

    def _setup_model(self, loaded: Any) -> None:
        """Base model (frozen) + adapters; trainable weights in float32 under autocast."""
        from nara.adapters import add_adapters

        if loaded is None:
            from nara.models import load_model

            m = self.config.model
            dtype = None if m.dtype == "auto" else getattr(torch, m.dtype)
            if dtype is None and torch.cuda.is_available():
                dtype = torch.bfloat16
            loaded = load_model(
                m.name,
                dtype=dtype,
                trust_remote_code=m.trust_remote_code,
                load_in_4bit=m.load_in_4bit,
                load_in_8bit=m.load_in_8bit,
            )
        model, self.tokenizer, self.mask_token_id = loaded
        adapter = self.config.adapter.build()
        add_adapters(model, adapter)
        self.regularizer = _regularizer(adapter)
        if self.accelerator.mixed_precision != "no":
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
        if self.cfg.gradient_checkpointing:
            _enable_gradient_checkpointing(model)
        self.model = model

    def _setup_data(self) -> None:
        """Records → token ids → loaders; the sampler's order is fixed by (seed, epoch)."""
        data = self.config.data
        train_records, val_records = split_records(data, self.cfg.seed)
        if not val_records and (notice := no_validation_notice(data)):
            self.accelerator.print(notice)
        train_set = tokenize(data, self.tokenizer, train_records)
        val_set = tokenize(data, self.tokenizer, val_records)
        collate = Collator(self.tokenizer.eos_token_id, data.pad_to, data.max_length)
        loader = torch.utils.data.DataLoader
        self.train_loader = loader(
            train_set,
            batch_size=self.cfg.batch_size,
            sampler=EpochSampler(len(train_set), self.cfg.seed),
            collate_fn=collate,
            drop_last=True,  # equal batch shapes on every process
            # its own RNG: a new epoch's iterator must not draw from the global RNG (dropout's),
            # or a resumed run would see a different dropout stream
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        self.val_loader = None
        if val_set:
            bs = self.cfg.eval_batch_size or self.cfg.batch_size
            self.val_loader = loader(val_set, batch_size=bs, shuffle=False, collate_fn=collate)
        self.num_train_examples = len(train_set)

    def _setup_optimization(self) -> None:
        """Optimizer + model + loaders through Accelerate, then the schedule (needs the length)."""
        c = self.cfg
        optimizer = build_optimizer(
            self.model, lr=c.lr, hyper_lr=c.hyper_lr, betas=c.betas, weight_decay=c.weight_decay
        )
        acc = self.accelerator
        self.model, self.optimizer, self.train_loader = acc.prepare(
            self.model, optimizer, self.train_loader
        )
        if self.val_loader is not None:
            self.val_loader = acc.prepare(self.val_loader)
        per_epoch = math.ceil(len(self.train_loader) / self.accum)
        if per_epoch == 0:
            raise ValueError(
                f"{self.num_train_examples} training examples make no batch of "
                f"{c.batch_size} x {acc.num_processes} process(es); lower training.batch_size "
                "or add data"
            )
        self.total_steps = c.max_steps or math.ceil(c.epochs * per_epoch)
        scheduler = build_scheduler(
            self.optimizer,
            schedule=c.schedule,
            warmup_ratio=c.warmup_ratio,
            total_steps=self.total_steps,
        )
        self.scheduler = acc.prepare(scheduler)

    def _resume(self, path: Path | None) -> None:
        """Weights, optimizer, scheduler, this process's RNG and the counters from ``path``."""
        if path is None:
            return
        acc = self.accelerator
        saved = ckpt.load_json(path / ckpt.TRAINER_STATE)
        if saved["world_size"] != acc.num_processes:
            raise ckpt.CheckpointError(
                f"checkpoint {path} was written by {saved['world_size']} process(es), this run "
                f"has {acc.num_processes}; resume it with {saved['world_size']} (the data order "
                "and RNG streams are per process)"
            )
        # the checkpoint holds only the trainable weights: the frozen base is not state
        acc.unwrap_model(self.model).load_state_dict(
            ckpt.load_weights(path / ckpt.WEIGHTS), strict=False
        )
        self.optimizer.load_state_dict(ckpt.load_tensors(path / ckpt.OPTIMIZER))
        self.scheduler.load_state_dict(saved["scheduler"])
        if acc.scaler is not None:
            acc.scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(ckpt.load_weights(path / ckpt.rng_name(acc.process_index)))
        self.state.load_state_dict(saved["trainer"])
        if acc.is_main_process:
            ckpt.truncate_metrics(self.output_dir / "metrics.jsonl", self.state.step)
        acc.print(f"resumed from {path} at update {self.state.step}")

    # ------------------------------------------------------------------ loop

    def train(self) -> TrainResult:
        """Run until ``total_steps`` updates; returns where the adapters were written.

        Raises:
            TrainingInterrupted: on Ctrl-C, with the step and the newest complete checkpoint.
        """
        try:
            self._write_config()
            self.accelerator.init_trackers("nara", config=_flat(self.config.to_dict()))
            for batch in self._micro_batches():
                if self._micro_step(batch):
                    self._after_update()
            return self._finish()
        except KeyboardInterrupt:
            found = ckpt.list_checkpoints(self.output_dir)
            raise TrainingInterrupted(self.state.step, found[-1] if found else None) from None
        finally:
            self.close()

    def _micro_batches(self):
        """Micro-batches across epochs, resuming mid-epoch where the state says."""
        while self.state.step < self.total_steps:
            skip = self.state.batches_in_epoch
            loader = self.accelerator.skip_first_batches(self.train_loader, skip)
            loader.set_epoch(self.state.epoch)
            try:
                for batch in loader:
                    yield batch
                    if self.state.step >= self.total_steps:
                        return
            finally:
                loader.end()  # leave Accelerate's gradient state clean on an early stop
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def _micro_step(self, batch: dict[str, torch.Tensor]) -> bool:
        """Loss and backward of one micro-batch; True when it completed an optimizer update."""
        from nara.diffusion import diffusion_loss

        acc = self.accelerator
        index = self.state.micro_batches * acc.num_processes + acc.process_index
        self.state.micro_batches += 1
        self.state.batches_in_epoch += 1
        with acc.accumulate(self.model):
            out = diffusion_loss(
                self.model,
                batch["input_ids"],
                batch["maskable"],
                self.mask_token_id,
                attention_mask=batch["attention_mask"],
                normalization=self.cfg.normalization,
                generator=self._generator(noise_seed(self.cfg.seed, index)),
            )
            loss = out.loss if self.regularizer is None else out.loss + self.regularizer(self.model)
            acc.backward(loss)
            self.log.add_micro(out.loss, out.lam, batch["attention_mask"])
            if not acc.sync_gradients:
                return False
            self._optimizer_step()
        return True

    def _optimizer_step(self) -> None:
        max_norm = self.cfg.max_grad_norm or math.inf
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.grad_norm = self.accelerator.clip_grad_norm_(params, max_norm)
        self.update_lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}  # this update's
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def _after_update(self) -> None:
        step = self.state.step
        write = step % self.cfg.log_every == 0
        self.log.update(step, self.state.epoch, self.update_lrs, self.grad_norm, write=write)
        last = step >= self.total_steps
        if self.val_loader is not None and (last or _every(step, self.cfg.eval_every)):
            self._evaluate()
        if _every(step, self.cfg.save_every) and not last:
            self._save_checkpoint()

    # ------------------------------------------------------------------ evaluation, saving

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Validation loss with the same noise every time (seeded per batch), so comparable."""
        from nara.diffusion import diffusion_loss

        acc = self.accelerator
        self.model.eval()
        nums, dens = [], []
        for i, batch in enumerate(self.val_loader):
            index = i * acc.num_processes + acc.process_index
            out = diffusion_loss(
                self.model,
                batch["input_ids"],
                batch["maskable"],
                self.mask_token_id,
                attention_mask=batch["attention_mask"],
                normalization=self.cfg.normalization,
                generator=self._generator(noise_seed(self.cfg.seed, index, salt=1)),
            )
            num, den = _per_sample_terms(out.sample_loss, batch["maskable"], self.cfg.normalization)
            nums.append(acc.gather_for_metrics(num))
            dens.append(acc.gather_for_metrics(den))
        self.model.train()
        val_loss = (torch.cat(nums).sum() / torch.cat(dens).sum().clamp_min(1.0)).item()
        improved = self.state.best_val_loss is None or val_loss < self.state.best_val_loss
        if improved:
            self.state.best_val_loss, self.state.best_step = val_loss, self.state.step
            self._save_adapter(self.output_dir / "best", {"val_loss": val_loss})
        self.log.record({"step": self.state.step, "val_loss": val_loss, "best": improved})
        return val_loss

    def _save_checkpoint(self) -> None:
        """Checkpoint ``step_N``, written in a temporary folder that the main process seals
        (checksums, then rename) once every process wrote its RNG state."""
        acc = self.accelerator
        final = ckpt.checkpoint_dir(self.output_dir, self.state.step)
        with ckpt.writing(ckpt.temporary_dir(final, self.token), str(final)) as tmp:
            if acc.is_main_process:
                tmp.mkdir(parents=True, exist_ok=True)
            acc.wait_for_everyone()
            ckpt.save_weights(tmp / ckpt.rng_name(acc.process_index), ckpt.rng_state())
            self._save_adapter(tmp / "adapter", {})
            if acc.is_main_process:
                self._write_training_state(tmp)
                ckpt.seal(tmp, final, self.state.step)
                ckpt.prune_checkpoints(self.output_dir, self.cfg.keep_checkpoints)
            acc.wait_for_everyone()

    def _write_training_state(self, folder: Path) -> None:
        """Trainable weights, optimizer (tensors only), scheduler, counters and the run's fields."""
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        ckpt.save_weights(folder / ckpt.WEIGHTS, trainable)
        ckpt.save_tensors(folder / ckpt.OPTIMIZER, self.optimizer.state_dict())
        state = {
            "format": ckpt.FORMAT,
            "world_size": acc.num_processes,
            "trainer": self.state.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "run": self._run_fields(),
        }
        ckpt.save_json(folder / ckpt.TRAINER_STATE, state)
        (folder / "config.yaml").write_text(self.config.to_yaml())

    def _save_adapter(self, path: Path, info: dict[str, Any]) -> None:
        """Adapter folder (``save_adapters``) + a JSON of where it came from, written aside and
        renamed into place, so ``best/`` and ``final/`` are never half-written; main process."""
        from nara.adapters import save_adapters

        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            with ckpt.writing(ckpt.temporary_dir(path, self.token), str(path)) as tmp:
                save_adapters(acc.unwrap_model(self.model), tmp)
                record = {"step": self.state.step, "base_model": self.config.model.name, **info}
                (tmp / "nara_run.json").write_text(json.dumps(record, indent=2) + "\n")
                ckpt.replace_dir(tmp, path)
        acc.wait_for_everyone()

    def _write_config(self) -> None:
        """The resolved recipe and the run's layout (processes, accumulation, precision)."""
        acc = self.accelerator
        if not acc.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.yaml").write_text(self.config.to_yaml())
        info = {
            "world_size": acc.num_processes,
            "distributed_type": str(acc.distributed_type),
            "grad_accum": self.accum,
            "global_batch_size": self.cfg.batch_size * self.accum * acc.num_processes,
            "mixed_precision": acc.mixed_precision,
            "device": str(acc.device),
            "total_steps": self.total_steps,
            "train_examples": self.num_train_examples,
        }
        (self.output_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")

    def _finish(self) -> TrainResult:
        final = self.output_dir / "final"
        self._save_adapter(final, {"best_val_loss": self.state.best_val_loss})
        self.log.close()
        self.accelerator.end_training()
        best = self.output_dir / "best"
        return TrainResult(
            output_dir=self.output_dir,
            steps=self.state.step,
            final_loss=self.log.last_loss,
            best_val_loss=self.state.best_val_loss,
            final_adapter=final,
            best_adapter=best if best.is_dir() else None,
        )

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.accelerator.device).manual_seed(seed)


# ---------------------------------------------------------------------- helpers


def train(config: RecipeConfig, *, loaded: Any = None, show_progress: bool = True) -> TrainResult:
    """Run a recipe end to end (see :class:`Trainer`)."""
    return Trainer(config, loaded=loaded, show_progress=show_progress).train()


def run_fields(config: RecipeConfig) -> dict[str, Any]:
    """The recipe fields that define a run's results, plus the sha256 of local data files.

    Left out: bookkeeping that does not change the weights (``_BOOKKEEPING``: resume, logging,
    evaluation and checkpoint cadence, gradient checkpointing) and ``output_dir``. The step count
    and epochs stay in: the learning-rate schedule depends on them, so a run cannot be extended.
    """
    from nara.runs import sha256_file

    raw = config.to_dict()
    data = config.data
    files = {
        part: sha256_file(part)
        for spec in (data.source, data.val_source or "")
        for part in spec.split("+")
        if part and Path(part).is_file()
    }
    return {
        "model": raw["model"],
        "adapter": raw["adapter"],
        "data": raw["data"],
        "data_files": files,
        "training": {k: v for k, v in raw["training"].items() if k not in _BOOKKEEPING},
    }


def check_same_run(path: Path, fields: Mapping[str, Any]) -> None:
    """Refuse to resume checkpoint ``path`` with other settings than it was trained with.

    Raises:
        CheckpointError: naming each differing field, e.g. ``adapter.r=8`` vs ``adapter.r=16``.
    """
    saved = _flat(ckpt.load_json(path / ckpt.TRAINER_STATE)["run"])
    now = _flat(dict(fields))
    keys = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if keys:
        was = ", ".join(f"{k}={saved.get(k, '(unset)')}" for k in keys)
        has = ", ".join(f"{k}={now.get(k, '(unset)')}" for k in keys)
        raise ckpt.CheckpointError(
            f"checkpoint {path} was trained with {was}, this run has {has}; resume with the "
            "checkpoint's settings, or start a new run (a new output_dir, or "
            "training.overwrite=true)"
        )


def _regularizer(adapter: Any) -> Callable[[torch.nn.Module], torch.Tensor] | None:
    """The adapter's own penalty added to the training loss (LoRA-Diffusion's orthogonality and
    nuclear-norm terms), or None when the method has none or its weights are zero."""
    from nara.adapters.trajectory import TrajectoryConfig, trajectory_regularizer

    weighted = isinstance(adapter, TrajectoryConfig) and (
        adapter.orthogonality_weight > 0 or adapter.nuclear_weight > 0
    )
    return trajectory_regularizer if weighted else None


def _every(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16" if cuda_bf16 else "no"


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{type(model).__name__} does not support gradient checkpointing; set "
            "training.gradient_checkpointing=false"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _per_sample_terms(
    sample_loss: torch.Tensor, maskable: torch.Tensor, normalization: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator per sample whose global ratio is the batch loss formula.

    ``answer_length``: (S_i / n_i, 1); ``token``: (S_i, n_i); ``batch``: (S_i, 1), with S_i the
    sample's Σ CE/p and n_i its maskable count — so the validation loss over many batches and
    processes is the loss of one big batch.
    """
    n = maskable.sum(-1).float()  # (B,)
    ones = torch.ones_like(sample_loss)
    if normalization == "answer_length":
        return sample_loss / n.clamp_min(1.0), ones
    if normalization == "token":
        return sample_loss, n
    return sample_loss, ones


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config for trackers (``training.lr``), lists as strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
