"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Sec. 4.1, Eq. 3).

Each query attends to ``n_points`` sampled locations per head and per feature level, placed at
learned offsets around a reference point; sampled values are bilinearly interpolated and mixed
with softmax-normalised attention weights.

Two implementations of the sampling core are available:

* ``"pytorch"``: :func:`ms_deform_attn_core_grid_sample`, one ``F.grid_sample`` per level
  (bilinear, zero padding, ``align_corners=False``), differentiable by autograd; runs anywhere.
* ``"compiled"``: the native kernel of the ``torch_ms_deform_attn`` package (CPU, CUDA and MPS,
  first-order gradients).

``"auto"`` (default) uses the compiled kernel whenever the package imports, on CPU as well: there
it is faster than the grid-sample core for forward+backward of an encoder layer
(``bench/bench_msdeformattn.py``; figures in docs/BENCHMARKS.md); without the package it uses the
grid-sample core.
The choice comes from the environment variable ``PD_MSDA_IMPL`` (``pytorch|compiled|auto``) read
at import, and can be changed at run time with :func:`set_msda_impl`.
"""
import math
import os
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

try:
    import torch_ms_deform_attn as _compiled
except ImportError:  # the package is optional; the pure PyTorch core covers every device
    _compiled = None

_IMPLS = ("pytorch", "compiled", "auto")
_impl = "auto"


def set_msda_impl(impl: str) -> None:
    """Select the sampling core used by :func:`ms_deform_attn_core` and :class:`MSDeformAttn`.

    Args:
        impl: ``"pytorch"`` (grid-sample core), ``"compiled"`` (``torch_ms_deform_attn`` kernel;
            raises at call time when the package is missing) or ``"auto"`` (compiled when the
            package imports, else pytorch).
    """
    global _impl
    if impl not in _IMPLS:
        raise ValueError(f"PD_MSDA_IMPL must be one of {_IMPLS}, got {impl!r}")
    _impl = impl


def get_msda_impl() -> str:
    """The current implementation choice (``"pytorch"``, ``"compiled"`` or ``"auto"``)."""
    return _impl


def compiled_available() -> bool:
    """Whether the ``torch_ms_deform_attn`` package (native kernel) imported."""
    return _compiled is not None


set_msda_impl(os.environ.get("PD_MSDA_IMPL", "auto"))


def ms_deform_attn_core_grid_sample(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure PyTorch deformable-attention sampling core (Deformable DETR Eq. 3, inner sums).

    Args:
        value: (N, S, M, D) float, per-head values of all levels flattened row-major and
            concatenated level after level (S = sum_l H_l * W_l).
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        sampling_locations: (N, Lq, M, L, P, 2) float, (x, y) normalised to [0, 1] in each level's
            frame: 0 is the left/top edge of the first pixel and 1 the right/bottom edge of the
            last (``align_corners=False`` convention); outside samples read zeros.
        attention_weights: (N, Lq, M, L, P) float, used as given (normally softmax over L*P).

    Returns:
        (N, Lq, M*D) tensor of ``value``'s dtype: for each head, sum over levels and points of
        weight * bilinear sample, heads concatenated along the channel axis.
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    sizes: List[List[int]] = spatial_shapes.tolist()
    per_level = value.split([h * w for h, w in sizes], dim=1)
    # grid_sample wants coordinates in [-1, 1]; heads are folded into the batch axis.
    grids = 2.0 * sampling_locations - 1.0
    grids = grids.permute(0, 2, 3, 1, 4, 5).reshape(n * m, n_levels, lq, n_points, 2)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(n * m, n_levels, 1, lq, n_points)
    out = None
    for lvl, (h, w) in enumerate(sizes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        sampled = F.grid_sample(v, grids[:, lvl], mode="bilinear", padding_mode="zeros", align_corners=False)
        contrib = (sampled * weights[:, lvl]).sum(-1)  # (N*M, D, Lq)
        out = contrib if out is None else out + contrib
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


def _use_compiled() -> bool:
    if _impl == "pytorch":
        return False
    if _impl == "compiled":
        if _compiled is None:
            raise RuntimeError("PD_MSDA_IMPL=compiled but torch_ms_deform_attn is not installed")
        return True
    return _compiled is not None


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable-attention sampling core, dispatched to the compiled kernel or the grid-sample core.

    Shapes and frames as in :func:`ms_deform_attn_core_grid_sample`; ``level_start_index`` (L,)
    int64 gives each level's offset in S (needed by the compiled kernel). Returns (N, Lq, M*D).
    """
    if _use_compiled():
        return _compiled.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_core_grid_sample(value, spatial_shapes, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR Sec. 4.1; Mask2Former pixel decoder).

    Parameter names follow the official Deformable-DETR / Mask2Former module so that their
    checkpoints load: ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``.

    Args:
        d_model: channels C of queries and values (must be divisible by ``n_heads``).
        n_levels: number of feature levels L.
        n_heads: attention heads M.
        n_points: sampled points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation: zero offset weights with biases placing head h's points
        on the ray at angle 2*pi*h/M at distances 1..P (in level pixels, along the box-normalised
        direction); zero attention logits (uniform weights); Xavier-uniform value/output projections
        with zero bias."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angles.cos(), angles.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True)[0]
        scale = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = direction.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1) * scale
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attend from each query to P learned offsets around its reference point on every level.

        Args:
            query: (N, Lq, C) float.
            reference_points: (N, Lq, L, 2) float, (x, y) normalised to [0, 1] per level
                (``align_corners=False`` frame; pixel centre i is at (i + 0.5) / W).
            input_flatten: (N, S, C) float, all levels flattened row-major, concatenated.
            input_spatial_shapes: (L, 2) int64, (H_l, W_l).
            input_level_start_index: (L,) int64, offsets of each level in S.
            input_padding_mask: (N, S) bool, True at padded positions (their values are zeroed),
                or None.

        Returns:
            (N, Lq, C) tensor.
        """
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        if int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum()) != s:
            raise ValueError("input_spatial_shapes do not add up to input_flatten's length")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # offsets are in level pixels: divide by (W_l, H_l) to move to the normalised frame
        normaliser = input_spatial_shapes.flip(-1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[:, None, :]
        out = ms_deform_attn_core(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(out)
