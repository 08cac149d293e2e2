"""The unsupervised part-segmentation evaluation of PartDistillation (Cho et al., CVPR 2023, Sec. 4;
official ``mIOU_Matcher`` + ``mIOU_Evaluator`` and the evaluation path of
``PartDistillationModel.instance_inference_with_classification``, facebookresearch/PartDistillation
@ a0bb459): C-mIoU, A-mIoU, C/A-mACC and C/A-mIoPred of class-consistent part labels.

Predicted labels (cluster ids 0..K-1 of an object class, from part ranking or the stage-6 model)
carry no name, so they are first mapped to ground-truth parts, per object class:

* **match** pass: per object class, a pixel confusion matrix of predicted label x GT part id is
  summed over all instances of the class; each label goes to the GT part it overlaps most
  (background excluded; many labels may go to one part).
* **evaluate** pass: labels are replaced by their matched part and, per object class, a confusion
  of predicted part x GT part is accumulated; ``IoU_p = TP / (GT_p + Pred_p - TP)``; the class
  mIoU = sum of IoUs / number of parts with GT or predicted pixels (a part predicted but absent
  from the GT counts as 0); C-mIoU = mean over classes; A-mIoU = mean over (class, part) IoUs.
  mACC uses ``TP / GT_p``, mIoPred ``TP / Pred_p`` (over parts with GT resp. predicted pixels).

A separate match split (official ``*_match_val`` / ``*_evaluate_val`` dataset names; officially
both name the same images) is supported by passing the match split's
:meth:`~UnsupervisedPartMetric.matching` to :meth:`~UnsupervisedPartMetric.summarize`.

Two protocols:

* ``"official"`` (what the paper's tables use), faithfully, quirks included:

  - pixels: the whole image; pixels in no GT part of the object (also outside the object) are
    background, so a prediction spilling outside the object is a false positive;
  - the GT-IoU filter (:func:`part_distillation.modeling.postprocess.gt_iou_keep`, IoU > 0.1 with
    some GT part mask of the object) runs where the official model runs it: in the match pass on
    each label's segment, in the evaluate pass on the segments merged AFTER the labels were mapped
    to parts (``gt_filter="after_mapping"``). So a cluster on non-part pixels survives once merged
    into a mapped part, two clusters too small alone can pass as a union, and a cluster that passes
    alone can fail inside a larger union. ``gt_filter="per_cluster"`` (filter each cluster, then
    map) and ``"none"`` reproduce the other two readings of the official code;
  - a label without GT-part pixels in the match split (never seen, or only on background) maps to
    part id 0 (the official matcher holds K rows; an all-zero row's argmax is 0);
  - class means use ``np.mean``: a class whose metric is 0/0 (no predicted pixel for mIoPred, no
    GT pixel for mACC) makes the C-metric NaN; the result names those classes (``nan_classes``);
  - A-mIoU / A-mACC / A-mIoPred keep only part ids < the number of object classes (the official
    code keys the per-part values by the object-class names, so with Pascal's 20 object classes
    and 50 part ids, ids 20-49 never enter the A-metrics; C-metrics use all ids). With more object
    classes than part ids the official evaluator fails (IndexError); here a ValueError says why.

* ``"clean"`` (ours): pixels outside the object mask are ignored; no GT-based filter; a label
  with no GT-part overlap maps to background (its pixels count as unlabelled); classes whose
  metric is 0/0 are skipped in the class mean (and listed in ``nan_classes``); the A-metrics use
  every (class, part) pair.

Ground-truth part ids index a fixed part vocabulary (``part_classes``; :func:`part_vocabulary`
builds one from dataset dicts when the dataset has none). Where GT parts overlap, the later part
labels the pixel; where predicted segments overlap, the later segment does (official order).

Ground-truth geometry (which pixels count) is the evaluation mapper's, not this module's:
CUSTOM_DATASETS.EVAL_GEOMETRY "official" (the default) gives each dataset its official mapper's
frame (:class:`part_distillation.data.proposal_dataset.PartEvalDatasetMapper`): Pascal-Part and
Cityscapes-Part GT masks resized to the network input and back, bilinear > 0 (slightly wider),
at the original size; PartImageNet everything at the network input size. "original" scores
against the masks as annotated, at the original size (the main job's evaluation always does).

Official code at a0bb459 and the later public commits 827c35d / 938fd78 (the released
checkpoints' code), compared file by file:

* ``evaluation/miou_evaluator.py``, ``evaluation/miou_matcher.py`` (a0bb459, 827c35d) and
  ``modeling/transformer_decoder/part_distillation_transformer_decoder.py`` (a0bb459, 827c35d):
  whitespace and removed comments only; the class head (``class_embed``, K x O + 1 outputs,
  float64) and its per-object slice are the same, so checkpoint keys, outputs and the metrics
  above hold for both.
* ``part_distillation_model.py`` (a0bb459, 938fd78): 938fd78 sets the model's ``logger``, without
  which a0bb459's evaluation fails at its first ``register_metadata`` (AttributeError); the
  inference and post-processing are unchanged.
* ``data/dataset_mappers/part_distillation_dataset_mapper.py`` (a0bb459, 938fd78), stage-6
  training only: the object filter is strict (``object_ratio > MIN_OBJECT_AREA_RATIO``, a0bb459
  ``>=``); the per-part ``MIN_AREA_RATIO`` / ``MIN_SCORE`` checks of ``load_annotation`` are
  commented out (every labelled part is loaded; the area share filter after the augmentation
  remains); padded mask pixels (255) are zeroed before the targets are built; the padding mask is
  inverted but never read. This project follows 938fd78 in all three
  (:mod:`part_distillation.data.part_distillation_dataset`).
* Not in either: on Pascal-Part the official class-head index of an object is its VOC class id
  (0-19, ``register_pascal_parts``), also with the 1,000-class ImageNet model, so VOC class c is
  read from ImageNet-1K class c's K columns; the majority-vote mapping is keyed by the same id,
  which absorbs the mismatch. The stage-6 evaluation mapper does the same (``class_id``).
"""
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import logging

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator

