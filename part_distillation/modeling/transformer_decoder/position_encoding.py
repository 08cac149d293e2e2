"""Fixed sine/cosine 2-D positional encoding (DETR, Carion et al. 2020, Sec. 3.2 / App. A.4).

Shared by the Mask2Former transformer decoder and the multi-scale deformable pixel decoder; it has
no parameters, so it contributes no state-dict keys.
"""
import math
from typing import Optional

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine positional encoding of every pixel of a feature map.

    For a map of size ``H x W`` the row index ``y`` and column index ``x`` (1-based cumulative
    counts of non-padded pixels, optionally rescaled to ``(0, scale]``) are each encoded with
    ``num_pos_feats`` channels: channel ``2k`` holds ``sin(p / T^(2k / num_pos_feats))`` and
    channel ``2k+1`` holds ``cos`` of the same argument (``T = temperature``). The output
    concatenates the ``y`` channels followed by the ``x`` channels, which is the layout official
    Mask2Former checkpoints were trained with.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels. Must be
            even. Mask2Former uses ``MODEL.MASK_FORMER.HIDDEN_DIM // 2``.
        temperature: ``T`` above (10000 as in "Attention is all you need").
        normalize: divide the cumulative positions by the last one so that they lie in
            ``(0, scale]`` regardless of the map size (Mask2Former: True).
        scale: range of the normalised positions; defaults to ``2 * pi``. Only allowed with
            ``normalize=True``.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000.0,
                 normalize: bool = True, scale: Optional[float] = None):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode the pixel positions of ``x``.

        Args:
            x: (B, C, H, W) feature map; only its shape, device and dtype are used.
            mask: optional (B, H, W) bool, True at padded pixels, which are not counted in the
                positions. None: no padding.

        Returns:
            (B, 2 * num_pos_feats, H, W) tensor of ``x.dtype``; channels ``[0, num_pos_feats)``
            encode the row (y), the rest the column (x).
        """
        b, _, h, w = x.shape
        if mask is None:
            valid = torch.ones((b, h, w), dtype=torch.float32, device=x.device)
        else:
            valid = (~mask).to(torch.float32)
        y_pos = valid.cumsum(dim=1)
        x_pos = valid.cumsum(dim=2)
        if self.normalize:
            eps = 1e-6
            y_pos = y_pos / (y_pos[:, -1:, :] + eps) * self.scale
            x_pos = x_pos / (x_pos[:, :, -1:] + eps) * self.scale

        # one frequency per (sin, cos) channel pair
        pair = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device) // 2
        inv_freq = self.temperature ** (2 * pair / self.num_pos_feats)
        enc = []
        for p in (y_pos, x_pos):
            arg = p[..., None] / inv_freq  # (B, H, W, num_pos_feats)
            # interleave sin (even channels) and cos (odd channels)
            enc.append(torch.stack((arg[..., 0::2].sin(), arg[..., 1::2].cos()), dim=4).flatten(3))
        return torch.cat(enc, dim=3).permute(0, 3, 1, 2).to(x.dtype)
