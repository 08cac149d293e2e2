"""Mask resampling rules shared by the data and modeling layers."""
from typing import Sequence

import torch
import torch.nn.functional as F


def upsample_masks_official(masks: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
    """Resize bool masks the way the official evaluation does (official
    ``sem_seg_postprocess(mask.float(), ...).bool()`` in ``PartDistillationModel.inference``):
    bilinear (``align_corners=False``) to ``out_size``, then ``> 0``. When upsampling, this widens
    each mask by up to one source pixel on every side.

    Args:
        masks: (N, h, w) or (h, w) bool (or 0/1) tensor.
        out_size: ``(H, W)``.

    Returns:
        bool tensor (N, H, W) or (H, W), on the input's device; the input as bool when its size
        already is ``out_size``.
    """
    out_size = (int(out_size[0]), int(out_size[1]))
    if tuple(masks.shape[-2:]) == out_size:
        return masks.bool()
    squeeze = masks.dim() == 2
    batch = masks[None] if squeeze else masks
    if batch.shape[0] == 0:
        return torch.zeros((0, *out_size), dtype=torch.bool, device=masks.device)
    out = F.interpolate(batch[:, None].float(), size=out_size, mode="bilinear",
                        align_corners=False)[:, 0] > 0
    return out[0] if squeeze else out
