"""Supervised part-segmentation mIoU (PartDistillation, Cho et al., CVPR 2023, Sec. 4, supervised
and few-shot rows; official ``Supervised_mIOU_Evaluator``): one global confusion matrix over the
K part classes of a taxonomy, accumulated over every annotated object with its ground-truth object
mask given.

Per object, only pixels inside the object mask that carry a ground-truth part are counted
(pixels of the object that no GT part covers are ignored and counted, as an ignore label in
semantic segmentation; objects without any GT part are skipped and counted). Where GT parts
overlap, the later part labels the pixel. A predicted value outside [0, K) on a counted pixel is a
"no part" prediction: a miss for the GT class.

Metrics (percent): ``mIoU`` = mean IoU over the classes present in the GT or the predictions
(a class predicted but absent from the GT counts as 0, as officially), ``fwIoU`` (GT-frequency
weighted), ``mACC`` (mean per-class recall over GT classes), ``pACC`` (pixel accuracy), and per
class ``IoU-<name>`` / ``ACC-<name>`` for classes present.
"""
import logging
from typing import Any, Dict, List, Sequence

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from tabulate import tabulate

from part_distillation.evaluation.evaluators import gather_merged, paired_objects, to_numpy

logger = logging.getLogger(__name__)


class PartConfusion:
    """Confusion counts ``matrix`` (K + 1, K) int64: row = predicted class (row K = "no part"),
    column = GT class, over counted pixels (see module docstring)."""

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes + 1, num_classes), np.int64)
        self.ignored_pixels = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one object.

        Args:
            pred: (H, W) int predicted part-class ids (values outside [0, K) = no part).
            gt: (H, W) int GT part-class ids, -1 = not counted.

        Raises:
            ValueError: shape mismatch, or a GT id >= K.
        """
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        counted = gt >= 0
        g = gt[counted].astype(np.int64)
        if g.size and int(g.max()) >= self.num_classes:
            raise ValueError(f"GT part-class id {int(g.max())} >= {self.num_classes} classes")
        p = pred[counted].astype(np.int64)
        p = np.where((p >= 0) & (p < self.num_classes), p, self.num_classes)
        self.matrix += np.bincount(p * self.num_classes + g, minlength=self.matrix.size
                                   ).reshape(self.matrix.shape)

    def merge(self, other: "PartConfusion") -> None:
        """Add another worker's counts."""
        self.matrix += other.matrix
        self.ignored_pixels += other.ignored_pixels

    def per_class(self) -> Dict[str, np.ndarray]:
        """``tp``, ``gt``, ``pred`` pixel counts (K,) and ``iou`` / ``acc`` (K,) float (NaN where
        undefined: union 0 / no GT pixel)."""
        k = self.num_classes
        tp = np.diag(self.matrix[:k]).astype(float)
        gt = self.matrix.sum(0).astype(float)
        pred = self.matrix[:k].sum(1).astype(float)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        return {"tp": tp, "gt": gt, "pred": pred, "iou": iou, "acc": acc}


