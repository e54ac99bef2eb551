"""Training-step memory: parameters, optimizer state, activations and logits, by term.

For LLaDA-8B's shapes every term is computed (the model is built on the meta device, so the
parameter counts are exact and need no weights); on a scaled random model that fits this machine
the same terms are also measured, next to the formulas for that model, so the formulas can be
judged where both exist (tests/test_memory_bench.py checks that they add up to the measured peak).
Each term names how it was obtained. The formulas (docs/memory.md):

- parameters: frozen base in its dtype (bf16: 2 bytes; 4 bits: NF4 with double quantisation,
  ½ byte plus 1/64 byte of 8-bit absmax plus 4/(64·256) bytes of float32 second-level constants
  per weight of the block linears; embeddings, output head and norms stay bf16) plus trainable
  adapter tensors in float32 (4 bytes).
- optimizer: AdamW's two float32 states per trainable parameter (8 bytes) plus its float32
  gradient (4 bytes).
- activations: the tensors autograd saves for backward, counted as nara's LLaDA block saves them
  with adapters on q, k, v and attn_out (:func:`saved_activation_bytes`), plus the backward's
  largest transient: the MLP's gradient temporaries and, with gradient checkpointing, the one
  block recomputed (:func:`transient_bytes`).
- logits: the peak of the loss head, in float32: with the masked head one chunk's logits,
  log-softmax and gradient; with full logits the saved log-softmax at the masked positions, the
  gradients of the masked logits and the (B, T, V) gradient of the head output.

The logits peak and the blocks' backward transient do not coincide in time (the head's backward
runs first), so the total is parameters + optimizer + saved activations + the larger of the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nara.adapters import LoRAConfig, NaRAConfig, add_adapters
from nara.benchmarking.models import TARGETS
from nara.benchmarking.options import BenchOptions
from nara.benchmarking.timing import peak_memory
from nara.diffusion import diffusion_loss
from nara.diffusion.loss import HEAD_CHUNK_BYTES
from nara.models import LLaDAConfig, LLaDAModelLM, tiny_config

METHODS = {"LoRA": LoRAConfig, "NaRA": NaRAConfig}
# r-wide tensors each adapted linear saves per token, in units of r (NaRA: also the mixed vector)
ADAPTER_WIDTH = {"LoRA": 1, "NaRA": 2}
SEQS = (512, 1024, 2048)
WEIGHTS = ("bf16", "4bit")
# NF4 with double quantisation: 4 bits, an 8-bit absmax per 64 weights, and a float32 constant
# per 256 absmax values
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
# the scaled model measured here: LLaDA's proportions, a 32 k vocabulary so the head matters
SCALED_SHAPE = {
    "d_model": 256, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2,
    "mlp_hidden_size": 768, "vocab_size": 32768, "embedding_size": 32768,
}  # fmt: skip
QUICK_SCALED_SHAPE = {**SCALED_SHAPE, "vocab_size": 2048, "embedding_size": 2048}
GiB = 2**30
# (masked head, gradient checkpointing) of the measured rows: the loss saving, then checkpointing
MEASURED_SETTINGS = ((False, False), (True, False), (True, True))


def scaled_config(quick: bool = False) -> LLaDAConfig:
    """The random LLaDA whose step memory is measured (``quick``: a 2 k vocabulary)."""
    shape = QUICK_SCALED_SHAPE if quick else SCALED_SHAPE
    vocab = shape["vocab_size"]
    ids = {"mask_token_id": vocab - 1, "eos_token_id": vocab - 2, "pad_token_id": vocab - 2}
    return tiny_config(**shape, **ids, max_sequence_length=4096)


def adapted_model(config: LLaDAConfig, method: str, rank: int, device: str = "meta") -> Any:
    """LLaDA of ``config`` with ``method`` (``"LoRA"`` or ``"NaRA"``) on the paper's targets."""
    with torch.device(device):
        torch.manual_seed(0)
        model = LLaDAModelLM(config)
        add_adapters(model, METHODS[method](r=rank, alpha=2.0 * rank, target_modules=TARGETS))
    return model


