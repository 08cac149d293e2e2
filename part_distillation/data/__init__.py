"""Datasets, the pseudo-label format and image reading. Importing registers the built-in datasets."""
from .datasets import load_report, register_builtin, resolve_dataset  # noqa: F401
from .ground_truth import GTObject, gt_objects  # noqa: F401

register_builtin()
