"""Build nara's embedded tiny dLLM: corpus → tokenizer → LLaDA pre-training → src/nara/models/tiny/.

    python scripts/build_tiny.py --out build/tiny-v2/model   # the shipped model (about 2 h on 2 CPU cores)
    python scripts/build_tiny.py --out build/tiny-v2/model --resume   # continue after a stop
    python scripts/build_tiny.py --quick    # smoke test in seconds, written to /tmp/nara_tiny_quick
    python scripts/build_tiny.py --steps 400 --out /tmp/tiny   # override any knob

Everything is seeded (corpus, tokenizer, initialisation, data order, masks), so the same options
on the same library versions give the same weights. Steps, not wall time, fix the run length.

Checkpoints: every ``--checkpoint-minutes`` the full training state (weights, AdamW moments, step,
random generators; the data order is a function of the seed and the step) goes to
``--checkpoint-dir`` as safetensors + JSON, replaced atomically. ``--resume`` continues from it
and ends with the same weights as an uninterrupted run; it refuses a checkpoint written with other
options. ``--stop-at STEP`` checkpoints and exits at that step (to test or plan interruptions).
A checkpoint folder also loads as a model (``nara eval --model build/tiny-checkpoint ...``), to
follow the skills while the build runs.

Recipe: the procedural corpus of ``nara.data.corpus`` (three families, ~5 M tokens), a byte-level
BPE tokenizer with single-digit tokens (arithmetic stays learnable), one example per row padded
with EOS as in LLaDA's SFT layout. Training uses ``nara.diffusion.diffusion_loss``: first LLaDA's
pre-training loss (every token maskable, p = (1 − ε)t + ε, Σ CE/p over the number of tokens),
then for the last ``--sft-fraction`` of the steps its SFT loss (prompt never masked), which turns
the base into a small instruction follower, as LLaDA-8B-Instruct is for the paper's experiments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import shutil
import time
from pathlib import Path

import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nara.data.collate import Collator, Encoded
from nara.data.corpus import EMBEDDED_CORPUS_EXAMPLES, FAMILIES, pretraining_corpus
from nara.data.embedded import embedded_tasks, load_embedded
from nara.diffusion.loss import diffusion_loss
from nara.diffusion.sampling import generate
from nara.models import LLaDAConfig, LLaDAModelLM

REPO = Path(__file__).resolve().parents[1]
EOS, MASK = "<|endoftext|>", "<|mdm_mask|>"
EVAL_SEED_OFFSET = 1_000  # fresh corpus draws for evaluation use seed + this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: src/nara/models/tiny)"
    )
    p.add_argument(
        "--quick", action="store_true", help="seconds-long smoke test of the whole build"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--examples", type=int, default=EMBEDDED_CORPUS_EXAMPLES, help="corpus size (examples)"
    )
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--n-layers", type=int, default=5)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--mlp-hidden-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=4800, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps of linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--sft-fraction", type=float, default=0.6, help="last fraction trained as SFT")
    p.add_argument("--eos-tail", type=int, default=8, help="up to this many extra EOS per batch")
    p.add_argument("--eval-examples", type=int, default=60, help="per family / task at the end")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint interval")
    p.add_argument(
        "--checkpoint-dir", type=Path, default=None,
        help="checkpoint folder (default: build/tiny-checkpoint, --quick: <out>/checkpoint)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint folder")
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and exit at this step")
    args = p.parse_args(argv)
    if args.quick:
        args.examples, args.vocab_size, args.steps, args.eval_examples = 3000, 400, 12, 6
        args.d_model, args.n_layers, args.mlp_hidden_size, args.batch_size = 64, 2, 128, 16
        args.log_every = 4
    if args.out is None:
        args.out = Path("/tmp/nara_tiny_quick") if args.quick else REPO / "src/nara/models/tiny"
    if args.checkpoint_dir is None:
        args.checkpoint_dir = (
            args.out / "checkpoint" if args.quick else REPO / "build/tiny-checkpoint"
        )
    return args


def train_tokenizer(records: list[dict[str, str]], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (lossless on any text) whose digits are always single tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, MASK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((r["prompt"] + r["answer"] for r in records[:40_000]), trainer)
    # LLaDA pads answers with EOS, so pad = EOS; left padding for batched generation.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, pad_token=EOS, mask_token=MASK, padding_side="left"
    )


def encode(tokenizer: PreTrainedTokenizerFast, records: list[dict[str, str]]) -> list[Encoded]:
    """Prompt ids and answer ids + EOS, tokenized apart, exactly as nara.data.collate does."""
    prompts = tokenizer([r["prompt"] for r in records])["input_ids"]
    answers = tokenizer([r["answer"] for r in records], add_special_tokens=False)["input_ids"]
    return [Encoded(p, [*a, tokenizer.eos_token_id]) for p, a in zip(prompts, answers)]


def batch_order(encoded: list[Encoded], args: argparse.Namespace) -> list[list[int]]:
    """Deterministic batches for all steps: shuffled, length-bucketed within windows of 16."""
    rng = random.Random(args.seed)
    batches: list[list[int]] = []
    while len(batches) < args.steps:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        window = args.batch_size * 16
        epoch = []
        for start in range(0, len(order) - window + 1, window):
            chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i]))
            epoch += [chunk[j : j + args.batch_size] for j in range(0, window, args.batch_size)]
        rng.shuffle(epoch)
        batches += epoch
    return batches[: args.steps]


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then linear decay to 10 % of the peak."""
    warm = max(1, int(args.warmup * args.steps))
    if step < warm:
        return args.lr * (step + 1) / warm
    return args.lr * (1.0 - 0.9 * (step - warm) / max(1, args.steps - warm))