def parameter_split(model: torch.nn.Module) -> dict[str, int]:
    """Element counts: ``trainable``, ``block_linear`` (frozen weights a 4-bit load quantises:
    the linears inside the blocks) and ``kept`` (other frozen tensors: embeddings, head, norms)."""
    counts = {"trainable": 0, "block_linear": 0, "kept": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts["trainable"] += p.numel()
        elif ".blocks." in name and p.dim() == 2:
            counts["block_linear"] += p.numel()
        else:
            counts["kept"] += p.numel()
    return counts


def parameter_bytes(split: dict[str, int], weights: str) -> int:
    """Frozen base in bf16 or NF4 (block linears only) plus float32 trainable tensors."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    per_linear = 2 if weights == "bf16" else NF4_BYTES_PER_WEIGHT
    return round(split["block_linear"] * per_linear) + 2 * split["kept"] + 4 * split["trainable"]


def optimizer_bytes(trainable: int) -> int:
    """AdamW: two float32 states and one float32 gradient per trainable parameter."""
    return (2 + 1) * 4 * trainable


def _block_saved(
    config: LLaDAConfig, method: str, rank: int, tokens: int, compute_bytes: int
) -> int:
    """Bytes one block saves for backward over ``tokens`` tokens; per token these elements.

    In the compute dtype (``compute_bytes`` each): the normed input read by the adapted q, k and
    v (d); the rotated q and k and v as attention reads them (3d: grouped keys and values are
    expanded to every head, and n_heads · head_dim = d); the attention output read by the
    adapted attn_out (d); the adapters' r-wide intermediates (LoRA: r per target; NaRA: 2r per
    target, the mixed vector too); the gate, its SiLU and the up projection (3m; the frozen down
    projection saves no input). In float32: the inputs of the two RMS norms (normalised in
    float32) and their reciprocal RMS (2d + 2), and attention's log-sum-exp (one per head)."""
    d, m = config.d_model, config.mlp_hidden_size
    in_dtype = 5 * d + 3 * m + len(TARGETS) * ADAPTER_WIDTH[method] * rank
    in_float32 = 2 * d + 2 + config.n_heads
    return tokens * (compute_bytes * in_dtype + 4 * in_float32)


