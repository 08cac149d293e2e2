"""Mask2Former set criterion (Cheng et al., CVPR 2022, Sec. 3.3 and 4.1).

After Hungarian matching, each prediction is supervised with a cross-entropy class loss (matched
predictions: their target's class; unmatched: "no object", down-weighted by ``eos_coef``), and
each matched mask with a sigmoid binary cross-entropy and a dice loss computed on ``num_points``
points per mask chosen by PointRend's uncertainty-based importance sampling (Kirillov et al.,
CVPR 2020, Sec. 3.1): ``oversample_ratio * num_points`` random candidates, of which the
``importance_sample_ratio * num_points`` with the smallest ``|logit|`` are kept, the rest of the
points being uniformly random. Official config keys: MODEL.MASK_FORMER.{NO_OBJECT_WEIGHT,
TRAIN_NUM_POINTS, OVERSAMPLE_RATIO, IMPORTANCE_SAMPLE_RATIO}.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean sigmoid BCE, summed over masks and divided by ``num_masks``.

    Args:
        logits: (N, P) float mask logits at P points; targets: (N, P) float in [0, 1].
        num_masks: normaliser (number of target masks in the batch, averaged over workers).

    Returns:
        scalar float tensor.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return bce.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss ``1 - (2 <s, t> + 1) / (sum s + sum t + 1)`` per mask (``s = sigmoid(logits)``),
    summed over masks and divided by ``num_masks``. Shapes as :func:`sigmoid_bce_loss`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def _uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """(R, 1, P) mask logits -> (R, 1, P) uncertainty ``-|logit|`` (highest at the boundary)."""
    return -logits.abs()


class SetCriterion(nn.Module):
    """Hungarian-matched class + mask losses of Mask2Former, with deep supervision.

    The returned losses are NOT multiplied by ``weight_dict``; the meta-architecture does that
    (``loss * weight_dict[name]``), as in the official code. ``weight_dict`` is stored for it.

    Args:
        num_classes: foreground classes K (the logits have K + 1 entries, the last = no object).
        matcher: callable ``(outputs, targets) -> [(pred_idx, tgt_idx)] * B`` such as
            :class:`part_distillation.modeling.matcher.HungarianMatcher`.
        weight_dict: loss name -> weight (``loss_ce``, ``loss_mask``, ``loss_dice`` and their
            ``_{i}`` auxiliary copies), from MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT.
        eos_coef: class-loss weight of the no-object class (MODEL.MASK_FORMER.NO_OBJECT_WEIGHT).
        losses: subset of ``("labels", "masks")`` to compute.
        num_points: points per mask for the mask losses (TRAIN_NUM_POINTS).
        oversample_ratio: candidate points per kept point, k >= 1 (OVERSAMPLE_RATIO).
        importance_sample_ratio: fraction of the points taken by uncertainty, beta in [0, 1]
            (IMPORTANCE_SAMPLE_RATIO).
    """

    def __init__(self, num_classes: int, matcher: nn.Module, weight_dict: Dict[str, float],
                 eos_coef: float = 0.1, losses: Sequence[str] = ("labels", "masks"),
                 num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75):
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected 'labels' and/or 'masks'")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]],
                    indices: List[Tuple[torch.Tensor, torch.Tensor]], num_masks: float
                    ) -> Dict[str, torch.Tensor]:
        """``loss_ce``: weighted mean cross-entropy over all B * Q predictions of
        ``outputs["pred_logits"]`` (B, Q, K+1); unmatched predictions target class K."""
        logits = outputs["pred_logits"].float()
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        for b, (target, (pred_idx, tgt_idx)) in enumerate(zip(targets, indices)):
            target_classes[b, pred_idx.to(logits.device)] = target["labels"][tgt_idx].to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss}

    def loss_masks(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]],
                   indices: List[Tuple[torch.Tensor, torch.Tensor]], num_masks: float
                   ) -> Dict[str, torch.Tensor]:
        """``loss_mask`` (sigmoid BCE) and ``loss_dice`` of the matched masks of
        ``outputs["pred_masks"]`` (B, Q, h, w) logits against the targets' ``masks`` (T_b, H, W),
        compared at points in normalised image coordinates (so h, w may differ from H, W). With no
        matched mask in the batch both are 0, computed from the predictions so that every
        parameter still receives a (zero) gradient."""
        pred_masks = outputs["pred_masks"]
        src = [pred_masks[b, pred_idx.to(pred_masks.device)] for b, (pred_idx, _) in enumerate(indices)]
        counts = [s.shape[0] for s in src]
        if sum(counts) == 0:
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src_masks = torch.cat(src)[:, None]  # (N, 1, h, w)

        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src_masks, _uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)  # (N, P, 2) in [0, 1], (x, y)
            labels = []
            for coords_b, target, (_, tgt_idx) in zip(coords.split(counts), targets, indices):
                if coords_b.shape[0] == 0:
                    continue
                tgt = target["masks"][tgt_idx.to(target["masks"].device)]
                tgt = tgt.to(device=src_masks.device, dtype=src_masks.dtype)[:, None]
                labels.append(point_sample(tgt, coords_b, align_corners=False)[:, 0])
            point_labels = torch.cat(labels)
        point_logits = point_sample(src_masks, coords, align_corners=False)[:, 0]
        return {
            "loss_mask": sigmoid_bce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def _losses(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        losses = {}
        if "labels" in self.losses:
            losses.update(self.loss_labels(outputs, targets, indices, num_masks))
        if "masks" in self.losses:
            losses.update(self.loss_masks(outputs, targets, indices, num_masks))
        return losses

    def _num_masks(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """Target masks per worker: the batch's count, summed over workers and divided by the
        world size (detectron2 comm), at least 1."""
        total = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = comm.get_world_size()
        if world > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        return torch.clamp(total / world, min=1).item()

    def forward(self, outputs: Dict[str, object], targets: List[Dict[str, torch.Tensor]]
                ) -> Dict[str, torch.Tensor]:
        """Compute the (unweighted) losses.

        Args:
            outputs: the decoder's dict: ``pred_logits`` (B, Q, K+1), ``pred_masks``
                (B, Q, h, w) and optionally ``aux_outputs`` (list of such dicts); other keys
                (``decoder_output``) are ignored.
            targets: B dicts with ``labels`` (T_b,) int64 and ``masks`` (T_b, H, W) bool/float in
                the predictions' image frame; ``T_b`` may be 0.

        Returns:
            scalar losses ``loss_ce``, ``loss_mask``, ``loss_dice`` for the final prediction and
            ``loss_ce_{i}``, ``loss_mask_{i}``, ``loss_dice_{i}`` for ``aux_outputs[i]`` (each
            matched separately), restricted to ``self.losses``.
        """
        final = {k: v for k, v in outputs.items() if k in ("pred_logits", "pred_masks")}
        num_masks = self._num_masks(targets, final["pred_logits"].device)
        losses = self._losses(final, targets, self.matcher(final, targets), num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self._losses(aux, targets, self.matcher(aux, targets), num_masks)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses
