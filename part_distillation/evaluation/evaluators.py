"""detectron2 ``DatasetEvaluator`` wrappers of :mod:`part_distillation.evaluation.part_metrics`.

Both evaluators read per-object ground truth from each input dict as
:class:`part_distillation.data.ground_truth.GTObject` s (``mask`` (H, W) bool, ``parts``
(P, H, W) bool, ``part_names``, ``class_name``)::

    input["objects"] = [GTObject, ...]

and one prediction per object, in the same order, from the model output dict. Predictions may be
numpy arrays or torch tensors. Pixels outside each object mask are ignored. Workers' accumulators are
gathered to the main process with ``detectron2.utils.comm.gather``; ``evaluate`` returns the results
there (python floats, JSON-serialisable) and ``{}`` on the other processes.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from PIL import Image

from part_distillation.data.ground_truth import GTObject
from part_distillation.data.images import read_image_rgb
from part_distillation.visualization import save_part_predictions
from part_distillation.evaluation.part_metrics import (
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_KS,
    ProposalARAccumulator,
    SegmentMetricsAccumulator,
)


def to_numpy(array: Any) -> np.ndarray:
    """Convert a torch tensor (any device) or array-like to a numpy array."""
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _to_bool_masks(array: Any, what: str) -> np.ndarray:
    """Convert masks to bool, refusing floating-point input (soft masks must be thresholded first,
    since a cast would turn every non-zero probability into True)."""
    masks = to_numpy(array)
    if np.issubdtype(masks.dtype, np.floating):
        raise ValueError(
            f"{what} must be bool or 0/1 integers, got {masks.dtype}; threshold soft masks first"
        )
    return masks.astype(bool)


def paired_objects(inputs: List[Dict], outputs: List[Dict], key: str):
    """Yield ``(GTObject, prediction)`` pairs from each input's ``"objects"`` and each output's
    ``key`` list; raises ValueError when the two lists differ in length or an object is not a
    validated :class:`GTObject`."""
    for inp, out in zip(inputs, outputs):
        objects, predictions = inp["objects"], out[key]
        if len(objects) != len(predictions):
            raise ValueError(
                f"{len(objects)} objects in the input, {len(predictions)} in output[{key!r}]"
            )
        for obj in objects:
            if not isinstance(obj, GTObject):
                raise ValueError(f"input objects must be GTObject (data.ground_truth), got {type(obj).__name__}")
        yield from zip(objects, predictions)


def gather_merged(accumulators: List[Any], distributed: bool) -> Optional[List[Any]]:
    """Gather the list ``accumulators`` from every worker onto the main process and merge them
    element-wise there (None entries stay None). Returns the merged list on the main process and
    None elsewhere; without ``distributed`` returns ``accumulators`` unchanged."""
    if not distributed:
        return accumulators
    comm.synchronize()
    gathered = comm.gather(accumulators, dst=0)
    if not comm.is_main_process():
        return None
    merged = gathered[0]
    for others in gathered[1:]:
        for mine, theirs in zip(merged, others):
            if mine is not None:
                mine.merge(theirs)
    return merged


class AccumulatorEvaluator(DatasetEvaluator):
    """A ``DatasetEvaluator`` over one accumulator of :mod:`~part_distillation.evaluation.part_metrics`
    (``add`` / ``merge`` / ``summarize``), gathered across workers (:func:`gather_merged`).

    Subclasses set :attr:`ACCUMULATOR` (built as ``ACCUMULATOR(ks, iou_thresholds)``) and
    :attr:`RESULT_KEY`, and implement ``process``, adding to ``self._accumulator``.

    Args:
        distributed: gather results from all workers.
        ks: proposal budgets K of AR@K.
        iou_thresholds: IoU thresholds averaged by AR.
    """

    ACCUMULATOR: type = None
    RESULT_KEY = ""

    def __init__(
        self,
        distributed: bool = True,
        ks: Sequence[int] = DEFAULT_KS,
        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    ):
        self._distributed = distributed
        self._ks = ks
        self._iou_thresholds = iou_thresholds
        self.reset()

    def reset(self) -> None:
        """Start a new evaluation round."""
        self._accumulator = self.ACCUMULATOR(self._ks, self._iou_thresholds)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Return ``{RESULT_KEY: accumulator summary}`` on the main process, ``{}`` elsewhere."""
        merged = gather_merged([self._accumulator], self._distributed)
        if merged is None:
            return {}
        return {self.RESULT_KEY: merged[0].summarize()}


