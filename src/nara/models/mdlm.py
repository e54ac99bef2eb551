"""MDLM, the masked diffusion language model on a DiT backbone, written natively.

The released MDLM checkpoint (``kuleshov-group/mdlm-owt``, 130 M parameters) ships remote code
that needs flash-attention. This file implements the same network from its description
(docs/backbones.md) and reads the released ``config.json`` (``model_type: "mdlm"``) and checkpoint
keys (``backbone.*``), so the folder loads with ``MDLMModel.from_pretrained(folder)`` and no
``trust_remote_code``.

Read top to bottom: layer norm → timestep embedding → block (adaLN-modulated attention and MLP)
→ final layer → model. A DiT differs from LLaDA/Dream's LLaMA-style blocks in its conditioning:
every block scales, shifts and gates its sub-layers by a vector computed from the noise level σ
(adaLN). The released checkpoint was trained with time conditioning *off*: σ is then replaced by
0, the modulation is a constant, and the network does not depend on t — which is what lets its
sampler reuse a prediction when the input did not change.

The output is the SUBS parameterisation, as MDLM trains and samples with it: log-probabilities
with the mask token's at −10⁶ (never predicted), and at every position that is not masked all
mass on the token already there (a committed token is carried over). ``subs=False`` gives the
DiT's raw logits instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput

from nara.models.layers import (
    apply_rotary,
    bidirectional_attention,
    model_output,
    rotary_cos_sin,
    run_blocks,
)

NEG_INFINITY = -1e6  # the released log-probability of impossible tokens


class MDLMConfig(PretrainedConfig):
    """Configuration of an MDLM DiT; the field names are those of the released ``config.json``.

    The defaults are ``mdlm-owt``'s: GPT-2's 50257 tokens plus the mask token appended at 50257,
    width 768, 12 blocks of 12 heads, conditioning width 128, no time conditioning.
    ``mask_token_id`` defaults to the last id (``vocab_size − 1``), where MDLM appends it.

    Raises:
        ValueError: ``hidden_dim`` not divisible by ``n_heads`` into an even head dimension, or a
            mask token id outside the vocabulary.
    """

    model_type = "mdlm"

    def __init__(
        self,
        vocab_size: int = 50258,
        model_length: int = 1024,
        hidden_dim: int = 768,
        cond_dim: int = 128,
        n_blocks: int = 12,
        n_heads: int = 12,
        dropout: float = 0.1,
        time_conditioning: bool = False,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.model_length = model_length
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.time_conditioning = time_conditioning
        self.mask_token_id = vocab_size - 1 if mask_token_id is None else mask_token_id
        kwargs.pop("auto_map", None)
        if hidden_dim % n_heads or (hidden_dim // n_heads) % 2:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by n_heads ({n_heads}) into an even "
                "head dimension (rotary embedding rotates pairs); change hidden_dim or n_heads"
            )
        if not 0 <= self.mask_token_id < vocab_size:
            raise ValueError(
                f"mask_token_id ({self.mask_token_id}) must lie in the vocabulary "
                f"(0..{vocab_size - 1}); MDLM appends it as the last id"
            )
        super().__init__(**kwargs)


class LayerNorm(nn.Module):
    """Layer norm without bias, normalised in float32: w · (x − mean) / sqrt(var + 1e-5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), x.shape[-1:]).to(x.dtype) * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, d) · (1 + scale) + shift, with shift and scale (B, 1, d)."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """σ (B,) → (B, cond_dim): 256 sinusoidal features cos(σ·f), sin(σ·f), f = 10⁴^(−k/128),
    then Linear → SiLU → Linear."""

    def __init__(self, cond_dim: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(
            nn.Linear(frequencies, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=sigma.device) / half)
        args = sigma[:, None].float() * freqs[None]  # (B, half)
        features = torch.cat([args.cos(), args.sin()], dim=-1)  # (B, 256)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class DDiTBlock(GradientCheckpointingLayer):
    """x += gate₁ · attn_out(attention(modulate(norm1(x)))); x += gate₂ · mlp(modulate(norm2(x))).

    Shift, scale and gate of both sub-layers come from ``adaLN_modulation(c)``; the attention is
    bidirectional with rotary embedding on q and k, the MLP is Linear → GELU(tanh) → Linear.
    """

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.norm1 = LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)
        )
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * d)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: (B, T, d); c: (B, cond_dim); cos, sin: (T, D); key_mask: bool (B, T) or None."""
        b, t, d = x.shape
        mod = self.adaLN_modulation(c)[:, None]  # (B, 1, 6d)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        qkv = self.attn_qkv(h).view(b, t, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = bidirectional_attention(q, k, v, key_mask).transpose(1, 2).reshape(b, t, d)
        x = x + gate1 * F.dropout(self.attn_out(y), self.dropout, self.training)
        h = modulate(self.norm2(x), shift2, scale2)
        return x + gate2 * F.dropout(self.mlp(h), self.dropout, self.training)


