"""Post-processing rules shared by the stages, each written once.

* :func:`~part_distillation.utils.object_filter.object_area_ratio_keep` (in the utils layer, below
  the data layer that also uses it; import it from there): the object-area-ratio filter: an object is used when its area /
  image area is > ``MIN_OBJECT_AREA_RATIO``, strictly, in every stage that has one (official:
  stage 4 ``register_imagenet_with_proposals.py`` and ``proposal_dataset_mapper.py``
  ``object_ratio > min_object_area_ratio``, stage 5 the same loader, stage 6
  ``part_distillation_dataset_mapper.py`` ``object_ratio > min_object_area_ratio``).
* :func:`per_pixel_winner`: the per-pixel "score x sigmoid(mask)" winner of the Mask2Former
  per-pixel part assignment (official ``_unique_assignment_with_classes`` and the part-ranking /
  proposal models' per-pixel modes).
* :func:`area_then_score_keep`: the segment filter ``area / region area > MIN_AREA_RATIO``, then
  ``score > MIN_SCORE``, each filter skipped when it would remove every segment (official
  ``_unique_assignment_with_classes``; part ranking MIN_AREA_RATIO_1/2, MIN_SCORE_1/2).
* :func:`assign_part_segments`: the stage-6 per-pixel assignment with classes, merging and the
  filter above (official ``PartDistillationModel._unique_assignment_with_classes``).
* :func:`gt_iou_keep` / :func:`gt_iou_filter`: the official evaluation-time filter that keeps a
  segment when its best IoU with a ground-truth part mask is > 0.1 (official
  ``PartDistillationModel.match_gt_labels``, ``fg_score_threshold`` 0.1).

Source: facebookresearch/PartDistillation @ a0bb459 (files named above). Tensors are torch; masks
are (N, H, W) bool in one pixel frame (the caller's output size).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from ..utils.masks import upsample_masks_official

OFFICIAL_MIN_GT_IOU = 0.1  # official fg_score_threshold of match_gt_labels


def per_pixel_winner(scores: torch.Tensor, probs: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The candidate with the highest ``score * prob`` at every pixel.

    Args:
        scores: (N,) float, N >= 1.
        probs: (N, H, W) float mask probabilities (sigmoid of the mask logits).

    Returns:
        ``(best (H, W) float, index (H, W) int64 into N)``. Uses ``max(0)`` (one pass for both;
        torch's CPU ``argmax`` over the leading dim is several times slower); ties go to one of
        the tied candidates.
    """
    best, index = (scores[:, None, None] * probs).max(0)
    return best, index


def area_then_score_keep(areas: torch.Tensor, scores: torch.Tensor, region_area,
                         min_area_ratio: float, min_score: float) -> torch.Tensor:
    """Indices (S',) int64 of the segments kept by the official filters: ``area / region_area >
    min_area_ratio``, then ``score > min_score``; each filter is applied only when at least one
    segment passes it (official behaviour: it never empties the list).

    Args:
        areas: (S,) segment areas in pixels; scores: (S,) float.
        region_area: pixels of the region the ratio refers to (the union of the masks; 0 allowed:
            then the ratio filter keeps everything, as officially, where 0 / 0 fails every test).
        min_area_ratio, min_score: thresholds (-1 disables them, the official defaults).
    """
    keep = torch.arange(len(scores), device=scores.device)
    if len(keep) == 0:
        return keep
    if float(region_area) > 0:
        ratio = areas.float() / float(region_area)
        passed = ratio > min_area_ratio
        if bool(passed.any()):
            keep = keep[passed]
    passed = scores[keep] > min_score
    if bool(passed.any()):
        keep = keep[passed]
    return keep


