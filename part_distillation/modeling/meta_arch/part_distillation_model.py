"""PartDistillation self-training model (stage 6; Cho et al., CVPR 2023, Sec. 3.4): a Mask2Former
that segments the parts of an object of a given class and labels them with that class's K part
classes (the part-ranking clusters of stage 5).

Registered in detectron2's ``META_ARCH_REGISTRY`` as ``PartDistillationModel`` (official
``MODEL.META_ARCHITECTURE``); it needs ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``
``"PartDistillationTransformerDecoder"`` (class head K*O + 1, see
:mod:`part_distillation.modeling.transformer_decoder.part_distillation_transformer_decoder`).
Checkpoint keys are the official Mask2Former ones; ``sem_seg_head.predictor.class_embed.*`` of a
COCO Mask2Former (the official starting point) or of a stage-4 checkpoint differs in shape, is
skipped by detectron2's checkpointer and keeps its fresh initialisation.

Inputs (one dict per image):

* ``image``: (3, h, w) uint8/float tensor in INPUT.FORMAT order at the input resolution.
* training (:class:`part_distillation.data.part_distillation_dataset.PartDistillationDatasetMapper`):
  ``object_class`` int in [0, O) and ``instances`` with ``gt_masks`` (T, h, w) ``BitMasks`` and
  ``gt_classes`` (T,) int64 part labels in [0, K) (T may be 0).
* inference (:class:`~part_distillation.data.part_distillation_dataset.PartDistillationEvalDatasetMapper`):
  ``object_masks`` (N, h, w) bool, ``object_classes`` (N,) int64 (-1 = class unknown to the
  model: empty prediction), the original size ``height`` / ``width``; with
  USE_ORACLE_CLASSIFIER also ``objects[i]["gt_parts"]`` (P, H, W) bool and ``["class_name"]``.
"""
import logging
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ..postprocess import (area_then_score_keep, gt_iou_filter, part_distillation_segments,
                          resize_object_mask)
