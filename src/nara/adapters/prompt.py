"""Prompt tuning and P-tuning: n learned virtual tokens placed before the input (issue 7 baselines).

Prompt tuning (Lester et al., 2021) learns the n × d virtual-token embeddings directly; P-tuning
(Liu et al., 2021, "GPT Understands, Too") produces them with a small encoder (an MLP, or a
bidirectional LSTM followed by an MLP) from n learned input vectors, as PEFT's ``PromptEncoder``
does (same layer layout and parameter names, so its weights load into ours).

How it plugs into the adapter core: the virtual-token module lives in the model's NoiseHub (so the
core's freezing, counting, save/load and trainer paths see it), and two hooks on the root model do
the rest, so callers keep calling ``model(input_ids, attention_mask=...)``:

- a forward pre-hook embeds ``input_ids`` with ``model.get_input_embeddings()``, inserts the n
  virtual embeddings and extends ``attention_mask`` with ones (all ones when it was None);
- a forward hook removes the n virtual positions from the logits (and hidden states), so the
  diffusion loss, the sampler and the likelihood, which index logits by position, see (B, T, V).

The virtual tokens go right before each row's first real token (after any left padding), so a
left-padded sample sees them at the same relative distance as unpadded: with LLaDA's
bidirectional attention and relative (rotary) positions a padded batch equals one-by-one calls.

    model = nara.add_adapters(model, PromptTuningConfig(num_virtual_tokens=20))
    logits = model(input_ids, attention_mask=mask).logits   # (B, T, V), as without adapters

Not a weight update, so ``nara.merge_adapters`` refuses it. The LoRA fields of AdapterConfig
(r, alpha, scale, dropout, target_modules) are accepted and unused.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from nara.adapters.config import _UNUSED, DEFAULT_TARGETS, NoRankConfig, _check, _field
from nara.adapters.inject import HIDDEN_STATE_METHODS, HiddenStateMethod
from nara.adapters.noise import NoiseHub, find_hub

PROMPT_INITS = ("random", "vocab", "text")
ENCODERS = ("mlp", "lstm")

# ----------------------------------------------------------------------------- configs


@dataclass
class VirtualTokenConfig(NoRankConfig):
    """Fields shared by the virtual-token methods (not a method itself: no ``method`` name)."""

    target_modules: list[str] | str = _field(list(DEFAULT_TARGETS), _UNUSED)
    num_virtual_tokens: int = _field(20, "n, the number of virtual tokens placed before the input")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            isinstance(self.num_virtual_tokens, int) and self.num_virtual_tokens > 0,
            f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}; "
            "use e.g. 20",
        )


@dataclass
class PromptTuningConfig(VirtualTokenConfig):
    """Prompt tuning: n learned input embeddings (n × d trainable parameters)."""

    method: ClassVar[str] = "prompt_tuning"

    init: str = _field(
        "random",
        "initial virtual tokens: random (normal at the word embeddings' std), vocab (embeddings "
        "of random vocabulary tokens) or text (embeddings of init_text's or init_token_ids' "
        "tokens, repeated to fill n)",
    )
    init_text: str = _field(
        "", "text whose tokens initialise the virtual tokens (init 'text'; needs a tokenizer)"
    )
    init_token_ids: list[int] = _field(
        [],
        "token ids whose embeddings initialise the virtual tokens (init 'text' without a "
        "tokenizer; filled in from init_text when that is used, so loading needs no tokenizer)",
    )
    tokenizer_name_or_path: str | None = _field(
        None, "tokenizer for init_text (None: the model's own, from its name_or_path)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.init in PROMPT_INITS, f"init must be one of {PROMPT_INITS}, got {self.init!r}")
        self.init_token_ids = list(self.init_token_ids)
        _check(
            all(isinstance(i, int) and i >= 0 for i in self.init_token_ids),
            f"init_token_ids must be non-negative token ids, got {self.init_token_ids}",
        )
        _check(
            self.init != "text" or bool(self.init_text or self.init_token_ids),
            "init 'text' needs init_text (tokenized with the model's tokenizer) or init_token_ids "
            "(e.g. [12, 7, 40]); or use init 'random'",
        )


@dataclass
class PTuningConfig(VirtualTokenConfig):
    """P-tuning: n virtual tokens produced by an MLP or BiLSTM+MLP encoder from n learned inputs."""

    method: ClassVar[str] = "p_tuning"

    encoder: str = _field(
        "mlp", "the prompt encoder: mlp (3 layers, as PEFT's MLP) or lstm (2-layer BiLSTM + MLP)"
    )
    encoder_hidden_size: int | None = _field(
        None, "hidden width of the encoder (None: the model's embedding width d)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.encoder in ENCODERS, f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        _check(
            self.encoder_hidden_size is None or self.encoder_hidden_size > 0,
            f"encoder_hidden_size must be positive or None, got {self.encoder_hidden_size}",
        )


# ----------------------------------------------------------------------------- modules


class PromptEmbedding(nn.Module):
    """Prompt tuning's virtual tokens: one trainable (n, d) matrix."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(init.float().clone())  # (n, d)

    def forward(self) -> torch.Tensor:
        return self.embedding  # (n, d)


