"""Class-agnostic part-proposal model of PartDistillation stage 4 ("part-proposal learning",
Cho et al., CVPR 2023, Sec. 3.2): a Mask2Former (backbone + :class:`MaskFormerHead`) with one
foreground class, "part", trained on the dense-CRF pseudo-labels of stage 3.

Registered in detectron2's ``META_ARCH_REGISTRY`` as ``ProposalModel`` (the official
``MODEL.META_ARCHITECTURE`` name), so that ``detectron2.modeling.build_model(cfg)`` builds it and
checkpoint keys are ``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``
(official Mask2Former layout: official checkpoints load into it, see
:mod:`part_distillation.modeling.weights`).

Inputs (one dict per image, as produced by
:class:`part_distillation.data.proposal_dataset.ProposalDatasetMapper` /
:class:`~part_distillation.data.proposal_dataset.PartEvalDatasetMapper`):

* ``image``: (3, h, w) uint8/float tensor in ``INPUT.FORMAT`` channel order, at the input
  resolution (after the mapper's resize).
* training: ``instances`` with ``gt_masks`` (T, h, w) ``BitMasks`` (the parts, class-agnostic).
* inference: ``object_masks`` (O, h, w) bool tensor at the input resolution, and the original
  image size ``height`` / ``width`` that predictions are returned at.
"""
import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList
from torch import nn

from ..criterion import SetCriterion
from ..matcher import HungarianMatcher

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("proposals", "per_pixel")


def freeze_parameters(model: nn.Module, prefixes: Sequence[str]) -> Tuple[int, int]:
    """Set ``requires_grad=False`` on every parameter whose name equals a prefix or starts with
    ``prefix + "."`` (MODEL.MASK_FORMER.FREEZE_KEYS, e.g. ``"backbone"``,
    ``"sem_seg_head.pixel_decoder.transformer"``).

    Returns:
        ``(tensors, values)``: number of frozen parameter tensors and of scalar parameters.

    Raises:
        ValueError: naming a prefix that matches no parameter (a misspelt key would otherwise
            silently train everything).
    """
    named = list(model.named_parameters())
    tensors, values = 0, 0
    for prefix in prefixes:
        matched = [p for n, p in named if n == prefix or n.startswith(prefix + ".")]
        if not matched:
            raise ValueError(f"MODEL.MASK_FORMER.FREEZE_KEYS: prefix '{prefix}' matches no "
                             f"parameter of {type(model).__name__}")
        for p in matched:
            if p.requires_grad:
                p.requires_grad_(False)
                tensors += 1
                values += p.numel()
    return tensors, values