from .evaluators import gather_merged, paired_objects, to_numpy
from ..modeling.postprocess import OFFICIAL_MIN_GT_IOU, gt_iou_keep
from .part_metrics import label_map_to_masks

PROTOCOLS = ("official", "clean")
GT_FILTERS = ("after_mapping", "per_cluster", "none")

logger = logging.getLogger(__name__)
METRICS = ("mIoU", "mACC", "mIoPred")


def part_vocabulary(records: Iterable[dict]) -> List[str]:
    """Sorted distinct GT part names of dataset dicts (``objects[*].parts[*].name``)."""
    return sorted({p["name"] for r in records for o in r["objects"] for p in o["parts"]})


def evaluation_vocabulary(part_classes: Optional[Sequence[str]], thing_classes: Optional[Sequence[str]],
                          records: Sequence[dict]) -> Tuple[List[str], int]:
    """``(part vocabulary, number of object classes)`` of the unsupervised evaluation of dataset
    dicts ``records``: the dataset's ``part_classes`` metadata when it names every GT part of the
    records (official ids, e.g. the 50 merged Pascal-Part parts), else the sorted GT part names
    (:func:`part_vocabulary`; e.g. ADE20K-Part, whose ``part_classes`` are the 234 "object's part"
    names of OV-PARTS while its GT parts carry bare names such as "door"); ``thing_classes``
    (when given) else the records' object class names count the object classes."""
    names = part_vocabulary(records)
    vocab = list(part_classes) if part_classes and set(names) <= set(part_classes) else names
    objects = thing_classes or sorted({o["class_name"] for r in records for o in r["objects"]})
    return vocab or [""], len(objects)


