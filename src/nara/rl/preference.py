"""Preference optimisation for masked diffusion models: DPO on Monte-Carlo ELBOs with VRPO's
variance reduction (LLaDA 1.5; the facts are in docs/rl.md).

A masked diffusion model has no exact log-likelihood, so DPO's log-ratio log π(y|x) − log
π_ref(y|x) is replaced by a difference of ELBO estimates B̂_π(y) − B̂_ref(y). The estimation
noise passes through the log-sigmoid and biases the loss; VRPO cuts it without extra cost by

- spending the whole budget of n masked samples on n distinct timesteps with one mask each
  (stratified over the answer length here, as :func:`nara.log_likelihood` draws its counts),
- drawing those timesteps and masks once per step and reusing them for the policy and the
  reference (antithetic sampling): the two estimates share their noise, which then cancels in
  the difference. Both estimates run with the same seed, so the masks match by construction.

The reference is the policy at the start of training without a second copy of the weights: the
base model with the adapters switched off, or with the starting adapter's tensors swapped in
(:func:`nara.rl.reference_policy`).

Data: one ``{prompt, chosen, rejected}`` object per record, read by :func:`load_preferences`.
Training: ``nara rl`` with ``rl.algorithm=vrpo`` runs :class:`VRPOTrainer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nara.data.collate import encode_pair
from nara.data.records import RecordFormatError, read_raw_records
from nara.diffusion.likelihood import TokenIds, checked_pairs, elbo_samples_mean
from nara.diffusion.sampling import max_length
from nara.rl.estimators import reference_policy
from nara.rl.trainer import RLTrainer
from nara.training.config import ConfigError
from nara.training.trainer import noise_seed

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    """One preference record: a prompt with a preferred (``chosen``) and a dispreferred
    (``rejected``) answer; ``meta`` keeps ``id`` and any extra fields of the record."""

    prompt: str
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)


def parse_preferences(
    items: Iterable[tuple[str, Any]], *, source: str = "<preferences>"
) -> list[PreferencePair]:
    """Validate (location, object) pairs as preference records.

    Raises:
        RecordFormatError: naming ``source``, the record (and line) and the fix, when a record
            is not an object, misses a field, has a non-string or empty field, or has the same
            chosen and rejected text (a pair that teaches nothing); or when there is none.
    """
    expected = (
        "expected preference records {prompt, chosen, rejected} (strings), one JSON object per "
        "line, a JSON list or CSV"
    )
    pairs = []
    for index, (location, raw) in enumerate(items):
        where = f"{source}: {location}"
        if not isinstance(raw, dict):
            raise RecordFormatError(f"{where} is a {type(raw).__name__}, not an object; {expected}")
        for key in PREFERENCE_FIELDS:
            if key not in raw:
                raise RecordFormatError(
                    f"{where}: missing field '{key}' (fields: {sorted(raw)}); {expected}"
                )
            value = raw[key]
            if not isinstance(value, str):
                raise RecordFormatError(
                    f"{where}: field '{key}' is a {type(value).__name__} ({value!r:.60}); {expected}"
                )
            if not value.strip():
                raise RecordFormatError(
                    f"{where}: field '{key}' is empty; write its text or drop the record"
                )
        if raw["chosen"] == raw["rejected"]:
            raise RecordFormatError(
                f"{where}: 'chosen' and 'rejected' are the same text, so the pair carries no "
                "preference; fix the record or drop it"
            )
        meta = {k: v for k, v in raw.items() if k not in PREFERENCE_FIELDS}
        meta.setdefault("id", str(index))
        pairs.append(PreferencePair(raw["prompt"], raw["chosen"], raw["rejected"], meta))
    if not pairs:
        raise RecordFormatError(f"{source}: no preference records; {expected}")
    return pairs


def load_preferences(path: str | Path) -> list[PreferencePair]:
    """Read preference records from a JSONL, JSON-list or CSV file (see
    :func:`parse_preferences` for what raises)."""
    path = Path(path)
    return parse_preferences(read_raw_records(path), source=str(path))


@dataclass
class EncodedPreference:
    """Token ids of one pair: the prompt as the model sees it and both answers ending in EOS."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def encode_preferences(
    tokenizer: Any, pairs: Iterable[PreferencePair], *, chat_template: str = "auto"
) -> list[EncodedPreference]:
    """Tokenize pairs the way supervised fine-tuning tokenizes (prompt, answer)
    (:func:`nara.data.collate.encode_pair`), so DPO scores the answers SFT trained on."""
    out = []
    for pair in pairs:
        chosen = encode_pair(tokenizer, pair.prompt, pair.chosen, chat_template=chat_template)
        rejected = encode_pair(tokenizer, pair.prompt, pair.rejected, chat_template=chat_template)
        out.append(EncodedPreference(chosen.prompt_ids, chosen.answer_ids, rejected.answer_ids))
    return out


