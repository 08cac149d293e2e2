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
import os
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


def evaluate_pseudo_labels(folder: str, records: List[dict], stage: Optional[str] = None,
                           per_object: Optional[list] = None) -> dict:
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

    ``per_object`` (a list), when given, receives one ``(image_id, gt_index, best_match,
    hungarian)`` tuple (mIoUs as fractions) per scored object, for paired comparisons of methods.

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
            scores = seg_acc.add(seg, g.parts, g.mask)
            if per_object is not None and scores is not None:
                per_object.append((label.image_id, gi) + scores)
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


def label_consistency(folder: str, records: List[dict], stage: Optional[str] = None,
                      min_images: int = 2) -> dict:
    """How consistently the class-consistent part labels (stage 5 or 6) of ``folder`` name the same
    ground-truth part across the images of an object class.

    Pixels counted: those of a GT part of a matched GT object (objects matched as in
    :func:`evaluate_pseudo_labels`) that carry a predicted label. For each (object class, GT part
    name) pair, summed over all images of the class, ``n[label]`` = its labelled pixels under each
    label. Then, in percent, averaged over the pairs labelled in at least ``min_images`` images
    (consistency across images is undefined for a part seen once):

    * ``label_consistency``: ``max(n) / sum(n)``, the share of the part's pixels under its most
      frequent label (100 = the part gets one label in every image);
    * ``image_consistency``: per image, the part's majority label; the share of the pair's images
      whose majority label is the pair's overall most frequent label;
    * ``dominant_label_share``: the same pixels' share under the label most frequent over the
      WHOLE class (all its parts): what ``label_consistency`` would be if labels ignored parts (one
      label for the whole object scores 100 on both). ``label_consistency - dominant_label_share``
      is the part-specific consistency;
    * ``labels_per_class``: mean number of distinct labels used per class.

    Also ``num_pairs``, ``num_classes`` and ``per_class``: ``{class: {part: label_consistency}}``.
    Parts without labels (stages 2-4) give ``num_pairs`` 0 and NaN means.
    """
    by_id = {str(r["image_id"]): r for r in records}
    pix: Dict[tuple, Dict[int, int]] = {}
    img_major: Dict[tuple, List[int]] = {}
    for path in list_pseudo_labels(folder):
        label = load_pseudo_label(path, stage)
        rec = by_id.get(label.image_id)
        if rec is None:
            continue
        gts = gt_objects(rec)
        match = match_objects([o.mask for o in label.objects], [g.mask for g in gts])
        for gi, oi in match.items():
            obj, g = label.objects[oi], gts[gi]
            if not obj.parts or any(p.label is None for p in obj.parts):
                continue
            lab = label_ids(obj)
            for pm, name in zip(g.parts, g.part_names):
                vals = lab[pm]
                vals = vals[vals >= 0]
                if not vals.size:
                    continue
                key = (g.class_name, name)
                counts = np.bincount(vals)
                acc = pix.setdefault(key, {})
                for v in np.nonzero(counts)[0]:
                    acc[int(v)] = acc.get(int(v), 0) + int(counts[v])
                img_major.setdefault(key, []).append(int(counts.argmax()))
    class_totals: Dict[str, Dict[int, int]] = {}
    for (cls, _), acc in pix.items():
        tot = class_totals.setdefault(cls, {})
        for v, n in acc.items():
            tot[v] = tot.get(v, 0) + n
    cons, img_cons, dom = [], [], []
    per_class: Dict[str, Dict[str, float]] = {}
    for (cls, part), acc in sorted(pix.items()):
        if len(img_major[(cls, part)]) < min_images:
            continue
        total = sum(acc.values())
        top = max(acc, key=acc.get)
        class_top = max(class_totals[cls], key=class_totals[cls].get)
        cons.append(100.0 * acc[top] / total)
        img_cons.append(100.0 * float(np.mean([m == top for m in img_major[(cls, part)]])))
        dom.append(100.0 * acc.get(class_top, 0) / total)
        per_class.setdefault(cls, {})[part] = cons[-1]

    def mean(v):
        return float(np.mean(v)) if v else float("nan")

    return {"label_consistency": mean(cons), "image_consistency": mean(img_cons),
            "dominant_label_share": mean(dom),
            "labels_per_class": mean([len(t) for t in class_totals.values()]),
            "num_pairs": len(cons), "num_classes": len(per_class), "per_class": per_class}


