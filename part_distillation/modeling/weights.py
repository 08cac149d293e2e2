"""Load official Mask2Former / PartDistillation checkpoints into our models the way training does
(``MODEL.WEIGHTS`` through detectron2's ``DetectionCheckpointer``) and describe what did not load.

Accepted files (whatever ``DetectionCheckpointer`` reads): the model-zoo ``.pkl`` layout (a pickled
``{"model": {name: numpy array}, "__author__": ...}``, e.g. ``model_final_e5f453.pkl``), detectron2
``.pth`` checkpoints (``{"model": state_dict, ...}``) and raw state dicts. Our modules reproduce the
official names (``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
``criterion.empty_weight``); the one rename is the official head's
(``sem_seg_head.pixel_decoder.pixel_decoder.*`` -> ``sem_seg_head.pixel_decoder.*``, in
:class:`~part_distillation.modeling.meta_arch.mask_former_head.MaskFormerHead`). Entries whose shape differs from the model's are
skipped by fvcore's loader and keep their initialisation: loading an 80-class COCO checkpoint into
the 1-class ProposalModel skips ``sem_seg_head.predictor.class_embed.{weight,bias}`` and
``criterion.empty_weight``.
"""
import fnmatch
import os
from typing import Sequence

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import (
    _IncompatibleKeys,
    get_missing_parameters_message,
    get_unexpected_parameters_message,
)
from torch import nn

# Parameters a checkpoint may lack without changing predictions: the loss's class weights
# (``criterion.empty_weight``, a buffer of the training criterion, unused at inference).
DEFAULT_ALLOWED_MISSING = ("criterion.*",)


class IncompleteWeightsError(ValueError):
    """Parameters of the model did not load from the given checkpoint (absent or of another
    shape) and are not allowed to stay initialised; the message names the file and the keys."""


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


def not_loaded_keys(incompatible: _IncompatibleKeys, allowed: Sequence[str] = DEFAULT_ALLOWED_MISSING):
    """Model keys that kept their initialisation: fvcore's ``missing_keys`` (which include the
    shape-mismatched ones) that match none of the ``fnmatch`` patterns of ``allowed``, sorted."""
    return sorted(k for k in incompatible.missing_keys
                  if not any(fnmatch.fnmatchcase(k, p) for p in allowed))


def check_complete_weights(incompatible: _IncompatibleKeys, path: str,
                           allowed: Sequence[str] = DEFAULT_ALLOWED_MISSING,
                           key: str = "MODEL.WEIGHTS") -> None:
    """Refuse a checkpoint that leaves model parameters at their random initialisation, e.g. the
    checkpoint of another model given to ``--eval-only`` or to stage 5 (fvcore only logs
    "Some model parameters or buffers are not found in the checkpoint").

    Args:
        incompatible: the report of :func:`load_weights` (or of a checkpointer's ``_load_model``).
        path: the checkpoint file (named in the message); key: the config key it came from.
        allowed: ``fnmatch`` patterns of model keys that may stay initialised (config
            MODEL.WEIGHTS_ALLOWED_MISSING, e.g. ``"sem_seg_head.predictor.class_embed.*"`` for a
            freshly initialised class head).

    Raises:
        IncompleteWeightsError: some missing or shape-mismatched key matches no pattern.
    """
    bad = not_loaded_keys(incompatible, allowed)
    if not bad:
        return
    shapes = {k: (list(a), list(b)) for k, a, b in incompatible.incorrect_shapes}
    shown = [f"{k} (checkpoint {shapes[k][0]} vs model {shapes[k][1]})" if k in shapes else k
             for k in bad[:8]]
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    raise IncompleteWeightsError(
        f"{key} {path}: {len(bad)} parameter(s) of the model are not in this checkpoint or have "
        f"another shape, so they would keep their random initialisation: {', '.join(shown)}{more}. "
        f"Pass a checkpoint of this model (MODEL.META_ARCHITECTURE and head sizes as when it was "
        f"trained), or list the keys that may stay initialised in MODEL.WEIGHTS_ALLOWED_MISSING "
        f"(fnmatch patterns; now {list(allowed)}).")
