"""Part ranking (PartDistillation stage 5, Cho et al., CVPR 2023, Sec. 3.3): the stage-4 part-proposal
model turned into class-consistent part labels.

Pass 1 (clustering) takes, per object, the stage-4 model's part segments and their query features
(``decoder_output``); per object class those features are clustered into K groups
(:mod:`part_distillation.modeling.part_clustering`). Pass 2 (labelling) scores every (query,
cluster) pair of an object with the cluster classifier of its class and turns the best pairs into
non-overlapping part segments labelled 0..K-1. The same label then means the same cluster of
query features, i.e. the same kind of part, in every image of the class.

The algorithm is written as pure functions on tensors of ONE object (CPU or GPU; masks at one
resolution, ``(h, w)``), which :class:`PartRankingModel` applies after running the network:

* :func:`clustering_segments` (pass 1), :func:`labelling_segments` (pass 2);
* their building blocks :func:`per_pixel_segments`, :func:`object_iou` (the winner and the area-then-score filter
  are :mod:`part_distillation.modeling.postprocess`'s).

Conventions taken from the official ``PartRankingModel`` (PartDistillation @ a0bb459):
part probability = softmax over the query's logits, column 0 ("part"); "region" = pixels where
any candidate mask logit is > 0; a per-pixel winner is the candidate with the highest
``score * sigmoid(logit)``; area ratios are relative to the region; filters are strict (``>``) and
each applies only if some candidate survives it; a segment is kept when its IoU with the object
mask is > ``min_object_iou`` (official ``fg_score_threshold`` 0.001). Where the official code is
ambiguous (the non-per-pixel branch of pass 2 returns either sigmoid-weighted or raw masks
depending on whether a filter fired), masks are always ``logit > 0``. Both passes work per
object; the official code works per image with the union of the image's object masks, which is
the same thing for its ImageNet setting of one object per image.
"""
import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ..part_clustering import cluster_logits
from ..postprocess import area_then_score_keep, per_pixel_winner
from .proposal_model import ProposalModel

logger = logging.getLogger(__name__)