class DDitFinalLayer(nn.Module):
    """linear(modulate(norm_final(x))) with its own adaLN shift and scale."""

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__()
        self.norm_final = LayerNorm(config.hidden_dim)
        self.linear = nn.Linear(config.hidden_dim, config.vocab_size)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)  # (B, 1, d) each
        return self.linear(modulate(self.norm_final(x), shift, scale))


class EmbeddingLayer(nn.Module):
    """Token embedding stored as the released ``embedding`` parameter (V, d)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding  # the name transformers and nara's adapters look for

    @property
    def embedding_dim(self) -> int:
        return self.embedding.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids]  # (B, T, d)


class DiTBackbone(nn.Module):
    """Embedding, σ-conditioning, blocks and final layer under the released names."""

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__()
        self.vocab_embed = EmbeddingLayer(config.vocab_size, config.hidden_dim)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.blocks = nn.ModuleList(DDiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = DDitFinalLayer(config)


class MDLMModel(PreTrainedModel):
    """The MDLM masked-diffusion LM: token ids (and optionally σ) in, SUBS log-probabilities out.

    State-dict keys match the released checkpoint (``backbone.vocab_embed.embedding``,
    ``backbone.blocks.{i}.attn_qkv.weight``, ``backbone.blocks.{i}.adaLN_modulation.weight``,
    ``backbone.output_layer.linear.weight``, ...). Logit i is the prediction for token i.
    """

    config_class = MDLMConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DDiTBlock"]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]  # recomputed per forward

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__(config)
        self.backbone = DiTBackbone(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, EmbeddingLayer):
            init.kaiming_uniform_(module.embedding, a=math.sqrt(5))
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LayerNorm):
            init.ones_(module.weight)

    def get_input_embeddings(self) -> EmbeddingLayer:
        return self.backbone.vocab_embed

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        subs: bool = True,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        head: bool = True,
        **kwargs: Any,
    ) -> MaskedLMOutput | BaseModelOutput | tuple[torch.Tensor, ...]:
        """SUBS log-probabilities (B, T, V) (or raw logits with ``subs=False``), float32.

        Args:
            input_ids: long (B, T).
            attention_mask: (B, T), 1 at real tokens and 0 at padding; padded keys are ignored
                (the release has no padding; an unpadded batch computes exactly as it does).
            timesteps: σ per sample (B,): required when the config switches time conditioning
                on, else ignored (taken as 0, as the released checkpoint is trained).
            subs: apply the SUBS parameterisation (see the module docstring).
            output_hidden_states: also return the input of every block and the final output.
            head: False returns the final hidden state (B, T, d) as ``last_hidden_state``
                instead of logits; :meth:`head_logits` computes them where needed (the
                diffusion loss's masked positions, in chunks).
            kwargs: other transformers arguments are ignored.

        Raises:
            ValueError: without ``input_ids``, with ``inputs_embeds``, or without ``timesteps``
                when time conditioning is on.
        """
        if input_ids is None or "inputs_embeds" in kwargs:
            raise ValueError(
                "MDLM needs input_ids (its SUBS output depends on which tokens are masked), so "
                "inputs_embeds and the virtual-token adapters built on them are not supported; "
                "use a weight adapter (lora, nara, ...)"
            )
        if self.config.time_conditioning and timesteps is None:
            raise ValueError(
                "this MDLM conditions on the noise level (time_conditioning=true): pass "
                "timesteps=σ (B,). nara's loss and samplers do not, so they run only MDLMs with "
                "time conditioning off, as the released checkpoint is"
            )
        bb = self.backbone
        x = bb.vocab_embed(input_ids)  # (B, T, d)
        c = self._condition(x, timesteps)  # (B, cond_dim)
        key_mask = None if attention_mask is None else attention_mask.bool()
        head_dim = self.config.hidden_dim // self.config.n_heads
        cos, sin = rotary_cos_sin(x.shape[1], head_dim, 10000.0, x.device)  # (T, D)
        x, states = run_blocks(bb.blocks, x, (c, cos, sin, key_mask), None, output_hidden_states)
        out = self.head_logits(x, input_ids, timesteps, subs) if head else x  # (B, T, V | d)
        return model_output(out, states, return_dict, head)

    def _condition(self, x: torch.Tensor, timesteps: torch.Tensor | None) -> torch.Tensor:
        # without time conditioning the released model sees σ = 0
        sigma = timesteps if self.config.time_conditioning else x.new_zeros(x.shape[0])
        return F.silu(self.backbone.sigma_map(sigma))  # (B, cond_dim)

    def head_logits(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        subs: bool = True,
    ) -> torch.Tensor:
        """Float32 SUBS log-probabilities (B, K, V) (raw logits with ``subs=False``) of final
        hidden states (B, K, d) at K positions of each sample, whose noisy ids (B, K) SUBS
        needs; ``timesteps`` as in :meth:`forward`."""
        logits = self.backbone.output_layer(hidden, self._condition(hidden, timesteps)).float()
        if subs:
            logits = subs_log_probs(logits, input_ids, self.config.mask_token_id)
        return logits


def subs_log_probs(
    logits: torch.Tensor, input_ids: torch.Tensor, mask_token_id: int
) -> torch.Tensor:
    """MDLM's SUBS parameterisation of raw logits (B, T, V): log-probabilities with the mask
    token's pushed to −10⁶, and at unmasked positions 0 at the present token, −10⁶ elsewhere."""
    penalty = torch.zeros(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    penalty[mask_token_id] = NEG_INFINITY
    log_probs = (logits + penalty).log_softmax(-1)
    kept = input_ids != mask_token_id  # (B, T)
    carried = torch.full_like(log_probs, NEG_INFINITY).scatter(-1, input_ids[..., None], 0.0)
    return torch.where(kept[..., None], carried, log_probs)


def mdlm_tokenizer(gpt2: PreTrainedTokenizerBase, config: MDLMConfig) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer with MDLM's mask token appended, as MDLM was trained with it.

    The released checkpoint ships no tokenizer files; build them once and save them next to the
    weights, so ``nara.load_model`` and the CLI find them::

        gpt2 = AutoTokenizer.from_pretrained("gpt2")
        mdlm_tokenizer(gpt2, model.config).save_pretrained(model_folder)

    Raises:
        ValueError: the mask token would not land on ``config.mask_token_id`` (a tokenizer that
            is not GPT-2's, or a config with another vocabulary).
    """
    gpt2.add_special_tokens({"mask_token": "[MASK]"})
    if gpt2.mask_token_id != config.mask_token_id or len(gpt2) != config.vocab_size:
        raise ValueError(
            f"appending [MASK] to this tokenizer gives id {gpt2.mask_token_id} and {len(gpt2)} "
            f"tokens, but the MDLM config expects mask id {config.mask_token_id} of "
            f"{config.vocab_size}; pass GPT-2's tokenizer (MDLM appends its mask token to it)"
        )
    if gpt2.pad_token is None:
        gpt2.pad_token = gpt2.eos_token
    return gpt2


def tiny_mdlm_config(**overrides: Any) -> MDLMConfig:
    """A small random-weight MDLM config for tests: two blocks of width 64 over 4 heads,
    conditioning width 32, vocabulary 128 with the mask token last (127)."""
    fields: dict[str, Any] = {
        "vocab_size": 128,
        "model_length": 64,
        "hidden_dim": 64,
        "cond_dim": 32,
        "n_blocks": 2,
        "n_heads": 4,
        "dropout": 0.0,
    }
    fields.update(overrides)
    return MDLMConfig(**fields)


AutoConfig.register("mdlm", MDLMConfig, exist_ok=True)
AutoModelForMaskedLM.register(MDLMConfig, MDLMModel, exist_ok=True)
