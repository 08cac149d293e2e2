"""The unsupervised part-segmentation evaluation of PartDistillation (Cho et al., CVPR 2023, Sec. 4;
official ``mIOU_Matcher`` + ``mIOU_Evaluator`` of facebookresearch/PartDistillation @ a0bb459):
C-mIoU, A-mIoU, C/A-mACC and C/A-mIoPred of class-consistent part labels.

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

Both passes need the same per-pixel (label, GT part) counts, so :class:`UnsupervisedPartMetric`
accumulates one confusion per class (rows: labels 0..K-1 + background, columns: part ids 0..G-1 +
background) and derives the evaluate-pass confusion by adding rows of the same matched part. A
separate match split (official ``*_match_val`` / ``*_evaluate_val`` dataset names) is supported by
passing the match split's :meth:`~UnsupervisedPartMetric.matching` to :meth:`summarize`.

Two protocols:

* ``"official"`` (what the paper's tables use), faithfully, quirks included:

  - pixels: the whole image; pixels in no GT part of the object (also outside the object) are
    background, so a prediction spilling outside the object is a false positive;
  - predicted segments are kept only when their IoU with some GT part of the object is > 0.1
    (``min_gt_iou``; official inference's filter, which looks at the GT);
  - a label that never overlaps a GT part (all-zero row) maps to part id 0 (argmax of zeros),
    i.e. to the first part of the vocabulary, usually a part of another class;
  - A-mIoU / A-mACC / A-mIoPred keep only part ids < the number of object classes (the official
    code keys the per-part values by the object-class names, so with Pascal's 20 object classes
    and 50 part ids, ids 20-49 never enter the A-metrics; C-metrics use all ids).

* ``"clean"`` (ours): pixels outside the object mask are ignored; no GT-based pre-filter; a label
  with no GT-part overlap maps to background (its pixels count as unlabelled); the A-metrics use
  every (class, part) pair.

Ground-truth part ids index a fixed part vocabulary (``part_classes``; :func:`part_vocabulary`
builds one from dataset dicts when the dataset has none). Where GT parts overlap, the later part
labels the pixel; where predicted segments overlap, the later segment does (official order).
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.evaluation import DatasetEvaluator

from .evaluators import gather_merged, paired_objects, to_numpy
from .part_metrics import label_map_to_masks, mask_iou

PROTOCOLS = ("official", "clean")
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
    """Accumulator of the official unsupervised evaluation (see the module docstring).

    Results are in percent. Mergeable across workers (:meth:`merge`).
    """

    def __init__(self, part_classes: Sequence[str], num_object_classes: int,
                 protocol: str = "official", min_gt_iou: float = 0.1):
        """
        Args:
            part_classes: the GT part vocabulary; a GT part's id is its name's index.
            num_object_classes: number of object classes of the dataset (official A-metric quirk).
            protocol: ``"official"`` or ``"clean"``.
            min_gt_iou: official pre-filter threshold (used by ``"official"`` only).

        Raises:
            ValueError: unknown protocol or an empty vocabulary.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not part_classes:
            raise ValueError("part_classes (the GT part vocabulary) is empty")
        self.part_classes = list(part_classes)
        self.part_ids = {n: i for i, n in enumerate(self.part_classes)}
        self.num_object_classes = int(num_object_classes)
        self.protocol = protocol
        self.min_gt_iou = float(min_gt_iou)
        self.confusion: Dict[str, np.ndarray] = {}  # class -> (K + 1, G + 1) int64, last = bg
        self.num_filtered_segments = 0

    @property
    def num_parts(self) -> int:
        return len(self.part_classes)

    def add(self, class_name: str, pred_masks: np.ndarray, pred_labels: Sequence[int],
            gt_parts: np.ndarray, gt_part_names: Sequence[str],
            object_mask: Optional[np.ndarray] = None) -> None:
        """Add one object instance.

        Args:
            class_name: its object class (matching and metrics are per class).
            pred_masks: (L, H, W) bool predicted segments; pred_labels: L ints >= 0 (cluster ids).
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
        if self.protocol == "official" and len(pred):
            keep = (mask_iou(pred, gt).max(axis=1) > self.min_gt_iou) if len(gt) else \
                np.zeros(len(pred), bool)
            self.num_filtered_segments += int((~keep).sum())
            pred, labels = pred[keep], labels[keep]
        k = int(labels.max()) + 1 if labels.size else 0
        g = self.num_parts
        pd = np.full((h, w), -1, np.int64)
        for m, lab in zip(pred, labels):
            pd[m] = lab
        gt_map = np.full((h, w), g, np.int64)
        for m, name in zip(gt, gt_part_names):
            gt_map[m] = self.part_ids[name]
        if self.protocol == "clean" and object_mask is not None:
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
        """Add ``other``'s counts. Raises ValueError on different vocabularies or protocols."""
        if other.part_classes != self.part_classes or other.protocol != self.protocol:
            raise ValueError("cannot merge metrics with different part vocabularies or protocols")
        for name, theirs in other.confusion.items():
            mine = self.confusion.get(name, np.zeros((1, self.num_parts + 1), np.int64))
            k = max(mine.shape[0], theirs.shape[0])
            out = np.zeros((k, self.num_parts + 1), np.int64)
            for m in (mine, theirs):
                out[: m.shape[0] - 1] += m[:-1]
                out[-1] += m[-1]
            self.confusion[name] = out
        self.num_filtered_segments += other.num_filtered_segments

    def matching(self) -> Dict[str, np.ndarray]:
        """Match pass: per class, (K,) int64 matched GT part id of each label; ``num_parts``
        (= background) for a label that ``"clean"`` leaves unmatched."""
        out = {}
        g = self.num_parts
        for name, matrix in self.confusion.items():
            parts = matrix[:-1, :g]
            mapping = parts.argmax(axis=1) if g else np.zeros(len(parts), np.int64)
            if self.protocol == "clean":
                mapping = np.where(parts.sum(axis=1) > 0, mapping, g)
            out[name] = mapping.astype(np.int64)
        return out

    def summarize(self, matching: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, object]:
        """Evaluate pass.

        Args:
            matching: from :meth:`matching` of a match split; default: this split's own.

        Returns:
            ``{"C-mIoU", "A-mIoU", "C-mACC", "A-mACC", "C-mIoPred", "A-mIoPred"}`` floats (percent,
            NaN when nothing qualifies), ``"per_class"``: ``{class: {part name: IoU}}`` (parts
            with GT pixels), ``"protocol"`` and ``"num_filtered_segments"``.

        Raises:
            KeyError: ``matching`` lacks a class of this split.
        """
        matching = self.matching() if matching is None else matching
        g = self.num_parts
        per_class_metric = {m: [] for m in METRICS}
        per_part_metric = {m: [] for m in METRICS}
        per_class: Dict[str, Dict[str, float]] = {}
        for name, matrix in sorted(self.confusion.items()):
            mapping = np.asarray(matching[name], np.int64)
            labels = matrix.shape[0] - 1
            if len(mapping) < labels:  # labels never seen by the match split: background
                mapping = np.concatenate([mapping, np.full(labels - len(mapping), g, np.int64)])
            merged = np.zeros((g + 1, g + 1), np.int64)
            np.add.at(merged, np.append(mapping[:labels], g), matrix)
            tp = np.diag(merged)[:g].astype(np.float64)
            gt_px = merged[:, :g].sum(axis=0).astype(np.float64)
            pred_px = merged[:g, :].sum(axis=1).astype(np.float64)
            has_gt, has_pred = gt_px > 0, pred_px > 0
            if not (has_gt | has_pred).any():
                continue
            iou = np.where(has_gt, tp / np.maximum(gt_px + pred_px - tp, 1), np.nan)
            acc = np.where(has_gt, tp / np.maximum(gt_px, 1), np.nan)
            iopred = np.where(has_pred, tp / np.maximum(pred_px, 1), np.nan)
            # official: a class with predictions but no GT pixel has mIoU 0
            per_class_metric["mIoU"].append(100 * np.nansum(iou) / (has_gt | has_pred).sum())
            if has_gt.any():
                per_class_metric["mACC"].append(100 * np.nanmean(acc))
            if has_pred.any():
                per_class_metric["mIoPred"].append(100 * np.nanmean(iopred))
            ids = np.arange(g)
            a_ids = ids < self.num_object_classes if self.protocol == "official" else ids >= 0
            for metric, values in (("mIoU", iou), ("mACC", acc), ("mIoPred", iopred)):
                sel = values[a_ids & ~np.isnan(values)]
                per_part_metric[metric].extend((100 * sel).tolist())
            per_class[name] = {self.part_classes[i]: float(100 * iou[i]) for i in np.nonzero(has_gt)[0]}

        def mean(values):
            return float(np.mean(values)) if values else float("nan")

        out: Dict[str, object] = {}
        for metric in METRICS:
            out[f"C-{metric}"] = mean(per_class_metric[metric])
            out[f"A-{metric}"] = mean(per_part_metric[metric])
        out.update(per_class=per_class, protocol=self.protocol,
                   num_filtered_segments=self.num_filtered_segments)
        return out


