"""One entry point for every base model: the embedded tiny model, LLaDA and Dream folders, others.

``load_model`` returns the model, its tokenizer and the id of its mask token, which is all the
diffusion loss and the samplers need. The native families (``nara.models.families``: LLaDA's
``model_type: "llada"``, Dream's ``"Dream"``) load into nara's own classes without
``trust_remote_code``; anything else goes through the transformers Auto classes, running the
checkpoint's own code only when the caller allows it, and only when its logit convention is known.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from nara.models.families import LOGIT_CONVENTIONS, family_of, logit_convention

logger = logging.getLogger(__name__)

TINY_DIR = Path(__file__).resolve().parent / "tiny"

# Mask token ids of known dLLM families whose config does not state one, by config model_type.
KNOWN_MASK_TOKEN_IDS = {"llada": 126336, "dream": 151666}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns. ``tokenizer`` is None when the folder ships none."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    mask_token_id: int


def load_model(
    name_or_path: str | Path = "tiny",
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
    mask_token_id: int | None = None,
    logit_convention: str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> LoadedModel:
    """Load a diffusion LM with its tokenizer and mask token id, in eval mode.

    Args:
        name_or_path: ``"tiny"`` (the model nara ships, built by ``scripts/build_tiny.py``), a
            local folder, or a Hugging Face hub name. LLaDA and Dream checkpoints load natively.
        dtype: e.g. ``torch.bfloat16`` or ``"bfloat16"``; default: the checkpoint's dtype.
        device: where to put the weights; they are loaded there directly (no second copy).
        trust_remote_code: allow a checkpoint of no native family to run its own model code.
        mask_token_id: overrides the id found in the config, the tokenizer or the known families.
        logit_convention: for a model of no native family that is not a transformers masked LM:
            ``"aligned"`` (logit i predicts token i) or ``"shifted"`` (logit i predicts token
            i + 1); recorded as ``model.config.logit_convention``.
        load_in_4bit: a LLaDA or Dream base with its block linears in NF4 (double quantisation,
            bfloat16 compute; embeddings, head and norms unquantised), for QLoRA
            (:mod:`nara.models.quantize`; needs bitsandbytes; on the GPU if one is visible and
            no device is given, else on the CPU).
        load_in_8bit: the same in LLM.int8().

    Raises:
        FileNotFoundError: the tiny model is not built yet, the local path does not exist, or a
            hub name cannot be found (offline, misspelt or private).
        ValueError: the checkpoint's weights do not match its config (missing keys, wrong
            shapes), no mask token id can be found, or the logit convention of a model of no
            native family is unknown (the message lists the families and the fix), or a
            quantised load of a model other than LLaDA and Dream.
        ImportError: a quantised load without a bitsandbytes that runs here.
    """
    if logit_convention is not None and logit_convention not in LOGIT_CONVENTIONS:
        raise ValueError(
            f"logit_convention must be one of {LOGIT_CONVENTIONS}, got {logit_convention!r}"
        )
    path = _resolve(name_or_path)
    raw = _config_dict(path)
    placement: dict[str, Any] = {}
    if dtype is not None:
        placement["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if device is not None:
        placement["device_map"] = str(device)
    family = family_of(raw)
    if load_in_4bit or load_in_8bit:
        placement.update(_quantized_placement(family, raw, load_in_4bit, load_in_8bit, device))
    with _quiet_if_small(path):
        if family is not None:
            model = _load_checked(family.model_class, path, **placement)
        else:
            model = _load_auto(path, trust_remote_code, logit_convention, **placement)
    tokenizer = _load_tokenizer(path, trust_remote_code, family and family.tokenizer_class)
    if path == str(TINY_DIR) and tokenizer is not None and not tokenizer.chat_template:
        from nara.data.templates import EMBEDDED_CHAT_TEMPLATE

        tokenizer.chat_template = EMBEDDED_CHAT_TEMPLATE  # its Question/Answer prompt format
    if mask_token_id is None:
        mask_token_id = _find_mask_token_id(model.config, tokenizer, path)
    return LoadedModel(model.eval(), tokenizer, mask_token_id)


def _quantized_placement(
    family: Any, raw: dict[str, Any], load_in_4bit: bool, load_in_8bit: bool, device: Any
) -> dict[str, Any]:
    """from_pretrained arguments of a 4- or 8-bit load (bfloat16 elsewhere)."""
    from nara.models.families import FAMILIES
    from nara.models.quantize import quantization_config, quantized_device

    if family not in (FAMILIES["llada"], FAMILIES["dream"]):
        raise ValueError(
            f"load_in_4bit/load_in_8bit are supported for LLaDA and Dream, not model_type "
            f"{raw.get('model_type')!r}; load this model in bfloat16 instead"
        )
    return {
        "quantization_config": quantization_config(load_in_4bit, load_in_8bit),
        "dtype": torch.bfloat16,
        "device_map": str(device) if device is not None else quantized_device(),
    }


SMALL_MODEL_BYTES = 1 << 30  # local weights below this load in a blink: no progress bar


@contextlib.contextmanager
def _quiet_if_small(path: str) -> Iterator[None]:
    """Hide transformers' "Loading weights" bar for a local model under 1 GiB of weights (the
    embedded model's 8 MB load faster than the bar draws)."""
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else None
    if size is None or size >= SMALL_MODEL_BYTES or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _resolve(name_or_path: str | Path) -> str:
    """A local folder as a string, or a hub name; raises for paths that do not exist."""
    if str(name_or_path) == "tiny":
        if (
            not (TINY_DIR / "config.json").is_file()
            or not (TINY_DIR / "model.safetensors").is_file()
        ):
            raise FileNotFoundError(
                f"the embedded tiny model has not been built yet (no weights in {TINY_DIR}); "
                "build it with `python scripts/build_tiny.py` from the repository root"
            )
        return str(TINY_DIR)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json, so it is not a model folder; point to the folder "
                "that holds config.json and the weights"
            )
        return str(path)
    text = str(name_or_path)
    looks_local = path.exists() or text.startswith(("/", ".", "~")) or text.count("/") > 1
    if looks_local:
        raise FileNotFoundError(
            f"model folder {text!r} does not exist (or is a file); check the path, or pass "
            '"tiny" for the embedded model or a hub name such as "GSAI-ML/LLaDA-8B-Instruct"'
        )
    return text  # a hub name; transformers reports if it cannot be fetched


