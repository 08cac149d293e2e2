"""Mask2Former's multi-scale masked-attention transformer decoder (Cheng et al., CVPR 2022, Sec. 3.2).

Module and parameter names follow the official implementation so that official Mask2Former (and
PartDistillation) checkpoints load into ``sem_seg_head.predictor``:

    query_feat, query_embed, level_embed, input_proj.{0,1,2},
    transformer_self_attention_layers.{i}.{self_attn, norm},
    transformer_cross_attention_layers.{i}.{multihead_attn, norm},
    transformer_ffn_layers.{i}.{linear1, linear2, norm},
    decoder_norm, class_embed, mask_embed.layers.{0,1,2}

All dropout rates are 0 in the official model, so no dropout is applied here.
"""
from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn

from .position_encoding import PositionEmbeddingSine

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry of Mask2Former transformer decoders, looked up by
``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``. A registered class is called as
``cls(cfg, in_channels, mask_classification)``.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build the transformer decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``.

    Args:
        cfg: config with the Mask2Former keys (``part_distillation.config.add_maskformer2_config``).
        in_channels: channels of the multi-scale features fed to the decoder (the pixel decoder's
            ``MODEL.SEM_SEG_HEAD.CONVS_DIM`` for Mask2Former).
        mask_classification: predict a class per query (the only mode Mask2Former supports).
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Query self-attention block with a residual connection and LayerNorm.

    Post-norm (default): ``q = norm(q + attn(q + pos, q + pos, q))``. Pre-norm
    (``MODEL.MASK_FORMER.PRE_NORM``): ``q = q + attn(n + pos, n + pos, n)`` with ``n = norm(q)``.
    Tensors are batch-first: (B, Q, C). Parameters: ``self_attn`` (nn.MultiheadAttention),
    ``norm`` (LayerNorm).
    """

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C) query features and query positional embeddings -> (B, Q, C)."""
        if self.normalize_before:
            n = self.norm(tgt)
            qk = _with_pos(n, query_pos)
            return tgt + self.self_attn(qk, qk, n, need_weights=False)[0]
        qk = _with_pos(tgt, query_pos)
        return self.norm(tgt + self.self_attn(qk, qk, tgt, need_weights=False)[0])


