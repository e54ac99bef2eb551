"""Make the Dream reference test data by running Dream's *released* model and sampler code.

nara's native Dream (src/nara/models/dream.py) and its sampler
(src/nara/diffusion/dream_sampling.py) are checked against what the released code computes on a
random tiny checkpoint. This script, which the tests never import, writes that checkpoint in the released format and the released code's
outputs under tests/models/data/:

    dream_tiny/config.json, dream_tiny/model.safetensors   the checkpoint, saved by the release
    dream_reference.safetensors                            inputs, float32 logits, samples
    dream_reference.json                                   the sampler settings of each sample

The released code is not part of nara and is not committed. To re-run:

 1. Put the release's ``configuration_dream.py``, ``modeling_dream.py`` and
    ``generation_utils.py`` (from the Dream-v0-Instruct-7B model repository on the Hugging Face
    hub) in one folder, e.g. /tmp/dream-ref/release.
 2. Make a separate environment with the transformers version the release was written for:

        python -m venv /tmp/dream-ref && /tmp/dream-ref/bin/pip install transformers==4.46.2 torch

    (the stored data were made with transformers 4.46.2 on torch 2.13 for CPU)

 3. From the repository root:

        /tmp/dream-ref/bin/python scripts/make_dream_reference.py --release /tmp/dream-ref/release

The files are small (a 2-layer, width-32 model with a 64-token vocabulary). The generated
samples must contain no mask token, so that every one of them is a complete answer; the script
refuses to write data that breaks this.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "mask_token_id": 63,
    "pad_token_id": 62,
    "bos_token_id": 62,
    "eos_token_id": 62,
    "tie_word_embeddings": False,
}
MASK, PAD = TINY["mask_token_id"], TINY["pad_token_id"]

# Sampler settings checked token for token (temperature 0 unless stated; seeds fix the random
# draws of alg="origin" and of alg_temp > 0, which the release takes from torch's global RNG).
SAMPLES = [
    {"alg": "origin", "steps": 8, "max_new_tokens": 8, "seed": 1},
    {"alg": "maskgit_plus", "steps": 8, "max_new_tokens": 8, "seed": 0},
    {"alg": "maskgit_plus", "steps": 4, "max_new_tokens": 10, "seed": 0},
    {"alg": "topk_margin", "steps": 5, "max_new_tokens": 8, "seed": 0},
    {"alg": "entropy", "steps": 8, "max_new_tokens": 8, "seed": 0},
    {"alg": "entropy", "steps": 3, "max_new_tokens": 9, "seed": 0},
    {"alg": "maskgit_plus", "steps": 8, "max_new_tokens": 8, "seed": 0, "top_k": 5},
    {"alg": "topk_margin", "steps": 8, "max_new_tokens": 8, "seed": 0, "top_p": 0.9},
    {"alg": "entropy", "steps": 8, "max_new_tokens": 8, "seed": 3, "alg_temp": 0.5},
    {"alg": "maskgit_plus", "steps": 8, "max_new_tokens": 8, "seed": 4, "temperature": 0.7},
]


def _load_release(folder: Path):
    """The release's modules, imported as one package (its files use relative imports)."""
    package = Path(tempfile.mkdtemp()) / "dream_release"
    package.mkdir()
    for name in ("configuration_dream.py", "modeling_dream.py", "generation_utils.py"):
        shutil.copy(folder / name, package / name)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("dream_release.modeling_dream")


def _random_model(release):
    """The release's DreamModel with every weight random (norms and biases included)."""
    torch.manual_seed(0)
    model = release.DreamModel(release.DreamConfig(**TINY)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.5)
            else:
                param.normal_(0.0, 0.3)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="folder of the release code")
    args = parser.parse_args()
    release = _load_release(args.release)
    model = _random_model(release)
    folder = OUT / "dream_tiny"
    model.save_pretrained(folder, safe_serialization=True)
    for extra in folder.glob("generation_config.json"):
        extra.unlink()  # not part of what nara reads; keep the test data minimal

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, PAD, (2, 9), generator=gen)
    padded = ids.clone()
    padded[1, :3] = PAD
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    # The release's sampler calls the model with a (B, 1, T, T) boolean mask (real query and real
    # key) and position ids that start at 0 on the first real token.
    mask4 = (mask[:, None, :, None] & mask[:, None, None, :]).bool()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    tensors = {
        "ids": ids,
        "logits": model(ids).logits,
        "padded_ids": padded,
        "padded_mask": mask,
        "padded_logits": model(padded, mask).logits,
        "padded_logits_sampler": model(padded, mask4, positions).logits,
    }

    prompts = torch.randint(0, PAD, (2, 5), generator=gen)
    prompts[1, :2] = PAD
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[1, :2] = 0
    tensors["prompts"], tensors["prompt_mask"] = prompts, prompt_mask
    for index, settings in enumerate(SAMPLES):
        options = {k: v for k, v in settings.items() if k != "seed"}
        torch.manual_seed(settings["seed"])
        out = model.diffusion_generate(
            prompts,
            attention_mask=prompt_mask,
            mask_token_id=MASK,
            return_dict_in_generate=True,
            **{"temperature": 0.0, **options},
        )
        answers = out.sequences[:, prompts.shape[1] :]
        if bool((answers == MASK).any()):
            raise SystemExit(f"sample {index} ({settings}) kept a mask token; pick other seeds")
        tensors[f"sample_{index}"] = answers
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        OUT / "dream_reference.safetensors",
    )
    (OUT / "dream_reference.json").write_text(json.dumps({"samples": SAMPLES}, indent=1) + "\n")
    print(f"wrote {folder} and {OUT / 'dream_reference.safetensors'}")


if __name__ == "__main__":
    main()
