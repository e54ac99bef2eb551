"""The README is the user's manual: its Python blocks must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nara

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README should show the Python API"
    monkeypatch.chdir(tmp_path)  # the examples write out/adapter
    namespace: dict = {}
    for block in blocks:  # later blocks reuse names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()


def test_every_top_level_name_resolves() -> None:
    for name in nara.__all__:
        assert getattr(nara, name) is not None, name
