"""Load official Mask2Former / PartDistillation checkpoints into our models the way training does
(``MODEL.WEIGHTS`` through detectron2's ``DetectionCheckpointer``) and describe what did not load.

Accepted files (whatever ``DetectionCheckpointer`` reads): the model-zoo ``.pkl`` layout (a pickled
``{"model": {name: numpy array}, "__author__": ...}``, e.g. ``model_final_e5f453.pkl``), detectron2
``.pth`` checkpoints (``{"model": state_dict, ...}``) and raw state dicts. Our modules reproduce the
official names (``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
``criterion.empty_weight``), so nothing is renamed. Entries whose shape differs from the model's are
skipped by fvcore's loader and keep their initialisation: loading an 80-class COCO checkpoint into
the 1-class ProposalModel skips ``sem_seg_head.predictor.class_embed.{weight,bias}`` and
``criterion.empty_weight``.
"""
import os

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import (
    _IncompatibleKeys,
    get_missing_parameters_message,
    get_unexpected_parameters_message,
)
from torch import nn


def load_weights(model: nn.Module, path: str) -> _IncompatibleKeys:
    """Load ``path`` into ``model`` exactly as ``DetectionCheckpointer(model).load(path)`` (what
    ``MODEL.WEIGHTS`` uses) and return fvcore's incompatible-keys report instead of only logging it.
    Checkpoints are pickles: load trusted files only.

    Returns:
        ``_IncompatibleKeys(missing_keys, unexpected_keys, incorrect_shapes)``; ``incorrect_shapes``
        holds ``(key, checkpoint shape, model shape)`` of the skipped entries, which fvcore also
        lists in ``missing_keys``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message points to weights/README.md).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path} (see weights/README.md)")
    checkpointer = DetectionCheckpointer(model)
    return checkpointer._load_model(checkpointer._load_file(path))


def format_incompatible_keys(incompatible: _IncompatibleKeys) -> str:
    """Multi-line report: a count line, then every shape-mismatched key, and fvcore's
    missing / unexpected messages (keys grouped by module). fvcore also lists shape-mismatched
    keys as missing; here "missing" counts only keys absent from the checkpoint."""
    mismatched = {k for k, _, _ in incompatible.incorrect_shapes}
    missing = [k for k in incompatible.missing_keys if k not in mismatched]
    lines = [f"{len(missing)} missing, {len(incompatible.unexpected_keys)} "
             f"unexpected, {len(incompatible.incorrect_shapes)} shape-mismatched (skipped)"]
    lines += [f"  shape mismatch (skipped): {k}: checkpoint {list(a)} vs model {list(b)}"
              for k, a, b in incompatible.incorrect_shapes]
    if missing:
        lines.append(get_missing_parameters_message(missing))
    if incompatible.unexpected_keys:
        lines.append(get_unexpected_parameters_message(incompatible.unexpected_keys))
    return "\n".join(lines)