class UnsupervisedPartEvaluator(DatasetEvaluator):
    """detectron2 evaluator of the unsupervised protocol, both protocols at once.

    Inputs carry ``objects`` as for :mod:`part_distillation.evaluation.evaluators` (validated
    :class:`~part_distillation.data.ground_truth.GTObject` s); each output holds ``output_key`` (default
    ``"part_seg"``, as the stage-6 PartDistillationModel outputs): one (H, W) int label map per
    object, 0 = no part, ``c + 1`` = label c
    (None for an object the model did not label: counted as no prediction).

    ``evaluate`` returns ``{"unsupervised_official": {...}, "unsupervised_clean": {...}}`` (the
    :meth:`UnsupervisedPartMetric.summarize` dicts without ``per_class``, plus ``IoU-<class>/<part>``
    keys), or ``{}`` on non-main workers. With ``matching`` (``{protocol: matching dict}`` from a
    match split, e.g. the ``matchings`` attribute an evaluator of the match split sets in
    :meth:`evaluate`) the labels are mapped by it instead of this split's own matching.
    """

    def __init__(self, part_classes: Sequence[str], num_object_classes: int,
                 output_key: str = "part_seg", distributed: bool = True,
                 matching: Optional[Dict[str, Dict[str, np.ndarray]]] = None):
        self._args = (list(part_classes), int(num_object_classes))
        self._key = output_key
        self._distributed = distributed
        self._matching = matching or {}
        self.reset()

    def reset(self) -> None:
        self.metrics = {p: UnsupervisedPartMetric(*self._args, protocol=p) for p in PROTOCOLS}

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
            summary = metric.summarize(self._matching.get(protocol))
            table = summary.pop("per_class")
            summary.pop("protocol", None)  # the key says it; detectron2's CSV printer wants numbers
            for cls, parts in table.items():
                summary.update({f"IoU-{cls}/{p}": v for p, v in parts.items()})
            results[f"unsupervised_{protocol}"] = summary
        return results
