"""nara.generate on Dream equals the released ``diffusion_generate``, token for token.

The samples under tests/models/data/ were drawn by the released sampler on the released-format
tiny checkpoint (scripts/make_dream_reference.py), one per setting of dream_reference.json: every
``alg`` at temperature 0, with top-k, top-p, ``alg_temp`` and one tempered draw (these last take
their randomness from torch's generator, which a seeded ``generator`` reproduces). The prompts
are a left-padded batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nara.diffusion import generate
from nara.diffusion.dream_sampling import DREAM_ALGS
from nara.models import DreamModel, load_model, tiny_dream_config

DATA = Path(__file__).parent / "data"
SETTINGS = json.loads((DATA / "dream_reference.json").read_text())["samples"]
REMASKING = {alg: name for name, alg in DREAM_ALGS.items()}  # the release's alg -> nara's name


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(DATA / "dream_reference.safetensors")


@pytest.fixture(scope="module")
def released() -> DreamModel:
    return load_model(DATA / "dream_tiny").model


@pytest.mark.parametrize("index", range(len(SETTINGS)), ids=lambda i: str(SETTINGS[i]))
def test_equals_released_diffusion_generate(released, reference, index):
    settings = SETTINGS[index]
    answers = generate(
        released,
        reference["prompts"],
        reference["prompt_mask"],
        mask_token_id=63,
        gen_length=settings["max_new_tokens"],
        steps=settings["steps"],
        remasking=REMASKING[settings["alg"]],
        temperature=settings.get("temperature", 0.0),
        top_p=settings.get("top_p"),
        top_k=settings.get("top_k"),
        alg_temp=settings.get("alg_temp"),
        generator=torch.Generator().manual_seed(settings["seed"]),
    )
    assert torch.equal(answers, reference[f"sample_{index}"])


def test_dream_models_default_to_dream_sampler_and_llada_sampler_is_available(released, reference):
    common = {"mask_token_id": 63, "gen_length": 8, "steps": 8}
    prompts, mask = reference["prompts"], reference["prompt_mask"]
    default = generate(released, prompts, mask, **common)
    assert torch.equal(default, generate(released, prompts, mask, sampler="dream", **common))
    llada = generate(released, prompts, mask, sampler="llada", block_length=4, **common)
    assert llada.shape == (2, 8) and not bool((llada == 63).any())


def test_history_counts_the_revealed_tokens(released, reference):
    out = generate(
        released,
        reference["prompts"],
        reference["prompt_mask"],
        mask_token_id=63,
        gen_length=8,
        steps=4,
        return_history=True,
    )
    masked = [(h[:, 5:] == 63).sum(-1).tolist() for h in out.history]
    # Dream's grid t = (1, 0.75025, 0.5005, 0.25075, 0.001) reveals floor(n · (1 − s/t)) of the
    # n masked: floor(8 · 0.24975) = 1, floor(7 · 0.3329) = 2, floor(5 · 0.499) = 2, then all.
    assert masked == [[7, 7], [5, 5], [3, 3], [0, 0]]
    assert torch.equal(out.history[-1][:, 5:], out.sequences)


def test_eos_ends_the_answer():
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config()).eval()
    prompt = torch.randint(0, 126, (1, 4))
    plain = generate(model, prompt, mask_token_id=127, gen_length=8, steps=8)
    eos = int(plain[0, 2])
    cut = generate(model, prompt, mask_token_id=127, gen_length=8, steps=8, eos_token_id=eos)
    first = int((plain[0] == eos).nonzero()[0])
    assert torch.equal(cut[0, : first + 1], plain[0, : first + 1])
    assert bool((cut[0, first:] == eos).all())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sampler": "dream", "block_length": 4}, "block_length"),
        ({"sampler": "dream", "cfg_scale": 1.0}, "cfg_scale"),
        ({"sampler": "dream", "threshold": 0.9}, "threshold"),
        ({"sampler": "llada", "top_p": 0.9}, "top_p"),
        ({"sampler": "dream", "top_p": 0.0}, "top_p"),
        ({"sampler": "dream", "top_k": 0}, "top_k"),
        ({"sampler": "dream", "alg_temp": -1.0}, "alg_temp"),
        ({"sampler": "sedd"}, "sampler must be"),
        ({"sampler": "mdlm", "temperature": 0.5}, "temperature"),
        ({"sampler": "mdlm", "remasking": "margin"}, "remasking"),
    ],
)
def test_options_of_the_other_sampler_are_refused(released, options, match):
    with pytest.raises(ValueError, match=match):
        generate(
            released,
            torch.zeros(1, 3, dtype=torch.long),
            mask_token_id=63,
            gen_length=8,
            steps=8,
            **options,
        )
