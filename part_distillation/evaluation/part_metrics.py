"""Part-segmentation metrics: class-agnostic proposal AR@K and per-object oracle mIoU, following
the evaluation protocol of PartDistillation (Cho et al., CVPR 2023). The per-object-class
cluster-matched C-mIoU / A-mIoU of labelled parts is :mod:`part_distillation.evaluation.unsupervised`.

Conventions shared by every function here:

* One call evaluates one object instance. ``gt_parts`` is a bool array (P, H, W) of its
  ground-truth part masks, ``object_mask`` a bool array (H, W) of the object.
* Predictions are either proposal masks ``pred_masks`` (N, H, W) bool with scores ``pred_scores``
  (N,) float (may overlap), or a segment label map ``seg`` (H, W) int with 0 = not a part and
  1..K = segment ids (non-overlapping); :func:`label_map_to_masks` turns a label map into masks.
* Pixels outside ``object_mask`` are ignored: predictions and GT parts are intersected with the
  object mask before any IoU is computed. ``object_mask=None`` means the whole image is the object.
* GT parts left with no pixel inside the object cannot be matched by anything and are dropped.

Per-object functions return fractions in [0, 1]; the accumulators' ``summarize`` report percent.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_KS: Tuple[int, ...] = (1, 10, 50, 100, 200)
# COCO's thresholds 0.50:0.05:0.95, rounded so that e.g. 0.6 is the double nearest 0.6.
DEFAULT_IOU_THRESHOLDS: np.ndarray = np.round(np.linspace(0.5, 0.95, 10), 2)
# An IoU counts as reaching threshold t when IoU >= t - _IOU_EPS; this absorbs the rounding error
# of thresholds built with np.arange (np.arange(0.5, 0.951, 0.05)[2] == 0.6000000000000001).
_IOU_EPS = 1e-9
# float32 sums of 0/1 values are exact while the count stays below 2**24.
_FLOAT32_EXACT_COUNT = 2**24


def _mask_stacks(masks_a, masks_b, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """Both inputs as bool (N, H, W) / (M, H, W) arrays; ``ValueError`` (naming ``what``) when one
    is not 3-D or their spatial shapes differ."""
    a = np.asarray(masks_a, dtype=bool)
    b = np.asarray(masks_b, dtype=bool)
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"{what}: expected (N, H, W) and (M, H, W) arrays, got {a.shape} and {b.shape}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{what}: spatial shapes differ: {a.shape[1:]} vs {b.shape[1:]}")
    return a, b


def mask_iou(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU between two sets of binary masks.

    Args:
        masks_a: bool-like array (N, H, W).
        masks_b: bool-like array (M, H, W), same H, W as ``masks_a``.

    Returns:
        float64 array (N, M); entry (i, j) = |a_i & b_j| / |a_i | b_j|. A pair whose union is empty
        (both masks empty) has IoU 0. N = 0 or M = 0 gives an empty (N, M) array.

    Raises:
        ValueError: if an input is not 3-D or the spatial shapes differ.

    Computed as one matrix product of the flattened masks (float32 when H*W < 2**24, where float32
    integer sums are exact, else float64). Source: standard mask IoU as in COCO's ``maskUtils.iou``.
    """
    a, b = _mask_stacks(masks_a, masks_b, "mask_iou")
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.float64)
    num_pixels = a.shape[1] * a.shape[2]
    dtype = np.float32 if num_pixels < _FLOAT32_EXACT_COUNT else np.float64
    flat_a = a.reshape(n, -1).astype(dtype)
    flat_b = b.reshape(m, -1).astype(dtype)
    inter = (flat_a @ flat_b.T).astype(np.float64)
    area_a = a.reshape(n, -1).sum(axis=1, dtype=np.float64)
    area_b = b.reshape(m, -1).sum(axis=1, dtype=np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _check_label_map(seg: np.ndarray) -> np.ndarray:
    """Return ``seg`` as an array after checking it is 2-D, integer and non-negative."""
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"label map must be (H, W), got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"label map must have an integer dtype, got {seg.dtype}")
    if seg.size and seg.min() < 0:
        raise ValueError("label map holds negative segment ids")
    return seg


def label_map_to_masks(seg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split a segment label map into one binary mask per present segment id.

    Args:
        seg: int array (H, W); 0 = not a part / background, 1..K = segment ids.

    Returns:
        ``(masks, ids)``: masks is bool (K', H, W), one per id > 0 present in ``seg`` in increasing
        id order; ids is int64 (K',). K' = 0 when ``seg`` holds no positive id.

    Raises:
        ValueError: if ``seg`` is not 2-D, not of integer dtype, or holds negative ids.
    """
    seg = _check_label_map(seg)
    ids = np.unique(seg)
    ids = ids[ids > 0].astype(np.int64)
    masks = seg[None, :, :] == ids[:, None, None]
    return masks, ids


def _clip_to_object(
    pred_masks: np.ndarray, gt_parts: np.ndarray, object_mask: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """Validate shapes, intersect predictions (N, H, W) and GT parts (P, H, W) with the object mask
    (H, W) and drop GT parts left empty. Returns bool (N, H, W) and bool (P', H, W)."""
    pred, gt = _mask_stacks(pred_masks, gt_parts, "predictions / GT parts")
    if object_mask is not None:
        obj = np.asarray(object_mask, dtype=bool)
        if obj.shape != gt.shape[1:]:
            raise ValueError(f"object mask shape {obj.shape} differs from masks' {gt.shape[1:]}")
        pred = pred & obj
        gt = gt & obj
    gt = gt[gt.any(axis=(1, 2))]
    return pred, gt


def _validate_ar_params(
    ks: Sequence[int], iou_thresholds: Sequence[float]
) -> Tuple[Tuple[int, ...], np.ndarray]:
    """Check that ks are positive ints and thresholds a non-empty 1-D array in (0, 1]."""
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    in_range = np.all((thresholds > 0) & (thresholds <= 1))
    if thresholds.ndim != 1 or thresholds.size == 0 or not in_range:
        raise ValueError(f"iou_thresholds must be a non-empty 1-D array in (0, 1]: {thresholds}")
    return ks, thresholds


def proposal_recall(
    pred_masks: np.ndarray,
    pred_scores: np.ndarray,
    gt_parts: np.ndarray,
    object_mask: Optional[np.ndarray] = None,
    ks: Sequence[int] = DEFAULT_KS,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
) -> Tuple[np.ndarray, int]:
    """Class-agnostic recall counts of part proposals for one object, for COCO-style AR@K.

    Proposals are sorted by descending score (stable sort, ties keep input order) and cut to the
    top k. At each IoU threshold t they are matched to GT parts greedily one-to-one in score order,
    as COCO's ``evaluateImg`` does: each proposal takes the still-unmatched GT part of highest IoU
    among those with IoU >= t. A GT part is recalled at (k, t) when it is matched. Because the
    greedy matching of the top-k is a prefix of the matching of the top-(k+1), a single pass over
    the top max(ks) proposals gives every k. Predictions and GT parts are first intersected with
    ``object_mask`` (pixels outside the object are ignored); GT parts left empty are dropped.

    Args:
        pred_masks: bool (N, H, W) part proposals of this object (may overlap; N may be 0).
        pred_scores: float (N,) proposal scores.
        gt_parts: bool (P, H, W) GT part masks of this object.
        object_mask: bool (H, W) object mask, or None for the whole image.
        ks: proposal budgets K.
        iou_thresholds: (T,) IoU thresholds; IoU >= t - 1e-9 counts as reaching t.

    Returns:
        ``(recalled, num_gt)``: recalled is int64 (len(ks), T), the number of GT parts recalled
        with the top-k proposals at each threshold; num_gt is the number of GT parts kept (P').
        Dividing summed ``recalled`` by summed ``num_gt`` over a dataset and averaging over
        thresholds gives AR@K over all GT parts.

    Raises:
        ValueError: on shape mismatches, ``pred_scores`` not of shape (N,), or bad ks/thresholds.

    Source: COCO ``cocoeval.py`` (AR@maxDets, class-agnostic), as used for part proposals in
    PartDistillation evaluation protocol.
    """
    ks, thresholds = _validate_ar_params(ks, iou_thresholds)
    pred, gt = _clip_to_object(pred_masks, gt_parts, object_mask)
    scores = np.asarray(pred_scores, dtype=np.float64)
    if scores.shape != (pred.shape[0],):
        raise ValueError(f"pred_scores must have shape ({pred.shape[0]},), got {scores.shape}")
    recalled = np.zeros((len(ks), thresholds.size), dtype=np.int64)
    num_gt = gt.shape[0]
    if num_gt == 0 or pred.shape[0] == 0:
        return recalled, num_gt
    order = np.argsort(-scores, kind="stable")[: max(ks)]
    ious = mask_iou(pred[order], gt)  # (N', P) in score order
    reaches = ious[:, None, :] >= thresholds[None, :, None] - _IOU_EPS  # (N', T, P)
    matched = np.zeros((thresholds.size, num_gt), dtype=bool)
    # num_matched[i] = GT parts matched using the top-i proposals, per threshold
    num_matched = np.zeros((ious.shape[0] + 1, thresholds.size), dtype=np.int64)
    rows = np.arange(thresholds.size)
    for i in range(ious.shape[0]):
        candidates = np.where(reaches[i] & ~matched, ious[i][None, :], -1.0)  # (T, P)
        best = candidates.argmax(axis=1)
        hit = candidates[rows, best] >= 0
        matched[rows[hit], best[hit]] = True
        num_matched[i + 1] = matched.sum(axis=1)
    for row, k in enumerate(ks):
        recalled[row] = num_matched[min(k, ious.shape[0])]
    return recalled, num_gt


class ProposalARAccumulator:
    """Dataset-level class-agnostic AR@K of part proposals (COCO-style; PartDistillation
    evaluation protocol).

    Recall counts from :func:`proposal_recall` are summed over objects, so AR averages over all GT
    parts of the dataset (an object with many parts weighs more), then over IoU thresholds.
    Objects with no GT part (after clipping to the object mask) are skipped and counted in
    ``num_objects_without_parts``.
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    ):
        """Args: ks: proposal budgets K; iou_thresholds: (T,) IoU thresholds in (0, 1].
        Raises ValueError on invalid values."""
        self.ks, self.iou_thresholds = _validate_ar_params(ks, iou_thresholds)
        self.recalled = np.zeros((len(self.ks), self.iou_thresholds.size), dtype=np.int64)
        self.num_gt_parts = 0
        self.num_objects = 0
        self.num_objects_without_parts = 0

    def add(
        self,
        pred_masks: np.ndarray,
        pred_scores: np.ndarray,
        gt_parts: np.ndarray,
        object_mask: Optional[np.ndarray] = None,
    ) -> None:
        """Add one object: pred_masks bool (N, H, W), pred_scores float (N,), gt_parts bool
        (P, H, W), object_mask bool (H, W) or None. Pixels outside the object are ignored.
        Raises ValueError on shape mismatches (see :func:`proposal_recall`)."""
        recalled, num_gt = proposal_recall(
            pred_masks, pred_scores, gt_parts, object_mask, self.ks, self.iou_thresholds
        )
        self.num_objects += 1
        if num_gt == 0:
            self.num_objects_without_parts += 1
            return
        self.recalled += recalled
        self.num_gt_parts += num_gt

    def merge(self, other: "ProposalARAccumulator") -> None:
        """Add the counts of ``other`` (e.g. from another worker) into this accumulator.
        Raises ValueError if ks or IoU thresholds differ."""
        if other.ks != self.ks or not np.array_equal(other.iou_thresholds, self.iou_thresholds):
            raise ValueError("cannot merge AR accumulators with different ks or IoU thresholds")
        self.recalled += other.recalled
        self.num_gt_parts += other.num_gt_parts
        self.num_objects += other.num_objects
        self.num_objects_without_parts += other.num_objects_without_parts

    def summarize(self) -> Dict[str, float]:
        """Return ``{"AR@k": percent for each k, "num_gt_parts", "num_objects",
        "num_objects_without_parts"}`` as python numbers; AR is NaN when no GT part was seen."""
        results: Dict[str, float] = {}
        for row, k in enumerate(self.ks):
            if self.num_gt_parts == 0:
                results[f"AR@{k}"] = float("nan")
            else:
                results[f"AR@{k}"] = float(100.0 * self.recalled[row].mean() / self.num_gt_parts)
        results["num_gt_parts"] = int(self.num_gt_parts)
        results["num_objects"] = int(self.num_objects)
        results["num_objects_without_parts"] = int(self.num_objects_without_parts)
        return results


def _best_match_from_iou(ious: np.ndarray) -> float:
    """Mean over GT parts (columns of the (N, P) IoU matrix) of the best IoU over predictions."""
    if ious.shape[1] == 0:
        return float("nan")
    if ious.shape[0] == 0:
        return 0.0
    return float(ious.max(axis=0).mean())


def _hungarian_from_iou(ious: np.ndarray) -> float:
    """Mean over GT parts of the IoU under the one-to-one assignment maximising total IoU."""
    if ious.shape[1] == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(ious[rows, cols].sum() / ious.shape[1])


def best_match_miou(
    pred_masks: np.ndarray, gt_parts: np.ndarray, object_mask: Optional[np.ndarray] = None
) -> float:
    """Per-object oracle mIoU with many-to-one matching.

    Each GT part is matched to the predicted segment of highest IoU with it (a segment may serve
    several GT parts); the result is the mean of those IoUs over GT parts. Segment ids carry no
    meaning across images: the matching is redone per object. Predictions and GT parts are first
    intersected with ``object_mask`` (pixels outside are ignored); empty GT parts are dropped.

    Args:
        pred_masks: bool (N, H, W) predicted segments (e.g. from :func:`label_map_to_masks`).
        gt_parts: bool (P, H, W) GT part masks.
        object_mask: bool (H, W) or None for the whole image.

    Returns:
        Fraction in [0, 1]; 0 when N = 0; NaN when no GT part is left.

    Raises:
        ValueError: on shape mismatches.

    Source: per-image oracle part mIoU, PartDistillation evaluation protocol.
    """
    pred, gt = _clip_to_object(pred_masks, gt_parts, object_mask)
    return _best_match_from_iou(mask_iou(pred, gt))


def hungarian_miou(
    pred_masks: np.ndarray, gt_parts: np.ndarray, object_mask: Optional[np.ndarray] = None
) -> float:
    """Per-object oracle mIoU with one-to-one (Hungarian) matching.

    Segments and GT parts are paired one-to-one maximising the total IoU
    (``scipy.optimize.linear_sum_assignment``); GT parts left unpaired (more parts than segments)
    count IoU 0; the result is the mean over GT parts. The matching is redone per object.
    Predictions and GT parts are first intersected with ``object_mask`` (pixels outside are
    ignored); empty GT parts are dropped.

    Args:
        pred_masks: bool (N, H, W) predicted segments.
        gt_parts: bool (P, H, W) GT part masks.
        object_mask: bool (H, W) or None for the whole image.

    Returns:
        Fraction in [0, 1]; 0 when N = 0; NaN when no GT part is left.

    Raises:
        ValueError: on shape mismatches.

    Source: per-image oracle part mIoU with one-to-one matching, PartDistillation evaluation
    protocol.
    """
    pred, gt = _clip_to_object(pred_masks, gt_parts, object_mask)
    return _hungarian_from_iou(mask_iou(pred, gt))


class SegmentMetricsAccumulator:
    """Dataset-level metrics of part label maps: best-match mIoU, Hungarian mIoU (both averaged
    over objects, per-object oracle matching) and AR@K of the segments (PartDistillation
    evaluation protocol).

    For AR each segment is a proposal whose score is its area fraction inside the object (segment
    pixels in the object / object pixels), so AR@1 uses the largest segment; ties keep id order.
    Objects with no GT part (after clipping) are skipped and counted.
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    ):
        """Args: ks, iou_thresholds: as in :class:`ProposalARAccumulator`."""
        self.ar = ProposalARAccumulator(ks, iou_thresholds)
        self.best_match_sum = 0.0
        self.hungarian_sum = 0.0
        self.num_scored_objects = 0

    def add(
        self, seg: np.ndarray, gt_parts: np.ndarray, object_mask: Optional[np.ndarray] = None
    ) -> Optional[Tuple[float, float]]:
        """Add one object: seg int (H, W) label map (0 = not a part), gt_parts bool (P, H, W),
        object_mask bool (H, W) or None. Pixels outside the object are ignored.
        Returns the object's ``(best_match, hungarian)`` mIoU (fractions), None when it has no
        GT part (not scored). Raises ValueError on a bad label map or shape mismatches."""
        masks, _ = label_map_to_masks(seg)
        pred, gt = _clip_to_object(masks, gt_parts, object_mask)
        if object_mask is None:
            object_area = pred.shape[1] * pred.shape[2]
        else:
            object_area = np.asarray(object_mask, dtype=bool).sum()
        areas = pred.sum(axis=(1, 2))
        scores = areas / object_area if object_area > 0 else np.zeros(pred.shape[0])
        self.ar.add(pred, scores, gt)
        if gt.shape[0] == 0:
            return None
        ious = mask_iou(pred, gt)
        best, hungarian = _best_match_from_iou(ious), _hungarian_from_iou(ious)
        self.best_match_sum += best
        self.hungarian_sum += hungarian
        self.num_scored_objects += 1
        return best, hungarian

    def merge(self, other: "SegmentMetricsAccumulator") -> None:
        """Add the sums of ``other`` into this accumulator.
        Raises ValueError if the AR settings differ."""
        self.ar.merge(other.ar)
        self.best_match_sum += other.best_match_sum
        self.hungarian_sum += other.hungarian_sum
        self.num_scored_objects += other.num_scored_objects

    def summarize(self) -> Dict[str, float]:
        """Return ``{"best_match_mIoU", "hungarian_mIoU", "AR@k"..., counts}`` in percent as python
        numbers; the mIoUs are NaN when no object had a GT part."""
        n = self.num_scored_objects
        results: Dict[str, float] = {
            "best_match_mIoU": float(100.0 * self.best_match_sum / n) if n else float("nan"),
            "hungarian_mIoU": float(100.0 * self.hungarian_sum / n) if n else float("nan"),
        }
        results.update(self.ar.summarize())
        return results