class CrossAttentionLayer(nn.Module):
    """Masked cross-attention from the queries to one level of image features (paper Eq. 2).

    Tensors are batch-first. Parameters: ``multihead_attn`` (nn.MultiheadAttention), ``norm``.
    """

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                memory_mask: Optional[torch.Tensor] = None,
                pos: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend from the queries to the pixels of one feature level.

        Args:
            tgt: (B, Q, C) queries; query_pos: (B, Q, C) their positional embeddings.
            memory: (B, HW, C) flattened features of the level; pos: (B, HW, C) their sine
                positional encoding.
            memory_mask: (B * nheads, Q, HW) bool, True where a query may NOT attend (batch-major:
                row ``b * nheads + h``), or None.

        Returns:
            (B, Q, C) updated queries.
        """
        q_in = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(_with_pos(q_in, query_pos), _with_pos(memory, pos), memory,
                                  attn_mask=memory_mask, need_weights=False)[0]
        if self.normalize_before:
            return tgt + out
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    """Two-layer ReLU feed-forward block with a residual connection and LayerNorm.

    Parameters: ``linear1`` (C -> dim_feedforward), ``linear2`` (dim_feedforward -> C), ``norm``.
    """

    def __init__(self, d_model: int, dim_feedforward: int, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """tgt: (B, Q, C) -> (B, Q, C)."""
        if self.normalize_before:
            return tgt + self.linear2(F.relu(self.linear1(self.norm(tgt))))
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last).

    Parameters: ``layers.{i}``. Used as ``mask_embed`` (hidden -> hidden -> MASK_DIM).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., input_dim) -> (..., output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former transformer decoder with masked attention (paper Sec. 3.2).

    Learnable queries (``query_feat`` content, ``query_embed`` position) are refined by
    ``dec_layers`` blocks of [masked cross-attention, self-attention, FFN]; block ``i`` attends to
    feature level ``i % 3`` (round-robin over the three scales, lowest resolution first). Before
    the first block and after every block, the normalised queries predict class logits and mask
    logits (dot product of ``mask_embed(query)`` with the per-pixel mask features); each mask
    prediction, resized to the next block's level and thresholded at sigmoid 0.5, is that block's
    attention mask (pixels outside the predicted mask are not attended; a query whose mask is empty
    attends everywhere).
    """

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_classes: int,
                 hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int,
                 dec_layers: int, pre_norm: bool, mask_dim: int, enforce_input_project: bool,
                 query_feature_normalize: bool = False):
        """
        Args:
            in_channels: channels of each of the three input feature levels.
            mask_classification: must be True (Mask2Former only supports mask classification).
            num_classes: foreground classes K; ``class_embed`` predicts K + 1 (last: no object).
            hidden_dim: query / attention width C.
            num_queries: number of queries Q.
            nheads: attention heads.
            dim_feedforward: FFN inner width.
            dec_layers: number of transformer blocks (``MODEL.MASK_FORMER.DEC_LAYERS - 1``).
            pre_norm: pre-LayerNorm blocks instead of post-LayerNorm.
            mask_dim: channels of the mask features (``MODEL.SEM_SEG_HEAD.MASK_DIM``).
            enforce_input_project: use a 1x1 conv ``input_proj`` even when
                ``in_channels == hidden_dim`` (otherwise it is the identity).
            query_feature_normalize: L2-normalise ``mask_embed(query)`` before the dot product with
                the mask features (PartDistillation ``MODEL.MASK_FORMER.QUERY_FEATURE_NORMALIZE``).
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder only supports mask classification")
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.num_feature_levels = 3
        self.query_feature_normalize = query_feature_normalize
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, pre_norm) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, pre_norm) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        """Read MODEL.MASK_FORMER.{HIDDEN_DIM, NUM_OBJECT_QUERIES, NHEADS, DIM_FEEDFORWARD,
        DEC_LAYERS, PRE_NORM, ENFORCE_INPUT_PROJ, QUERY_FEATURE_NORMALIZE} and
        MODEL.SEM_SEG_HEAD.{NUM_CLASSES, MASK_DIM}. DEC_LAYERS counts the prediction made from the
        initial queries, so DEC_LAYERS - 1 blocks are built (official; e.g. 10 -> 9 blocks)."""
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "query_feature_normalize": mf.QUERY_FEATURE_NORMALIZE,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Decode queries into class and mask predictions.

        Args:
            x: three feature maps (B, in_channels, H_i, W_i), lowest resolution (largest stride,
                e.g. 32) first, as returned by the pixel decoder's ``multi_scale_features``.
            mask_features: (B, MASK_DIM, H4, W4) per-pixel embeddings (stride 4).
            mask: ignored (as in the official model, padding is not masked in attention).

        Returns:
            dict with
              ``pred_logits``: (B, Q, K + 1) class logits of the last prediction;
              ``pred_masks``: (B, Q, H4, W4) mask logits of the last prediction (stride-4 frame);
              ``aux_outputs``: list of ``dec_layers`` dicts with ``pred_logits`` / ``pred_masks``
                of the earlier predictions (the first from the initial queries), in order;
              ``decoder_output``: (B, Q, C) final queries after ``decoder_norm`` (the features
                PartDistillation's part ranking clusters).
        """
        del mask
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, sizes = [], [], []
        for i, feat in enumerate(x):
            sizes.append(feat.shape[-2:])
            pos.append(self.pe_layer(feat).flatten(2).transpose(1, 2))  # (B, HW, C)
            level = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(level.transpose(1, 2))  # (B, HW, C)

        bs = src[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(bs, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(bs, -1, -1)

        logits, masks, attn_mask, queries = self._predict(output, mask_features, sizes[0])
        all_logits, all_masks = [logits], [masks]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # a query whose predicted mask is empty at this level attends to every pixel
            attn_mask[attn_mask.all(dim=-1)] = False
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            next_size = sizes[(i + 1) % self.num_feature_levels]
            logits, masks, attn_mask, queries = self._predict(output, mask_features, next_size)
            all_logits.append(logits)
            all_masks.append(masks)

        return {
            "pred_logits": all_logits[-1],
            "pred_masks": all_masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m}
                            for c, m in zip(all_logits[:-1], all_masks[:-1])],
            "decoder_output": queries,
        }

    def _predict(self, output: torch.Tensor, mask_features: torch.Tensor,
                 attn_size: Tuple[int, int]
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prediction heads on (B, Q, C) queries -> class logits (B, Q, K+1), mask logits
        (B, Q, H4, W4), the next attention mask (B * nheads, Q, h * w) bool (True = blocked) at
        ``attn_size = (h, w)``, and the normalised queries (B, Q, C)."""
        queries = self.decoder_norm(output)
        logits = self.class_embed(queries)
        embed = self.mask_embed(queries)
        if self.query_feature_normalize:
            embed = F.normalize(embed, p=2, dim=-1)
        masks = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
        with torch.no_grad():
            small = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
            blocked = small.sigmoid().flatten(2) < 0.5  # (B, Q, hw)
            attn_mask = blocked.repeat_interleave(self.num_heads, dim=0)
        return logits, masks, attn_mask, queries