class SupervisedPartEvaluator(DatasetEvaluator):
    """detectron2 evaluator of per-class part segmentation inside given object masks.

    Inputs: ``input["objects"]`` as :class:`part_distillation.data.proposal_dataset.PartEvalDatasetMapper`
    produces (``object_mask`` (H, W) bool, ``gt_parts`` (P, H, W) bool, ``gt_part_names``);
    outputs: ``output["part_sem_seg"]``, one (H, W) int map of part-class ids per object
    (:class:`part_distillation.modeling.meta_arch.supervised_model.SupervisedModel`).

    ``evaluate`` returns ``{"supervised_part_seg": {"mIoU", "fwIoU", "mACC", "pACC",
    "IoU-<name>", "ACC-<name>", "num_objects", "num_objects_without_parts", "ignored_pixels",
    "unknown_part_pixels"}}`` on the main process (``{}`` elsewhere) and logs the per-class table.
    """

    def __init__(self, class_names: Sequence[str], distributed: bool = True):
        """Args: class_names: the K part classes (index = id); distributed: gather all workers."""
        self._class_names = list(class_names)
        self._ids = {n: i for i, n in enumerate(self._class_names)}
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        """Start a new evaluation round."""
        self._confusion = PartConfusion(len(self._class_names))
        self._counts = _Counts()

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Accumulate every object of every image. Raises ValueError on mismatched object counts
        or shapes, or soft (float) GT masks."""
        for obj, pred in paired_objects(inputs, outputs, "part_sem_seg"):
            gt_parts, object_mask = obj.parts, obj.mask
            if gt_parts.shape[0] == 0:
                self._counts.objects_without_parts += 1
                continue
            gt = np.full(object_mask.shape, -1, np.int64)
            unknown_names = set()
            for mask, name, part_id in zip(gt_parts, obj.part_names, obj.part_ids):
                # by name, or by part_id where the taxonomy names parts per object class (ADE-234)
                cid = self._ids.get(name, part_id if 0 <= part_id < len(self._ids) else -2)
                gt[mask] = cid
                if cid == -2:
                    unknown_names.add(name)
            gt[~object_mask] = -1
            unknown = int((gt == -2).sum())
            if unknown:
                self._counts.unknown_part_pixels += unknown
                logger.warning("part names %s are not in the %d-class taxonomy: %d pixels ignored",
                               sorted(unknown_names), len(self._ids), unknown)
            self._confusion.ignored_pixels += int((object_mask & (gt == -1)).sum())
            self._confusion.add(to_numpy(pred), gt)
            self._counts.objects += 1

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Return ``{"supervised_part_seg": {...}}`` on the main process, ``{}`` elsewhere."""
        merged = gather_merged([self._confusion, self._counts], self._distributed)
        if merged is None:
            return {}
        confusion, counts = merged
        stats = confusion.per_class()
        present = ~np.isnan(stats["iou"])
        with_gt = stats["gt"] > 0
        total = stats["gt"].sum()
        results: Dict[str, Any] = {
            "mIoU": 100 * float(np.mean(stats["iou"][present])) if present.any() else float("nan"),
            "fwIoU": 100 * float(np.sum(stats["iou"][with_gt] * stats["gt"][with_gt]) / total)
            if total else float("nan"),
            "mACC": 100 * float(np.mean(stats["acc"][with_gt])) if with_gt.any() else float("nan"),
            "pACC": 100 * float(stats["tp"].sum() / total) if total else float("nan"),
            "num_classes_evaluated": int(present.sum()),
            "num_objects": counts.objects,
            "num_objects_without_parts": counts.objects_without_parts,
            "ignored_pixels": confusion.ignored_pixels,
            "unknown_part_pixels": counts.unknown_part_pixels,
        }
        rows = []
        for i, name in enumerate(self._class_names):
            if present[i]:
                results[f"IoU-{name}"] = 100 * float(stats["iou"][i])
                if with_gt[i]:
                    results[f"ACC-{name}"] = 100 * float(stats["acc"][i])
                rows.append((name, 100 * stats["iou"][i], 100 * stats["acc"][i], int(stats["gt"][i]),
                             int(stats["pred"][i])))
        logger.info("supervised part segmentation (%d classes, %d objects): mIoU %.2f\n%s",
                    len(self._class_names), counts.objects, results["mIoU"],
                    tabulate(rows, headers=["part class", "IoU", "ACC", "GT px", "pred px"],
                             floatfmt=".1f"))
        return {"supervised_part_seg": results}


class _Counts:
    """Object / pixel counters gathered with the confusion matrix."""

    def __init__(self):
        self.objects = 0
        self.objects_without_parts = 0
        self.unknown_part_pixels = 0

    def merge(self, other: "_Counts") -> None:
        self.objects += other.objects
        self.objects_without_parts += other.objects_without_parts
        self.unknown_part_pixels += other.unknown_part_pixels
