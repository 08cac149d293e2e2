"""Swin Transformer backbone (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows") as a detectron2 ``Backbone``.

Parameter and buffer names match the official Mask2Former ``D2SwinTransformer`` so that its
ImageNet-pretrained and Mask2Former checkpoints load with detectron2's ``DetectionCheckpointer``:
``patch_embed.proj``, ``patch_embed.norm``, ``absolute_pos_embed`` (APE only),
``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}``, ``layers.{i}.downsample.{reduction,norm}``
and ``norm{i}`` for every output stage i (res{i+2}).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import DropPath, trunc_normal_
from torch import nn

STAGE_NAMES = ("res2", "res3", "res4", "res5")


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nW, window*window, C), windows in
    row-major order per image, tokens row-major inside each window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window*window, C) -> (B, h, w, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class Mlp(nn.Module):
    """Block FFN: ``fc1`` -> GELU -> dropout -> ``fc2`` -> dropout, on (..., C) tokens."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows with relative position bias (Sec. 3.2).

    ``relative_position_bias_table`` ((2w-1)^2, heads) holds one bias per head and relative offset
    (dy, dx) in [-(w-1), w-1]^2; buffer ``relative_position_index`` (w^2, w^2) int64 maps each
    (query token, key token) pair of a window to its row of the table.
    """

    def __init__(
        self,
        dim: int,
        window: int,
        num_heads: int,
        qkv_bias: bool,
        qk_scale: Optional[float],
        attn_drop: float,
        proj_drop: float,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, w^2)
        rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, w^2, w^2) in [0, 2w-2]
        self.register_buffer("relative_position_index", rel[0] * (2 * window - 1) + rel[1])
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention within each window.

        Args:
            x: (B * nW, N, C) window tokens, N = window^2.
            mask: (nW, N, N) additive float mask (0 or -100) for shifted windows, or None.

        Returns:
            (B * nW, N, C).
        """
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            # windows are image-major (see window_partition): view them as (B, nW) so that the
            # (nW, heads, N, N) mask broadcasts over images
            nw = mask.shape[0]
            q, k, v = (t.view(bw // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
            bias = bias + mask[:, None]
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop, scale=self.scale)
        out = out.reshape(bw, self.num_heads, n, -1)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention block, pre-norm with residuals (Sec. 3.2, Eq. 3).

    Windows of even blocks are aligned to the top-left corner; odd blocks use ``shift`` =
    window // 2 via a cyclic shift plus an attention mask. Inputs whose height/width are not
    multiples of the window are zero-padded at the bottom/right for the attention only.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop: float,
        attn_drop: float,
        drop_path: float,
    ):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, h: int, w: int, shift_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, h*w, C) row-major tokens; shift_mask: (nW, N, N) used when shifted. Returns (B, h*w, C)."""
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % self.window, (-w) % self.window
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), shift_mask if self.shift else None)
        y = window_reverse(y, self.window, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w].reshape(b, h * w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging (Sec. 3.1): concatenate the 4 neighbours (order (0,0), (1,0), (0,1), (1,1)
    as (row, col) offsets, the official channel layout), LayerNorm(4C) ``norm``, Linear(4C, 2C)
    ``reduction`` without bias. Odd sizes are zero-padded at the bottom/right."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, ceil(h/2)*ceil(w/2), 2C)."""
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One Swin stage: ``blocks`` alternating regular/shifted windows, then optional ``downsample``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop: float,
        attn_drop: float,
        drop_path: List[float],
        downsample: bool,
        use_checkpoint: bool,
    ):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window,
                0 if i % 2 == 0 else self.shift,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Additive mask (nW, N, N) for shifted windows of a (h, w) map padded to window multiples:
        -100 between tokens that come from different regions before the cyclic shift, else 0."""
        hp, wp = -(-h // self.window) * self.window, -(-w // self.window) * self.window
        region = torch.zeros(1, hp, wp, 1, device=device)
        bounds = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        for i, hs in enumerate(bounds):
            for j, ws in enumerate(bounds):
                region[:, hs, ws] = 3 * i + j
        ids = window_partition(region, self.window).squeeze(-1)  # (nW, N)
        diff = ids[:, None, :] - ids[:, :, None]
        return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """x: (B, h*w, C). Returns (stage output (B, h*w, C), next-stage input (B, h'*w', 2C) or the
        output itself without downsample, h', w')."""
        mask = self.shift_mask(h, w, x.device)
        for blk in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = torch_checkpoint.checkpoint(blk, x, h, w, mask, use_reentrant=False)
            else:
                x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` conv embedding (``proj``) with optional LayerNorm
    (``norm``); the image is zero-padded at the bottom/right to a multiple of the patch size."""

    def __init__(self, patch: int, in_chans: int, dim: int, norm: bool):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dim, ceil(H/patch), ceil(W/patch))."""
        x = F.pad(x, (0, (-x.shape[-1]) % self.patch, 0, (-x.shape[-2]) % self.patch))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Backbone):
    """Swin Transformer backbone built from MODEL.SWIN.* (official Mask2Former name and keys).

    Input: (B, 3, H, W) float image, any H, W (padded internally to the patch and window sizes).
    Output: dict of the requested MODEL.SWIN.OUT_FEATURES among res2..res5, res{i+2} of shape
    (B, EMBED_DIM * 2**i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) (for the default patch 4), after
    the LayerNorm ``norm{i}``. Strides 4/8/16/32.
    """

    def __init__(self, cfg, input_shape: ShapeSpec):
        super().__init__()
        sw = cfg.MODEL.SWIN
        depths, heads = list(sw.DEPTHS), list(sw.NUM_HEADS)
        if len(depths) != len(STAGE_NAMES) or len(heads) != len(STAGE_NAMES):
            raise ValueError(f"MODEL.SWIN.DEPTHS / NUM_HEADS must have 4 entries, got {depths} / {heads}")
        unknown = set(sw.OUT_FEATURES) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"MODEL.SWIN.OUT_FEATURES {sorted(unknown)} not in {STAGE_NAMES}")
        in_chans = input_shape.channels if input_shape.channels is not None else 3
        dim = sw.EMBED_DIM
        self.num_features = [dim * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(sw.PATCH_SIZE, in_chans, dim, sw.PATCH_NORM)
        if sw.APE:
            res = sw.PRETRAIN_IMG_SIZE // sw.PATCH_SIZE
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, dim, res, res))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(sw.DROP_RATE)
        rates = torch.linspace(0, sw.DROP_PATH_RATE, sum(depths)).tolist()  # stochastic depth, linear
        self.layers = nn.ModuleList(
            BasicLayer(
                self.num_features[i],
                depths[i],
                heads[i],
                sw.WINDOW_SIZE,
                sw.MLP_RATIO,
                sw.QKV_BIAS,
                sw.QK_SCALE,
                sw.DROP_RATE,
                sw.ATTN_DROP_RATE,
                rates[sum(depths[:i]) : sum(depths[: i + 1])],
                downsample=i < len(depths) - 1,
                use_checkpoint=sw.USE_CHECKPOINT,
            )
            for i in range(len(depths))
        )
        self._out_features = [n for n in STAGE_NAMES if n in sw.OUT_FEATURES]
        self._out_indices = [STAGE_NAMES.index(n) for n in self._out_features]
        for i in self._out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self._out_feature_strides = {n: sw.PATCH_SIZE * 2**i for i, n in enumerate(STAGE_NAMES)}
        self._out_feature_channels = dict(zip(STAGE_NAMES, self.num_features))
        self.apply(self._init_linear_and_norm)

    @staticmethod
    def _init_linear_and_norm(m: nn.Module) -> None:
        """Swin init: Linear weights ~ TruncNormal(0.02) with zero bias; LayerNorm (1, 0)."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, C_in, H, W) image -> {name: (B, C_name, H_name, W_name)} for OUT_FEATURES; stages
        after the last requested one are not run."""
        if x.dim() != 4:
            raise ValueError(f"D2SwinTransformer takes (N, C, H, W) input, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        if self.absolute_pos_embed is not None:
            x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = {}
        for i, layer in enumerate(self.layers[: max(self._out_indices) + 1]):
            y, x, h_next, w_next = layer(x, h, w)
            if i in self._out_indices:
                y = getattr(self, f"norm{i}")(y)
                outs[STAGE_NAMES[i]] = y.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            h, w = h_next, w_next
        return outs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{name: ShapeSpec(channels=EMBED_DIM * 2**i, stride=PATCH_SIZE * 2**i)} for OUT_FEATURES."""
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        """32: inputs padded to multiples of 32 give exact /4.../32 feature sizes."""
        return 32