@META_ARCH_REGISTRY.register()
class ProposalModel(nn.Module):
    """Mask2Former with NUM_CLASSES = 1 ("part" vs. no-object) for part proposals.

    Training returns the criterion's losses multiplied by ``criterion.weight_dict``. Inference
    returns, per image, for each object of ``object_masks``:

    * ``"proposals"``: dict with ``pred_masks`` (N, H, W) bool, ``scores`` (N,) float32 and
      ``decoder_output`` (N, C) float32 (the kept queries' normalised decoder features, which part
      ranking clusters), at the original image size H x W;
    * ``"part_seg"``: (H, W) int64 label map, 0 = not a part, ``i + 1`` = i-th kept segment.

    Scores follow Mask2Former's instance inference: softmax probability of "part" times the mean
    sigmoid mask probability inside the predicted (> 0.5) mask. With ``apply_object_mask`` the
    mask probabilities are multiplied by the object mask first (official
    PROPOSAL_LEARNING.APPLY_MASKING_WITH_OBJECT_MASK), so proposals lie inside the object.

    ``output_mode`` (PROPOSAL_LEARNING.USE_PER_PIXEL_LABEL: "per_pixel" if True) picks the proposals: ``"proposals"`` keeps the
    top-``test_topk`` queries as overlapping masks (``sigmoid > 0.5``); ``"per_pixel"`` keeps
    non-overlapping segments, every object pixel going to the kept query with the highest
    ``score * sigmoid(mask)``, after dropping queries with score < ``min_score`` and segments whose
    area is below ``min_area_ratio`` of the object (pixels of dropped segments are re-assigned to
    the remaining ones). ``part_seg`` is this per-pixel map in both modes.

    Modules named by ``freeze_keys`` are frozen: parameters ``requires_grad=False`` and the modules
    kept in eval mode during training (BatchNorm statistics, dropout and drop-path are fixed too),
    so a frozen module is a constant function.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module, criterion: SetCriterion,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int,
                 deep_supervision: bool, test_topk: int, apply_object_mask: bool,
                 output_mode: str, min_area_ratio: float, min_score: float,
                 freeze_keys: Sequence[str] = ()):
        """
        Args:
            backbone: detectron2 backbone (``output_shape()`` feeds the head).
            sem_seg_head: :class:`MaskFormerHead` with one class.
            criterion: :class:`SetCriterion` (unweighted losses; ``weight_dict`` applied here).
            pixel_mean, pixel_std: per-channel normalisation in the input's channel order
                (MODEL.PIXEL_MEAN / PIXEL_STD).
            size_divisibility: pad the batch to a multiple of this (MODEL.MASK_FORMER.SIZE_DIVISIBILITY;
                < 0 -> the backbone's ``size_divisibility``).
            deep_supervision: also train the auxiliary predictions (MASK_FORMER.DEEP_SUPERVISION).
            test_topk: proposals kept per object (TEST.DETECTIONS_PER_IMAGE, at most Q).
            apply_object_mask: multiply mask probabilities by the object mask.
            output_mode: ``"proposals"`` or ``"per_pixel"`` (see class docstring).
            min_area_ratio, min_score: ``per_pixel`` filters (PROPOSAL_LEARNING.MIN_AREA_RATIO,
                MIN_SCORE).
            freeze_keys: parameter-name prefixes to freeze (MODEL.MASK_FORMER.FREEZE_KEYS).

        Raises:
            ValueError: unknown ``output_mode`` or a freeze prefix matching nothing.
        """
        super().__init__()
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, "
                             f"got {output_mode!r}")
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility if size_divisibility >= 0 else backbone.size_divisibility
        self.deep_supervision = deep_supervision
        self.test_topk = test_topk
        self.apply_object_mask = apply_object_mask
        self.output_mode = output_mode
        self.min_area_ratio = min_area_ratio
        self.min_score = min_score
        self.freeze_keys = list(freeze_keys)
        tensors, values = freeze_parameters(self, self.freeze_keys)
        if self.freeze_keys:
            logger.info("FREEZE_KEYS %s: froze %d parameter tensors (%d parameters)",
                        self.freeze_keys, tensors, values)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Build from MODEL.{BACKBONE, SEM_SEG_HEAD, MASK_FORMER, PIXEL_MEAN, PIXEL_STD},
        TEST.DETECTIONS_PER_IMAGE and PROPOSAL_LEARNING.{APPLY_MASKING_WITH_OBJECT_MASK,
        USE_PER_PIXEL_LABEL, MIN_AREA_RATIO, MIN_SCORE}.

        Matching costs and loss weights are MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT (official: the
        same numbers weigh both), with ``_{i}`` copies for the DEC_LAYERS - 1 auxiliary
        predictions when DEEP_SUPERVISION.

        Raises:
            ValueError: MODEL.SEM_SEG_HEAD.NUM_CLASSES is not 1.
        """
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != 1:
            raise ValueError("ProposalModel is class-agnostic: MODEL.SEM_SEG_HEAD.NUM_CLASSES must "
                             f"be 1, got {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}")
        mf = cfg.MODEL.MASK_FORMER
        backbone = build_backbone(cfg)
        head = build_sem_seg_head(cfg, backbone.output_shape())
        matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT,
                                   cost_dice=mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS)
        weights = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
        weight_dict = dict(weights)
        if mf.DEEP_SUPERVISION:
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in weights.items()})
        criterion = SetCriterion(
            num_classes=1, matcher=matcher, weight_dict=weight_dict, eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=("labels", "masks"), num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO, importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO)
        pl = cfg.PROPOSAL_LEARNING
        return {
            "backbone": backbone,
            "sem_seg_head": head,
            "criterion": criterion,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "test_topk": cfg.TEST.DETECTIONS_PER_IMAGE,
            "apply_object_mask": pl.APPLY_MASKING_WITH_OBJECT_MASK,
            "output_mode": "per_pixel" if pl.USE_PER_PIXEL_LABEL else "proposals",
            "min_area_ratio": pl.MIN_AREA_RATIO,
            "min_score": pl.MIN_SCORE,
            "freeze_keys": mf.FREEZE_KEYS,
        }

    @property
    def device(self) -> torch.device:
        """Device of the model's buffers and parameters."""
        return self.pixel_mean.device

    def train(self, mode: bool = True) -> "ProposalModel":
        """``nn.Module.train``, except that modules named by ``freeze_keys`` (and their children)
        stay in eval mode."""
        super().train(mode)
        for name, module in self.named_modules():
            if any(name == p or name.startswith(p + ".") for p in self.freeze_keys):
                module.eval()
        return self

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of weighted scalar losses. Inference: list of per-image dicts
        ``{"proposals": [...], "part_seg": [...]}`` (one entry per object; see class docstring).

        Raises:
            KeyError: an inference input lacks ``object_masks``.
        """
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        if self.training:
            if not self.deep_supervision:
                outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
            losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
            return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}
        return self.inference(batched_inputs, images, outputs)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Part masks of each image, zero-padded to the batch's padded size, all labelled 0.

        Returns:
            per image ``{"labels": (T,) int64 zeros, "masks": (T, Hp, Wp) bool}`` on the model's
            device; T may be 0.
        """
        hp, wp = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            gt = x["instances"].gt_masks
            masks = gt.tensor if isinstance(gt, BitMasks) else gt
            masks = masks.to(self.device, dtype=torch.bool)
            padded = torch.zeros((masks.shape[0], hp, wp), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": torch.zeros(masks.shape[0], dtype=torch.int64, device=self.device),
                            "masks": padded})
        return targets

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Per-image, per-object proposals from the decoder outputs (CPU tensors)."""
        mask_logits = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                    mode="bilinear", align_corners=False)
        part_probs = outputs["pred_logits"].float().softmax(-1)[..., 0]  # (B, Q)
        results = []
        for i, x in enumerate(batched_inputs):
            if "object_masks" not in x:
                raise KeyError("ProposalModel inference needs 'object_masks' (O, h, w) bool in "
                               "every input dict")
            h, w = images.image_sizes[i]
            out_size = (int(x.get("height", h)), int(x.get("width", w)))
            probs = mask_logits[i, :, :h, :w].float().sigmoid()  # (Q, h, w)
            object_masks = x["object_masks"].to(self.device, dtype=torch.bool)
            if object_masks.shape[-2:] != (h, w):
                raise ValueError(f"object_masks {tuple(object_masks.shape)} do not match the input "
                                 f"image size {(h, w)}")
            per_object = [self._object_inference(part_probs[i], probs, outputs["decoder_output"][i].float(),
                                                 obj, out_size) for obj in object_masks]
            results.append({"proposals": [p for p, _ in per_object],
                            "part_seg": [s for _, s in per_object]})
        return results

    def _object_inference(self, part_prob: torch.Tensor, probs: torch.Tensor, queries: torch.Tensor,
                          object_mask: torch.Tensor, out_size: Tuple[int, int]
                          ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """One object: ``part_prob`` (Q,), ``probs`` (Q, h, w) sigmoid masks at the input size,
        ``queries`` (Q, C), ``object_mask`` (h, w) bool -> (proposals dict, (H, W) label map)."""
        if self.apply_object_mask:
            probs = probs * object_mask
        binary = probs > 0.5
        mask_score = (probs * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores = part_prob * mask_score
        top_scores, top = scores.topk(min(self.test_topk, scores.numel()))
        full = F.interpolate(probs[top][None], size=out_size, mode="bilinear", align_corners=False)[0]
        full_object = F.interpolate(object_mask[None, None].float(), size=out_size, mode="nearest")[0, 0] > 0.5
        if self.apply_object_mask:
            full = full * full_object
        seg, seg_queries = self._per_pixel(full, top_scores, full_object)
        if self.output_mode == "proposals":
            proposals = {"pred_masks": full > 0.5, "scores": top_scores, "decoder_output": queries[top]}
        else:
            labels = torch.arange(1, len(seg_queries) + 1, device=seg.device)
            proposals = {"pred_masks": seg[None] == labels[:, None, None],
                         "scores": top_scores[seg_queries], "decoder_output": queries[top][seg_queries]}
        return {k: v.cpu() for k, v in proposals.items()}, seg.cpu()

    def _per_pixel(self, probs: torch.Tensor, scores: torch.Tensor, object_mask: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping segments inside the object.

        Args:
            probs: (N, H, W) float mask probabilities, scores: (N,) float (sorted descending),
                object_mask: (H, W) bool.

        Returns:
            ``seg`` (H, W) int64 (0 outside / unassigned, ``j + 1`` = segment j) and
            ``kept`` (S,) int64 indices into ``probs`` of segments ``1..S`` (descending score).
        """
        object_area = object_mask.sum().clamp(min=1)

        def assign(cands: torch.Tensor):
            weighted = scores[cands, None, None] * probs[cands]
            # (H, W) best value and slot into cands; max(0), not argmax(0) + amax(0): one pass,
            # and torch's CPU argmax over the leading dim is several times slower
            best, winner = weighted.max(0)
            assigned = object_mask & (best > 0)
            return winner, assigned, torch.bincount(winner[assigned], minlength=cands.numel())

        candidates = torch.nonzero(scores >= self.min_score).flatten()
        if candidates.numel():
            winner, assigned, areas = assign(candidates)
            big = areas >= self.min_area_ratio * object_area
            if not bool(big.all()):  # drop small segments and re-assign their pixels once
                candidates = candidates[big]
                if candidates.numel():
                    winner, assigned, _ = assign(candidates)
        seg = torch.zeros(probs.shape[-2:], dtype=torch.int64, device=probs.device)
        if candidates.numel() == 0:
            return seg, candidates
        present = torch.unique(winner[assigned])  # candidate slots that won at least one pixel
        relabel = torch.zeros(candidates.numel(), dtype=torch.int64, device=probs.device)
        relabel[present] = torch.arange(1, present.numel() + 1, device=probs.device)
        seg[assigned] = relabel[winner[assigned]]
        return seg, candidates[present]
