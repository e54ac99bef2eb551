"""RL fine-tuning of a dLLM's adapter: diffu-GRPO and wd1 on nara's training machinery.

Run it::

    nara rl configs/rl/embedded_arithmetic_grpo.yaml
    nara rl configs/rl/embedded_arithmetic_grpo.yaml adapter.init_from=runs/demo/nara/final
    nara rl configs/llada8b/gsm8k_diffu_grpo.yaml model.name=/path/to/LLaDA-8B-Instruct

One *rollout* draws ``training.batch_size`` prompts per process, samples ``rl.group_size``
completions of each with :func:`nara.diffusion.generate`, scores them (:mod:`nara.rl.rewards`)
and then makes ``rl.inner_iterations`` (μ) optimizer updates on them:

- ``diffu_grpo``: group-normalised advantages; per update, the one-step per-token log-prob
  estimate (:func:`nara.rl.per_token_logprobs`: completion masked, prompt tokens masked with
  probability p) under the same prompt mask for all μ updates, the ratio to the estimate made
  before the first update, clipping and the k3 KL to the policy at the start of RL
  (:func:`nara.rl.reference_logprobs`: the base model with the adapter switched off, or with
  ``adapter.init_from``'s tensors swapped in): :func:`nara.rl.grpo_loss`.
- ``wd1``: :func:`nara.rl.wd1_loss`, the ratio-free weighted log-likelihood.

Everything else is :class:`nara.training.trainer.Trainer`'s: Accelerate, the output folder's
lock and ``run.json``, exact resume from atomic checkpoints, metrics and progress, the adapter
folders. A run is a pure function of the recipe: rollout g (counted over processes) draws its
prompts from a (seed, epoch) permutation, its sampling noise and its prompt masks from
generators seeded by (seed, g), so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from nara.data.records import Record
from nara.rl.config import RLConfig
from nara.rl.estimators import adapter_snapshot, per_token_logprobs, reference_logprobs
from nara.rl.losses import group_advantages, grpo_loss, wd1_loss
from nara.rl.rewards import build_rewards, load_prompts
from nara.training import checkpoint as ckpt
from nara.training.config import ConfigError
from nara.training.optim import build_optimizer, build_scheduler
from nara.training.trainer import _BOOKKEEPING, Trainer, TrainResult, noise_seed


@dataclass
class Rollout:
    """One rollout's completions and everything the μ updates reuse; rows are grouped, the
    ``group_size`` completions of one prompt consecutive.

    Attributes:
        prompt_ids, prompt_attention: long (N, P), left-padded prompts, repeated per completion.
        completion_ids: long (N, L), the sampled completions.
        completion_mask: long (N, L), 1 up to and including the first EOS.
        texts: the N decoded completions; records: the N prompts' records.
        rewards: float (N,) weighted totals; parts: {name: (N,)} unweighted rewards.
        mask_seed: seeds the prompt masks of the log-prob estimates (chunk c: see
            :meth:`RLTrainer._mask_generator`).
        old_logp, ref_logp: float (N, L) or None: the policy's estimate before the first
            update (only when μ > 1) and the reference policy's (only when β > 0).
    """

    prompt_ids: torch.Tensor
    prompt_attention: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    records: list[Record]
    rewards: torch.Tensor
    parts: dict[str, torch.Tensor]
    mask_seed: int
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None


def completion_mask(completions: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """long (N, L): 1 up to and including each row's first EOS (every position if none)."""
    if eos_token_id is None:
        return torch.ones_like(completions)
    is_eos = (completions == eos_token_id).long()
    before = is_eos.cumsum(-1) - is_eos  # EOS seen strictly before each position
    return (before == 0).long()


def prompt_order(position: int, size: int, seed: int) -> int:
    """The record index at ``position`` of the endless prompt stream: epoch e is a permutation
    of ``size`` records seeded by (seed, e), as :class:`nara.training.data.EpochSampler` draws."""
    epoch, offset = divmod(position, size)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(size, generator=gen)[offset])


