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

from .maskformer_model import MaskFormer, build_criterion
from .proposal_model import ProposalModel

logger = logging.getLogger(__name__)

ORACLE_MIN_IOU = 0.1  # official fg threshold: segments matching no GT part better are dropped


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

    How (official instance inference with classification): part probabilities = softmax over the
    object's K + 1 logits of the last prediction, the ``test_topk`` best (query, part class)
    pairs, their masks' sigmoid probabilities (times the object mask when ``apply_object_mask``).
    With ``per_pixel`` (PART_DISTILLATION.USE_PER_PIXEL_LABEL): region = pixels where some pair's
    probability > 0.5, each region pixel goes to the pair with the highest ``score * prob``;
    pixels of the same part class are merged (union; score = best winning pair). Without it:
    each pair's mask is ``prob > 0.5`` and pairs of the same class are merged the same way
    (masks may overlap across classes; ``part_seg`` paints lower scores first). Then segments
    with area / region area <= ``min_area_ratio`` are dropped, then those with score <=
    ``min_score`` (PART_DISTILLATION.MIN_AREA_RATIO, MIN_SCORE; each filter applies only when
    some segment survives it, as in the official code). Dropped segments leave their pixels at 0.

    ``use_oracle_classifier`` (PART_DISTILLATION.USE_ORACLE_CLASSIFIER) replaces each segment's
    label by its best-IoU ground-truth part (ids numbered per object class in order of first
    appearance of the part name), drops segments whose best IoU <= 0.1 and merges equal labels:
    an UPPER BOUND that measures the masks, not the classifier; report it as such.
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
        self._oracle_part_ids: Dict[str, List[str]] = {}
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
                    seg, props = self._object_inference(probs[:, :-1], mask_logits[i, :, :h, :w],
                                                        obj, out_size)
                    if self.use_oracle_classifier:
                        gt = x["objects"][n]
                        seg, props = self._oracle(props, gt["gt_parts"], list(gt["gt_part_names"]),
                                                  gt["class_name"], out_size)
                part_seg.append(seg)
                proposals.append(props)
            results.append({"part_seg": part_seg, "proposals": proposals})
        return results

    def _empty(self, out_size: Tuple[int, int]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return torch.zeros(out_size, dtype=torch.int64), {
            "pred_masks": torch.zeros((0, *out_size), dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}

    def _object_inference(self, part_probs: torch.Tensor, mask_logits: torch.Tensor,
                          object_mask: torch.Tensor, out_size: Tuple[int, int]
                          ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """One object: ``part_probs`` (Q, K) float, ``mask_logits`` (Q, h, w) at the input size,
        ``object_mask`` (h, w) bool -> ((H, W) int64 label map, proposals dict), on the CPU."""
        k = part_probs.shape[1]
        scores, pairs = part_probs.flatten().topk(min(self.test_topk, part_probs.numel()))
        queries, labels = pairs // k, pairs % k
        # a query's best pair is its first (pairs are sorted by descending score)
        unique_queries, slot = torch.unique(queries, return_inverse=True)
        first = torch.full((len(unique_queries),), len(pairs), dtype=torch.int64, device=pairs.device)
        first.scatter_reduce_(0, slot, torch.arange(len(pairs), device=pairs.device), "amin")
        probs = F.interpolate(mask_logits[unique_queries][None], size=out_size, mode="bilinear",
                              align_corners=False)[0].sigmoid()  # (U, H, W)
        if self.apply_object_mask:
            full_object = F.interpolate(object_mask[None, None].float(), size=out_size,
                                        mode="nearest")[0, 0] > 0.5
            probs = probs * full_object
        region = (probs > 0.5).any(0)
        if self.output_mode == "per_pixel":
            # the best pair of a pixel is the best pair of its best query: max over queries of
            # (the query's best score) * prob, as the official max over all pairs
            winner = (scores[first][:, None, None] * probs).argmax(0)
            slots = torch.arange(len(unique_queries), device=probs.device)[:, None, None]
            masks, labels, scores = (winner[None] == slots) & region, labels[first], scores[first]
        else:
            masks = (probs > 0.5)[slot]  # one mask per pair
        masks, labels, scores = merge_by_label(masks, labels, scores)
        masks, labels, scores = filter_segments(masks, labels, scores, region.sum(),
                                                self.min_area_ratio, self.min_score)
        return _finish(masks, labels, scores, out_size)

    def _oracle(self, proposals: Dict[str, torch.Tensor], gt_parts, gt_part_names: List[str],
                class_name: str, out_size: Tuple[int, int]
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Relabel segments by their best-IoU GT part: ``gt_parts`` (P, H, W) bool at the output
        size, ``gt_part_names`` (P,); see the class docstring."""
        gt = torch.as_tensor(gt_parts, dtype=torch.bool).flatten(1).float()  # (P, HW)
        masks = proposals["pred_masks"]
        if len(gt) == 0 or len(masks) == 0:
            return self._empty(out_size)
        pred = masks.flatten(1).float()
        inter = pred @ gt.T
        iou = inter / (pred.sum(1)[:, None] + gt.sum(1)[None] - inter).clamp(min=1)
        best_iou, best = iou.max(1)
        keep = best_iou > ORACLE_MIN_IOU
        names = self._oracle_part_ids.setdefault(class_name, [])
        ids = []
        for j in best[keep].tolist():
            if gt_part_names[j] not in names:
                names.append(gt_part_names[j])
            ids.append(names.index(gt_part_names[j]))
        merged = merge_by_label(masks[keep], torch.tensor(ids, dtype=torch.int64),
                                proposals["scores"][keep])
        return _finish(*merged, out_size)


def merge_by_label(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Union of the masks of each label.

    Args:
        masks: (N, H, W) bool; labels: (N,) int64; scores: (N,) float.

    Returns:
        ``(masks (S, H, W) bool, labels (S,) int64 ascending, scores (S,) float)``, one entry per
        label whose union is non-empty; its score is the best score among that label's non-empty
        masks (official: the best of the queries that won pixels).
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


def filter_segments(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                    region_area, min_area_ratio: float, min_score: float
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official PART_DISTILLATION.MIN_AREA_RATIO then MIN_SCORE filters: keep segments with area /
    ``region_area`` > ``min_area_ratio``, then those with score > ``min_score``; each filter is
    skipped when it would remove every segment. Shapes as :func:`merge_by_label`'s outputs."""
    area_ratio = masks.flatten(1).sum(1).float() / max(float(region_area), 1.0)
    for keep in (lambda: area_ratio > min_area_ratio, lambda: scores > min_score):
        k = keep()
        if bool(k.any()):
            masks, labels, scores, area_ratio = masks[k], labels[k], scores[k], area_ratio[k]
    return masks, labels, scores


def _finish(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
            out_size: Tuple[int, int]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Sort by descending score, paint the label map (lower scores first, so the best segment
    wins overlaps; 0 = no part, l + 1 = label l) and move everything to the CPU."""
    order = scores.argsort(descending=True)
    masks, labels, scores = masks[order], labels[order], scores[order]
    seg = torch.zeros(out_size, dtype=torch.int64, device=masks.device)
    for m, l in zip(masks.flip(0), labels.flip(0)):
        seg[m] = l + 1
    return seg.cpu(), {"pred_masks": masks.cpu(), "labels": labels.cpu(),
                       "scores": scores.float().cpu()}
