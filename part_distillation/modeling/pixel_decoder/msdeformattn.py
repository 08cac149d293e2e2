"""Mask2Former pixel decoder: multi-scale deformable-attention encoder + one FPN level.

Mask2Former (Cheng et al. 2022) Sec. 4 / Appendix A.1: the 1/32, 1/16 and 1/8 backbone features
are projected to ``CONVS_DIM`` channels, refined jointly by ``TRANSFORMER_ENC_LAYERS`` (6)
Deformable-DETR encoder layers (Zhu et al. 2021, Sec. 4.1), and a lateral + 3x3 FPN level adds the
1/4 feature, from which a 1x1 conv produces the per-pixel mask embeddings.

Module and parameter names follow the official ``MSDeformAttnPixelDecoder`` so that official
Mask2Former checkpoints (``model_final_*.pkl``) load with detectron2's ``DetectionCheckpointer``
(keys under ``sem_seg_head.pixel_decoder.``): ``input_proj.{i}.{0,1}``, ``transformer.level_embed``,
``transformer.encoder.layers.{i}.{self_attn,norm1,linear1,linear2,norm2}``, ``mask_features``,
``adapter_{k}``, ``layer_{k}``.
"""
import copy
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .ms_deform_attn import MSDeformAttn

# Official MSDeformAttnPixelDecoder.from_config hard-codes these (instead of
# MODEL.MASK_FORMER.DIM_FEEDFORWARD, the transformer *decoder*'s FFN width, and of
# MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS, which it never reads).
ENCODER_DIM_FEEDFORWARD = 1024
ENCODER_N_POINTS = 4
# Mask2Former feeds its masked-attention decoder three scales (1/32, 1/16, 1/8), Sec. 3.2.
NUM_DECODER_SCALES = 3


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm Deformable-DETR encoder layer: deformable self-attention + ReLU FFN.

    Submodule names as official: ``self_attn``, ``norm1``, ``linear1``, ``linear2``, ``norm2``
    (dropouts ``dropout1..3`` hold no parameters).
    """

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """src, pos: (N, S, C); reference_points: (N, S, L, 2) in [0, 1]; returns (N, S, C).

        The positional embedding is added to the queries only; values are ``src`` itself.
        """
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """Stack of ``num_layers`` independent copies of an encoder layer, as ``layers.{i}``."""

    def __init__(self, layer: MSDeformAttnTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])

    @staticmethod
    def reference_points(spatial_shapes: List[Tuple[int, int]], batch: int, device: torch.device) -> torch.Tensor:
        """Pixel centres of every level as queries' reference points.

        Returns:
            (batch, S, L, 2) float32, (x, y) = ((j + 0.5) / W_l, (i + 0.5) / H_l) of each flattened
            pixel, repeated for all L levels (no padding masks, so every valid ratio is 1).
        """
        refs = []
        for h, w in spatial_shapes:
            y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
            refs.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1))
        ref = torch.cat(refs, 0)
        return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """src, pos: (N, S, C) flattened levels; spatial_shapes (L, 2) int64; returns (N, S, C)."""
        ref = self.reference_points([tuple(s) for s in spatial_shapes.tolist()], src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, level_start_index)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable-DETR encoder over flattened multi-scale maps, with a learned level embedding.

    Parameters (official names): ``level_embed`` (L, C), ``encoder.layers.{i}.*``.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = ENCODER_DIM_FEEDFORWARD,
        dropout: float = 0.1,
        num_feature_levels: int = 3,
        enc_n_points: int = 4,
    ):
        super().__init__()
        layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = MSDeformAttnTransformerEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: Xavier-uniform for every matrix, then each MSDeformAttn's own
        init, and N(0, 1) level embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode L maps jointly.

        Args:
            srcs: L tensors (N, C, H_l, W_l), in the order of ``level_embed``.
            pos_embeds: L positional encodings of the same shapes.

        Returns:
            memory (N, S, C) with S = sum_l H_l*W_l (levels concatenated, each row-major),
            spatial_shapes (L, 2) int64 (H_l, W_l), level_start_index (L,) int64.
        """
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos_embeds)], 1
        )
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flat.device)
        areas = spatial_shapes.prod(1)
        level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
        memory = self.encoder(src_flat, pos_flat, spatial_shapes, level_start_index)
        return memory, spatial_shapes, level_start_index


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's multi-scale deformable-attention pixel decoder (official name and layout).

    Encoder levels are the ``transformer_in_features`` (default res3..res5, strides 8/16/32);
    ``input_proj.{i}`` (1x1 conv + GroupNorm(32)) projects them highest stride first. Features of
    ``input_shape`` with stride below the smallest encoder stride, down to ``common_stride``, get
    an FPN level each (``adapter_{k}`` lateral 1x1 conv, ``layer_{k}`` 3x3 conv + ReLU, k = 1 for
    the highest-resolution one), added to the bilinearly upsampled coarser output.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_n_points: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
    ):
        """
        Args:
            input_shape: backbone features the decoder reads (name -> channels, stride).
            transformer_dropout: dropout in the encoder layers (MODEL.MASK_FORMER.DROPOUT).
            transformer_nheads: deformable-attention heads (MODEL.MASK_FORMER.NHEADS, as official).
            transformer_dim_feedforward: encoder FFN width (official: 1024).
            transformer_enc_layers: encoder depth (SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS).
            transformer_n_points: sampling points per head and level (official: 4).
            conv_dim: channels of every intermediate map (SEM_SEG_HEAD.CONVS_DIM); multiple of 32.
            mask_dim: channels of the mask features (SEM_SEG_HEAD.MASK_DIM).
            norm: norm of the FPN convs (SEM_SEG_HEAD.NORM, "GN" officially); "" gives biases.
            transformer_in_features: features fed to the encoder (subset of ``input_shape``).
            common_stride: stride of the mask features (SEM_SEG_HEAD.COMMON_STRIDE, 4).
        """
        super().__init__()
        by_stride = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]
        enc_shapes = [(k, v) for k, v in by_stride if k in transformer_in_features]
        missing = set(transformer_in_features) - {k for k, _ in enc_shapes}
        if missing:
            raise ValueError(f"encoder features {sorted(missing)} are not among the inputs {self.in_features}")
        # highest stride first, the order of input_proj, level_embed and the outputs
        self.transformer_in_features = [k for k, _ in enc_shapes][::-1]
        self.transformer_num_feature_levels = len(enc_shapes)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(v.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for _, v in enc_shapes[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)  # parameter-free
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = NUM_DECODER_SCALES
        self.common_stride = common_stride

        min_enc_stride = min(v.stride for _, v in enc_shapes)
        self.num_fpn_levels = int(round(math.log2(min_enc_stride) - math.log2(common_stride)))
        use_bias = norm == ""
        for idx, (_, spec) in enumerate(by_stride[: self.num_fpn_levels]):
            lateral = Conv2d(spec.channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        """Constructor arguments from MODEL.SEM_SEG_HEAD.* and MODEL.MASK_FORMER.{DROPOUT, NHEADS}.

        ``input_shape`` is restricted to SEM_SEG_HEAD.IN_FEATURES. As in the official code, the
        encoder's deformable attention has MODEL.MASK_FORMER.NHEADS heads, :data:`ENCODER_N_POINTS`
        (4) points and an FFN of :data:`ENCODER_DIM_FEEDFORWARD` (1024);
        SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS / _N_POINTS are accepted (official
        YAMLs set them) and ignored, as officially (see ``part_distillation/config/maskformer2.py``). The
        parity fixture (NHEADS 4, N_HEADS 8) pins this: ``tests/test_mask2former_parity.py``.
        """
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_n_points": ENCODER_N_POINTS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Run the encoder and the FPN levels (in float32, autocast off, as official).

        Args:
            features: backbone maps, name -> (B, C_name, H/stride, W/stride).

        Returns:
            mask_features: (B, mask_dim, H/common_stride, W/common_stride) per-pixel embeddings.
            transformer_encoder_features: (B, conv_dim, H/32, W/32), the coarsest encoder output.
            multi_scale_features: 3 maps (B, conv_dim, ...) highest stride first (1/32, 1/16,
                1/8 with the default features), for the transformer decoder.
        """
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = [], []
            for proj, name in zip(self.input_proj, self.transformer_in_features):
                x = features[name].float()
                srcs.append(proj(x))
                pos.append(self.pe_layer(x))
            memory, spatial_shapes, _ = self.transformer(srcs, pos)
            out = [
                level.transpose(1, 2).reshape(memory.shape[0], self.conv_dim, s.shape[-2], s.shape[-1])
                for level, s in zip(memory.split([s.shape[-2] * s.shape[-1] for s in srcs], dim=1), srcs)
            ]
            for k in range(self.num_fpn_levels, 0, -1):
                lateral = getattr(self, f"adapter_{k}")(features[self.in_features[k - 1]].float())
                top_down = F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
                out.append(getattr(self, f"layer_{k}")(lateral + top_down))
            return self.mask_features(out[-1]), out[0], out[: self.maskformer_num_feature_levels]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME from detectron2's
    ``SEM_SEG_HEADS_REGISTRY`` (official Mask2Former convention); it must define
    ``forward_features``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"pixel decoder {name!r} has no forward_features(features) method")
    return model
