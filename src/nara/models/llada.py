"""LLaDA, the masked-diffusion language model, written natively for transformers.

The released LLaDA-8B checkpoints ship their model code as remote code that no longer runs on
current transformers. This file implements the same architecture from its description (docs/design.md
§3): it reads the same ``config.json`` and the same checkpoint keys, so a downloaded LLaDA folder
loads with ``LLaDAModelLM.from_pretrained(folder)`` and no ``trust_remote_code``.

Read top to bottom: config → block (attention + SwiGLU MLP) → model; RMSNorm, rotary embedding
and the attention computation come from :mod:`nara.models.layers`, shared with Dream and MDLM. It
is a LLaMA-style transformer whose attention is **bidirectional**: only padding is masked, never
the future, because a masked-diffusion model predicts every masked position from the whole
sequence at once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)
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

# Fields of released LLaDA configs that would change the computation if switched on. This
# implementation does not have them, so it refuses such a config instead of giving wrong logits.
_UNSUPPORTED_FLAGS = (
    "alibi",
    "scale_logits",
    "input_emb_norm",
    "attention_layer_norm",
    "clip_qkv",
    "multi_query_attention",
)


class LLaDAConfig(PretrainedConfig):
    """Configuration of a LLaDA model; the field names are those of the released ``config.json``.

    The defaults are LLaDA-8B's. Unknown fields of a released config (``init_fn``, ``precision``,
    dropout rates, ...) are kept as attributes and otherwise ignored; ``auto_map`` is dropped
    because this class replaces the remote code it points to.

    Raises:
        ValueError: on inconsistent sizes (``d_model`` not divisible by ``n_heads``, ...).
        NotImplementedError: on an architecture variant this implementation does not cover
            (``block_type`` other than "llama", non-RMS norm, no rotary embedding, ALiBi, ...).
    """

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        max_sequence_length: int = 4096,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        weight_tying: bool = False,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        block_type: str = "llama",
        activation_type: str = "silu",
        layer_norm_type: str = "rms",
        rope: bool = True,
        init_std: float = 0.02,
        **kwargs: Any,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.max_sequence_length = max_sequence_length
        self.mask_token_id = mask_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.block_type = block_type
        self.activation_type = activation_type
        self.layer_norm_type = layer_norm_type
        self.rope = rope
        self.init_std = init_std
        kwargs.pop("auto_map", None)
        kwargs["tie_word_embeddings"] = weight_tying  # transformers ties the head to wte from this
        self._validate(kwargs)
        super().__init__(**kwargs)

    def _validate(self, extra: dict[str, Any]) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) into an "
                "even head dimension (rotary embedding rotates pairs); change d_model or n_heads"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}) "
                "for grouped key/value heads; change n_kv_heads"
            )
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"embedding_size ({self.embedding_size}) must be >= vocab_size ({self.vocab_size})"
            )
        expected = {
            "block_type": "llama",
            "activation_type": "silu",
            "layer_norm_type": "rms",
            "rope": True,
        }
        for name, value in expected.items():
            if getattr(self, name) != value:
                raise NotImplementedError(
                    f"LLaDA config has {name}={getattr(self, name)!r}; nara's native LLaDA supports "
                    f"only {name}={value!r} (the released LLaDA architecture). Load other variants "
                    "with load_model(..., trust_remote_code=True) and their own code"
                )
        switched_on = [name for name in _UNSUPPORTED_FLAGS if extra.get(name)]
        if switched_on:
            raise NotImplementedError(
                f"LLaDA config switches on {switched_on}, which nara's native LLaDA does not "
                "implement; load this checkpoint with trust_remote_code=True and its own code"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and of the output head (LLaDA pads the vocabulary to this)."""
        return self.embedding_size or self.vocab_size


class LLaDABlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x += attention(norm(x)); x += SwiGLU(norm(x)).

    The projections sit directly on the block (not in attention/MLP submodules) because the
    checkpoint keys are ``blocks.{i}.q_proj``, ``blocks.{i}.ff_out``, ... .
    """

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, hd = config.d_model, config.head_dim
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)  # gate
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=config.include_bias)  # down
        self.kv_prefix = None  # prefix tuning's key/value hook (see grouped_query_attention)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cached_kv: Any = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model); cos, sin: (T, D); key_mask: bool (B, S) or None; cached_kv: None
        or a callable (k, v) -> (k, v) from a KV cache (see ``LLaDAModelLM.forward``)."""
        h = self.attn_norm(x)
        x = x + self.attn_out(grouped_query_attention(self, h, cos, sin, key_mask, cached_kv))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDATransformer(nn.Module):
    """Embedding, blocks, final norm and output head, under ``transformer.*`` as in checkpoints."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        vocab = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
                # The head; with weight_tying, transformers makes its weight the embedding's.
                "ff_out": nn.Linear(
                    config.d_model, vocab, bias=config.include_bias and not config.weight_tying
                ),
            }
        )


class LLaDAModelLM(PreTrainedModel):
    """The LLaDA masked-diffusion language model: token ids in, logits over the vocabulary out.

    State-dict keys match released LLaDA checkpoints (``model.transformer.wte.weight``,
    ``model.transformer.blocks.{i}.q_proj.weight``, ..., ``model.transformer.ff_out.weight``).
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"  # as in LLaDA's own code: keys start "model.transformer."
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _tied_weights_keys = {"model.transformer.ff_out.weight": "model.transformer.wte.weight"}

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        self.model = LLaDATransformer(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.init_std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer["ff_out"]

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer["ff_out"] = value

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
        """Logits (B, T, V) for every position, in the model's dtype.

        Args:
            input_ids: long (B, T); or pass ``inputs_embeds`` (B, T, d_model) instead (prompt
                tuning prepends learned vectors this way).
            attention_mask: (B, T), 1 at real tokens and 0 at padding; padded keys are ignored
                by every query. Attention is otherwise bidirectional.
            labels: accepted and ignored: the diffusion loss needs the mask and noise level, so
                ``nara.diffusion.diffusion_loss`` computes it, not the model.
            output_hidden_states: also return the input of every block and the final output.
            kv_cache: None, or a sampler's key/value cache (``nara.diffusion.cache.KVCache``):
                an object with ``start`` (the sequence position of the first input token) and
                ``layer(i)`` (a callable (k, v) -> (k, v) that block i calls with its fresh
                rotated keys/values (B, H_kv, T, D) and that returns those of the whole
                sequence (B, H_kv, S, D), recording or splicing). ``attention_mask`` then
                covers the whole sequence (B, S); logits are for the T input positions.
            head: False skips the output head and returns the final hidden state (B, T, d_model)
                as ``last_hidden_state``; :meth:`head_logits` then computes logits only where
                they are needed (the diffusion loss's masked positions, in chunks).
            kwargs: other transformers arguments (``output_attentions``, ...) are ignored.

        Raises:
            ValueError: unless exactly one of ``input_ids`` and ``inputs_embeds`` is given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        tr = self.model.transformer
        x = tr["wte"](input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, d_model)
        key_mask = None if attention_mask is None else attention_mask.bool()  # (B, S)
        start = 0 if kv_cache is None else kv_cache.start
        cos, sin = rotary_cos_sin(
            x.shape[1], self.config.head_dim, self.config.rope_theta, x.device, start
        )
        x, states = run_blocks(
            tr["blocks"], x, (cos, sin, key_mask), kv_cache, output_hidden_states
        )
        return model_output(self.head_logits(x) if head else x, states, return_dict, head)

    def head_logits(
        self, hidden: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (..., V) of final hidden states (..., d_model): final norm, then output head.
        ``input_ids`` is unused (the head of every native family takes it)."""
        tr = self.model.transformer
        return tr["ff_out"](tr["ln_f"](hidden))


def tiny_config(**overrides: Any) -> LLaDAConfig:
    """A small random-weight LLaDA config for tests and examples (about 0.1 M parameters).

    Two layers of width 64, 4 query heads over 2 key/value heads (so grouped-query attention is
    exercised), vocabulary 128 with mask id 127 and EOS = pad = 126. Any field can be overridden.
    """
    fields: dict[str, Any] = {
        "d_model": 64,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 2,
        "mlp_hidden_size": 128,
        "vocab_size": 128,
        "embedding_size": 128,
        "rope_theta": 10000.0,
        "max_sequence_length": 128,
        "mask_token_id": 127,
        "eos_token_id": 126,
        "pad_token_id": 126,
    }
    fields.update(overrides)
    return LLaDAConfig(**fields)


AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
