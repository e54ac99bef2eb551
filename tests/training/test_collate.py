"""Tokenization for SFT: what is maskable, EOS padding, chat template, truncation policies."""

from __future__ import annotations

import pytest
import torch
from training_support import EOS, build_char_tokenizer

from nara.data.collate import Collator, encode_pair, encode_prompt, encode_records


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_batch_layout_prompt_frozen_answer_and_eos_padding_maskable(tok):
    a = encode_pair(tok, "1+2=", "3")  # 4 prompt + 1 answer + EOS
    b = encode_pair(tok, "9+9=", "18")  # 4 prompt + 2 answer + EOS
    batch = Collator(EOS)([a, b])
    ids, maskable = batch["input_ids"], batch["maskable"]
    assert ids.shape == (2, 7)
    assert tok.decode(ids[0, :5]) == "1+2=3" and ids[0, 5:].tolist() == [EOS, EOS]
    assert ids[1, 6].item() == EOS
    expected = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(maskable, expected)
    assert batch["attention_mask"].eq(1).all()  # EOS padding is attended, as in LLaDA's SFT
    assert batch["prompt_lengths"].tolist() == [4, 4]


def test_pad_to_max_length(tok):
    batch = Collator(EOS, pad_to="max_length", max_length=12)([encode_pair(tok, "1+2=", "3")])
    assert batch["input_ids"].shape == (1, 12) and batch["maskable"][0, 4:].all()


def test_target_is_trained_on_when_present(tok):
    (enc,) = encode_records(
        tok, [{"prompt": "Q:", "answer": "4", "target": "2+2=4"}], max_length=32
    )
    assert tok.decode(enc.answer_ids, skip_special_tokens=True) == "2+2=4"


def test_chat_template_wraps_the_prompt_and_splits_the_answer():
    tok = build_char_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    enc = encode_pair(tok, "1+2=", "3")
    assert tok.decode(enc.prompt_ids) == "<user>1+2=|<assistant>"
    assert tok.decode(enc.answer_ids, skip_special_tokens=True) == "3|"
    assert enc.answer_ids[-1] == EOS
    assert encode_prompt(tok, "1+2=") == enc.prompt_ids
    plain = encode_pair(tok, "1+2=", "3", chat_template="never")
    assert tok.decode(plain.prompt_ids) == "1+2="


def test_chat_template_always_without_one_is_an_error(tok):
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt(tok, "x", chat_template="always")


def test_truncation_policies(tok):
    records = [{"prompt": "12345", "answer": "abc"}, {"prompt": "1", "answer": "2"}]
    with pytest.warns(UserWarning, match="1 example.s. dropped and 0 truncated"):
        kept = encode_records(tok, records, max_length=6, truncation="drop")
    assert len(kept) == 1
    with pytest.warns(UserWarning, match="0 example.s. dropped and 1 truncated"):
        cut = encode_records(tok, records, max_length=6, truncation="truncate")
    assert len(cut[0]) == 6 and tok.decode(cut[0].answer_ids) == "a"
    with pytest.raises(ValueError, match=r"example 0 has 9 tokens > data.max_length=6"):
        encode_records(tok, records, max_length=6, truncation="error")
    with pytest.raises(ValueError, match="no example fits"), pytest.warns(UserWarning):
        encode_records(tok, records[:1], max_length=5, truncation="truncate")