def assign_part_segments(scores: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor,
                         object_mask, *, min_area_ratio: float = -1.0, min_score: float = -1.0
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage-6 per-pixel part segments with classes (official ``_unique_assignment_with_classes``
    with USE_PER_PIXEL_LABEL, after ``masking_with_object_mask``).

    1. Mask logits are multiplied by the object mask (APPLY_MASKING_WITH_OBJECT_MASK; pass None to
       skip), so outside the object every logit is 0 and every probability 0.5.
    2. Region = pixels where some logit is > 0.
    3. Every pixel of the image goes to the candidate of highest ``score * sigmoid(logit)``
       (:func:`per_pixel_winner`); a winner's segment is its pixels inside the region, so a
       candidate that wins only pixels outside the region gives an empty segment.
    4. The winners are merged by label: the union of their segments, scored by the best score of
       ALL the label's winners (also those with empty segments, official).
    5. :func:`area_then_score_keep` against the region area. Empty segments survive it with
       MIN_AREA_RATIO -1 (official).

    Args:
        scores: (T,) float scores of the T candidate (query, label) pairs.
        labels: (T,) int64 their labels (cluster ids, or already mapped to GT part ids).
        mask_logits: (T, H, W) float mask logits of the pairs at the output size.
        object_mask: (H, W) bool object mask at the output size, or None.
        min_area_ratio, min_score: PART_DISTILLATION.MIN_AREA_RATIO / MIN_SCORE.

    Returns:
        ``(masks (S, H, W) bool, labels (S,) int64 ascending, scores (S,))``; T = 0 gives S = 0.
    """
    if object_mask is not None:
        mask_logits = mask_logits * object_mask
    h, w = mask_logits.shape[-2:]
    if len(scores) == 0:
        return (torch.zeros((0, h, w), dtype=torch.bool, device=mask_logits.device),
                labels[:0], scores[:0])
    region = (mask_logits > 0).any(0)
    _, winner = per_pixel_winner(scores, mask_logits.sigmoid())
    winners = torch.unique(winner)
    merged_labels, inverse = torch.unique(labels[winners], return_inverse=True)
    # segment of each pixel's winning label (-1 outside the region), then one mask per label
    label_slot = torch.full((len(scores),), -1, dtype=torch.int64, device=winner.device)
    label_slot[winners] = inverse
    pixel_label = torch.where(region, label_slot[winner], torch.full_like(winner, -1))
    slots = torch.arange(len(merged_labels), device=winner.device)
    masks = pixel_label[None] == slots[:, None, None]
    merged_scores = torch.full((len(merged_labels),), float("-inf"), dtype=scores.dtype,
                               device=scores.device)
    merged_scores.scatter_reduce_(0, inverse, scores[winners], "amax")
    keep = area_then_score_keep(masks.flatten(1).sum(1), merged_scores, region.sum(),
                                min_area_ratio, min_score)
    return masks[keep], merged_labels[keep], merged_scores[keep]


def gt_iou_keep(intersections: torch.Tensor, areas: torch.Tensor, gt_areas: torch.Tensor,
                min_iou: float = OFFICIAL_MIN_GT_IOU) -> Tuple[torch.Tensor, torch.Tensor]:
    """The official evaluation filter from pixel counts: a segment is kept when its best IoU with
    a ground-truth part mask is > ``min_iou``.

    Args:
        intersections: (S, P) pixels shared by segment s and GT mask p.
        areas: (S,) segment areas; gt_areas: (P,) GT mask areas.
        min_iou: threshold (official 0.1).

    Returns:
        ``(keep (S,) bool, best (S,) int64)``: best = index of the GT mask of highest IoU (first on
        ties; 0 when P = 0, where nothing is kept). An empty union has IoU 0 (pycocotools).
    """
    inter = intersections.double()
    if inter.shape[1] == 0:
        return (torch.zeros(len(areas), dtype=torch.bool),
                torch.zeros(len(areas), dtype=torch.int64))
    union = areas.double()[:, None] + gt_areas.double()[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    best_iou, best = iou.max(1)
    return best_iou > min_iou, best


def gt_iou_filter(masks: torch.Tensor, gt_masks: torch.Tensor,
                  min_iou: float = OFFICIAL_MIN_GT_IOU) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`gt_iou_keep` of bool masks (S, H, W) against GT part masks (P, H, W) (official
    ``match_gt_labels`` / ``get_iou_all_cocoapi``). Returns ``(keep (S,) bool, best (S,) int64)``."""
    pred = masks.flatten(1).double()
    gt = torch.as_tensor(gt_masks, dtype=torch.bool, device=masks.device).flatten(1).double()
    return gt_iou_keep((pred @ gt.T).cpu(), pred.sum(1).cpu(), gt.sum(1).cpu(), min_iou)


def resize_object_mask(object_mask: torch.Tensor, out_size: Tuple[int, int]) -> torch.Tensor:
    """(h, w) bool object mask at the input size -> (H, W) bool at ``out_size``, by the official
    rule :func:`part_distillation.utils.masks.upsample_masks_official` (bilinear, then > 0, as the
    official ``sem_seg_postprocess(...).bool()`` of the stage-6 evaluation)."""
    return upsample_masks_official(object_mask, out_size)


def part_distillation_segments(part_probs: torch.Tensor, mask_logits: torch.Tensor,
                               object_mask, out_size: Tuple[int, int], *, topk: int,
                               min_area_ratio: float = -1.0, min_score: float = -1.0,
                               label_mapping=None
                               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage-6 segments of one object (official ``instance_inference_with_classification`` up to,
    not including, the GT-IoU filter).

    The ``topk`` best (query, part class) pairs by probability; labels optionally mapped
    (``label_mapping`` (K,) int64, official eval mode: mapped BEFORE the segments are merged);
    the pairs' mask logits resized bilinearly to ``out_size``; :func:`assign_part_segments`.

    Args:
        part_probs: (Q, K) float part-class probabilities (softmax over K + 1, no-object dropped).
        mask_logits: (Q, h, w) float mask logits at the input size.
        object_mask: (H, W) bool object mask at ``out_size`` (see :func:`resize_object_mask`), or
            None (APPLY_MASKING_WITH_OBJECT_MASK False).
        out_size: (H, W) output size.
        topk: TEST.DETECTIONS_PER_IMAGE.
        min_area_ratio, min_score: PART_DISTILLATION.MIN_AREA_RATIO / MIN_SCORE.
        label_mapping: None or (K,) int64 label -> mapped label.

    Returns:
        As :func:`assign_part_segments`: ``(masks (S, H, W) bool, labels (S,), scores (S,))``.
    """
    k = part_probs.shape[1]
    scores, pairs = part_probs.flatten().topk(min(topk, part_probs.numel()))
    queries, labels = pairs // k, pairs % k
    if label_mapping is not None:
        labels = torch.as_tensor(label_mapping, dtype=torch.int64, device=labels.device)[labels]
    unique_queries, slot = torch.unique(queries, return_inverse=True)
    logits = mask_logits[unique_queries]
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return assign_part_segments(scores, labels, logits[slot], object_mask,
                                min_area_ratio=min_area_ratio, min_score=min_score)
