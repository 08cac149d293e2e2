"""Load official Mask2Former / PartDistillation checkpoints into our models and report what
matched.

Accepted files:

* ``.pkl``: the detectron2 / Mask2Former model-zoo layout, a pickled dict with ``"model"``
  (parameter name -> numpy array) and ``"__author__"`` (e.g. ``model_final_e5f453.pkl``);
* ``.pth`` / ``.pt``: a dict with ``"model"`` (detectron2 checkpoints) or a raw state dict.

Keys are the detectron2 module names (``backbone.*``, ``sem_seg_head.pixel_decoder.*``,
``sem_seg_head.predictor.*``), which our modules reproduce, so no renaming is done. Checkpoint
entries whose shape differs from the model's (e.g. ``sem_seg_head.predictor.class_embed.*`` of an
80- or 133-class COCO model vs. the 1-class ProposalModel) are reported and skipped; those
parameters keep their initialisation.
"""
import os
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn


def load_checkpoint_state(path: str) -> Dict[str, torch.Tensor]:
    """Read the state dict of a checkpoint file (see module docstring). The files are pickles:
    load trusted files only.

    Returns:
        name -> CPU tensor (numpy arrays converted with ``torch.from_numpy``, dtype kept).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no ``name -> array/tensor`` mapping.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path} (see weights/README.md)")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    else:
        data = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a state dict or a dict with 'model', got {type(data).__name__}")
    state = {}
    for name, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value.copy())  # C order, shape kept (0-d too)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not an array")
        state[name] = value
    return state


@dataclass
class LoadReport:
    """Outcome of :func:`load_state_into_model`.

    ``loaded``: keys copied into the model; ``missing``: model keys absent from the checkpoint;
    ``unexpected``: checkpoint keys the model does not have; ``shape_mismatch``: ``(key,
    checkpoint shape, model shape)`` of skipped entries.
    """

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def format(self) -> str:
        """Multi-line human-readable summary listing every missing / unexpected / mismatched key."""
        lines = [f"loaded {len(self.loaded)} tensors; {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} shape-mismatched"]
        lines += [f"  shape mismatch (skipped): {k}: checkpoint {list(a)} vs model {list(b)}"
                  for k, a, b in self.shape_mismatch]
        lines += [f"  missing in checkpoint: {k}" for k in self.missing]
        lines += [f"  unexpected in checkpoint: {k}" for k in self.unexpected]
        return "\n".join(lines)


def load_state_into_model(model: nn.Module, state: Dict[str, torch.Tensor]) -> LoadReport:
    """Copy every checkpoint entry whose name and shape match into ``model`` (parameters and
    buffers, cast to the model's dtype / device); report the rest (nothing raises on mismatch)."""
    own = model.state_dict()
    report = LoadReport()
    matched = {}
    for name, value in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif tuple(value.shape) != tuple(own[name].shape):
            report.shape_mismatch.append((name, tuple(value.shape), tuple(own[name].shape)))
        else:
            matched[name] = value.to(dtype=own[name].dtype)
    report.missing = [k for k in own if k not in state]
    report.loaded = sorted(matched)
    model.load_state_dict(matched, strict=False)
    return report