class PartProposalEvaluator(AccumulatorEvaluator):
    """Class-agnostic part-proposal AR@K over all GT parts (COCO-style AR as in PartDistillation's
    evaluation protocol).

    Each output dict holds ``"proposals"``: one dict per input object with ``"pred_masks"``
    (N, H, W) bool and ``"scores"`` (N,) float. ``evaluate`` returns
    ``{"part_proposals": {"AR@1": ..., "AR@10": ..., ..., "num_gt_parts", "num_objects",
    "num_objects_without_parts"}}`` (AR in percent). Arguments: :class:`AccumulatorEvaluator`.
    """

    ACCUMULATOR = ProposalARAccumulator
    RESULT_KEY = "part_proposals"

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Accumulate recall counts of every object of every image. Raises ValueError on
        mismatched object counts, soft (float) masks or shape mismatches."""
        for obj, proposals in paired_objects(inputs, outputs, "proposals"):
            self._accumulator.add(
                _to_bool_masks(proposals["pred_masks"], "pred_masks"),
                to_numpy(proposals["scores"]),
                obj.parts,
                obj.mask,
            )


class PartSegmentEvaluator(AccumulatorEvaluator):
    """Part label-map evaluator: per-object oracle best-match / Hungarian mIoU and AR@K of
    segments (score = area fraction in the object), PartDistillation evaluation protocol.
    Class-consistent labels are evaluated by
    :class:`part_distillation.evaluation.unsupervised.UnsupervisedPartEvaluator`.

    Each output dict holds ``"part_seg"``: one (H, W) int label map per input object (0 = not a
    part). ``evaluate`` returns ``{"part_segments": {"best_match_mIoU", "hungarian_mIoU", "AR@k"...,
    counts}}`` in percent. Arguments: :class:`AccumulatorEvaluator`.
    """

    ACCUMULATOR = SegmentMetricsAccumulator
    RESULT_KEY = "part_segments"

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Accumulate every object of every image. Raises ValueError on mismatched object counts,
        bad label maps or shape mismatches."""
        for obj, seg in paired_objects(inputs, outputs, "part_seg"):
            self._accumulator.add(to_numpy(seg), obj.parts, obj.mask)


class PredictionVisualizer(DatasetEvaluator):
    """Writes part overlays (:func:`part_distillation.visualization.save_part_predictions`) of
    the first ``num_images`` images of an evaluation to ``<vis_dir>/<image_id>.jpg`` (the
    ``VIS_OUTPUT_DIR`` of ``tools/train_net.py`` runs); main process only; returns no metric.

    Inputs need ``file_name`` and ``image_id`` (object names from ``objects[i].class_name``,
    :class:`~part_distillation.data.ground_truth.GTObject` or dict, when present); outputs
    ``part_seg`` (one (H, W) label map per object).
    """

    def __init__(self, vis_dir: str, num_images: int = 8):
        self.vis_dir, self.num_images = vis_dir, num_images
        self.reset()

    def reset(self) -> None:
        self._written = 0

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        if not comm.is_main_process():
            return
        for inp, out in zip(inputs, outputs):
            if self._written >= self.num_images or "part_seg" not in out:
                return
            segs = [to_numpy(s) for s in out["part_seg"]]
            if not segs:
                continue
            image = read_image_rgb(inp["file_name"])
            if image.shape[:2] != segs[0].shape:
                image = np.asarray(Image.fromarray(image).resize(segs[0].shape[::-1], Image.BILINEAR))
            names = [(o.get("class_name") if isinstance(o, dict) else getattr(o, "class_name", ""))
                     or f"object {i}" for i, o in enumerate(inp.get("objects", []))]
            names = (names + [f"object {i}" for i in range(len(names), len(segs))])[: len(segs)]
            safe = str(inp["image_id"]).replace(os.sep, "_")
            save_part_predictions(os.path.join(self.vis_dir, f"{safe}.jpg"), image, segs, names)
            self._written += 1

    def evaluate(self) -> Dict:
        return {}