def format_stage_table(rows: Dict[str, dict]) -> str:
    """Markdown summary across stages: one row per named result of :func:`evaluate_pseudo_labels`
    (optionally with a ``label_consistency`` entry of :func:`label_consistency`): class-agnostic
    best-match / Hungarian mIoU and AR@10, C-/A-mIoU under both protocols and the label
    consistency with its whole-class baseline (empty cells where a stage has no labels)."""
    head = ["best-match mIoU", "Hungarian mIoU", "AR@10", "C-mIoU official", "A-mIoU official",
            "C-mIoU clean", "A-mIoU clean", "label consistency (whole-class baseline)"]
    lines = ["| stage | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, res in rows.items():
        seg = res["segments"]
        cells = [f"{seg['best_match_mIoU']:.1f}", f"{seg['hungarian_mIoU']:.1f}", f"{seg['AR@10']:.1f}"]
        uns = res.get("unsupervised")
        for protocol in PROTOCOLS:
            cells += ([f"{uns[protocol]['C-mIoU']:.1f}", f"{uns[protocol]['A-mIoU']:.1f}"] if uns else ["", ""])
        lc = res.get("label_consistency")
        cells.append(f"{lc['label_consistency']:.1f} ({lc['dominant_label_share']:.1f})"
                     if lc and lc["num_pairs"] else "")
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


def label_agreement(reference: str, predicted: str) -> dict:
    """How well the labels of folder ``predicted`` (e.g. stage 6) reproduce those of folder
    ``reference`` (e.g. the stage-5 labels it was trained on): both are cluster ids of the same
    per-class clustering, so label ``c`` should be label ``c``. Objects are matched per image by
    mask IoU (:func:`match_objects`); images or objects missing from ``predicted`` count as
    unlabelled.

    Returns (percent): ``pixel_agreement`` = share of the reference's labelled pixels that carry
    the same predicted label; ``label_mIoU`` = mean over (object class, reference label) of the
    IoU of the predicted and reference masks of that label (pixels summed over the class's
    objects); ``predicted_coverage`` = share of the reference's labelled pixels with any predicted
    label; ``num_objects``.
    """
    pred_files = {os.path.basename(p): p for p in list_pseudo_labels(predicted)}
    inter: Dict[tuple, int] = {}
    union: Dict[tuple, int] = {}
    same = covered = total = n_obj = 0
    for path in list_pseudo_labels(reference):
        ref = load_pseudo_label(path)
        other = load_pseudo_label(pred_files[os.path.basename(path)]) if os.path.basename(path) in pred_files else None
        match = match_objects([o.mask for o in other.objects], [o.mask for o in ref.objects]) if other else {}
        for i, obj in enumerate(ref.objects):
            if not obj.parts or any(p.label is None for p in obj.parts):
                continue
            n_obj += 1
            a = label_ids(obj)
            b = label_ids(other.objects[match[i]]) if i in match else np.full(a.shape, -1, np.int64)
            lab = a >= 0
            total += int(lab.sum())
            covered += int((lab & (b >= 0)).sum())
            same += int((lab & (a == b)).sum())
            for c in np.unique(a[lab]):
                key = (obj.class_name, int(c))
                inter[key] = inter.get(key, 0) + int(((a == c) & (b == c)).sum())
                union[key] = union.get(key, 0) + int(((a == c) | (b == c)).sum())
    pct = lambda x: 100.0 * x / total if total else float("nan")  # noqa: E731
    return {"pixel_agreement": pct(same), "predicted_coverage": pct(covered),
            "label_mIoU": 100.0 * float(np.mean([inter[k] / union[k] for k in union])) if union else float("nan"),
            "num_objects": n_obj}


def label_ids(obj) -> np.ndarray:
    """int64 (H, W): the part ``label`` per pixel of an ObjectLabel, -1 where none (later parts
    win overlaps, as in the evaluation)."""
    out = np.full(obj.mask.shape, -1, np.int64)
    for p in obj.parts:
        if p.label is not None:
            out[p.mask] = int(p.label)
    return out