# Options that do not change the trained weights (a resumed run may differ in these).
RUN_ONLY_OPTIONS = ("out", "threads", "eval_examples", "checkpoint_dir", "checkpoint_minutes",
                    "resume", "stop_at")  # fmt: skip


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )  # fmt: skip


def training_options(args: argparse.Namespace) -> dict:
    """The options that determine the weights: a checkpoint is only resumed under the same ones."""
    return {k: v for k, v in vars(args).items() if k not in RUN_ONLY_OPTIONS}


def save_checkpoint(folder: Path, model, opt, tokenizer, state: dict, rngs: dict) -> None:
    """Write the full training state to ``folder`` atomically (a new folder, then renamed).

    Tensors go to safetensors (weights, AdamW moments and step counts, torch generator states);
    everything else (step, counters, Python RNG state, options) to ``state.json``. No pickle.
    """
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              tmp / "model.safetensors")  # fmt: skip
    opt_state = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, s in opt_state["state"].items() for k, v in s.items()}
    tensors.update({f"rng.{k}": v for k, v in rngs.items()})
    save_file(tensors, tmp / "optimizer.safetensors")
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    (tmp / "state.json").write_text(json.dumps({**state, "param_groups": groups}, indent=1))
    tokenizer.save_pretrained(tmp)
    model.config.save_pretrained(tmp)  # so a checkpoint loads as a model: nara eval --model DIR
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, model, opt, args: argparse.Namespace) -> tuple[dict, dict]:
    """Restore model and optimizer from ``folder``; returns (state.json contents, rng tensors).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: it was written with other training options (listed).
    """
    if not (folder / "state.json").exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {folder}; start without --resume (or pass the --out of "
            "the interrupted build)"
        )
    state = json.loads((folder / "state.json").read_text())
    theirs, ours = state["options"], json.loads(json.dumps(training_options(args), default=str))
    if theirs != ours:
        diff = {k: (theirs.get(k), ours.get(k)) for k in {*theirs, *ours}
                if theirs.get(k) != ours.get(k)}  # fmt: skip
        raise ValueError(
            f"--resume: the checkpoint at {folder} was written with other options "
            f"(option: (checkpoint, now)) {diff}; rerun with the checkpoint's options"
        )
    model.load_state_dict(load_file(folder / "model.safetensors"))
    tensors = load_file(folder / "optimizer.safetensors")
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("rng."):
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return state, {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}