def _config_dict(path: str) -> dict[str, Any]:
    """The raw config of a local folder or hub name; a hub name that cannot be found (offline,
    misspelt, private) is a FileNotFoundError that says so instead of the hub library's text."""
    try:
        return PretrainedConfig.get_config_dict(path)[0]
    except OSError as err:
        if Path(path).is_dir():
            raise
        raise FileNotFoundError(
            f"could not find model {path!r} locally or on the Hugging Face hub (offline?): pass a "
            "local folder, or set HF_HUB_OFFLINE=0 and check the name "
            f"({(str(err) or type(err).__name__).splitlines()[0]})"
        ) from err


def _load_checked(model_class: type[PreTrainedModel], path: str, **kwargs: Any) -> PreTrainedModel:
    """from_pretrained, but a checkpoint that does not fill the model is an error, not a warning."""
    model, info = model_class.from_pretrained(
        path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    problems = []
    if info["missing_keys"]:
        problems.append(f"missing weights {sorted(info['missing_keys'])[:5]}")
    if info["mismatched_keys"]:
        shown = [
            f"{key}: checkpoint {tuple(ckpt)} vs config {tuple(expected)}"
            for key, ckpt, expected in sorted(info["mismatched_keys"])[:5]
        ]
        problems.append(f"wrong shapes {shown}")
    if problems:
        raise ValueError(
            f"the checkpoint in {path} does not match its config.json: {'; '.join(problems)}. "
            "Check that config.json belongs to these weights and that the download is complete"
        )
    if info["unexpected_keys"]:
        logger.warning(
            "ignored weights not used by %s: %s",
            model_class.__name__,
            sorted(info["unexpected_keys"])[:5],
        )
    return model


def _load_auto(
    path: str, trust_remote_code: bool, convention: str | None, **kwargs: Any
) -> PreTrainedModel:
    """A model of no native family through the Auto classes: masked LM, then base model, then
    causal LM; refused before any weight is read when its logit convention is unknown.

    Checkpoints with remote code name their classes in ``auto_map``; for library models, the
    first Auto class that knows the config wins.
    """
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if convention is not None:
        config.logit_convention = convention
    logit_convention(config)  # raises, naming the families and the fix, when unknown
    auto_map = getattr(config, "auto_map", None) or {}
    for auto_class in (AutoModelForMaskedLM, AutoModel, AutoModelForCausalLM):
        known = type(config) in auto_class._model_mapping or auto_class.__name__ in auto_map
        if known:
            return _load_checked(
                auto_class, path, config=config, trust_remote_code=trust_remote_code, **kwargs
            )
    raise ValueError(
        f"{path} holds a {config.model_type!r} model that no masked-LM, base or causal-LM class "
        "of transformers loads; pass trust_remote_code=True if the checkpoint ships its own code"
    )


def _load_tokenizer(
    path: str, trust_remote_code: bool, native: type[PreTrainedTokenizerBase] | None = None
) -> PreTrainedTokenizerBase | None:
    """The folder's tokenizer; ``native``, a native family's own class, reads it without the
    remote code its tokenizer_config.json may name (Dream's ``DreamTokenizer``)."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        logger.warning("%s has no tokenizer files; LoadedModel.tokenizer is None", path)
        return None
    if native is not None:
        return native.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _find_mask_token_id(
    config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None, path: str
) -> int:
    """The config's mask id, else the tokenizer's, else the known id of the model family."""
    candidates = (
        getattr(config, "mask_token_id", None),
        getattr(tokenizer, "mask_token_id", None),
        KNOWN_MASK_TOKEN_IDS.get(str(getattr(config, "model_type", "")).lower()),
    )
    for candidate in candidates:
        if candidate is not None:
            return int(candidate)
    raise ValueError(
        f"cannot tell the mask token id of {path}: neither its config nor its tokenizer defines "
        "one; pass load_model(..., mask_token_id=ID)"
    )