def pair_length(pair: EncodedPreference) -> int:
    """Tokens of the longer of a pair's two sequences: prompt + chosen or prompt + rejected."""
    return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))


def check_pair_lengths(
    pairs: Sequence[PreferencePair],
    encoded: Sequence[EncodedPreference],
    limit: int | None,
    model_limit: int | None,
    source: str,
) -> None:
    """Refuse pairs longer than ``limit`` (``rl.max_length``; None: ``model_limit``, the
    model's maximum sequence length), so that no pair is ever cut to fit.

    Raises:
        ConfigError: ``limit`` above ``model_limit``.
        ValueError: naming the longest pairs (id, tokens), how many there are, the limit and
            the fixes.
    """
    if limit is not None and model_limit is not None and limit > model_limit:
        raise ConfigError(
            f"rl.max_length={limit} is more than the model's maximum sequence length "
            f"{model_limit}; set rl.max_length <= {model_limit} or none"
        )
    limit = limit if limit is not None else model_limit
    if limit is None:
        return
    lengths = [(pair_length(e), p.meta["id"]) for p, e in zip(pairs, encoded)]
    long = sorted((x for x in lengths if x[0] > limit), key=lambda x: -x[0])  # file order on ties
    if long:
        shown = ", ".join(f"id {i!r} ({n} tokens)" for n, i in long[:3])
        name = "rl.max_length" if limit != model_limit else "the model's maximum sequence length"
        raise ValueError(
            f"{source}: {len(long)} preference pair(s) are longer than {name} {limit} tokens "
            f"(prompt + the longer answer), e.g. {shown}; pairs are never cut: shorten or drop "
            "them" + (", or raise rl.max_length" if limit != model_limit else "")
        )


