"""Helpers shared by the model-family tests (a uniquely named module, importable from any test
in this folder): an adapter config of any method on a family's linears, and the overrides of a
two-update ``nara train`` run on a tiny saved model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nara.training.adapters import adapter_methods


def method_config(method: str, targets: list[str], feedforward: str):
    """``method``'s adapter config on ``targets`` (for the methods that take them), rank 4 where
    the method has one; (IA)³ rescales ``feedforward``, the family's feed-forward output."""
    cls = adapter_methods()[method]
    fields = {f.name for f in dataclasses.fields(cls)}
    options = {"target_modules": targets} if "target_modules" in fields else {}
    if "r" in fields:
        options["r"] = 4
    if method == "ia3":
        options["feedforward_modules"] = [feedforward]
    return cls(**options)


def two_step_overrides(
    model_dir: Path, arith_files: tuple[Path, Path], output_dir: Path, *extra: str
) -> list[str]:
    """``nara train`` overrides for two updates of batch 4 at rank 4 on ``model_dir`` with the
    ``arith_files`` (train, validation) fixture, validating and saving at update 2 into
    ``output_dir``; ``extra`` overrides come last."""
    train, val = arith_files
    return [
        f"model.name={model_dir}",
        f"data.source={train}",
        f"data.val_source={val}",
        "data.max_length=16",
        "adapter.r=4",
        "training.batch_size=4",
        "training.global_batch_size=4",
        "training.max_steps=2",
        "training.eval_every=2",
        "training.save_every=2",
        f"output_dir={output_dir}",
        *extra,
    ]
