"""Fixtures of the training tests (defined in training_support.py, shared with tests/test_cli.py)."""

from training_support import arith_files, tiny_model_dir  # noqa: F401