class PromptEncoder(nn.Module):
    """P-tuning's encoder: learned inputs (n, d) → MLP, or BiLSTM → MLP → virtual tokens (n, d).

    Layers and names follow PEFT's ``PromptEncoder`` (``embedding``, ``lstm_head``, ``mlp_head``)
    and its default initialisation (``nn.Embedding``: N(0, 1); PyTorch's Linear/LSTM defaults).
    """

    def __init__(self, n: int, d: int, hidden: int, encoder: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, d)
        self.encoder = encoder
        if encoder == "lstm":
            self.lstm_head = nn.LSTM(d, hidden, num_layers=2, bidirectional=True, batch_first=True)
            width = 2 * hidden  # both directions
            self.mlp_head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d))
        else:
            self.mlp_head = nn.Sequential(
                nn.Linear(d, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, d),
            )

    def forward(self) -> torch.Tensor:
        x = self.embedding.weight[None]  # (1, n, d): the n tokens as one sequence
        if self.encoder == "lstm":
            x = self.lstm_head(x)[0]  # (1, n, 2·hidden)
        return self.mlp_head(x)[0]  # (n, d)


def _init_tokens(
    model: nn.Module, config: PromptTuningConfig
) -> tuple[torch.Tensor, PromptTuningConfig]:
    """Initial virtual tokens (n, d), and the config with the token ids used by init 'text'."""
    words = model.get_input_embeddings().weight.detach()  # (V, d)
    n, vocab = config.num_virtual_tokens, words.shape[0]
    if config.init == "random":  # at the scale of real tokens, not nn.Embedding's N(0, 1)
        return torch.randn(n, words.shape[1], device=words.device) * words.float().std(), config
    if config.init == "vocab":
        return words[torch.randint(0, vocab, (n,), device=words.device)], config
    ids = config.init_token_ids
    if not ids:
        ids = _tokenize(model, config)
        config = dataclasses.replace(config, init_token_ids=ids)
    bad = [i for i in ids if i >= vocab]
    if bad:
        raise ValueError(
            f"init_token_ids {bad[:4]} are outside the model's vocabulary ({vocab} tokens); "
            "give ids of this model's tokenizer"
        )
    repeated = (ids * (n // len(ids) + 1))[:n]  # as PEFT: repeat the text to fill n tokens
    return words[torch.tensor(repeated, device=words.device)], config


def _tokenize(model: nn.Module, config: PromptTuningConfig) -> list[int]:
    from transformers import AutoTokenizer

    source = config.tokenizer_name_or_path or getattr(model, "name_or_path", "")
    if not source:
        raise ValueError(
            "init 'text' needs a tokenizer but the model has no name_or_path; set "
            "tokenizer_name_or_path, or give init_token_ids instead of init_text"
        )
    ids = AutoTokenizer.from_pretrained(source)(config.init_text, add_special_tokens=False)
    if not ids["input_ids"]:
        raise ValueError(f"init_text {config.init_text!r} has no tokens; give a non-empty text")
    return list(ids["input_ids"])


# ----------------------------------------------------------------------------- hooks


class VirtualTokenHooks:
    """The root model's hooks: insert the virtual tokens before a call, cut them from its output."""

    def __init__(self, model: nn.Module, hub: NoiseHub) -> None:
        self.hub = hub
        # positional arguments → their names, so the pre-hook can pass everything by keyword
        self.arg_names = list(inspect.signature(model.forward).parameters)
        self.keep: torch.Tensor | None = None  # (B, T): where each input position went

    def before(
        self, model: nn.Module, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]]:
        kwargs = {**dict(zip(self.arg_names, args)), **kwargs}
        ids = kwargs.pop("input_ids", None)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = model.get_input_embeddings()(ids)  # (B, T, d)
        b, t, d = embeds.shape
        mask = kwargs.get("attention_mask")
        if mask is None:  # the model reads None as all real: say so explicitly, for the virtuals
            mask = torch.ones(b, t, dtype=torch.long, device=embeds.device)
        virtual = self.hub.prompt().to(embeds.dtype)  # (n, d)
        n = virtual.shape[0]
        lead = (mask == 0).long().cumprod(1).sum(1, keepdim=True)  # (B, 1) left padding
        s = torch.arange(n + t, device=embeds.device)[None]  # (1, n + T)
        # new position s holds: a left pad x_s (s < lead), virtual s − lead, then x_{s − n};
        # as indices into [virtual; x] (B, n + T)
        source = torch.where(s < lead, s + n, torch.where(s < lead + n, s - lead, s))
        joined = torch.cat([virtual.expand(b, n, d), embeds], 1)  # (B, n + T, d)
        kwargs["inputs_embeds"] = joined.gather(1, source[..., None].expand(-1, -1, d))
        kwargs["attention_mask"] = torch.cat([mask.new_ones(b, n), mask], 1).gather(1, source)
        tt = s[:, :t]  # (1, T)
        self.keep = torch.where(tt < lead, tt, tt + n)  # (B, T)
        return (), kwargs

    def _cut(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n + T, ...) → (B, T, ...) at the input's positions."""
        keep = self.keep.view(*self.keep.shape, *([1] * (x.dim() - 2)))
        return x.gather(1, keep.expand(-1, -1, *x.shape[2:]))

    def after(self, model: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if isinstance(output, tuple):
            logits, *rest = output
            states = [tuple(self._cut(h) for h in r) for r in rest]  # hidden states, if any
            return (self._cut(logits), *states)
        output.logits = self._cut(output.logits)
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(self._cut(h) for h in output.hidden_states)
        return output


# ----------------------------------------------------------------------------- installing


def _prompt_module(model: nn.Module, config: VirtualTokenConfig) -> tuple[nn.Module, Any]:
    """The virtual-token module of ``config`` for ``model``, and the config to record."""
    if isinstance(config, PromptTuningConfig):
        init, config = _init_tokens(model, config)
        return PromptEmbedding(init), config
    d = model.get_input_embeddings().embedding_dim
    return PromptEncoder(
        config.num_virtual_tokens, d, config.encoder_hidden_size or d, config.encoder
    ), config


def _add_virtual_tokens(model: nn.Module, config: VirtualTokenConfig) -> nn.Module:
    """Freeze ``model``, put the virtual-token module in a new hub and hook the root model."""
    if find_hub(model) is not None:
        raise ValueError(
            "this model already has nara adapters; nara keeps one adapter config per model: "
            "start from a fresh base model"
        )
    if not callable(getattr(model, "get_input_embeddings", None)):
        raise ValueError(
            f"{config.method} needs the model's word embeddings, but {type(model).__name__} has "
            "no get_input_embeddings(); use a Hugging Face-style model"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    prompt, config = _prompt_module(model, config)
    hub = NoiseHub(config.method, {})
    hub.prompt = prompt
    hub.to(model.get_input_embeddings().weight.device).train(model.training)
    hub.config = config
    hub.targets = []
    model.nara_hub = hub
    hooks = VirtualTokenHooks(model, hub)
    model.register_forward_pre_hook(hooks.before, with_kwargs=True)
    model.register_forward_hook(hooks.after, with_kwargs=True)
    return model


def _virtual_token_shapes(model: nn.Module, config: VirtualTokenConfig) -> dict[str, list[int]]:
    width = model.get_input_embeddings().embedding_dim
    return {"virtual_tokens": [config.num_virtual_tokens, width]}


_VIRTUAL_TOKENS = HiddenStateMethod(_add_virtual_tokens, _virtual_token_shapes)
HIDDEN_STATE_METHODS[PromptTuningConfig.method] = _VIRTUAL_TOKENS
HIDDEN_STATE_METHODS[PTuningConfig.method] = _VIRTUAL_TOKENS