class UnsupervisedPartMetric:
    """Accumulator of the unsupervised evaluation (see the module docstring for both protocols).

    Results are in percent. Mergeable across workers (:meth:`merge`). Under ``"official"`` each
    object is kept as pixel counts (per label: area, intersection with each GT part mask,
    confusion row over GT part ids), which is all the official match / evaluate passes need.
    """

    def __init__(self, part_classes: Sequence[str], num_object_classes: int,
                 protocol: str = "official", min_gt_iou: float = OFFICIAL_MIN_GT_IOU,
                 gt_filter: str = "after_mapping", num_labels: int = 0):
        """
        Args:
            part_classes: the GT part vocabulary; a GT part's id is its name's index.
            num_object_classes: number of object classes of the dataset (official A-metrics).
            protocol: ``"official"`` or ``"clean"``.
            min_gt_iou: threshold of the official GT-IoU segment filter (``"official"`` only).
            gt_filter: where ``"official"`` runs that filter: ``"after_mapping"`` (the official
                pipeline: on the segments merged after mapping), ``"per_cluster"`` (on each label's
                segment, then mapped) or ``"none"``.
            num_labels: K, the number of predicted labels (PART_DISTILLATION.NUM_PART_CLASSES);
                the official matching always has K rows. 0 = the largest label seen + 1.

        Raises:
            ValueError: unknown protocol or filter, or an empty vocabulary.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if gt_filter not in GT_FILTERS:
            raise ValueError(f"gt_filter must be one of {GT_FILTERS}, got {gt_filter!r}")
        if not part_classes:
            raise ValueError("part_classes (the GT part vocabulary) is empty")
        self.part_classes = list(part_classes)
        self.part_ids = {n: i for i, n in enumerate(self.part_classes)}
        self.num_object_classes = int(num_object_classes)
        self.protocol = protocol
        self.min_gt_iou = float(min_gt_iou)
        self.gt_filter = gt_filter
        self.num_labels = int(num_labels)
        self.confusion: Dict[str, np.ndarray] = {}  # clean: class -> (K + 1, G + 1), last = bg
        self.objects: List[_ObjectCounts] = []  # official
        self.num_filtered_segments = 0

    @property
    def num_parts(self) -> int:
        return len(self.part_classes)

    def _settings(self) -> tuple:
        return (self.part_classes, self.protocol, self.min_gt_iou, self.gt_filter)

    def add(self, class_name: str, pred_masks: np.ndarray, pred_labels: Sequence[int],
            gt_parts: np.ndarray, gt_part_names: Sequence[str],
            object_mask: Optional[np.ndarray] = None) -> None:
        """Add one object instance.

        Args:
            class_name: its object class (matching and metrics are per class).
            pred_masks: (L, H, W) bool predicted segments (where they overlap the later one labels
                the pixel); pred_labels: L ints >= 0 (cluster ids).
            gt_parts: (P, H, W) bool GT part masks; gt_part_names: P names in ``part_classes``.
            object_mask: (H, W) bool (used by ``"clean"``; None = whole image).

        Raises:
            ValueError: shape mismatches, negative labels, or a part name not in the vocabulary.
        """
        pred = np.asarray(pred_masks, dtype=bool)
        gt = np.asarray(gt_parts, dtype=bool)
        labels = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
        if pred.ndim != 3 or gt.ndim != 3 or pred.shape[1:] != gt.shape[1:] or len(labels) != len(pred):
            raise ValueError(f"pred_masks {pred.shape} / {len(labels)} labels / gt_parts {gt.shape} "
                             "do not match")
        if len(gt_part_names) != len(gt):
            raise ValueError(f"{len(gt_part_names)} part names for {len(gt)} GT parts")
        if labels.size and labels.min() < 0:
            raise ValueError("negative predicted labels")
        unknown = [n for n in gt_part_names if n not in self.part_ids]
        if unknown:
            raise ValueError(f"GT part names not in the vocabulary: {sorted(set(unknown))}")
        h, w = gt.shape[1:]
        g = self.num_parts
        pd = np.full((h, w), -1, np.int64)
        for m, lab in zip(pred, labels):
            pd[m] = lab
        gt_map = np.full((h, w), g, np.int64)
        for m, name in zip(gt, gt_part_names):
            gt_map[m] = self.part_ids[name]
        if self.protocol == "official":
            present = np.unique(pd[pd >= 0])
            slot = np.searchsorted(present, pd)  # rows 0..L-1 = present labels, L = no label
            slot[pd < 0] = len(present)
            seg = slot[None] == np.arange(len(present))[:, None, None]
            flat_seg = seg.reshape(len(present), h * w).astype(np.float64)
            flat_gt = gt.reshape(len(gt), h * w).astype(np.float64)
            conf = np.bincount(slot.reshape(-1) * (g + 1) + gt_map.reshape(-1),
                               minlength=(len(present) + 1) * (g + 1)).reshape(len(present) + 1, g + 1)
            self.objects.append(_ObjectCounts(
                class_name, present, (flat_seg @ flat_gt.T).astype(np.int64),
                flat_seg.sum(1).astype(np.int64), flat_gt.sum(1).astype(np.int64), conf))
            return
        k = int(labels.max()) + 1 if labels.size else 0
        if object_mask is not None:
            obj = np.asarray(object_mask, dtype=bool)
            if obj.shape != (h, w):
                raise ValueError(f"object mask {obj.shape} does not match masks {(h, w)}")
            pd, gt_map = pd[obj], gt_map[obj]
        matrix = self.confusion.get(class_name, np.zeros((1, g + 1), np.int64))
        if k + 1 > matrix.shape[0]:  # grow the label rows, background row stays last
            grown = np.zeros((k + 1, g + 1), np.int64)
            grown[: matrix.shape[0] - 1] = matrix[:-1]
            grown[-1] = matrix[-1]
            matrix = grown
        rows = np.where(pd.reshape(-1) < 0, matrix.shape[0] - 1, pd.reshape(-1))
        matrix += np.bincount(rows * (g + 1) + gt_map.reshape(-1),
                              minlength=matrix.size).reshape(matrix.shape)
        self.confusion[class_name] = matrix

    def add_label_map(self, class_name: str, seg: np.ndarray, gt_parts: np.ndarray,
                      gt_part_names: Sequence[str], object_mask: Optional[np.ndarray] = None) -> None:
        """:meth:`add` for a label map ``seg`` (H, W) int: 0 = no part, ``c + 1`` = label c."""
        masks, ids = label_map_to_masks(seg)
        self.add(class_name, masks, ids - 1, gt_parts, gt_part_names, object_mask)

    def merge(self, other: "UnsupervisedPartMetric") -> None:
        """Add ``other``'s counts. Raises ValueError on different vocabularies or settings."""
        if other._settings() != self._settings():
            raise ValueError("cannot merge metrics with different part vocabularies, protocols or "
                             "filters")
        for name, theirs in other.confusion.items():
            mine = self.confusion.get(name, np.zeros((1, self.num_parts + 1), np.int64))
            k = max(mine.shape[0], theirs.shape[0])
            out = np.zeros((k, self.num_parts + 1), np.int64)
            for m in (mine, theirs):
                out[: m.shape[0] - 1] += m[:-1]
                out[-1] += m[-1]
            self.confusion[name] = out
        self.objects.extend(other.objects)
        self.num_labels = max(self.num_labels, other.num_labels)
        self.num_filtered_segments += other.num_filtered_segments

    def _kept(self, o: "_ObjectCounts", mapped: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Official filter of one object: ``(row of each present label's pixels (the label, its
        mapped part, or -1 = dropped), segments dropped)``; ``mapped`` None = match pass."""
        labels = o.labels if mapped is None else mapped
        if self.gt_filter == "none" or not len(labels):
            return labels, 0
        if self.gt_filter == "per_cluster" or mapped is None:
            keep, _ = gt_iou_keep(torch.from_numpy(o.inter), torch.from_numpy(o.areas),
                                  torch.from_numpy(o.gt_areas), self.min_gt_iou)
            keep = keep.numpy()
            return np.where(keep, labels, -1), int((~keep).sum())
        merged, inverse = np.unique(labels, return_inverse=True)
        inter = np.zeros((len(merged), o.inter.shape[1]), np.int64)
        np.add.at(inter, inverse, o.inter)
        areas = np.bincount(inverse, weights=o.areas, minlength=len(merged)).astype(np.int64)
        keep, _ = gt_iou_keep(torch.from_numpy(inter), torch.from_numpy(areas),
                              torch.from_numpy(o.gt_areas), self.min_gt_iou)
        keep = keep.numpy()
        return np.where(keep[inverse], labels, -1), int((~keep).sum())

    def matching(self) -> Dict[str, np.ndarray]:
        """Match pass: per class, (K,) int64 matched GT part id of each label. ``"official"``:
        the majority vote over the K label rows of the confusion after the match pass's filter; a
        label without GT-part pixels (never seen, or only on background) gets part 0 (argmax of
        a zero row). ``"clean"``: such a label gets ``num_parts`` (= background)."""
        g = self.num_parts
        if self.protocol == "clean":
            out = {}
            for name, matrix in self.confusion.items():
                parts = matrix[:-1, :g]
                mapping = parts.argmax(axis=1) if len(parts) else np.zeros(0, np.int64)
                out[name] = np.where(parts.sum(axis=1) > 0, mapping, g).astype(np.int64)
            return out
        k = max([self.num_labels] + [int(o.labels.max()) + 1 for o in self.objects if len(o.labels)])
        votes: Dict[str, np.ndarray] = {}
        for o in self.objects:
            rows, _ = self._kept(o, None)
            matrix = votes.setdefault(o.class_name, np.zeros((k, g), np.int64))
            kept = rows >= 0
            np.add.at(matrix, rows[kept], o.conf[:-1][kept, :g])
        return {name: matrix.argmax(axis=1).astype(np.int64) for name, matrix in votes.items()}

    def confusion_matrices(self, matching: Optional[Dict[str, np.ndarray]] = None
                           ) -> Dict[str, np.ndarray]:
        """Evaluate pass: per class, the (G + 1, G + 1) int64 pixel confusion of mapped
        prediction (rows) x GT part id (columns), the last row / column = background (official
        ``mIOU_Evaluator`` layout). ``matching``: from :meth:`matching` of a match split; default:
        this split's own.

        Raises:
            KeyError: ``matching`` lacks a class of this split (official: the same).
        """
        matching = self.matching() if matching is None else matching
        g = self.num_parts
        out: Dict[str, np.ndarray] = {}
        if self.protocol == "clean":
            for name, matrix in self.confusion.items():
                mapping = np.asarray(matching[name], np.int64)
                labels = matrix.shape[0] - 1
                if len(mapping) < labels:  # labels the match split never saw: background
                    mapping = np.concatenate([mapping, np.full(labels - len(mapping), g, np.int64)])
                merged = np.zeros((g + 1, g + 1), np.int64)
                np.add.at(merged, np.append(mapping[:labels], g), matrix)
                out[name] = merged
            return out
        self.num_filtered_segments = 0
        for o in self.objects:
            if o.class_name not in matching:
                raise KeyError(f"object class {o.class_name!r} is not in the match split's matching")
            mapping = np.asarray(matching[o.class_name], np.int64)
            # official: the matcher holds K rows, so a label it never saw maps to part 0
            mapped = np.where(o.labels < len(mapping), mapping[np.minimum(o.labels, len(mapping) - 1)], 0) \
                if len(mapping) else np.zeros(len(o.labels), np.int64)
            rows, dropped = self._kept(o, mapped)
            self.num_filtered_segments += dropped
            matrix = out.setdefault(o.class_name, np.zeros((g + 1, g + 1), np.int64))
            np.add.at(matrix, np.where(rows >= 0, rows, g), o.conf[:-1])
            matrix[g] += o.conf[-1]
        return out

    def summarize(self, matching: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, object]:
        """Evaluate pass and metrics.

        Args:
            matching: from :meth:`matching` of a match split; default: this split's own.

        Returns:
            ``{"C-mIoU", "A-mIoU", "C-mACC", "A-mACC", "C-mIoPred", "A-mIoPred"}`` floats (percent).
            ``"official"`` averages the classes with ``np.mean`` as the official evaluator does, so
            one class whose metric is 0/0 (e.g. no predicted pixel for mIoPred) makes the C-metric
            NaN; ``"nan_classes"`` ``{metric: [classes]}`` names them. ``"clean"`` skips such
            classes (documented skip; ``nan_classes`` lists the skipped ones). Also
            ``"per_class"``: ``{class: {part name: IoU}}`` (parts with GT pixels),
            ``"class_mIoU"``: ``{class: mIoU}`` (the values C-mIoU averages; NaN for a 0/0 class),
            ``"protocol"`` and ``"num_filtered_segments"``.

        Raises:
            KeyError: ``matching`` lacks a class of this split.
            ValueError: ``"official"`` with more object classes than parts: the official evaluator
                keys the per-part values by the object-class names and fails (IndexError) there.
        """
        g = self.num_parts
        official = self.protocol == "official"
        if official and self.num_object_classes > g:
            raise ValueError(
                f"protocol 'official': {self.num_object_classes} object classes but {g} part classes; "
                "the official evaluator indexes the per-part metrics by object-class names and fails "
                "(IndexError) when there are more object classes than parts. Use protocol 'clean'.")
        per_class_metric = {m: [] for m in METRICS}
        per_part_metric = {m: [] for m in METRICS}
        nan_classes: Dict[str, List[str]] = {f"C-{m}": [] for m in METRICS}
        per_class: Dict[str, Dict[str, float]] = {}
        class_miou: Dict[str, float] = {}
        a_ids = np.arange(g) < self.num_object_classes if official else np.ones(g, bool)
        for name, merged in sorted(self.confusion_matrices(matching).items()):
            tp = np.diag(merged)[:g].astype(np.float64)
            gt_px = merged[:, :g].sum(axis=0).astype(np.float64)
            pred_px = merged[:g, :].sum(axis=1).astype(np.float64)
            has_gt, has_pred = gt_px > 0, pred_px > 0
            iou = np.where(has_gt, tp / np.maximum(gt_px + pred_px - tp, 1), np.nan)
            acc = np.where(has_gt, tp / np.maximum(gt_px, 1), np.nan)
            iopred = np.where(has_pred, tp / np.maximum(pred_px, 1), np.nan)
            # official: a part predicted but absent from the GT counts 0 in the class mIoU
            values = {"mIoU": (np.nansum(iou), (has_gt | has_pred).sum()),
                      "mACC": (np.nansum(acc), has_gt.sum()),
                      "mIoPred": (np.nansum(iopred), has_pred.sum())}
            class_miou[name] = 100 * values["mIoU"][0] / values["mIoU"][1] if values["mIoU"][1] else float("nan")
            for metric, (total, count) in values.items():
                if count:
                    per_class_metric[metric].append(100 * total / count)
                else:
                    nan_classes[f"C-{metric}"].append(name)
                    if official:
                        per_class_metric[metric].append(float("nan"))
            for metric, vals in (("mIoU", iou), ("mACC", acc), ("mIoPred", iopred)):
                sel = vals[a_ids & ~np.isnan(vals)]
                per_part_metric[metric].extend((100 * sel).tolist())
            per_class[name] = {self.part_classes[i]: float(100 * iou[i]) for i in np.nonzero(has_gt)[0]}

        def mean(values):
            return float(np.mean(values)) if values else float("nan")

        out: Dict[str, object] = {}
        for metric in METRICS:
            out[f"C-{metric}"] = mean(per_class_metric[metric])
            out[f"A-{metric}"] = mean(per_part_metric[metric])
        out.update(per_class=per_class, class_mIoU=class_miou, protocol=self.protocol, nan_classes=nan_classes,
                   num_filtered_segments=self.num_filtered_segments)
        return out


class _ObjectCounts(NamedTuple):
    """Pixel counts of one object for the official passes: ``labels`` (L,) present labels
    (ascending), ``inter`` (L, P) pixels shared with each GT part mask, ``areas`` (L,),
    ``gt_areas`` (P,), ``conf`` (L + 1, G + 1) pixels of each label (last row: no label) per GT
    part id (last column: background)."""
    class_name: str
    labels: np.ndarray
    inter: np.ndarray
    areas: np.ndarray
    gt_areas: np.ndarray
    conf: np.ndarray


class UnsupervisedPartEvaluator(DatasetEvaluator):
    """detectron2 evaluator of the unsupervised protocol, both protocols at once.

    Inputs carry ``objects`` as for :mod:`part_distillation.evaluation.evaluators` (validated
    :class:`~part_distillation.data.ground_truth.GTObject` s); each output holds ``output_key`` (default
    ``"part_seg"``, as the stage-6 PartDistillationModel outputs): one (H, W) int label map per
    object, 0 = no part, ``c + 1`` = label c
    (None for an object the model did not label: counted as no prediction).

    ``evaluate`` returns ``{"unsupervised_official": {...}, "unsupervised_clean": {...}}`` (the
    :meth:`UnsupervisedPartMetric.summarize` dicts without ``per_class`` / ``class_mIoU``, plus
    ``IoU-<class>/<part>``, ``mIoU-<class>`` keys and ``<metric>_nan_classes`` counts), or ``{}`` on non-main workers. Where
    ``"official"`` cannot be computed (more object classes than parts) its metrics are NaN and the
    reason is logged as an error; ``"clean"`` is still reported. With ``matching`` (``{protocol: matching dict}`` from a
    match split, e.g. the ``matchings`` attribute an evaluator of the match split sets in
    :meth:`evaluate`) the labels are mapped by it instead of this split's own matching.
    """

    def __init__(self, part_classes: Sequence[str], num_object_classes: int,
                 output_key: str = "part_seg", distributed: bool = True,
                 matching: Optional[Dict[str, Dict[str, np.ndarray]]] = None, num_labels: int = 0):
        """
        Args:
            part_classes, num_object_classes, num_labels: as :class:`UnsupervisedPartMetric`
                (``num_labels``: PART_DISTILLATION.NUM_PART_CLASSES).
            output_key: the outputs' label-map key.
            distributed: gather the workers' counts.
            matching: see the class docstring.
        """
        self._args = (list(part_classes), int(num_object_classes))
        self._num_labels = int(num_labels)
        self._key = output_key
        self._distributed = distributed
        self._matching = matching or {}
        self.reset()

    def reset(self) -> None:
        self.metrics = {p: UnsupervisedPartMetric(*self._args, protocol=p, num_labels=self._num_labels)
                        for p in PROTOCOLS}

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Raises ValueError when an output's object count differs from the input's."""
        for obj, seg in paired_objects(inputs, outputs, self._key):
            seg = np.zeros(obj.mask.shape, np.int64) if seg is None else to_numpy(seg)
            for metric in self.metrics.values():
                metric.add_label_map(obj.class_name, seg, obj.parts, list(obj.part_names), obj.mask)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        merged = gather_merged([self.metrics[p] for p in PROTOCOLS], self._distributed)
        if merged is None:
            return {}
        results = {}
        self.matchings = {p: m.matching() for p, m in zip(PROTOCOLS, merged)}
        for protocol, metric in zip(PROTOCOLS, merged):
            try:
                summary = metric.summarize(self._matching.get(protocol))
            except ValueError as e:  # official: more object classes than parts (the official code fails)
                logger.error("unsupervised %s: not computed: %s", protocol, e)
                results[f"unsupervised_{protocol}"] = {f"{a}-{m}": float("nan")
                                                       for a in "CA" for m in METRICS}
                continue
            table = summary.pop("per_class")
            class_miou = summary.pop("class_mIoU")
            summary.pop("protocol", None)  # the key says it; detectron2's CSV printer wants numbers
            for key, classes in summary.pop("nan_classes").items():
                summary[f"{key}_nan_classes"] = len(classes)
                if classes:
                    logger.warning("unsupervised %s: %s is 0/0 for %d classes (%s); %s", protocol, key,
                                   len(classes), ", ".join(classes[:10]),
                                   "the mean is NaN (official np.mean)" if protocol == "official"
                                   else "skipped in the mean")
            for cls, parts in table.items():
                summary.update({f"IoU-{cls}/{p}": v for p, v in parts.items()})
            summary.update({f"mIoU-{cls}": v for cls, v in class_miou.items()})
            results[f"unsupervised_{protocol}"] = summary
        return results
