"""The model's prompt template by default: the embedded model's Question/Answer format is its
chat template, applied once by generation, evaluation, lm-eval and training alike; --raw sends
the text untouched; sampling noise is seeded per batch, never repeated across batches."""

from __future__ import annotations

import pytest
import torch

import nara.diffusion
from nara.cli import main
from nara.commands._common import make_generate_fn
from nara.data.collate import encode_pair, encode_prompt
from nara.data.corpus import render_prompt
from nara.data.embedded import load_embedded
from nara.data.templates import EMBEDDED_CHAT_TEMPLATE
from nara.evaluation.runner import GenerationSettings, batch_seed
from nara.evaluation.runner import make_generate_fn as runner_generate_fn
from nara.models import load_model

TEXTS = ["What is 3 plus 4?", "a\nb", "Answer:\n", "Question: no answer line", ""]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_embedded_template_is_render_prompt_and_never_wraps_twice(tiny):
    tokenizer = tiny.tokenizer
    assert tokenizer.chat_template == EMBEDDED_CHAT_TEMPLATE
    for text in TEXTS:
        once = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        assert once == render_prompt(text)
        again = tokenizer.apply_chat_template(
            [{"role": "user", "content": once}], add_generation_prompt=True, tokenize=False
        )
        assert again == once


def test_training_tokens_of_embedded_tasks_do_not_change(tiny):
    """The embedded tasks' prompts are already in the format: the template leaves their tokens
    (prompt and answer) exactly as the raw path gives them."""
    for record in load_embedded("arithmetic", "train")[:20]:
        templated = encode_pair(tiny.tokenizer, record["prompt"], record["answer"])
        raw = encode_pair(tiny.tokenizer, record["prompt"], record["answer"], chat_template="never")
        assert templated == raw


@pytest.fixture
def seen_prompts(monkeypatch):
    """Record the prompt ids and generator seed of each sampler call; answer with EOS."""
    calls = []

    def fake_generate(model, ids, mask, *, gen_length, generator, eos_token_id, **kwargs):
        rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        calls.append({"prompts": rows, "seed": generator.initial_seed()})
        return torch.full((ids.shape[0], gen_length), eos_token_id)

    monkeypatch.setattr(nara.diffusion, "generate", fake_generate)
    return calls


def test_generate_applies_the_template_and_raw_sends_the_text(tiny, seen_prompts, capsys):
    tokenizer = tiny.tokenizer
    text = "What is 3 plus 4?"
    assert main(["generate", "--prompt", text, "--gen-length", "8"]) == 0
    assert main(["generate", "--prompt", text, "--gen-length", "8", "--raw"]) == 0
    templated, raw = (tokenizer.decode(c["prompts"][0]) for c in seen_prompts)
    assert templated == render_prompt(text) and raw == text
    assert main(["generate", "--prompt", text, "--raw", "--chat-template", "always"]) == 2
    assert "--raw" in capsys.readouterr().err


def test_eval_and_lm_eval_generation_apply_the_template(tiny, seen_prompts):
    model, tokenizer, mask_id = tiny
    for mode, expected in (("auto", render_prompt("2+2=")), ("never", "2+2=")):
        settings = GenerationSettings(chat_template=mode)
        runner_generate_fn(model, tokenizer, mask_token_id=mask_id, settings=settings)(["2+2="], 4)
        assert tokenizer.decode(seen_prompts[-1]["prompts"][0]) == expected
    assert encode_prompt(tokenizer, "2+2=") == tokenizer(render_prompt("2+2="))["input_ids"]


def test_batches_draw_different_noise_and_a_batch_the_same_again(tiny, seen_prompts):
    model, tokenizer, mask_id = tiny
    fn = make_generate_fn(model, tokenizer, mask_id, temperature=1.0, seed=3)
    first, second = ["What is 1 plus 1?", "What is 2 plus 2?"], ["What is 5 plus 1?"]
    fn(first, 8)
    fn(second, 8)
    fn(first, 8)  # a resumed run generating a cut batch again
    seeds = [c["seed"] for c in seen_prompts]
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]
    assert seeds == [batch_seed(3, p, 8) for p in (first, second, first)]
    assert batch_seed(4, first, 8) != seeds[0] and batch_seed(3, first, 9) != seeds[0]


def test_readme_example_prints_an_answer(capsys):
    assert main(["generate", "--prompt", "What is 3 plus 4?"]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer, "the embedded model answered nothing"