def train(model, encoded, tokenizer, args, log_path: Path) -> dict[str, float] | None:
    """Pre-train then SFT ``model``; checkpoints on the way. None when stopped by --stop-at."""
    eos, mask_id = tokenizer.eos_token_id, tokenizer.mask_token_id
    opt = make_optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed)
    tail_rng = random.Random(args.seed + 1)
    folder = args.checkpoint_dir
    first, tokens, spent = 0, 0, 0.0
    if args.resume:
        state, rngs = load_checkpoint(folder, model, opt, args)
        gen.set_state(rngs["gen"])
        torch.set_rng_state(rngs["torch"])
        version, internal, gauss = state["tail_rng"]
        tail_rng.setstate((version, tuple(internal), gauss))
        first, tokens, spent = state["step"], state["tokens"], state["elapsed_s"]
        print(f"resumed at step {first} of {args.steps} from {folder}", flush=True)
    sft_start = int((1.0 - args.sft_fraction) * args.steps)
    model.train()
    start, recent, last_save = time.time() - spent, [], time.time()
    log_file = open(log_path, "a" if args.resume else "w")  # noqa: SIM115 (closed below)
    for step, batch_ids in enumerate(batch_order(encoded, args)[first:], start=first):
        examples = [encoded[i] for i in batch_ids]
        length = max(len(e) for e in examples) + tail_rng.randint(0, args.eos_tail)
        batch = Collator(eos, pad_to="max_length", max_length=length)(examples)
        phase = "sft" if step >= sft_start else "pretrain"
        maskable = batch["maskable"] if phase == "sft" else torch.ones_like(batch["maskable"])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        out = diffusion_loss(
            model, batch["input_ids"], maskable, mask_id,
            normalization="answer_length" if phase == "sft" else "token", generator=gen,
        )  # fmt: skip
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += batch["input_ids"].numel()
        recent.append((out.loss.item(), out.accuracy.item()))
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            loss, acc = (sum(x[k] for x in recent) / len(recent) for k in (0, 1))
            row = {"step": done, "phase": phase, "loss": round(loss, 4),
                   "masked_acc": round(acc, 4), "lr": round(lr_at(step, args), 6),
                   "tokens": tokens, "elapsed_s": round(time.time() - start, 1)}  # fmt: skip
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            rate = (time.time() - start - spent) / (done - first)
            print(f"{json.dumps(row)} eta {rate * (args.steps - done) / 60:.1f} min", flush=True)
            recent = []
        stop = done == args.stop_at
        due = time.time() - last_save >= 60 * args.checkpoint_minutes and not recent
        if stop or (due and done < args.steps):
            # Checkpoints sit at log boundaries, so no partial log window needs saving.
            version, internal, gauss = tail_rng.getstate()
            save_checkpoint(
                folder, model, opt, tokenizer,
                {"step": done, "tokens": tokens, "elapsed_s": time.time() - start,
                 "tail_rng": [version, list(internal), gauss],
                 "options": json.loads(json.dumps(training_options(args), default=str))},
                {"gen": gen.get_state(), "torch": torch.get_rng_state()},
            )  # fmt: skip
            last_save = time.time()
            print(f"checkpoint at step {done} -> {folder}", flush=True)
        if stop:
            log_file.close()
            return None
    log_file.close()
    model.eval()
    return {"final_loss": row["loss"], "final_masked_acc": row["masked_acc"],
            "train_tokens": tokens, "train_seconds": round(time.time() - start, 1)}  # fmt: skip


@torch.no_grad()
def masked_accuracy(model, encoded, mask_id: int, eos: int, seed: int) -> dict[str, float]:
    """Accuracy of the argmax at masked positions, all tokens maskable, at three mask ratios."""
    gen = torch.Generator().manual_seed(seed)
    batch = Collator(eos)(encoded)
    result = {}
    for t in (0.15, 0.5, 0.85):
        tt = torch.full((len(encoded),), t)
        out = diffusion_loss(model, batch["input_ids"], torch.ones_like(batch["maskable"]),
                             mask_id, t=tt, generator=gen, normalization="token")  # fmt: skip
        result[f"t={t}"] = round(out.accuracy.item(), 4)
    return result


