"""Evaluate a folder of pseudo-labels (any stage) against a dataset's ground-truth parts.

Each pseudo-label object is matched to a ground-truth object of the same image by object-mask IoU
(Hungarian, IoU >= 0.5; with given masks the match is exact). Ground-truth objects without parts
are not scored; ground-truth objects no pseudo-label object matched are scored as objects with no
segments (so a skipped object costs recall and mIoU instead of disappearing from the average).
Reported (percent): best-match mIoU and Hungarian mIoU per object (per-image oracle matching,
PartDistillation Sec. 4: stage-2/3 ids carry no meaning across images), class-agnostic AR@K of the
segments, and — when parts carry ``label`` s (part ranking onwards) — the unsupervised C-mIoU /
A-mIoU (and mACC, mIoPred) of :mod:`part_distillation.evaluation.unsupervised` under both its
protocols, ``official`` and ``clean``.
The mIoUs are averaged over objects (each object's mean over its parts); AR is pooled over
all ground-truth parts of all scored objects.

Per-size metrics (``by_size``): the same segment metrics for the scored objects split by their
ground-truth mask area as a fraction of the image area: ``small`` < 1%, ``medium`` 1-10%,
``large`` >= 10% (``SIZE_BINS``). A fraction, not COCO's pixel counts, because stage 2 resizes every
image to the same network input: 1% of a 384 x 512 input is ~30 stride-8 feature cells.
"""
import logging
from typing import Dict, List, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.ground_truth import gt_objects  # noqa: F401 - the one GT reader (re-exported for callers)
from ..data.pseudo_labels import list_pseudo_labels, load_pseudo_label
from ..evaluation.part_metrics import SegmentMetricsAccumulator, mask_iou
from ..evaluation.unsupervised import PROTOCOLS, UnsupervisedPartMetric, part_vocabulary

logger = logging.getLogger(__name__)

# (name, upper bound of object area / image area); see the module docstring
SIZE_BINS = (("small", 0.01), ("medium", 0.10), ("large", float("inf")))


def size_bin(object_area: int, image_area: int) -> str:
    """Name of the ``SIZE_BINS`` bin of an object of ``object_area`` pixels in an image of
    ``image_area`` pixels."""
    frac = object_area / max(image_area, 1)
    return next(name for name, upper in SIZE_BINS if frac < upper)