def object_iou(masks: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
    """IoU (N,) float32 of bool masks (N, h, w) with a bool object mask (h, w)."""
    m = masks.flatten(1).float()
    o = object_mask.flatten().float()
    inter = m @ o
    union = m.sum(1) + o.sum() - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def per_pixel_segments(mask_logits: torch.Tensor, scores: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-overlapping segments: every region pixel goes to the candidate with the highest
    ``score * sigmoid(logit)``.

    Args:
        mask_logits: (T, h, w) float mask logits of T candidates; scores: (T,) float.

    Returns:
        ``(masks, index, region)``: masks (S, h, w) bool of the S candidates that win at least one
        region pixel, in candidate order; index (S,) int64 into the T candidates; region (h, w)
        bool = pixels where any logit > 0.
    """
    region = (mask_logits > 0).any(0)
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0,) + mask_logits.shape[1:], dtype=torch.bool), \
            torch.zeros(0, dtype=torch.long, device=mask_logits.device), region
    _, winner = per_pixel_winner(scores, mask_logits.sigmoid())
    index = torch.unique(winner[region])
    return (winner[None] == index[:, None, None]) & region, index, region


def clustering_segments(
    part_prob: torch.Tensor, mask_logits: torch.Tensor, object_mask: torch.Tensor, *,
    topk: int = 200, min_area_ratio: float = 0.0, min_score: float = 0.0, per_pixel: bool = True,
    apply_object_mask: bool = True, min_object_iou: float = 0.001,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 1 for one object: the part segments whose query features get clustered.

    Top-``topk`` queries by part probability; per-pixel mode (PART_RANKING.USE_PER_PIXEL_LABEL_
    DURING_CLUSTERING) takes :func:`per_pixel_segments`, else masks = logit > 0; drop segments
    with area / region <= ``min_area_ratio`` (MIN_AREA_RATIO_1), then score <= ``min_score``
    (MIN_SCORE_1); multiply by the object mask (APPLY_MASKING_WITH_OBJECT_MASK); keep those with
    IoU with the object > ``min_object_iou``.

    Args:
        part_prob: (Q,) float part probability of each query.
        mask_logits: (Q, h, w) float mask logits.
        object_mask: (h, w) bool.

    Returns:
        ``(masks (S, h, w) bool, scores (S,) float, queries (S,) int64 indices into Q)``.
    """
    scores, top = part_prob.topk(min(topk, part_prob.numel()))
    logits = mask_logits[top]
    if per_pixel:
        masks, index, region = per_pixel_segments(logits, scores)
    else:
        region = (logits > 0).any(0)
        masks, index = logits > 0, torch.arange(len(top), device=top.device)
    keep = area_then_score_keep(masks.flatten(1).sum(1), scores[index], region.sum(),
                                min_area_ratio, min_score)
    masks, index = masks[keep], index[keep]
    if apply_object_mask:
        masks = masks & object_mask
    fg = object_iou(masks, object_mask) > min_object_iou
    return masks[fg], scores[index[fg]], top[index[fg]]


def labelling_segments(
    part_prob: torch.Tensor, mask_logits: torch.Tensor, logits_k: torch.Tensor,
    object_mask: torch.Tensor, *, topk: int = 200, min_area_ratio: float = 0.0,
    min_score: float = 0.0, per_pixel: bool = True, apply_object_mask: bool = True,
    min_object_iou: float = 0.001,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 2 for one object: labelled part segments.

    Pair score of (query q, cluster k) = part_prob[q] x softmax_k(cluster logits[q]); the top
    ``topk`` pairs give candidates with label k and mask = query q's mask logits (times the object
    mask with ``apply_object_mask``: logits become 0 outside it). Per-pixel mode
    (USE_PER_PIXEL_LABEL_DURING_LABELING): per-pixel winner among the candidates, then segments
    of the same label merged (union, max score); else masks = logit > 0 per candidate. Then the
    MIN_AREA_RATIO_2 / MIN_SCORE_2 filters and IoU with the object > ``min_object_iou``.

    Args:
        part_prob: (Q,) float; mask_logits: (Q, h, w) float; logits_k: (Q, K) float cluster logits
        (:func:`~part_distillation.modeling.part_clustering.cluster_logits`); object_mask (h, w)
        bool.

    Returns:
        ``(masks (L, h, w) bool, scores (L,) float, labels (L,) int64 in [0, K))``; in per-pixel
        mode the masks do not overlap and labels are distinct, in increasing order.
    """
    k = logits_k.shape[1]
    pair = part_prob[:, None] * logits_k.float().softmax(-1)
    scores, flat = pair.flatten().topk(min(topk, pair.numel()))
    query, labels = flat // k, flat % k
    logits = mask_logits[query]
    if apply_object_mask:
        logits = logits * object_mask
    if per_pixel:
        seg, index, region = per_pixel_segments(logits, scores)
        if index.numel() == 0:  # no pixel with a positive mask logit: nothing to label
            return (torch.zeros((0,) + tuple(object_mask.shape), dtype=torch.bool, device=scores.device),
                    scores[:0], labels[:0])
        labels_u, inverse = torch.unique(labels[index], return_inverse=True)
        # merge segments of the same label: (L, S) membership x (S, h*w) masks
        member = F.one_hot(inverse, len(labels_u)).T.float()
        masks = (member @ seg.flatten(1).float() > 0).view((len(labels_u),) + seg.shape[1:])
        best = torch.full((len(labels_u),), -1.0, device=scores.device)
        best = best.scatter_reduce(0, inverse, scores[index], reduce="amax")
        scores, labels = best, labels_u
    else:
        region = (logits > 0).any(0)
        masks = logits > 0
    keep = area_then_score_keep(masks.flatten(1).sum(1), scores, region.sum(), min_area_ratio,
                                min_score)
    masks, scores, labels = masks[keep], scores[keep], labels[keep]
    fg = object_iou(masks, object_mask) > min_object_iou
    return masks[fg], scores[fg], labels[fg]


@META_ARCH_REGISTRY.register()
class PartRankingModel(ProposalModel):
    """The stage-4 :class:`ProposalModel` (same modules, so its checkpoint loads unchanged) with the
    two part-ranking passes as inference. Eval-only.

    Inputs (one dict per image): ``image`` (3, h, w) at the input resolution (the stage uses a
    640 px fit: INPUT.MIN_SIZE_TEST = MAX_SIZE_TEST = 640, padded to the size divisibility),
    ``object_masks`` (O, h, w) bool at the input resolution, ``height`` / ``width`` of the
    original image and, for pass 2, ``centroids``: O entries, each (K_o, C) float or None.

    Outputs (one dict per image):

    * pass 1 (no ``centroids`` key): ``{"features": [(S_o, C) float32 CPU per object]}``, the
      ``PROPOSAL_KEY`` features of the kept segments, L2-normalised with PROPOSAL_FEATURE_NORM;
      with ``with_segments: True`` in the input also ``"segments": [{"masks": (S_o, H, W) bool at
      the original size, "scores": (S_o,)} per object]``, the kept segments themselves (what the
      stage-4 predictor, :class:`~part_distillation.stages.proposal_learning.ProposalLearningStage`, writes);
    * pass 2: ``{"parts": [per object None (no centroids) or {"masks": (L, H, W) bool at the
      original size, "scores": (L,), "labels": (L,) int64}]}`` (CPU). Masks are computed at the
      input resolution and upsampled bilinearly (> 0.5); callers clip them to the full-resolution
      object mask.
    """

    @configurable
    def __init__(self, *, classifier_metric: str, proposal_key: str,
                 feature_norm: bool, min_area_ratio_1: float, min_score_1: float,
                 min_area_ratio_2: float, min_score_2: float, per_pixel_clustering: bool,
                 per_pixel_labeling: bool, apply_object_mask_ranking: bool, **kwargs):
        """Args: the PART_RANKING keys (see :meth:`from_config`) plus :class:`ProposalModel`'s."""
        super().__init__(**kwargs)
        self.classifier_metric = classifier_metric
        self.proposal_key = proposal_key
        self.feature_norm = feature_norm
        self.pass1 = dict(topk=self.test_topk, min_area_ratio=min_area_ratio_1,
                          min_score=min_score_1, per_pixel=per_pixel_clustering,
                          apply_object_mask=apply_object_mask_ranking)
        self.pass2 = dict(topk=self.test_topk, min_area_ratio=min_area_ratio_2,
                          min_score=min_score_2, per_pixel=per_pixel_labeling,
                          apply_object_mask=apply_object_mask_ranking)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """:meth:`ProposalModel.from_config` plus PART_RANKING.{CLASSIFIER_METRIC,
        PROPOSAL_KEY, PROPOSAL_FEATURE_NORM, MIN_AREA_RATIO_1, MIN_SCORE_1, MIN_AREA_RATIO_2,
        MIN_SCORE_2, USE_PER_PIXEL_LABEL_DURING_CLUSTERING, USE_PER_PIXEL_LABEL_DURING_LABELING,
        APPLY_MASKING_WITH_OBJECT_MASK}; TEST.DETECTIONS_PER_IMAGE (200) is the top-k of both
        passes."""
        args = super().from_config(cfg)
        pr = cfg.PART_RANKING
        args.update(
            classifier_metric=pr.CLASSIFIER_METRIC,
            proposal_key=pr.PROPOSAL_KEY, feature_norm=pr.PROPOSAL_FEATURE_NORM,
            min_area_ratio_1=pr.MIN_AREA_RATIO_1, min_score_1=pr.MIN_SCORE_1,
            min_area_ratio_2=pr.MIN_AREA_RATIO_2, min_score_2=pr.MIN_SCORE_2,
            per_pixel_clustering=pr.USE_PER_PIXEL_LABEL_DURING_CLUSTERING,
            per_pixel_labeling=pr.USE_PER_PIXEL_LABEL_DURING_LABELING,
            apply_object_mask_ranking=pr.APPLY_MASKING_WITH_OBJECT_MASK)
        return args

    @torch.no_grad()
    def head_outputs(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """Run the network. Per image: ``part_prob`` (Q,), ``mask_logits`` (Q, h, w) at the
        input resolution (padding cropped), ``features`` (Q, C) (``proposal_key``, L2-normalised
        with ``feature_norm``).

        Raises:
            KeyError: the head has no output named ``proposal_key``.
        """
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        if self.proposal_key not in outputs:
            raise KeyError(f"PART_RANKING.PROPOSAL_KEY {self.proposal_key!r} is not a head output "
                           f"({sorted(outputs)})")
        logits = F.interpolate(outputs["pred_masks"].float(), size=images.tensor.shape[-2:],
                               mode="bilinear", align_corners=False)
        part_prob = outputs["pred_logits"].float().softmax(-1)[..., 0]
        feats = outputs[self.proposal_key].float()
        if self.feature_norm:
            feats = F.normalize(feats, dim=-1)
        return [{"part_prob": part_prob[i], "mask_logits": logits[i, :, :h, :w], "features": feats[i]}
                for i, (h, w) in enumerate(images.image_sizes)]

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        """Pass 1 or pass 2 (see the class docstring).

        Raises:
            RuntimeError: called in training mode.
            ValueError: object masks not at the input resolution, or a ``centroids`` list whose
                length differs from the number of objects.
        """
        if self.training:
            raise RuntimeError("PartRankingModel is inference-only; call .eval() first")
        results = []
        for x, out in zip(batched_inputs, self.head_outputs(batched_inputs)):
            objects = self.input_object_masks(x, out["mask_logits"].shape[-2:])
            size = (int(x.get("height", objects.shape[1])), int(x.get("width", objects.shape[2])))
            if "centroids" not in x:
                segs = [clustering_segments(out["part_prob"], out["mask_logits"], obj, **self.pass1)
                        for obj in objects]
                results.append({"features": [out["features"][q].cpu() for _, _, q in segs]})
                if x.get("with_segments", False):
                    results[-1]["segments"] = [{"masks": _upsample(m, size).cpu(), "scores": sc.cpu()}
                                               for m, sc, _ in segs]
                continue
            if len(x["centroids"]) != len(objects):
                raise ValueError(f"{len(x['centroids'])} centroid sets for {len(objects)} objects")
            results.append({"parts": [self._label_object(out, obj, c, size)
                                      for obj, c in zip(objects, x["centroids"])]})
        return results

    def _label_object(self, out: Dict[str, torch.Tensor], obj: torch.Tensor,
                      centroids: Optional[torch.Tensor], size: Tuple[int, int]) -> Optional[Dict]:
        """Pass 2 on one object, masks upsampled to ``size``; None without centroids."""
        if centroids is None:
            return None
        logits_k = cluster_logits(out["features"], centroids.to(self.device), self.classifier_metric)
        masks, scores, labels = labelling_segments(out["part_prob"], out["mask_logits"], logits_k,
                                                   obj, **self.pass2)
        return {"masks": _upsample(masks, size).cpu(), "scores": scores.cpu(), "labels": labels.cpu()}


def _upsample(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(S, h, w) bool masks at the input resolution -> (S, H, W) bool at ``size`` (bilinear, > 0.5)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0,) + tuple(size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[None].float(), size=size, mode="bilinear", align_corners=False)[0] > 0.5