@torch.no_grad()
def answers(model, tokenizer, prompts: list[str], gen_length: int = 24) -> list[str]:
    """Greedy LLaDA sampling (low-confidence remasking, blocks of 8), decoded up to EOS."""
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    ids = generate(
        model, enc["input_ids"], enc["attention_mask"], mask_token_id=tokenizer.mask_token_id,
        gen_length=gen_length, steps=gen_length, block_length=8,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    out = []
    for row in ids.tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        out.append(tokenizer.decode(row).strip())
    return out


def correct(prediction: str, answer: str, scorer: str, choices: tuple[str, ...]) -> bool:
    """Rough scorers for the build report (nara.evaluation has the real ones)."""
    if scorer == "keyword":
        found = [(prediction.find(c), c) for c in choices if c in prediction]
        return bool(found) and min(found)[1] == answer
    if scorer == "number":
        numbers = [w for w in prediction.replace(",", " ").split() if w.lstrip("-").isdigit()]
        return bool(numbers) and int(numbers[-1]) == int(answer)
    return prediction == answer


def evaluate(model, tokenizer, args) -> dict:
    fresh = pretraining_corpus(3 * args.eval_examples * 4, seed=args.seed + EVAL_SEED_OFFSET)
    report: dict = {"masked_token_accuracy": masked_accuracy(
        model, encode(tokenizer, fresh[:256]), tokenizer.mask_token_id,
        tokenizer.eos_token_id, args.seed)}  # fmt: skip
    report["pretraining_families_exact_match"] = {}
    for family in FAMILIES:
        recs = [r for r in fresh if r["family"] == family][: args.eval_examples]
        preds = answers(model, tokenizer, [r["prompt"] for r in recs])
        hits = sum(p == r["answer"] for p, r in zip(preds, recs))
        report["pretraining_families_exact_match"][family] = round(hits / len(recs), 3)
        print(family, list(zip(preds[:4], [r["answer"] for r in recs[:4]])), flush=True)
    report["embedded_tasks_zero_shot"] = {}
    for name, spec in embedded_tasks().items():
        recs = load_embedded(name, "test")[: args.eval_examples]
        preds = answers(model, tokenizer, [r["prompt"] for r in recs])
        hits = sum(correct(p, r["answer"], spec.scorer, spec.choices) for p, r in zip(preds, recs))
        report["embedded_tasks_zero_shot"][name] = round(hits / len(recs), 3)
        print(name, list(zip(preds[:4], [r["answer"] for r in recs[:4]])), flush=True)
    return report


def write_card(out: Path, args, config: LLaDAConfig, n_params: int, stats: dict, report: dict,
               corpus_tokens: int, eval_seconds: float) -> None:  # fmt: skip
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    options["out"] = str(Path(options["out"]).resolve().relative_to(REPO)) if Path(
        options["out"]).resolve().is_relative_to(REPO) else options["out"]  # fmt: skip
    text = f"""# nara embedded tiny dLLM

A {n_params / 1e6:.2f} M-parameter masked-diffusion LM of the LLaDA architecture
(d_model {config.d_model}, {config.n_layers} layers, {config.n_heads} heads, MLP
{config.mlp_hidden_size}, vocabulary {config.vocab_size}, mask id {config.mask_token_id}, EOS = pad
id {config.eos_token_id}), trained by nara itself on CPU. `model.safetensors` is {size_mb:.1f} MB.
Load it with `nara.load_model("tiny")`.

## Rebuild

    python scripts/build_tiny.py            # options used: see below
    python scripts/build_tiny.py --resume   # after an interruption: continues from the checkpoint

Same options + same torch/transformers/tokenizers versions → same weights (a resumed build
included: checkpoints hold the full training state). Built with torch {torch.__version__},
transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, Python
{platform.python_version()}; training {stats["train_seconds"] / 60:.1f} min (summed over resumed
sessions), evaluation {eval_seconds / 60:.1f} min, on {args.threads} CPU threads of a machine shared
with other jobs.

## Recipe

- Corpus: `nara.data.corpus.pretraining_corpus({args.examples}, seed={args.seed})`, three
  families (commonsense multiple choice in BoolQ/PIQA/ARC keyword formats, one-step arithmetic
  on numbers 1–20, Python output prediction and one-line function completion),
  {corpus_tokens:,} tokens.
  Prompts use `render_prompt`: `Question: ...\\nAnswer:\\n`; the answer follows, then EOS.
- Tokenizer: byte-level BPE, {config.vocab_size} tokens, digits always single tokens; special
  tokens `{EOS}` (EOS and padding) and `{MASK}` (mask).
- Rows: one example each, padded with EOS to the batch length plus 0–{args.eos_tail} extra EOS
  (LLaDA's SFT layout, so the model learns to stop); batches length-bucketed.
- Loss: `nara.diffusion.diffusion_loss`; steps 1–{int((1 - args.sft_fraction) * args.steps)}
  LLaDA pre-training (every token maskable, normalised per token), the remaining steps SFT
  (prompt never masked, normalised per answer length).
- AdamW (β 0.9/0.95, weight decay {args.weight_decay}), peak lr {args.lr}, {args.warmup:.0%}
  warm-up then linear decay to 10 %, gradient clipping 1.0, batch {args.batch_size},
  {args.steps} steps, {stats["train_tokens"]:,} training tokens in {stats["train_seconds"] / 60:.1f} min.

## Results

Final training loss {stats["final_loss"]} (mean of the last {args.log_every} steps, SFT phase),
masked-token accuracy {stats["final_masked_acc"]}. Log: `training_log.jsonl`.

Evaluation (fresh draws of the corpus families, seed {args.seed + EVAL_SEED_OFFSET}; greedy
LLaDA sampling, 24 tokens, 24 steps, blocks of 8):

```json
{json.dumps(report, indent=2)}
```

The embedded fine-tuning tasks (`nara.data.embedded`) ask for these skills in templates and
answer formats absent from the corpus (option1/option2 sentences, the corpus's word problems
answered `N is the answer.`, `name = value` after assignments), as instruction tuning does with a base model: the
zero-shot scores above are low by design, and fine-tuning unlocks what pre-training taught.

## Options

```json
{json.dumps(options, indent=2)}
```
"""
    (out / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    records = pretraining_corpus(args.examples, seed=args.seed)
    # Recorded with the options, so --resume refuses a corpus that changed since the checkpoint.
    args.corpus_sha256 = hashlib.sha256(json.dumps(records).encode()).hexdigest()
    if args.resume and (args.checkpoint_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.checkpoint_dir)
    else:
        tokenizer = train_tokenizer(records, args.vocab_size)
    encoded = encode(tokenizer, records)
    corpus_tokens = sum(len(e) for e in encoded)
    print(f"corpus: {len(records)} examples, {corpus_tokens} tokens, vocab {len(tokenizer)}",
          flush=True)  # fmt: skip
    config = LLaDAConfig(
        d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_heads,
        n_layers=args.n_layers, mlp_hidden_size=args.mlp_hidden_size,
        vocab_size=len(tokenizer), embedding_size=len(tokenizer), rope_theta=10000.0,
        max_sequence_length=512, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LLaDAModelLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)  # files of an earlier build are overwritten
    stats = train(model, encoded, tokenizer, args, args.out / "training_log.jsonl")
    if stats is None:
        print(f"stopped at step {args.stop_at}; continue with --resume", flush=True)
        return
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    evaluated = time.time()
    report = evaluate(model, tokenizer, args)
    eval_seconds = time.time() - evaluated
    write_card(args.out, args, config, n_params, stats, report, corpus_tokens, eval_seconds)
    print(json.dumps({**stats, **report, "eval_seconds": round(eval_seconds)}), flush=True)


if __name__ == "__main__":
    main()