class RLTrainer(Trainer):
    """One RL run of an :class:`~nara.rl.config.RLConfig`.

    Args:
        config: the validated RL recipe.
        loaded: optional ``(model, tokenizer, mask_token_id)`` instead of loading
            ``config.model.name`` (tests pass an in-memory model).
        show_progress: progress on the main process.
    """

    def __init__(self, config: RLConfig, *, loaded: Any = None, show_progress: bool = True):
        self.rl = config.rl
        self.val_loader = None  # no validation loss: evaluate the adapter with nara eval
        super().__init__(config, loaded=loaded, show_progress=show_progress)

    def _check_inputs(self) -> None:
        """Data, rewards and the starting adapter are checked before a model loads."""
        self._setup_data()
        self.init_meta = _init_adapter(self.config)

    def _setup_model_data(self) -> None:
        """Nothing: the prompts were read in :meth:`_check_inputs`."""

    # ------------------------------------------------------------------ setup

    def _setup_data(self) -> None:
        """The prompts (``self.records``) and the reward function."""
        self.task, self.records = load_prompts(self.config.data, self.config.rewards.scorer)
        self.rewards = build_rewards(self.config.rewards, self.task)

    def _run_fields(self) -> dict[str, Any]:
        """Recipe fields that decide the result, the starting adapter's and data file's hashes."""
        from nara.runs import adapter_identity, sha256_file

        raw = self.config.to_dict()
        fields = {k: raw[k] for k in ("model", "adapter", "data", "rl", "rewards") if k in raw}
        fields["training"] = {k: v for k, v in raw["training"].items() if k not in _BOOKKEEPING}
        if self.config.adapter.init_from is not None:
            fields["init_adapter"] = adapter_identity(self.config.adapter.init_from)
        if Path(self.config.data.source).is_file():
            fields["data_file"] = sha256_file(self.config.data.source)
        return fields

    def _setup_model(self, loaded: Any) -> None:
        """Base + adapters as in ``nara train``; then the starting adapter's weights, if any."""
        super()._setup_model(loaded)
        if self.init_meta is not None:
            from nara.adapters.save import WEIGHTS_NAME, load_state, read_weights

            folder = Path(self.config.adapter.init_from)
            load_state(self.model, read_weights(folder, self.init_meta), folder / WEIGHTS_NAME)
        self.eos_token_id = getattr(self.tokenizer, "eos_token_id", None)
        self.num_train_examples = len(self.records)

    def _setup_optimization(self) -> None:
        """Optimizer and schedule through Accelerate; then the reference policy: with
        ``adapter.init_from`` a frozen copy of the starting adapter's tensors, taken on the
        model's device before a resumed checkpoint replaces them (None: the adapter off)."""
        c = self.cfg
        optimizer = build_optimizer(
            self.model, lr=c.lr, hyper_lr=c.hyper_lr, betas=c.betas, weight_decay=c.weight_decay
        )
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        self.total_steps = c.max_steps
        scheduler = build_scheduler(
            self.optimizer,
            schedule=c.schedule,
            warmup_ratio=c.warmup_ratio,
            total_steps=self.total_steps,
        )
        self.scheduler = self.accelerator.prepare(scheduler)
        self.reference = None
        if self.init_meta is not None:
            self.reference = adapter_snapshot(self.accelerator.unwrap_model(self.model))

    # ------------------------------------------------------------------ loop

    def train(self) -> TrainResult:
        """Rollouts until ``training.max_steps`` updates; returns where the adapter went.

        Raises:
            TrainingInterrupted: on Ctrl-C, with the step and the newest complete checkpoint.
        """
        from nara.training.trainer import TrainingInterrupted, _flat

        try:
            self._write_config()
            self.accelerator.init_trackers("nara", config=_flat(self.config.to_dict()))
            while self.state.step < self.total_steps:
                rollout = self.rollout()
                self._update_on(rollout)
            return self._finish()
        except KeyboardInterrupt:
            found = ckpt.list_checkpoints(self.output_dir)
            raise TrainingInterrupted(self.state.step, found[-1] if found else None) from None
        finally:
            self.close()

    def rollout(self) -> Rollout:
        """Sample and score the next rollout's completions (advancing the rollout counter)."""
        acc = self.accelerator
        index = self.state.micro_batches * acc.num_processes + acc.process_index
        self.state.micro_batches += 1
        records = self._prompts(index)
        completions, prompt_ids, prompt_attention = self._sample(records, index)
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        rows = [r for r in records for _ in range(self.rl.group_size)]
        prompts = [r.prompt for r in rows]
        rewards, parts = self.rewards(prompts, texts, rows)
        rollout = Rollout(
            prompt_ids=prompt_ids,
            prompt_attention=prompt_attention,
            completion_ids=completions,
            completion_mask=completion_mask(completions, self.eos_token_id),
            texts=texts,
            records=rows,
            rewards=rewards.to(acc.device),
            parts=parts,
            mask_seed=noise_seed(self.cfg.seed, index, salt=1),
        )
        self._fixed_logprobs(rollout)
        return rollout

    def _order(self, index: int) -> list[int]:
        """The indices into ``self.records`` of global rollout ``index`` (one process's
        ``batch_size``)."""
        b = self.cfg.batch_size
        n, seed = len(self.records), self.cfg.seed
        return [prompt_order(p, n, seed) for p in range(index * b, (index + 1) * b)]

    def _prompts(self, index: int) -> list[Record]:
        """The records of global rollout ``index`` (one process's share)."""
        return [self.records[i] for i in self._order(index)]

    @torch.no_grad()
    def _sample(
        self, records: list[Record], index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(completions (N, L), prompt ids (N, P), prompt attention (N, P)), N = batch x G;
        sampled with the adapter on, dropout off, noise seeded by the rollout's index."""
        from nara.data.collate import encode_prompt_batch
        from nara.diffusion import generate

        acc, rl = self.accelerator, self.rl
        ids, attention = encode_prompt_batch(
            self.tokenizer,
            [r.prompt for r in records],
            chat_template=self.config.data.chat_template,
        )
        ids = ids.repeat_interleave(rl.group_size, 0).to(acc.device)  # (N, P)
        attention = attention.repeat_interleave(rl.group_size, 0).to(acc.device)
        model = acc.unwrap_model(self.model)
        model.eval()
        with acc.autocast():
            completions = generate(
                model,
                ids,
                attention,
                mask_token_id=self.mask_token_id,
                gen_length=rl.gen_length,
                steps=rl.steps or rl.gen_length,
                block_length=rl.block_length,
                temperature=rl.temperature,
                remasking=rl.remasking,
                eos_token_id=self.eos_token_id,
                threshold=rl.threshold,
                cache=rl.cache,
                cache_tolerance=rl.cache_tolerance,
                generator=self._generator(noise_seed(self.cfg.seed, index)),
            )
        model.train()
        return completions, ids, attention

    def _chunks(self, n: int) -> list[slice]:
        size = self.rl.micro_batch_size or n
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _mask_generator(self, rollout: Rollout, chunk: int) -> torch.Generator:
        """The CPU generator of chunk ``chunk``'s prompt mask: the same at every update."""
        return torch.Generator().manual_seed(noise_seed(rollout.mask_seed, chunk))

    def _logprobs(self, model: Any, rollout: Rollout, rows: slice, chunk: int, fn=None):
        """The one-step estimate (``fn``: per_token_logprobs or reference_logprobs) of rows."""
        fn = fn or per_token_logprobs
        return fn(
            model,
            rollout.prompt_ids[rows],
            rollout.completion_ids[rows],
            mask_token_id=self.mask_token_id,
            prompt_mask_prob=self.rl.prompt_mask_prob,
            generator=self._mask_generator(rollout, chunk),
            prompt_attention=rollout.prompt_attention[rows],
            completion_mask=rollout.completion_mask[rows],
        )

    @torch.no_grad()
    def _fixed_logprobs(self, rollout: Rollout) -> None:
        """The estimates the μ updates compare against, without dropout: the policy's before
        its first update (μ > 1; with μ = 1 the ratio is 1 by construction) and the reference
        policy's (β > 0)."""
        rl = self.rl
        if rl.algorithm != "diffu_grpo":
            return
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        chunks = list(enumerate(self._chunks(rollout.completion_ids.shape[0])))
        with self.accelerator.autocast():
            if rl.inner_iterations > 1:
                rollout.old_logp = torch.cat(
                    [self._logprobs(model, rollout, s, c) for c, s in chunks]
                )
            if rl.beta > 0:
                ref = partial(reference_logprobs, reference=self.reference)
                rollout.ref_logp = torch.cat(
                    [self._logprobs(model, rollout, s, c, ref) for c, s in chunks]
                )
        model.train()

    def objective(self, rollout: Rollout, rows: slice, logp: torch.Tensor) -> Any:
        """The loss of ``rows`` given their policy estimate ``logp`` (N_rows, L): a
        :class:`nara.rl.GRPOOutput` (diffu_grpo) or a scalar (wd1). Rows hold whole groups."""
        rl, g = self.rl, self.rl.group_size
        mask = rollout.completion_mask[rows]
        if rl.algorithm == "wd1":
            return wd1_loss(logp, rollout.rewards[rows], mask, g, temperature=rl.wd1_temperature)
        advantages = group_advantages(rollout.rewards, g)[rows]
        old = logp.detach() if rollout.old_logp is None else rollout.old_logp[rows]
        ref = None if rollout.ref_logp is None else rollout.ref_logp[rows]
        return grpo_loss(
            logp, old, advantages, mask, ref_logp=ref, clip_eps=rl.clip_eps, beta=rl.beta
        )

    def _update_on(self, rollout: Rollout) -> None:
        """μ optimizer updates on one rollout, each accumulating the loss over its chunks."""
        n = rollout.completion_ids.shape[0]
        chunks = self._chunks(n)
        stats = {"kl": 0.0, "clip_fraction": 0.0}
        for iteration in range(self.rl.inner_iterations):
            total = torch.zeros((), device=self.accelerator.device)
            for c, rows in enumerate(chunks):
                with self.accelerator.autocast():
                    logp = self._logprobs(self.model, rollout, rows, c)
                    out = self.objective(rollout, rows, logp)
                loss = out if isinstance(out, torch.Tensor) else out.loss
                weight = (rows.stop - rows.start) / n  # losses are means over rows
                self.accelerator.backward(loss * weight)
                total += loss.detach() * weight
                if not isinstance(out, torch.Tensor):
                    stats["kl"] += out.kl.item() * weight / self.rl.inner_iterations
                    stats["clip_fraction"] += (
                        out.clip_fraction.item() * weight / self.rl.inner_iterations
                    )
            self._optimizer_step()
            self.log.add_micro(total, torch.ones(1), rollout.completion_mask)
            if iteration == self.rl.inner_iterations - 1:
                self._record_rollout(rollout, stats)
            self._after_update()

    def _record_rollout(self, rollout: Rollout, stats: dict[str, float]) -> None:
        """A metrics record of the rollout: mean rewards (all processes), completion length and,
        for diffu_grpo, the mean KL and clip fraction over its updates."""
        values = {"reward": rollout.rewards.float().mean()}
        values.update({f"reward_{k}": v.float().mean() for k, v in rollout.parts.items()})
        values["completion_length"] = rollout.completion_mask.float().sum(-1).mean()
        if self.rl.algorithm == "diffu_grpo":
            values.update({k: torch.tensor(v) for k, v in stats.items()})
        self._record_means(values)

    def _record_means(self, values: dict[str, torch.Tensor]) -> None:
        """One metrics record of ``values`` averaged over the processes."""
        acc = self.accelerator
        names = list(values)
        local = torch.stack([values[k].to(acc.device, torch.float64) for k in names])
        mean = acc.reduce(local, reduction="mean")
        record = {"step": self.state.step, "rollout": self.state.micro_batches}
        record.update({k: mean[i].item() for i, k in enumerate(names)})
        self.log.record(record)


def _init_adapter(config: RLConfig) -> dict[str, Any] | None:
    """The adapter_config.json of ``adapter.init_from`` (None without one), checked to hold the
    recipe's method and fields, so the run trains the adapter the recipe describes.

    Raises:
        ConfigError: naming each field where the folder and the recipe differ.
    """
    folder = config.adapter.init_from
    if folder is None:
        return None
    from nara.adapters.config import AdapterConfig
    from nara.adapters.save import read_config

    meta = read_config(Path(folder))
    if "peft_type" in meta:
        raise ConfigError(
            f"adapter.init_from={folder} is a PEFT adapter; convert it with "
            "nara.load_peft_adapters and nara.save_adapters first"
        )
    saved = AdapterConfig.from_dict(meta["config"]).to_dict()
    wanted = config.adapter.build().to_dict()
    diff = [k for k in sorted(saved.keys() | wanted.keys()) if saved.get(k) != wanted.get(k)]
    if diff:
        shown = ", ".join(f"{k}: folder {saved.get(k)!r} vs recipe {wanted.get(k)!r}" for k in diff)
        raise ConfigError(
            f"adapter.init_from={folder} holds another adapter than the recipe's ({shown}); set "
            "the recipe's adapter fields to the folder's (adapter.<field>=...)"
        )
    return meta


def train_rl(config: RLConfig, *, loaded: Any = None, show_progress: bool = True) -> TrainResult:
    """Run an RL recipe end to end (see :class:`RLTrainer`; ``rl.algorithm=vrpo``:
    :class:`nara.rl.preference.VRPOTrainer`)."""
    trainer_class = RLTrainer
    if config.rl.algorithm == "vrpo":
        from nara.rl.preference import VRPOTrainer

        trainer_class = VRPOTrainer
    return trainer_class(config, loaded=loaded, show_progress=show_progress).train()
