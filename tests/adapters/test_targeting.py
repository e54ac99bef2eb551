"""Targeting, configs, save/load errors and parameter counts."""

from __future__ import annotations

import json

import pytest
from adapters_util import CASES, TARGETS
from torch import nn

import nara
from nara.adapters import AdapterConfig, adapter_layers, resolve_targets
from nara.models import LLaDAModelLM, tiny_config


def targeted(model: nn.Module, targets) -> list[str]:
    return list(adapter_layers(nara.add_adapters(model, nara.LoRAConfig(target_modules=targets))))


def test_suffix_names_do_not_catch_the_output_head(tiny_lm):
    names = targeted(tiny_lm(), ["ff_out"])
    assert names == ["transformer.blocks.0.ff_out", "transformer.blocks.1.ff_out"]
    assert targeted(tiny_lm(), ["transformer.ff_out"]) == ["transformer.ff_out"]


def test_all_linear_excludes_the_head_by_name_or_by_get_output_embeddings(tiny_lm):
    names = targeted(tiny_lm(), "all-linear")
    assert len(names) == 14 and "transformer.ff_out" not in names
    llada = targeted(LLaDAModelLM(tiny_config()), "all-linear")
    assert len(llada) == 14 and "model.transformer.ff_out" not in llada


def test_regex_targets_match_full_names(tiny_lm):
    assert targeted(tiny_lm(), r".*\.1\.(q|v)_proj") == [
        "transformer.blocks.1.q_proj",
        "transformer.blocks.1.v_proj",
    ]
    with pytest.raises(ValueError, match=r"matches no module name .* pass a list"):
        resolve_targets(tiny_lm(), r"q_pro")


def test_unmatched_entries_are_named_with_existing_names(tiny_lm):
    with pytest.raises(ValueError, match=r"entries \['qproj', 'wo'\] match no module .*q_proj"):
        resolve_targets(tiny_lm(), ["qproj", "q_proj", "wo"])


def test_non_linear_targets_and_adding_twice_are_errors(tiny_lm):
    with pytest.raises(ValueError, match=r"not nn\.Linear; .*name the linear layers"):
        resolve_targets(tiny_lm(), ["norm"])
    model = nara.add_adapters(tiny_lm(), nara.LoRAConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"already have nara adapters; .*fresh base model"):
        nara.add_adapters(model, nara.NaRAConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"one adapter config per model"):
        nara.add_adapters(model, nara.NaRAConfig(target_modules=["k_proj"]))


def test_sharing_groups_must_cover_every_target(tiny_lm):
    config = nara.NaRAConfig(target_modules=TARGETS, sharing={"qk": ["q_proj", "k_proj"]})
    with pytest.raises(
        ValueError, match=r"'transformer\.blocks\.0\.v_proj' is in no sharing group"
    ):
        nara.add_adapters(tiny_lm(), config)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nara.LoRAConfig(r=0), r"r must be a positive integer"),
        (lambda: nara.LoRAConfig(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: nara.LoRAConfig(target_modules=[]), r"non-empty list"),
        (lambda: nara.NaRAConfig(eta=0), r"eta must be > 0"),
        (lambda: nara.NaRAConfig(embedding="gauss"), r"embedding must be one of"),
        (lambda: nara.NaRAConfig(input_mode="time"), r"input_mode must be one of"),
        (lambda: nara.NaRAConfig(sharing="layer"), r"sharing must be 'global', 'per_layer'"),
        (lambda: nara.TLoRAConfig(r=4, r_min=5), r"r_min must be in \[1, r=4\]"),
        (lambda: nara.MultiLoRAConfig(num_bins=0), r"num_bins must be >= 1"),
        (lambda: AdapterConfig.from_dict({"method": "vera"}), r"known methods: bitfit, .*, lora, "),
    ],
)
def test_config_errors_say_what_and_how(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make", [make for _, make in CASES])
def test_configs_round_trip_through_json_and_document_every_field(make):
    config = make()
    assert AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert all(config.field_help().values())


def test_load_into_model_with_other_shapes_is_refused(tiny_lm, tmp_path):
    nara.save_adapters(nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4)), tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["nara_version"] == nara.__version__ and saved["method"] == "nara"
    with pytest.raises(ValueError, match=r"different target layers .*saved \[16, 16\] vs model"):
        nara.load_adapters(tiny_lm(d=24), tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_or_truncated_weights_are_reported(tiny_lm, tmp_path, damage):
    nara.save_adapters(nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4)), tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64 + data[64:])
    with pytest.raises(ValueError, match=r"does not match the sha256 recorded"):
        nara.load_adapters(tiny_lm(), tmp_path)
    # a file saved before the hash was recorded: the damage is found when parsing it
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"weights_sha256": None}))
    with (
        pytest.warns(UserWarning, match="records no sha256"),
        pytest.raises(ValueError, match=r"corrupted or truncated .* save them again"),
    ):
        nara.load_adapters(tiny_lm(), tmp_path)


class EightB(nn.Module):
    """LLaDA-8B's attention projections (32 layers × 4096×4096 q/k/v/o) on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        names = ["q_proj", "k_proj", "v_proj", "attn_out"]
        self.blocks = nn.ModuleList(
            nn.ModuleDict({n: nn.Linear(4096, 4096, bias=False, device="meta") for n in names})
            for _ in range(32)
        )


def test_hypernetwork_adds_under_a_hundredth_of_a_percent_of_8b():
    count = nara.trainable_parameters(nara.add_adapters(EightB(), nara.NaRAConfig(r=32)))
    hyper = (64 * 256 + 256) + (256 * 512 + 512) + (512 * 32**2 + 32**2)  # 64→256→512→r²
    lora = 32 * 4 * (32 * 4096 + 4096 * 32)
    assert count.hypernetwork == hyper
    assert count.trainable == lora + hyper
    assert count.total == 32 * 4 * 4096 * 4096 + lora + hyper
    assert hyper / 8e9 < 1e-4  # < 0.01 % of 8B (about 0.0084 %)
