"""Make the MDLM reference test data by running MDLM's *released* DiT and SUBS code.

nara's native MDLM (src/nara/models/mdlm.py) is checked against what the released
``models/dit.py`` (the ``DIT`` backbone) and the ``_subs_parameterization`` method of the
released ``diffusion.py`` compute on a random tiny checkpoint. This script, which the tests never
import, writes under tests/models/data/:

    mdlm_tiny/config.json, mdlm_tiny/model.safetensors   the checkpoint in the released Hugging
                                                          Face layout (``backbone.*`` keys)
    mdlm_reference.safetensors                           input ids, raw and SUBS outputs, and
                                                          samples of the released sampler

The released code is not part of nara and is not committed. Its backbone calls two
flash-attention kernels, which do not run on a CPU; this script puts a plain-torch stand-in for
each in place (rotary embedding of q and k in the rotate-half form over cos/sin tables of half
the head width, and softmax attention over each sequence with scale 1/sqrt(head width), no
mask), so what is checked against the release is everything else: the embedding, σ map, adaLN
shifts/scales/gates, norms, the fused q/k/v layout, MLP, final layer, SUBS, and the released
cached ancestral sampler (``_sample`` with ``ddpm_cache``, run verbatim on an object that stands
for the ``Diffusion`` class in what the sampler reads). To re-run:

 1. Clone the MDLM repository (kuleshov-group/mdlm on GitHub) to e.g. /tmp/mdlm.
 2. Make a separate environment (the Dream one serves):

        python -m venv /tmp/dream-ref && /tmp/dream-ref/bin/pip install torch einops omegaconf \\
            huggingface_hub safetensors

 3. From the repository root:

        /tmp/dream-ref/bin/python scripts/make_mdlm_reference.py --release /tmp/mdlm
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"

TINY = {"hidden_size": 32, "cond_dim": 16, "n_blocks": 2, "n_heads": 4, "dropout": 0.0}
VOCAB = 64  # the last id, 63, is the mask token, as MDLM appends it after GPT-2's vocabulary
MASK = VOCAB - 1
SAMPLES = [(4, 0), (8, 1), (12, 2)]  # (steps, torch seed) of unconditional samples of 12 tokens

STAND_INS = {
    "flash_attn/__init__.py": "from . import flash_attn_interface, layers\n",
    "flash_attn/layers/__init__.py": "from . import rotary\n",
    "flash_attn/layers/rotary.py": '''
        import torch

        def apply_rotary_emb_qkv_(qkv, cos, sin):
            """qkv (B, T, 3, H, D), cos/sin (T, D/2): rotate q and k in place."""
            cos = torch.cat([cos, cos], -1)[None, :, None, :]
            sin = torch.cat([sin, sin], -1)[None, :, None, :]
            for i in (0, 1):
                x = qkv[:, :, i]
                half = x.shape[-1] // 2
                turned = torch.cat([-x[..., half:], x[..., :half]], -1)
                qkv[:, :, i] = x * cos + turned * sin
            return qkv
    ''',
    "flash_attn/flash_attn_interface.py": '''
        import torch

        def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p, causal):
            """qkv (N, 3, H, D) packed sequences → (N, H, D), full attention per sequence."""
            out = []
            for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
                q, k, v = qkv[start:end].unbind(1)  # (T, H, D)
                scores = torch.einsum("thd,shd->hts", q, k) / q.shape[-1] ** 0.5
                out.append(torch.einsum("hts,shd->thd", scores.softmax(-1), v))
            return torch.cat(out)
    ''',
}


def _import_release(folder: Path):
    """The released ``models/dit.py`` (with the stand-ins), ``noise_schedule.py``, and the
    methods of the released ``Diffusion`` class that SUBS and the sampler run."""
    stubs = Path(tempfile.mkdtemp())
    for name, text in STAND_INS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(stubs))
    modules = {}
    for name in ("models/dit.py", "noise_schedule.py"):
        spec = importlib.util.spec_from_file_location(Path(name).stem, folder / name)
        modules[name] = importlib.util.module_from_spec(spec)  # alone: models/__init__ needs
        spec.loader.exec_module(modules[name])  # Mamba kernels
    tree = ast.parse((folder / "diffusion.py").read_text())
    wanted = {
        "_sample_categorical",
        "_subs_parameterization",
        "_process_sigma",
        "forward",
        "_sample_prior",
        "_ddpm_caching_update",
        "_sample",
    }
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Diffusion"):
        nodes += [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"torch": torch}
    exec(compile(ast.Module(nodes, []), "diffusion.py", "exec"), namespace)
    return modules["models/dit.py"], modules["noise_schedule.py"], namespace


class Released:
    """Stands for the released ``Diffusion`` object in what SUBS and the sampler read of it:
    SUBS parameterisation, log-linear noise, the cached ancestral sampler, noise removal."""

    parameterization = "subs"
    sampler = "ddpm_cache"
    time_conditioning = False
    device = torch.device("cpu")
    mask_index = MASK
    neg_infinity = -1000000.0

    def __init__(self, backbone, noise, methods: dict, batch: int, length: int, steps: int):
        from omegaconf import OmegaConf

        self.backbone, self.noise = backbone, noise
        self.config = OmegaConf.create(
            {
                "loader": {"eval_batch_size": batch},
                "model": {"length": length},
                "noise": {"type": "loglinear"},
                "sampling": {"steps": steps, "noise_removal": True},
            }
        )
        for name in ("_subs_parameterization", "_process_sigma", "forward", "_sample_prior"):
            setattr(self, name, methods[name].__get__(self))
        self._ddpm_caching_update = methods["_ddpm_caching_update"].__get__(self)
        self.sample = methods["_sample"].__get__(self)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="MDLM repository clone")
    args = parser.parse_args()
    dit, noise_schedule, methods = _import_release(args.release)

    torch.manual_seed(0)
    config = {"model": {**TINY, "scale_by_sigma": True, "length": 32}}
    model = dit.DIT(config, vocab_size=VOCAB).eval()
    with torch.no_grad():  # every weight random, the zero-initialised adaLN and head included
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.3)

    folder = OUT / "mdlm_tiny"
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    released_config = {  # the layout of the released mdlm-owt config.json
        "architectures": ["MDLM"],
        "model_type": "mdlm",
        "vocab_size": VOCAB,
        "model_length": 32,
        "hidden_dim": TINY["hidden_size"],
        "cond_dim": TINY["cond_dim"],
        "n_blocks": TINY["n_blocks"],
        "n_heads": TINY["n_heads"],
        "dropout": TINY["dropout"],
        "time_conditioning": False,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(released_config, indent=2) + "\n")

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, MASK, (2, 12), generator=gen)
    ids[torch.rand(ids.shape, generator=gen) < 0.5] = MASK
    released = Released(model, noise_schedule.LogLinearNoise(), methods, 2, 12, 1)
    with torch.no_grad():
        raw = model(ids, torch.zeros(2))  # time conditioning off: the release's model sees σ = 0
        tensors = {"ids": ids, "raw": raw, "subs": released.forward(ids, torch.zeros(2))}
    for steps, seed in SAMPLES:
        released.config.sampling.steps = steps
        torch.manual_seed(seed)
        tensors[f"sample_{steps}_{seed}"] = released.sample()  # (2, 12), from all masks
    save_file(tensors, OUT / "mdlm_reference.safetensors")
    print(f"wrote {folder} and {OUT / 'mdlm_reference.safetensors'}")


if __name__ == "__main__":
    main()
