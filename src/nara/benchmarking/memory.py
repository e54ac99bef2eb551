"""Training-step memory: parameters, optimizer state, activations and logits, by term.

For LLaDA-8B's shapes every term is computed (the model is built on the meta device, so the
parameter counts are exact and need no weights); on a scaled random model that fits this machine
the same terms are also measured, next to the formulas for that model, so the formulas can be
judged where both exist. Each term names how it was obtained. The formulas (docs/memory.md):

- parameters: frozen base in its dtype (bf16: 2 bytes; 4 bits: NF4 with double quantisation,
  ½ byte plus 1/64 byte of 8-bit absmax plus 4/(64·256) bytes of float32 second-level constants
  per weight of the block linears; embeddings, output head and norms stay bf16) plus trainable
  adapter tensors in float32 (4 bytes).
- optimizer: AdamW's two float32 states per trainable parameter (8 bytes) plus its float32
  gradient (4 bytes).
- activations: saved for backward, in bf16: without gradient checkpointing
  L · B · T · (10·d + 2·d_kv + 4·m) elements (see :func:`activation_elements`); with it, each
  block's input (L · B · T · d) plus one block recomputed.
- logits: the full path keeps the (B, T, V) head output in bf16 and float32 cross-entropy input
  and log-softmax at the masked positions (expected B·T/2); the masked head keeps one chunk of
  float32 logits and log-softmax (2 · HEAD_CHUNK_BYTES at most, less for short sequences).
"""

from __future__ import annotations

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


def activation_elements(config: LLaDAConfig, batch: int, seq: int, checkpointing: bool) -> int:
    """Elements saved for backward by the blocks.

    Per token of one LLaDA block: the input and its norm (2d), q (d) and k, v (2·d_kv), rotated
    q and k (d + d_kv, counted as 2d), the attention output and the out-projection's output (2d),
    the residual and second norm (2d), the gate, up, SiLU and product (4m): 10d + 2·d_kv + 4m
    (the adapters' r-wide intermediates are negligible). With checkpointing only each block's
    input is kept, and one block is recomputed at a time."""
    d, m = config.d_model, config.mlp_hidden_size
    d_kv = config.n_kv_heads * config.head_dim
    block = batch * seq * (10 * d + 2 * d_kv + 4 * m)
    if checkpointing:
        return config.n_layers * batch * seq * d + block
    return config.n_layers * block


def logits_bytes(vocab: int, batch: int, seq: int, masked_head: bool) -> int:
    """Logits memory of the loss (module docstring); half of the positions masked on average."""
    masked = batch * seq // 2
    if masked_head:
        chunk = max(1, HEAD_CHUNK_BYTES // (4 * vocab * batch))  # positions per sample
        return 2 * 4 * vocab * batch * min(chunk, masked // batch)
    return 2 * batch * seq * vocab + 2 * 4 * masked * vocab


def analytic_terms(
    config: LLaDAConfig,
    split: dict[str, int],
    *,
    batch: int,
    seq: int,
    weights: str,
    checkpointing: bool,
    masked_head: bool = True,
) -> dict[str, dict[str, Any]]:
    """Each term's bytes and how it was computed (all analytic), and their total."""
    terms = {
        "parameters": (parameter_bytes(split, weights), "analytic: meta-device counts"),
        "optimizer": (optimizer_bytes(split["trainable"]), "analytic: AdamW 2 states + grad"),
        "activations": (
            2 * activation_elements(config, batch, seq, checkpointing),
            "analytic: bf16 saved tensors",
        ),
        "logits": (
            logits_bytes(config.vocab_size, batch, seq, masked_head),
            "analytic: " + ("masked head, one chunk" if masked_head else "full (B, T, V)"),
        ),
    }
    out = {k: {"bytes": b, "method": how} for k, (b, how) in terms.items()}
    out["total"] = {"bytes": sum(b for b, _ in terms.values()), "method": "sum"}
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
                        config,
                        split,
                        batch=batch,
                        seq=seq,
                        weights=weights,
                        checkpointing=checkpointing,
                    )
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


def measured_step(
    config: LLaDAConfig,
    method: str,
    rank: int,
    batch: int,
    seq: int,
    masked_head: bool,
    checkpointing: bool = False,
) -> dict[str, int]:
    """Bytes measured on a float32 random model of ``config``: parameters and AdamW state
    (tensor sizes) and the peak above them of one forward and backward of the diffusion loss
    (torch.profiler memory events on CPU, the CUDA allocator's peak on a GPU)."""
    model = adapted_model(config, method, rank, device="cpu").train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size - 2, (batch, seq), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)

    def step() -> None:
        out = diffusion_loss(
            model, ids, maskable, config.mask_token_id, t=torch.full((batch,), 0.5),
            generator=torch.Generator().manual_seed(1), masked_head=masked_head,
        )  # fmt: skip
        out.loss.backward()

    step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
    return {
        "parameters": sum(p.nbytes for p in model.parameters()),
        "optimizer": state + sum(4 * p.numel() for p in trainable),  # states + gradients
        "step_peak": peak_memory(step, torch.device("cpu")),
    }


def memory_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section "memory": LLaDA-8B analytic (size ``8b``), or measured on the scaled model."""
    if size == "8b":
        return {"batch": 1, "rank": options.rank, "rows": eight_b_table(options.rank)}
    config = scaled_config(options.quick)
    rows = []
    for method in METHODS:
        split = parameter_split(adapted_model(config, method, options.rank))
        for masked_head, checkpointing in MEASURED_SETTINGS:
            got = measured_step(
                config, method, options.rank, options.batch, options.seq, masked_head,
                checkpointing,
            )  # fmt: skip
            terms = analytic_terms(
                config, split, batch=options.batch, seq=options.seq, weights="bf16",
                checkpointing=checkpointing, masked_head=masked_head,
            )  # fmt: skip
            rows.append(
                {
                    "method": method,
                    "masked_head": masked_head,
                    "checkpointing": checkpointing,
                    "measured_mb": {k: round(v / 2**20, 1) for k, v in got.items()},
                    "analytic_bf16_mb": {k: round(v["bytes"] / 2**20, 1) for k, v in terms.items()},
                }
            )
    return {
        "shape": {k: getattr(config, k) for k in SCALED_SHAPE},
        "batch": options.batch,
        "seq": options.seq,
        "rank": options.rank,
        "measured": "float32 weights on CPU; step_peak = activations + logits + gradients",
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
            f"{r['seq']}; {r['measured']}; MB)",
            "",
            "| method | loss head | checkpointing | parameters | optimizer | step peak "
            "| analytic bf16 total |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            got = row["measured_mb"]
            head = "masked, chunked" if row["masked_head"] else "full logits"
            cells = [row["method"], head, "on" if row["checkpointing"] else "off"]
            cells += [got["parameters"], got["optimizer"], got["step_peak"]]
            cells.append(row["analytic_bf16_mb"]["total"])
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