from .maskformer_model import MaskFormer, build_criterion
from .proposal_model import ProposalModel

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class PartDistillationModel(ProposalModel):
    """Mask2Former with object-class-conditioned part classification.

    Training: the Mask2Former criterion with K classes (Hungarian matching on class + mask cost,
    cross-entropy with no-object weight, point-sampled BCE + dice, deep supervision) on each
    image's logits restricted to its object class; returns the weighted losses. Batches without
    any part give zero mask losses (and a class loss pushing every query to no-object).

    Inference returns, per image, ``{"part_seg": [...], "proposals": [...]}`` with one entry per
    object of ``object_masks``, at the original image size H x W:

    * ``part_seg``: (H, W) int64 label map, **0 = no part** (outside the object, unassigned or
      filtered out), **l + 1 = part class l** (0 <= l < K);
    * ``proposals``: dict with ``pred_masks`` (S, H, W) bool, ``labels`` (S,) int64 in [0, K)
      and ``scores`` (S,) float32, one segment per part class present (descending score).

    How (official ``instance_inference_with_classification``): part probabilities = softmax over
    the object's K + 1 logits of the last prediction, the ``test_topk`` best (query, part class)
    pairs; the object mask is resized to H x W bilinearly and thresholded at > 0 (official
    ``sem_seg_postprocess(...).bool()``). With ``per_pixel`` (PART_DISTILLATION.USE_PER_PIXEL_LABEL)
    the segments are :func:`part_distillation.modeling.postprocess.assign_part_segments` (mask
    logits times the object mask, per-pixel ``score x sigmoid`` winner, merged by label with the
    best score of all the label's winning pairs, area-then-score filter; an empty segment can
    survive with MIN_AREA_RATIO -1, as officially). Without it (ours; the official branch returns
    all-true masks): each pair's mask is ``prob > 0.5`` inside the object, pairs of the same class
    are merged (masks may overlap; ``part_seg`` paints lower scores first) and filtered the same
    way. Dropped segments leave their pixels at 0.

    Evaluation: the outputs above carry no GT-based filter; the unsupervised evaluation
    (:mod:`part_distillation.evaluation.unsupervised`, protocol ``official``) maps, merges and
    filters them as the official model does. The official in-model evaluation mode is also
    available: after :meth:`update_majority_vote_mapping`, objects of the mapped classes get labels
    mapped to GT part ids before merging and the official GT-IoU > 0.1 filter
    (:func:`~part_distillation.modeling.postprocess.gt_iou_filter`) against ``objects[i].parts``.

    ``use_oracle_classifier`` (PART_DISTILLATION.USE_ORACLE_CLASSIFIER, official): segments whose
    best IoU with a GT part mask is <= 0.1 are dropped and each other segment is labelled with its
    best GT part's dataset part id (``objects[i].part_ids``, the dataset's ``part_classes``), not
    merged: an UPPER BOUND that measures the masks, not the classifier; report it as such.
    """

    @configurable
    def __init__(self, *, num_part_classes: int, num_object_classes: int,
                 use_oracle_classifier: bool = False, **kwargs):
        """
        Args:
            num_part_classes: K (PART_DISTILLATION.NUM_PART_CLASSES).
            num_object_classes: O (PART_DISTILLATION.NUM_OBJECT_CLASSES).
            use_oracle_classifier: see class docstring.
            **kwargs: :class:`ProposalModel` arguments (``output_mode`` "per_pixel" or
                "proposals" selects the inference above).

        Raises:
            ValueError: the transformer decoder has no object-conditioned class head, or its K / O
                differ from the arguments.
        """
        super().__init__(**kwargs)
        head = getattr(self.sem_seg_head.predictor, "class_embed", None)
        if getattr(head, "num_part_classes", None) != num_part_classes or \
                getattr(head, "num_object_classes", None) != num_object_classes:
            raise ValueError("PartDistillationModel needs MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME "
                             "'PartDistillationTransformerDecoder' built with the same "
                             "PART_DISTILLATION.NUM_PART_CLASSES / NUM_OBJECT_CLASSES")
        self.num_part_classes = num_part_classes
        self.num_object_classes = num_object_classes
        self.use_oracle_classifier = use_oracle_classifier
        self.majority_vote_mapping: Dict[int, torch.Tensor] = {}
        if use_oracle_classifier:
            logger.warning("PART_DISTILLATION.USE_ORACLE_CLASSIFIER: part labels come from the ground "
                           "truth; the metrics are an UPPER BOUND of the masks, not of the model's labels")

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Build from MODEL.{BACKBONE, SEM_SEG_HEAD, MASK_FORMER, PIXEL_MEAN, PIXEL_STD},
        TEST.DETECTIONS_PER_IMAGE and PART_DISTILLATION.{NUM_PART_CLASSES, NUM_OBJECT_CLASSES,
        USE_PER_PIXEL_LABEL, MIN_AREA_RATIO, MIN_SCORE, APPLY_MASKING_WITH_OBJECT_MASK,
        USE_ORACLE_CLASSIFIER}.

        Criterion (official): K classes, costs and loss weights MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT
        (2 / 5 / 5 in the configs), NO_OBJECT_WEIGHT, matching on TRAIN_NUM_POINTS_MATCH points,
        losses on TRAIN_NUM_POINTS_LOSS points with OVERSAMPLE_RATIO / IMPORTANCE_SAMPLE_RATIO,
        ``_{i}`` copies for the DEC_LAYERS - 1 auxiliary predictions when DEEP_SUPERVISION.
        """
        mf, pd = cfg.MODEL.MASK_FORMER, cfg.PART_DISTILLATION
        return {
            **MaskFormer.common_config(cfg),
            "criterion": build_criterion(cfg, pd.NUM_PART_CLASSES, mf.TRAIN_NUM_POINTS_MATCH,
                                         mf.TRAIN_NUM_POINTS_LOSS),
            "apply_object_mask": pd.APPLY_MASKING_WITH_OBJECT_MASK,
            "output_mode": "per_pixel" if pd.USE_PER_PIXEL_LABEL else "proposals",
            "min_area_ratio": pd.MIN_AREA_RATIO,
            "min_score": pd.MIN_SCORE,
            "num_part_classes": pd.NUM_PART_CLASSES,
            "num_object_classes": pd.NUM_OBJECT_CLASSES,
            "use_oracle_classifier": pd.USE_ORACLE_CLASSIFIER,
        }

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of weighted scalar losses. Inference: list of per-image dicts (see class
        docstring).

        Raises:
            KeyError: a training input lacks ``object_class`` or an inference input lacks
                ``object_masks`` / ``object_classes``.
            ValueError: object classes outside [0, O), part labels outside [0, K).
        """
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(images.tensor)
        if self.training:
            classes = torch.tensor([int(x["object_class"]) for x in batched_inputs],
                                   dtype=torch.int64, device=self.device)
            outputs = self.sem_seg_head(features, classes)
            if not self.deep_supervision:
                outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
            losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
            return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}
        for x in batched_inputs:
            if "object_masks" not in x or "object_classes" not in x:
                raise KeyError("PartDistillationModel inference needs 'object_masks' (N, h, w) bool "
                               "and 'object_classes' (N,) int64 in every input dict")
        # Masks and decoder features do not depend on the object class: decode once with any
        # valid class, then classify each object's queries with its own class below.
        outputs = self.sem_seg_head(features, torch.zeros(len(batched_inputs), dtype=torch.int64,
                                                          device=self.device))
        return self.inference(batched_inputs, images, outputs)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """:meth:`ProposalModel.prepare_targets` with ``labels`` = the instances' ``gt_classes``.

        Raises:
            ValueError: a label outside [0, K).
        """
        targets = super().prepare_targets(batched_inputs, images)
        for target, x in zip(targets, batched_inputs):
            labels = x["instances"].gt_classes.to(self.device, dtype=torch.int64)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_part_classes):
                raise ValueError(f"part labels {labels.tolist()} of {x.get('file_name')} outside "
                                 f"[0, {self.num_part_classes}) (PART_DISTILLATION.NUM_PART_CLASSES)")
            target["labels"] = labels
        return targets

    def update_majority_vote_mapping(self, mapping_dict: Dict[int, torch.Tensor]) -> None:
        """Official evaluation mode: ``mapping_dict`` {object class id: (K,) int64 GT part id of each
        label} (a match split's majority vote, e.g. from
        :meth:`part_distillation.evaluation.unsupervised.UnsupervisedPartMetric.matching`). Objects
        of these classes then get mapped labels (mapped before the segments are merged) and the
        official GT-IoU > 0.1 filter (their inputs must carry ``objects`` with GT ``parts``). An
        empty dict restores the plain inference (official: mode "")."""
        self.majority_vote_mapping = {int(c): torch.as_tensor(m, dtype=torch.int64)
                                      for c, m in mapping_dict.items()}

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Per-image, per-object part segments (CPU tensors); see the class docstring."""
        mask_logits = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                    mode="bilinear", align_corners=False)
        classifier = self.sem_seg_head.predictor.class_embed
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            out_size = (int(x.get("height", h)), int(x.get("width", w)))
            object_masks = self.input_object_masks(x, (h, w))
            classes = torch.as_tensor(x["object_classes"], dtype=torch.int64)
            if len(classes) != len(object_masks):
                raise ValueError(f"object_classes {tuple(classes.shape)} do not match object_masks "
                                 f"{tuple(object_masks.shape)}")
            queries = outputs["decoder_output"][i]
            part_seg, proposals = [], []
            for n, (obj, cls) in enumerate(zip(object_masks, classes.tolist())):
                if cls < 0:  # class unknown to the model (see the eval mapper)
                    seg, props = self._empty(out_size)
                else:
                    probs = classifier(queries[None], torch.tensor([cls]))[0].softmax(-1).float()
                    mapping = self.majority_vote_mapping.get(cls)
                    masks, labels, scores = self._object_inference(
                        probs[:, :-1], mask_logits[i, :, :h, :w], obj, out_size, mapping)
                    if self.use_oracle_classifier or mapping is not None:
                        masks, labels, scores = self._gt_filter(masks, labels, scores,
                                                                x["objects"][n], x.get("file_name"))
                    seg, props = _finish(masks, labels, scores, out_size)
                part_seg.append(seg)
                proposals.append(props)
            results.append({"part_seg": part_seg, "proposals": proposals})
        return results

    def _gt_filter(self, masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, gt,
                   file_name=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official evaluation-mode filter of one object's segments (S, H, W) against its GT
        (``gt.parts`` (P, H, W) bool, ``gt.part_ids`` (P,) dataset part ids): keep the segments
        with best GT IoU > 0.1; with the oracle classifier, label each by its best GT part's id.

        Raises:
            ValueError: oracle classifier and a best GT part outside the dataset's part_classes.
        """
        keep, best = gt_iou_filter(masks, gt.parts)
        masks, labels, scores = masks[keep], labels[keep], scores[keep]
        if self.use_oracle_classifier:  # official: GT dataset part ids, segments not merged
            labels = torch.as_tensor(gt.part_ids, dtype=torch.int64)[best[keep]]
            if bool((labels < 0).any()):
                raise ValueError(f"{file_name}: USE_ORACLE_CLASSIFIER needs every GT part in the "
                                 "dataset's part_classes (part_ids -1)")
        return masks, labels.to(masks.device), scores

    def _empty(self, out_size: Tuple[int, int]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return torch.zeros(out_size, dtype=torch.int64), {
            "pred_masks": torch.zeros((0, *out_size), dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}

    def _object_inference(self, part_probs: torch.Tensor, mask_logits: torch.Tensor,
                          object_mask: torch.Tensor, out_size: Tuple[int, int], mapping=None
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One object: ``part_probs`` (Q, K) float, ``mask_logits`` (Q, h, w) at the input size,
        ``object_mask`` (h, w) bool, ``mapping`` None or (K,) int64 -> ``(masks (S, H, W) bool,
        labels (S,), scores (S,))`` at ``out_size`` before any GT-based filter."""
        full_object = resize_object_mask(object_mask, out_size)
        if self.output_mode == "per_pixel":
            return part_distillation_segments(
                part_probs, mask_logits, full_object if self.apply_object_mask else None, out_size,
                topk=self.test_topk, min_area_ratio=self.min_area_ratio, min_score=self.min_score,
                label_mapping=mapping)
        # overlapping masks (ours; the official non-per-pixel branch returns all-true masks):
        # each pair's mask is prob > 0.5 (inside the object), merged by label, then filtered
        k = part_probs.shape[1]
        scores, pairs = part_probs.flatten().topk(min(self.test_topk, part_probs.numel()))
        labels = pairs % k
        if mapping is not None:
            labels = mapping.to(labels.device)[labels]
        probs = F.interpolate(mask_logits[pairs // k][None], size=out_size, mode="bilinear",
                              align_corners=False)[0].sigmoid()
        if self.apply_object_mask:
            probs = probs * full_object
        region = (probs > 0.5).any(0)
        masks, labels, scores = merge_by_label(probs > 0.5, labels, scores)
        keep = area_then_score_keep(masks.flatten(1).sum(1), scores, region.sum(),
                                    self.min_area_ratio, self.min_score)
        return masks[keep], labels[keep], scores[keep]


def merge_by_label(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Union of the masks of each label (overlapping-masks inference).

    Args:
        masks: (N, H, W) bool; labels: (N,) int64; scores: (N,) float.

    Returns:
        ``(masks (S, H, W) bool, labels (S,) int64 ascending, scores (S,) float)``, one entry per
        label whose union is non-empty, scored by the best of its non-empty masks.
    """
    nonempty = masks.flatten(1).any(1)
    masks, labels, scores = masks[nonempty], labels[nonempty], scores[nonempty]
    unique, inverse = torch.unique(labels, return_inverse=True)
    merged = torch.zeros((len(unique), *masks.shape[1:]), dtype=torch.bool, device=masks.device)
    for j in range(len(unique)):
        merged[j] = masks[inverse == j].any(0)
    best = torch.full((len(unique),), float("-inf"), dtype=scores.dtype, device=scores.device)
    best.scatter_reduce_(0, inverse, scores, "amax")
    return merged, unique, best


def _finish(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
            out_size: Tuple[int, int]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Drop empty segments (the official post-processing can keep them; they hold no pixel), sort
    by descending score, paint the label map (lower scores first, so the best segment wins
    overlaps; 0 = no part, l + 1 = label l) and move everything to the CPU."""
    nonempty = masks.flatten(1).any(1)
    masks, labels, scores = masks[nonempty], labels[nonempty], scores[nonempty]
    order = scores.argsort(descending=True)
    masks, labels, scores = masks[order], labels[order], scores[order]
    seg = torch.zeros(out_size, dtype=torch.int64, device=masks.device)
    for m, l in zip(masks.flip(0), labels.flip(0)):
        seg[m] = l + 1
    return seg.cpu(), {"pred_masks": masks.cpu(), "labels": labels.cpu(),
                       "scores": scores.float().cpu()}
