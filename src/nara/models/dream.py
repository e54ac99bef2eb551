"""Dream, the masked-diffusion language model initialised from Qwen2.5, written natively.

The released Dream-7B checkpoints (Dream-v0-Base-7B, Dream-v0-Instruct-7B) ship their model code
as remote code written for transformers 4.46. This file implements the same architecture from its
description (docs/backbones.md): it reads the released ``config.json`` (``model_type: "Dream"``)
and the released checkpoint keys, so a downloaded Dream folder loads with
``DreamModel.from_pretrained(folder)`` and no ``trust_remote_code``.

Read top to bottom: config → attention → MLP → decoder layer → model. The pieces it shares with
LLaDA (RMSNorm, rotary embedding, bidirectional grouped-query attention) come from
:mod:`nara.models.layers`. Dream differs from LLaDA in its module names (Qwen2's
``self_attn.q_proj``, ``mlp.gate_proj``, ...), in biases on the query/key/value projections, and
in one convention that matters to everything downstream: Dream keeps the autoregressive habit of
its initialisation, so **the logit at position i predicts token i + 1**. The model returns those
raw logits, as the release does; :func:`nara.models.families.token_logits` realigns them for the
loss, the samplers, the likelihood and the noise profile.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput

from nara.models.layers import (
    RMSNorm,
    grouped_query_attention,
    init_weights,
    model_output,
    rotary_cos_sin,
    run_blocks,
)


class DreamConfig(PretrainedConfig):
    """Configuration of a Dream model; the field names are those of the released ``config.json``.

    The defaults are Dream-7B's (Qwen2.5-7B's shapes, mask token 151666). Fields of the released
    config that do not change the computation (``use_cache``, ``max_window_layers``, ...) are kept
    as attributes; ``auto_map`` is dropped because this class replaces the remote code it names.
    ``use_sliding_window`` is kept and ignored, as the released code ignores it: its attention
    always spans the whole sequence.

    Raises:
        ValueError: on inconsistent sizes (``hidden_size`` not divisible by the heads, ...).
        NotImplementedError: on a variant the released Dream does not use and this class does not
            implement (``rope_scaling``, an activation other than SiLU, attention dropout).
    """

    model_type = "Dream"

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int | None = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1000000.0,
        rope_scaling: dict[str, Any] | None = None,
        use_sliding_window: bool = False,
        sliding_window: int | None = None,
        attention_dropout: float = 0.0,
        mask_token_id: int = 151666,
        pad_token_id: int = 151643,
        bos_token_id: int = 151643,
        eos_token_id: int = 151643,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = (
            num_attention_heads if num_key_value_heads is None else num_key_value_heads
        )
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        kwargs.pop("auto_map", None)
        self._validate(rope_scaling)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def _validate(self, rope_scaling: dict[str, Any] | None) -> None:
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}) into an even head dimension (rotary embedding "
                "rotates pairs); change hidden_size or num_attention_heads"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}); change num_key_value_heads"
            )
        unsupported = {
            "hidden_act": (self.hidden_act, self.hidden_act == "silu"),
            "rope_scaling": (rope_scaling, rope_scaling is None),
            "attention_dropout": (self.attention_dropout, not self.attention_dropout),
        }
        for name, (value, ok) in unsupported.items():
            if not ok:
                raise NotImplementedError(
                    f"Dream config has {name}={value!r}, which nara's native Dream does not "
                    "implement (the released Dream-7B uses hidden_act='silu', rope_scaling=null, "
                    "attention_dropout=0.0); load this checkpoint with trust_remote_code=True "
                    "and its own code, and state its logit_convention"
                )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class DreamAttention(nn.Module):
    """Grouped-query self-attention with biased q/k/v projections and no causal mask (Qwen2's
    projections, bidirectional as a diffusion model needs)."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.kv_prefix = None  # prefix tuning's key/value hook (see grouped_query_attention)

    def forward(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cached_kv: Any = None,
    ) -> torch.Tensor:
        """h: (B, T, d); cos, sin: (T, D); key_mask: bool (B, S) or None; cached_kv: None or a
        KV cache's splice (k, v) -> (k, v) (see ``DreamModel.forward``). Returns (B, T, d)."""
        y = grouped_query_attention(self, h, cos, sin, key_mask, cached_kv)  # (B, T, H · D)
        return self.o_proj(y)


class DreamMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) · up(x))."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, m = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x += attention(norm(x)); x += MLP(norm(x)). Keys as in Qwen2."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cached_kv: Any = None,
    ) -> torch.Tensor:
        """x: (B, T, d); returns (B, T, d). ``cached_kv``: see :class:`DreamAttention`."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_mask, cached_kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBackbone(nn.Module):
    """Embedding, layers and final norm, under ``model.*`` as in the released checkpoints."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DreamDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(PreTrainedModel):
    """The Dream masked-diffusion language model: token ids in, raw (shifted) logits out.

    State-dict keys match released Dream checkpoints (``model.embed_tokens.weight``,
    ``model.layers.{i}.self_attn.q_proj.{weight,bias}``, ``model.layers.{i}.mlp.gate_proj.weight``,
    ``model.norm.weight``, ``lm_head.weight``). ``logits[:, i]`` predicts token ``i + 1``.
    """

    config_class = DreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DreamConfig) -> None:
        super().__init__(config)
        self.model = DreamBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        kv_cache: Any = None,
        head: bool = True,
        **kwargs: Any,
    ) -> MaskedLMOutput | BaseModelOutput | tuple[torch.Tensor, ...]:
        """Raw logits (B, T, V) in the model's dtype; ``logits[:, i]`` predicts token i + 1.

        Args:
            input_ids: long (B, T); or pass ``inputs_embeds`` (B, T, hidden_size) instead.
            attention_mask: (B, T), 1 at real tokens and 0 at padding; padded keys are ignored
                by every query (left padding gives each real token the logits it has alone:
                rotary embedding depends only on relative positions). Otherwise bidirectional.
            labels: accepted and ignored: ``nara.diffusion.diffusion_loss`` computes the loss.
            output_hidden_states: also return the input of every layer and the final output.
            kv_cache: None, or a sampler's key/value cache (``nara.diffusion.cache.KVCache``),
                as for ``LLaDAModelLM.forward``: the input tokens sit at positions
                ``kv_cache.start`` … of the sequence, layer i splices its fresh keys/values
                through ``kv_cache.layer(i)``, and ``attention_mask`` covers the whole sequence.
            head: False returns the final hidden state (B, T, hidden_size) as
                ``last_hidden_state`` instead of logits; :meth:`head_logits` computes them where
                needed (the diffusion loss's masked positions, in chunks).
            kwargs: other transformers arguments (``output_attentions``, ...) are ignored.

        Raises:
            ValueError: unless exactly one of ``input_ids`` and ``inputs_embeds`` is given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        key_mask = None if attention_mask is None else attention_mask.bool()  # (B, T)
        start = 0 if kv_cache is None else kv_cache.start
        cos, sin = rotary_cos_sin(
            x.shape[1], self.config.head_dim, self.config.rope_theta, x.device, start
        )  # (T, D)
        x, states = run_blocks(
            self.model.layers, x, (cos, sin, key_mask), kv_cache, output_hidden_states
        )
        return model_output(self.head_logits(x) if head else x, states, return_dict, head)

    def head_logits(
        self, hidden: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw (shifted) logits (..., V) of final hidden states (..., hidden_size): final norm,
        then ``lm_head``. ``input_ids`` is unused (the head of every native family takes it)."""
        return self.lm_head(self.model.norm(hidden))


def tiny_dream_config(**overrides: Any) -> DreamConfig:
    """A small random-weight Dream config for tests and examples (about 0.1 M parameters).

    Two layers of width 64, 4 query heads over 2 key/value heads, vocabulary 128 with mask id 127
    and BOS = EOS = pad = 126 — the token layout of ``tiny_config()`` for LLaDA, so tests can
    swap families. Any field can be overridden.
    """
    fields: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 128,
        "rope_theta": 10000.0,
        "mask_token_id": 127,
        "pad_token_id": 126,
        "bos_token_id": 126,
        "eos_token_id": 126,
    }
    fields.update(overrides)
    return DreamConfig(**fields)


AutoConfig.register("Dream", DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)