def match_objects(pred_masks: List[np.ndarray], gt_masks: List[np.ndarray], min_iou: float = 0.5) -> Dict[int, int]:
    """``{gt_index: pred_index}`` by Hungarian matching on object-mask IoU (pairs < ``min_iou`` dropped)."""
    if not pred_masks or not gt_masks:
        return {}
    iou = mask_iou(np.stack(gt_masks), np.stack(pred_masks))
    rows, cols = linear_sum_assignment(-iou)
    return {int(r): int(c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou}


def evaluate_pseudo_labels(folder: str, records: List[dict], stage: Optional[str] = None) -> dict:
    """Metrics of the pseudo-labels in ``folder`` against dataset dicts ``records``.

    Every file must be a pseudo-label of ``stage`` when given, else all files must come from one
    stage (reported as ``stage``): a folder mixing stages, or of another stage than the caller
    meant, is an error, not a silently different number.

    Returns a JSON-serialisable dict: ``segments`` (best_match_mIoU, hungarian_mIoU, AR@K, counts),
    ``unsupervised`` ``{"official": {...}, "clean": {...}}`` (C-/A-mIoU, mACC, mIoPred, per_class;
    part vocabulary = sorted GT part names, object classes = those of ``records``) when parts are
    labelled, ``num_images``,
    ``missing_images`` (records without a pseudo-label file), ``unmatched_gt_objects``,
    ``gt_objects_without_parts`` (not scored), ``by_size``
    (``segments`` of the small / medium / large objects, module docstring),
    ``segments_per_object``, ``largest_segment_share`` (percent of the object's pixels in its
    largest segment: near 100 means the segments collapsed) and ``object_coverage`` (percent of
    all ground-truth object pixels that lie in some segment; the official dense-CRF lowers it).

    Raises:
        PseudoLabelError: a file in ``folder`` is corrupt, of another stage, or its image id is not
            its file name (names it).
    """
    by_id = {str(r["image_id"]): r for r in records}
    seg_acc = SegmentMetricsAccumulator()
    num_classes = len({o["class_name"] for r in records for o in r["objects"]})
    vocab = part_vocabulary(records) or [""]
    cls_acc = {p: UnsupervisedPartMetric(vocab, num_classes, p) for p in PROTOCOLS}
    by_size = {name: SegmentMetricsAccumulator() for name, _ in SIZE_BINS}
    seen, unmatched, labelled, no_parts = set(), 0, False, 0
    n_segments, largest_share = [], []
    covered_pixels = object_pixels = 0
    for path in list_pseudo_labels(folder):
        label = load_pseudo_label(path, stage)
        stage = label.stage
        rec = by_id.get(label.image_id)
        if rec is None:
            continue
        seen.add(label.image_id)
        gts = gt_objects(rec)
        match = match_objects([o.mask for o in label.objects], [g.mask for g in gts])
        for gi, g in enumerate(gts):
            if not len(g.parts):
                no_parts += 1
                continue
            if gi in match:
                obj = label.objects[match[gi]]
                seg = obj.part_label_map()
                areas = np.bincount(seg[g.mask], minlength=1)[1:]
                n_segments.append(int((areas > 0).sum()))
                largest_share.append(areas.max() / g.mask.sum() if areas.size else 0.0)
                covered_pixels += int(areas.sum())
                if obj.parts and all(p.label is not None for p in obj.parts):
                    labelled = True
                    for metric in cls_acc.values():
                        metric.add(g.class_name, np.stack([p.mask for p in obj.parts]),
                                   [int(p.label) for p in obj.parts], g.parts, g.part_names,
                                   g.mask)
            else:
                unmatched += 1
                seg = np.zeros(g.mask.shape, np.int32)
                for metric in cls_acc.values():  # no prediction: its GT parts are missed
                    metric.add(g.class_name, np.zeros((0,) + seg.shape, bool), [], g.parts,
                               g.part_names, g.mask)
            object_pixels += int(g.mask.sum())
            seg_acc.add(seg, g.parts, g.mask)
            by_size[size_bin(int(g.mask.sum()), g.mask.size)].add(seg, g.parts, g.mask)
    missing = sorted(set(by_id) - seen)
    if missing:
        logger.warning("%s: %d dataset images have no pseudo-label", folder, len(missing))
    out = {"stage": stage, "segments": seg_acc.summarize(), "num_images": len(seen), "missing_images": len(missing),
           # a bin without objects has counts only (no NaN metrics, so results compare equal)
           "by_size": {name: acc.summarize() if acc.num_scored_objects else
                       {k: v for k, v in acc.summarize().items() if k.startswith("num_")}
                       for name, acc in by_size.items()},
           "unmatched_gt_objects": unmatched, "gt_objects_without_parts": no_parts,
           # collapse check: how many segments an object gets and how much the largest one takes
           "segments_per_object": float(np.mean(n_segments)) if n_segments else 0.0,
           "largest_segment_share": 100.0 * float(np.mean(largest_share)) if largest_share else 0.0,
           "object_coverage": 100.0 * covered_pixels / object_pixels if object_pixels else 0.0}
    if labelled:
        out["unsupervised"] = {p: m.summarize() for p, m in cls_acc.items()}
    return out


def format_table(rows: Dict[str, dict], keys=("best_match_mIoU", "hungarian_mIoU", "AR@1", "AR@10")) -> str:
    """Markdown table: one row per named result of :func:`evaluate_pseudo_labels`."""
    extra = ("segments_per_object", "largest_segment_share", "object_coverage")
    lines = ["| method | " + " | ".join(keys + extra) + " |", "|---" * (len(keys) + len(extra) + 1) + "|"]
    for name, res in rows.items():
        vals = [res["segments"][k] for k in keys] + [res[k] for k in extra]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    return "\n".join(lines)


def format_size_table(rows: Dict[str, dict], keys=("best_match_mIoU", "hungarian_mIoU", "AR@10")) -> str:
    """Markdown table of the per-size metrics (``by_size``) of each named result: one column group
    per size bin, with its object count in the header."""
    names = [n for n, _ in SIZE_BINS]
    first = next(iter(rows.values()))["by_size"]
    head = " | ".join(f"{n} ({first[n]['num_objects'] - first[n]['num_objects_without_parts']} objects) "
                      + " / ".join(keys) for n in names)
    lines = [f"| method | {head} |", "|---" * (len(names) + 1) + "|"]
    for name, res in rows.items():
        cells = [" / ".join(f"{res['by_size'][n][k]:.1f}" if k in res["by_size"][n] else "-" for k in keys)
                 for n in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_scoring(res: dict) -> str:
    """Markdown paragraph stating what a result of :func:`evaluate_pseudo_labels` counts."""
    seg = res["segments"]
    scored = seg["num_objects"] - seg["num_objects_without_parts"]
    unscored = res["gt_objects_without_parts"] + seg["num_objects_without_parts"]
    return (f"{res['num_images']} images; {scored} ground-truth objects scored (those with at least one "
            f"ground-truth part; {unscored} without parts are not scored), "
            f"{seg['num_gt_parts']} ground-truth parts. A scored object that no pseudo-label object "
            f"matches (mask IoU >= 0.5) counts as one with no segments ({res['unmatched_gt_objects']} "
            "here). best_match / hungarian mIoU: per object the mean IoU of its parts, then averaged "
            "over objects; AR@K: pooled over all ground-truth parts (IoU 0.5:0.95). Percent. Size bins: "
            + ", ".join(f"{n} < {u:.0%}" if u != float("inf") else f"{n} the rest" for n, u in SIZE_BINS)
            + " of the image area.")