def elbo_estimates(
    model: torch.nn.Module,
    prompt_ids: Sequence[TokenIds],
    answer_ids: Sequence[TokenIds],
    n_samples: int = 8,
    *,
    mask_token_id: int,
    seed: int = 0,
    batch_size: int = 16,
) -> torch.Tensor:
    """Monte-Carlo ELBO of each answer given its prompt, differentiable: float64 (N,).

    VRPO's allocation: ``n_samples`` timesteps, one mask each. Timestep j masks l_j answer
    positions, the counts stratified over 1..L (L = answer length), the positions uniform; the
    sample scores (L / l_j)·Σ_masked log p(a_i | prompt, unmasked answer) with λ = l_j / L
    (:func:`nara.masked_fraction`) and the local mask density set on noise-aware adapters.
    The draws come from a CPU generator seeded with ``seed`` alone, so two calls on the same
    inputs and seed (the policy and the reference) use identical timesteps and masks. Its
    expectation is the bound that :func:`nara.log_likelihood` estimates.

    Raises:
        ValueError: on mismatched inputs, an empty answer, a mask token inside the inputs, a
            bad mask token id, or non-positive ``n_samples`` / ``batch_size``.
    """
    for name, value in (("n_samples", n_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    single, pairs = checked_pairs(model, prompt_ids, answer_ids, mask_token_id)
    if single:
        raise ValueError("pass sequences of prompts and answers (a batch), e.g. [prompt], [answer]")
    generator = torch.Generator().manual_seed(seed)
    return elbo_samples_mean(model, pairs, mask_token_id, n_samples, batch_size, generator)


@dataclass
class PreferenceOutput:
    """What :func:`dpo_loss` and :func:`vrpo_loss` return; all but ``loss`` are detached.

    Attributes:
        loss: scalar to back-propagate, −mean log σ(margin).
        margin: mean over pairs of β·[(B_π(y_w) − B_ref(y_w)) − (B_π(y_l) − B_ref(y_l))].
        accuracy: fraction of pairs with a positive margin.
        chosen_reward, rejected_reward: mean β·(B_π − B_ref) of the chosen / rejected answers.
    """

    loss: torch.Tensor
    margin: torch.Tensor
    accuracy: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> PreferenceOutput:
    """DPO's loss on (estimated) log-likelihoods, all (N,):
    −mean log σ(β·[(π_w − ref_w) − (π_l − ref_l)]); the reference terms are constants."""
    shapes = {t.shape for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1 or policy_chosen.dim() != 1:
        raise ValueError(
            f"the four log-likelihoods must share one (pairs,) shape, got {sorted(shapes)}"
        )
    if isinstance(beta, bool) or not (isinstance(beta, int | float) and 0 < beta < math.inf):
        raise ValueError(f"beta must be a positive number, got {beta!r}; DPO often uses 0.1")
    chosen = beta * (policy_chosen - ref_chosen.detach())
    rejected = beta * (policy_rejected - ref_rejected.detach())
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    return PreferenceOutput(
        loss=loss,
        margin=margin.detach().mean(),
        accuracy=(margin.detach() > 0).float().mean(),
        chosen_reward=chosen.detach().mean(),
        rejected_reward=rejected.detach().mean(),
    )


def vrpo_loss(
    model: torch.nn.Module,
    prompt_ids: Sequence[TokenIds],
    chosen_ids: Sequence[TokenIds],
    rejected_ids: Sequence[TokenIds],
    *,
    mask_token_id: int,
    beta: float = 0.1,
    n_samples: int = 8,
    seed: int = 0,
    batch_size: int = 16,
    reference: dict[str, torch.Tensor] | None = None,
) -> PreferenceOutput:
    """VRPO: :func:`dpo_loss` on :func:`elbo_estimates` of the policy (``model`` with its
    adapters, with gradient) and of the reference (:func:`nara.rl.reference_policy`: the same
    model with its adapters off, or with the adapter tensors ``reference`` swapped in; no
    gradient), both drawn with ``seed`` so they share timesteps and masks. Give each training
    step its own seed (e.g. derived from the step number).

    Raises:
        ValueError: as :func:`elbo_estimates` and :func:`dpo_loss`, and when the adapters
            cannot be switched off (:func:`nara.rl.adapters_disabled`) or ``reference`` does
            not fit them (:func:`nara.rl.adapter_weights`).
    """
    if not len(prompt_ids) == len(chosen_ids) == len(rejected_ids):
        raise ValueError(
            f"got {len(prompt_ids)} prompts, {len(chosen_ids)} chosen and {len(rejected_ids)} "
            "rejected answers; give one chosen and one rejected answer per prompt"
        )
    prompts = [*prompt_ids, *prompt_ids]
    answers = [*chosen_ids, *rejected_ids]  # one call: chosen rows first, then rejected
    kwargs = {"mask_token_id": mask_token_id, "seed": seed, "batch_size": batch_size}
    with torch.no_grad(), reference_policy(model, reference):
        ref = elbo_estimates(model, prompts, answers, n_samples, **kwargs)
    policy = elbo_estimates(model, prompts, answers, n_samples, **kwargs)
    n = len(prompt_ids)
    return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], beta)


@dataclass
class PreferenceBatch:
    """The pairs of one update (this process's share) and the seed of their ELBO draws."""

    pairs: list[EncodedPreference]
    seed: int


class VRPOTrainer(RLTrainer):
    """``nara rl`` with ``rl.algorithm=vrpo``: every update takes the next
    ``training.batch_size`` pairs (per process) of ``data.source``, a file of
    ``{prompt, chosen, rejected}`` records, and minimises :func:`vrpo_loss` with
    ``rl.beta`` and ``rl.elbo_samples``, accumulated over chunks of ``rl.micro_batch_size``
    pairs. Nothing is sampled and no reward is computed. Every pair is tokenized once, after
    the model loads, and one longer than ``rl.max_length`` (default: the model's maximum
    sequence length) is an error, never cut. The pair order ((seed, epoch) permutations) and
    the ELBO draws (seeded by (seed, update, chunk)) depend only on the recipe, so resume is
    exact as for the other algorithms."""

    def _setup_data(self) -> None:
        """The pairs of ``data.source``; the keys that only name a task's prompts are refused."""
        data = self.config.data
        if data.columns:
            raise ConfigError(
                "data.columns does not apply to rl.algorithm=vrpo; name the file's fields "
                "prompt, chosen and rejected"
            )
        if not Path(data.source).is_file():
            raise FileNotFoundError(
                f"data.source={data.source!r} is no file; rl.algorithm=vrpo reads a file of "
                "{prompt, chosen, rejected} records (scripts/make_preferences.py writes one "
                "from an embedded task)"
            )
        self.task, self.rewards = None, None
        self.records = load_preferences(data.source)[: data.max_examples]

    def _setup_model_data(self) -> None:
        """Every pair tokenized as supervised fine-tuning does, its length checked."""
        self.encoded = encode_preferences(
            self.tokenizer, self.records, chat_template=self.config.data.chat_template
        )
        check_pair_lengths(
            self.records,
            self.encoded,
            self.rl.max_length,
            max_length(self.model),
            self.config.data.source,
        )

    def rollout(self) -> PreferenceBatch:
        """The next update's pairs."""
        acc = self.accelerator
        index = self.state.micro_batches * acc.num_processes + acc.process_index
        self.state.micro_batches += 1
        pairs = [self.encoded[i] for i in self._order(index)]
        return PreferenceBatch(pairs, noise_seed(self.cfg.seed, index, salt=1))

    def _update_on(self, batch: PreferenceBatch) -> None:
        """One optimizer update on the batch, then its metrics record."""
        n = len(batch.pairs)
        total = torch.zeros((), device=self.accelerator.device)
        sums = dict.fromkeys(("margin", "accuracy", "chosen_reward", "rejected_reward"), 0.0)
        for c, rows in enumerate(self._chunks(n)):
            part = batch.pairs[rows]
            with self.accelerator.autocast():
                out = vrpo_loss(
                    self.model,
                    [p.prompt_ids for p in part],
                    [p.chosen_ids for p in part],
                    [p.rejected_ids for p in part],
                    mask_token_id=self.mask_token_id,
                    beta=self.rl.beta,
                    n_samples=self.rl.elbo_samples,
                    seed=noise_seed(batch.seed, c),
                    reference=self.reference,
                )
            weight = len(part) / n  # the loss is a mean over pairs
            self.accelerator.backward(out.loss * weight)
            total += out.loss.detach().float() * weight
            for key in sums:
                sums[key] += getattr(out, key).item() * weight
        self._optimizer_step()
        tokens = sum(
            len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in batch.pairs
        )
        self.log.add_micro(total, torch.ones(1), torch.tensor([tokens]))
        self._record_means({k: torch.tensor(v) for k, v in sums.items()})
        self._after_update()
