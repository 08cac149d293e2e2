"""Bipartite (Hungarian) matching of predicted masks to target masks (Mask2Former, Sec. 3.3/4.1).

The matching cost of prediction ``q`` and target ``t`` is
``cost_class * (-p_q(label_t)) + cost_mask * BCE(q, t) + cost_dice * dice(q, t)``, where the
mask terms are computed on ``num_points`` points drawn uniformly at random (the same points for all
predictions and targets of an image) instead of on full masks (paper Sec. 3.3, "improving training
efficiency"; official config MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112).
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid binary cross-entropy between every prediction and every target.

    Args:
        logits: (N, P) float mask logits at P points.
        targets: (M, P) float target values in [0, 1] at the same points.

    Returns:
        (N, M) float: ``cost[n, m] = mean_p BCE(logits[n, p], targets[m, p])``.
    """
    num_points = logits.shape[1]
    # BCE(x, y) = y * BCE(x, 1) + (1 - y) * BCE(x, 0): linear in y, so one matmul per term
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / num_points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (1 - soft Dice coefficient, +1 smoothing) between every prediction and target.

    Args:
        logits: (N, P) float mask logits; targets: (M, P) float in [0, 1].

    Returns:
        (N, M) float: ``1 - (2 * <s_n, t_m> + 1) / (sum s_n + sum t_m + 1)`` with
        ``s = sigmoid(logits)``.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets minimising the Mask2Former matching cost.

    Args:
        cost_class: weight of the class cost (MODEL.MASK_FORMER.CLASS_WEIGHT; stage configs 2.0).
        cost_mask: weight of the point-sampled sigmoid-BCE cost (MASK_WEIGHT; 5.0).
        cost_dice: weight of the point-sampled dice cost (DICE_WEIGHT; 5.0).
        num_points: random points per image (MODEL.MASK_FORMER.TRAIN_NUM_POINTS).
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
                ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Match each image's predictions to its targets.

        Args:
            outputs: ``pred_logits`` (B, Q, K+1) class logits (last = no object) and
                ``pred_masks`` (B, Q, h, w) mask logits. Other keys are ignored.
            targets: B dicts with ``labels`` (T_b,) int64 in [0, K) and ``masks`` (T_b, H, W)
                bool/float, in the same image frame as the predicted masks (any resolution:
                points are sampled in normalised [0, 1] x [0, 1] coordinates).

        Returns:
            B pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, T_b)``:
            prediction ``pred_idx[j]`` is assigned to target ``tgt_idx[j]``; ``pred_idx`` is
            sorted. Images without targets give two empty tensors.
        """
        indices = []
        for b, target in enumerate(targets):
            labels = target["labels"]
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            with torch.autocast(device_type=outputs["pred_masks"].device.type, enabled=False):
                cost = self._cost(outputs["pred_logits"][b].float(),
                                  outputs["pred_masks"][b].float(),
                                  labels, target["masks"])
            pred_idx, tgt_idx = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(pred_idx, dtype=torch.int64),
                            torch.as_tensor(tgt_idx, dtype=torch.int64)))
        return indices

    def _cost(self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
              tgt_masks: torch.Tensor) -> torch.Tensor:
        """(Q, K+1) logits, (Q, h, w) mask logits, (T,) labels, (T, H, W) masks -> (Q, T) cost."""
        cost_class = -logits.softmax(-1)[:, labels]
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        pred_pts = point_sample(masks[:, None], coords.expand(masks.shape[0], -1, -1),
                                align_corners=False)[:, 0]
        tgt = tgt_masks.to(device=masks.device, dtype=torch.float32)[:, None]
        tgt_pts = point_sample(tgt, coords.expand(tgt.shape[0], -1, -1), align_corners=False)[:, 0]
        return (self.cost_class * cost_class
                + self.cost_mask * pairwise_sigmoid_bce(pred_pts, tgt_pts)
                + self.cost_dice * pairwise_dice(pred_pts, tgt_pts))
