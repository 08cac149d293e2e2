"""Datasets, the pseudo-label format and image reading. Importing registers the built-in datasets."""
from .datasets import register_builtin, resolve_dataset  # noqa: F401

register_builtin()
