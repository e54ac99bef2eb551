"""Adapter files that can be trusted: exact module names, a sha256 of the weights, finite tensors,
no regex evaluated on load, and clear errors for folders that are not adapter folders."""

from __future__ import annotations

import hashlib
import json
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from adapters_util import TARGETS, randomize
from peft import LoraConfig, get_peft_model

import nara
from nara.adapters import adapter_layers, inject

CATASTROPHIC = "(.|.)*Z"  # exponential backtracking on any name without a Z


class Hung(Exception):
    pass


@contextmanager
def hang_guard(seconds: int = 60) -> Iterator[None]:
    """Turn a hang into a test failure (SIGALRM interrupts re matching); not a speed check."""

    def stop(*_: object) -> None:
        raise Hung(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def saved_lora(tiny_lm, path, targets=TARGETS):
    model = nara.add_adapters(tiny_lm(), nara.LoRAConfig(r=4, target_modules=targets))
    randomize(model)
    nara.save_adapters(model, path)
    return model.eval()


def edit_config(path, **changes) -> None:
    file = path / "adapter_config.json"
    file.write_text(json.dumps(json.loads(file.read_text()) | changes))


def test_config_records_exact_names_and_the_weights_sha256(tiny_lm, tmp_path):
    model = saved_lora(tiny_lm, tmp_path, targets=r".*\.(q|v)_proj")
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    expected = {
        f"transformer.blocks.{i}.{p}": [16, 16] for i in (0, 1) for p in ("q_proj", "v_proj")
    }
    assert meta["target_shapes"] == expected
    assert list(meta["target_shapes"]) == list(adapter_layers(model))
    weights = (tmp_path / "adapter_model.safetensors").read_bytes()
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))  # written through temporary files, renamed


def test_loading_applies_the_saved_names_never_the_saved_rule(tiny_lm, tmp_path):
    ids = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(0))
    model = saved_lora(tiny_lm, tmp_path)
    edit_config(tmp_path, config=model.nara_hub.config.to_dict() | {"target_modules": CATASTROPHIC})
    with hang_guard():
        loaded = nara.load_adapters(tiny_lm(), tmp_path).eval()
    assert list(adapter_layers(loaded)) == list(adapter_layers(model))
    torch.testing.assert_close(loaded(ids), model(ids))


@pytest.mark.parametrize(
    "pattern",
    [CATASTROPHIC, "(a+)+Z", r"(\w+\.)*q_proj", "(ab|a)*"],
    ids=["alt", "plus", "w", "ab"],
)
def test_nested_repetition_regexes_are_refused_before_matching(tiny_lm, pattern):
    with hang_guard(), pytest.raises(ValueError, match="catastrophic backtracking"):
        nara.add_adapters(tiny_lm(), nara.LoRAConfig(target_modules=pattern))


def test_ordinary_regexes_are_accepted_and_bad_ones_named(tiny_lm):
    for pattern in [r".*\.(q|v)_proj", r"transformer\.blocks\.\d+\.k_proj", r"(?:.*\.)?attn_out"]:
        inject.compile_target_regex(pattern)
    with pytest.raises(ValueError, match=r"'q_proj\(' is not a valid regex"):
        nara.add_adapters(tiny_lm(), nara.LoRAConfig(target_modules="q_proj("))


def test_a_saved_trajectory_regex_cannot_hang_loading(tiny_lm, tmp_path):
    model = nara.add_adapters(tiny_lm(), nara.TrajectoryConfig(r=2, target_modules="blocks"))
    nara.save_adapters(model, tmp_path)
    config = model.nara_hub.config.to_dict() | {"target_modules": CATASTROPHIC}
    edit_config(tmp_path, config=config)
    with hang_guard(), pytest.raises(ValueError, match="catastrophic backtracking"):
        nara.load_adapters(tiny_lm(), tmp_path)


def test_flipped_bytes_are_detected_by_the_sha256(tiny_lm, tmp_path):
    saved_lora(tiny_lm, tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's values: the file still parses
    file.write_bytes(bytes(data))
    message = (
        "adapter_model.safetensors does not match the sha256 recorded in adapter_config.json: "
        "the file is damaged or was modified"
    )
    with pytest.raises(ValueError, match=message):
        nara.load_adapters(tiny_lm(), tmp_path)


def test_a_file_without_a_hash_loads_with_one_warning(tiny_lm, tmp_path):
    ids = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(1))
    model = saved_lora(tiny_lm, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    del config["weights_sha256"]  # as written by nara before the hash was recorded
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = nara.load_adapters(tiny_lm(), tmp_path).eval()
        nara.load_adapters(tiny_lm(), tmp_path)
    messages = [str(w.message) for w in caught if "records no sha256" in str(w.message)]
    assert len(messages) == 1 and "save the adapter again" in messages[0]
    torch.testing.assert_close(first(ids), model(ids))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_tensors_are_refused_with_their_name(tiny_lm, tmp_path, value):
    model = nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4, target_modules=TARGETS))
    with torch.no_grad():
        model.transformer["blocks"][1].v_proj.lora_B[2, 1] = value
    nara.save_adapters(model, tmp_path)  # hash matches: the file is intact but the values are not
    match = r"'transformer\.blocks\.1\.v_proj\.lora_B' in .*adapter_model\.safetensors holds 1 NaN"
    with pytest.raises(ValueError, match=match):
        nara.load_adapters(tiny_lm(), tmp_path)


def test_non_finite_peft_tensors_are_refused(tiny_lm, tmp_path):
    reference = get_peft_model(tiny_lm(), LoraConfig(r=2, target_modules=TARGETS))
    with torch.no_grad():
        reference.base_model.model.transformer["blocks"][0].q_proj.lora_A["default"].weight[0] = (
            float("nan")
        )
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"blocks\.0\.q_proj\.lora_A\.weight' .* NaN/inf"):
        nara.load_adapters(tiny_lm(), tmp_path)


def test_folders_that_are_not_adapter_folders_are_named(tiny_lm, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adapter folder '.*nowhere' does not exist"):
        nara.load_adapters(tiny_lm(), tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")  # a model folder
    with pytest.raises(FileNotFoundError, match=r"not an adapter folder: adapter_config\.json"):
        nara.load_adapters(tiny_lm(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"method": "lora"}))
    with pytest.raises(ValueError, match=r"not a nara or PEFT adapter config"):
        nara.load_adapters(tiny_lm(), tmp_path)
    (tmp_path / "adapter_config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"not valid JSON"):
        nara.load_adapters(tiny_lm(), tmp_path)


def test_a_saved_name_the_model_lacks_is_refused(tiny_lm, tmp_path):
    saved_lora(tiny_lm, tmp_path)
    with pytest.raises(ValueError, match=r"transformer\.blocks\.1\.q_proj: saved \[16, 16\] vs"):
        nara.load_adapters(tiny_lm(layers=1), tmp_path)