def saved_activation_bytes(
    config: LLaDAConfig,
    batch: int,
    seq: int,
    *,
    checkpointing: bool,
    method: str,
    rank: int,
    masked_head: bool = True,
    compute_bytes: int = 2,
) -> int:
    """Bytes autograd holds for backward once the forward has run (the model's own tensors,
    not its parameters): the blocks' saved tensors (:func:`_block_saved`; the first block's
    first norm saves nothing, its input being the frozen embedding) or, with checkpointing,
    each block's input; the rotary tables; the final norm's float32 input and reciprocal RMS;
    with the masked head, the hidden states gathered at the masked positions (t = 0.5: half).
    The noise-aware adapters' per-sample conditioning (a few thousand numbers per sample) is
    left out."""
    d, layers, tokens = config.d_model, config.n_layers, batch * seq
    rotary = 2 * 4 * seq * config.head_dim  # cos and sin, float32
    head = 4 * tokens * (d + 1) + (compute_bytes * batch * (seq // 2) * d if masked_head else 0)
    if checkpointing:
        blocks = compute_bytes * layers * tokens * d
    else:
        per_block = _block_saved(config, method, rank, tokens, compute_bytes)
        blocks = layers * per_block - 4 * tokens * (d + 1)
    return blocks + rotary + head


def transient_bytes(
    config: LLaDAConfig,
    batch: int,
    seq: int,
    *,
    checkpointing: bool,
    method: str,
    rank: int,
    compute_bytes: int = 2,
) -> int:
    """The backward's largest transient through the blocks, on top of what stays saved: the
    MLP's gradient temporaries (bounded by 3m per token; 2.2-2.8m measured) and, with
    checkpointing, the saved tensors of the one block being recomputed."""
    tokens = batch * seq
    transient = compute_bytes * 3 * config.mlp_hidden_size * tokens
    if checkpointing:
        transient += _block_saved(config, method, rank, tokens, compute_bytes)
    return transient


def logits_bytes(
    vocab: int, batch: int, seq: int, masked_head: bool, compute_bytes: int = 2
) -> int:
    """The loss head's peak (module docstring); half of the positions masked (t = 0.5).

    Masked head: one chunk of P positions (``HEAD_CHUNK_BYTES`` of float32 logits, fewer for a
    short sequence), whose float32 logits, log-softmax and gradient live together in its
    recomputed backward: 12·V·P. Full logits: the float32 log-softmax saved at the N masked
    positions and the gradient of their float32 logits (8·V·N), and the gradient of the whole
    (B, T, V) head output in the compute dtype."""
    masked = batch * seq // 2
    if masked_head:
        chunk = max(1, HEAD_CHUNK_BYTES // (4 * vocab * batch))  # positions per sample
        return 3 * 4 * vocab * batch * min(chunk, seq // 2)
    return 2 * 4 * masked * vocab + compute_bytes * batch * seq * vocab


def analytic_terms(
    config: LLaDAConfig,
    split: dict[str, int],
    *,
    method: str,
    rank: int,
    batch: int,
    seq: int,
    weights: str,
    checkpointing: bool,
    masked_head: bool = True,
    compute_bytes: int = 2,
) -> dict[str, dict[str, Any]]:
    """Each term's bytes and how it was computed (all analytic), and their total.
    ``compute_bytes``: 2 for a bf16 forward, 4 for float32 (the measured CPU model)."""
    shape = {"checkpointing": checkpointing, "method": method, "rank": rank}
    saved = saved_activation_bytes(
        config, batch, seq, **shape, masked_head=masked_head, compute_bytes=compute_bytes
    )
    transient = transient_bytes(config, batch, seq, **shape, compute_bytes=compute_bytes)
    logits = logits_bytes(config.vocab_size, batch, seq, masked_head, compute_bytes)
    head = "masked head, one chunk" if masked_head else "full (B, T, V)"
    terms = {
        "parameters": (parameter_bytes(split, weights), "analytic: meta-device counts"),
        "optimizer": (optimizer_bytes(split["trainable"]), "analytic: AdamW 2 states + grad"),
        "activations": (saved + transient, "analytic: saved tensors + backward transient"),
        "logits": (logits, f"analytic: {head}"),
    }
    out = {k: {"bytes": b, "method": how} for k, (b, how) in terms.items()}
    total = out["parameters"]["bytes"] + out["optimizer"]["bytes"] + saved
    out["total"] = {
        "bytes": total + max(transient, logits),
        "method": "parameters + optimizer + saved activations + the larger of the blocks' "
        "backward transient and the logits (they come one after the other)",
    }
    return out


def eight_b_table(rank: int, batch: int = 1) -> list[dict[str, Any]]:
    """LLaDA-8B rows: method × sequence × checkpointing × weights, every term analytic."""
    config = LLaDAConfig()
    rows = []
    for method in METHODS:
        split = parameter_split(adapted_model(config, method, rank))
        for seq in SEQS:
            for checkpointing in (False, True):
                for weights in WEIGHTS:
                    terms = analytic_terms(
                        config, split, method=method, rank=rank, batch=batch, seq=seq,
                        weights=weights, checkpointing=checkpointing,
                    )  # fmt: skip
                    rows.append(
                        {
                            "method": method,
                            "seq": seq,
                            "checkpointing": checkpointing,
                            "weights": weights,
                            **{k: round(v["bytes"] / GiB, 2) for k, v in terms.items()},
                        }
                    )
    return rows


def saved_tensor_bytes(model: torch.nn.Module, forward: Callable[[], Any]) -> tuple[Any, int]:
    """``forward()``'s result and the bytes of the distinct storages autograd saved for backward
    during it, the model's parameters excepted (they are counted as parameters)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    return result, sum(saved.values())


@dataclass(frozen=True)
class TrainingStep:
    """One training step on a float32 random LLaDA of ``config`` with ``method`` adapters of
    ``rank`` (:func:`adapted_model`), on ``batch`` × ``seq`` tokens with the masked-head or the
    full-logits loss and gradient checkpointing on or off: its memory by term, measured
    (:meth:`measured`) and from the formulas (:meth:`analytic`), under the same keys."""

    config: LLaDAConfig
    method: str
    rank: int
    batch: int
    seq: int
    masked_head: bool
    checkpointing: bool = False

    def measured(self) -> dict[str, int]:
        """Bytes measured: parameters and AdamW state (tensor sizes), the tensors saved for
        backward by the forward of the diffusion loss (:func:`saved_tensor_bytes`), and the peak
        above the parameters of one forward and backward (torch.profiler memory events on CPU,
        the CUDA allocator's peak on a GPU)."""
        config, batch = self.config, self.batch
        model = adapted_model(config, self.method, self.rank, device="cpu").train()
        if self.checkpointing:
            model.gradient_checkpointing_enable()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, config.vocab_size - 2, (batch, self.seq), generator=g)
        maskable = torch.ones_like(ids, dtype=torch.bool)

        def forward() -> Any:
            return diffusion_loss(
                model, ids, maskable, config.mask_token_id, t=torch.full((batch,), 0.5),
                generator=torch.Generator().manual_seed(1), masked_head=self.masked_head,
            )  # fmt: skip

        out, saved = saved_tensor_bytes(model, forward)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
        return {
            "parameters": sum(p.nbytes for p in model.parameters()),
            "optimizer": state + sum(4 * p.numel() for p in trainable),  # states + gradients
            "saved": saved,
            "step_peak": peak_memory(lambda: forward().loss.backward(), torch.device("cpu")),
        }

    def analytic(self) -> dict[str, int]:
        """What :meth:`measured` measures, from the formulas for a float32 model: the step's
        peak above the parameters is the saved activations, the larger of the blocks' backward
        transient and the logits, and the float32 gradients."""
        config, batch, seq, masked_head = self.config, self.batch, self.seq, self.masked_head
        split = parameter_split(adapted_model(config, self.method, self.rank))
        shape = {"checkpointing": self.checkpointing, "method": self.method, "rank": self.rank}
        terms = analytic_terms(
            config, split, **shape, batch=batch, seq=seq, weights="bf16",
            masked_head=masked_head, compute_bytes=4,
        )  # fmt: skip
        saved = saved_activation_bytes(
            config, batch, seq, **shape, masked_head=masked_head, compute_bytes=4
        )
        # the full path also keeps the float32 log-softmax at the masked positions until backward
        log_softmax = 0 if masked_head else 4 * (batch * seq // 2) * config.vocab_size
        base = terms["parameters"]["bytes"] + terms["optimizer"]["bytes"]
        return {
            "parameters": 4 * sum(split.values()),
            "optimizer": terms["optimizer"]["bytes"],
            "saved": saved + log_softmax,
            "step_peak": terms["total"]["bytes"] - base + 4 * split["trainable"],
        }


def memory_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section "memory": LLaDA-8B analytic (size ``8b``), or measured on the scaled model next
    to the same formulas for it."""
    if size == "8b":
        return {"batch": 1, "rank": options.rank, "rows": eight_b_table(options.rank)}
    config = scaled_config(options.quick)
    rows = []
    for method in METHODS:
        for masked_head, checkpointing in MEASURED_SETTINGS:
            step = TrainingStep(
                config, method, options.rank, options.batch, options.seq, masked_head,
                checkpointing,
            )  # fmt: skip
            got, formula = step.measured(), step.analytic()
            rows.append(
                {
                    "method": method,
                    "masked_head": masked_head,
                    "checkpointing": checkpointing,
                    "measured_mb": {k: round(v / 2**20, 1) for k, v in got.items()},
                    "analytic_mb": {k: round(v / 2**20, 1) for k, v in formula.items()},
                }
            )
    return {
        "shape": {k: getattr(config, k) for k in SCALED_SHAPE},
        "batch": options.batch,
        "seq": options.seq,
        "rank": options.rank,
        "measured": "float32 on CPU; saved: tensors autograd keeps for backward; step peak: "
        "above the parameters, = activations + logits + gradients",
        "rows": rows,
    }


def memory_table(section: dict[str, Any]) -> str:
    """The memory section in Markdown: the LLaDA-8B table (GiB) and the measured scaled rows."""
    lines = []
    if "8b" in section:
        r = section["8b"]
        lines += [
            f"### Training-step memory at LLaDA-8B shapes (GiB, batch {r['batch']}, rank "
            f"{r['rank']}, analytic: docs/memory.md)",
            "",
            "| method | seq | checkpointing | weights | parameters | optimizer | activations "
            "| logits | total |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        keys = ("parameters", "optimizer", "activations", "logits", "total")
        for row in r["rows"]:
            cells = [row["method"], row["seq"], "on" if row["checkpointing"] else "off"]
            cells += [row["weights"], *(row[k] for k in keys)]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for size, r in section.items():
        if size == "8b":
            continue
        lines += [
            "",
            f"### Measured on a scaled random LLaDA ({r['shape']}, batch {r['batch']}, seq "
            f"{r['seq']}; {r['measured']}; MB, measured / formula)",
            "",
            "| method | loss head | checkpointing | parameters | optimizer | saved | step peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            got, formula = row["measured_mb"], row["analytic_mb"]
            head = "masked, chunked" if row["masked_head"] else "full logits"
            cells = [row["method"], head, "on" if row["checkpointing"] else "off"]
            keys = ("parameters", "optimizer", "saved", "step_peak")
            cells += [f"{got[k]} / {formula[k]}" for k in keys]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
