"""Data: records and prompt formats, tokenization for training, and the embedded corpus and tasks.

Submodules are imported where they are used (no eager imports here), so loading one piece of
data code does not pull in torch or transformers.
"""
