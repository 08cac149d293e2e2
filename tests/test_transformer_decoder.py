"""Tests of the positional encoding, the Mask2Former transformer decoder and MaskFormerHead."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from part_distillation.config import get_part_distillation_cfg
from part_distillation.modeling.transformer_decoder.mask2former_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)
from part_distillation.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine

HIDDEN, QUERIES, CLASSES, HEADS = 64, 8, 5, 4


def tiny_cfg(dec_layers=3, pre_norm=False):
    cfg = get_part_distillation_cfg()
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM = HIDDEN
    mf.NUM_OBJECT_QUERIES = QUERIES
    mf.NHEADS = HEADS
    mf.DIM_FEEDFORWARD = 128
    mf.DEC_LAYERS = dec_layers
    mf.PRE_NORM = pre_norm
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = CLASSES
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = HIDDEN
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = HIDDEN
    return cfg


def fake_features(batch=2, channels=HIDDEN, image=64):
    """Three levels at strides 32, 16, 8 (lowest resolution first) and stride-4 mask features."""
    x = [torch.randn(batch, channels, image // s, image // s) for s in (32, 16, 8)]
    return x, torch.randn(batch, HIDDEN, image // 4, image // 4)


def official_keys(num_layers, with_input_proj):
    keys = ["query_feat.weight", "query_embed.weight", "level_embed.weight",
            "decoder_norm.weight", "decoder_norm.bias", "class_embed.weight", "class_embed.bias"]
    keys += [f"mask_embed.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    if with_input_proj:
        keys += [f"input_proj.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    for i in range(num_layers):
        for attn in (f"transformer_self_attention_layers.{i}.self_attn",
                     f"transformer_cross_attention_layers.{i}.multihead_attn"):
            keys += [f"{attn}.in_proj_weight", f"{attn}.in_proj_bias",
                     f"{attn}.out_proj.weight", f"{attn}.out_proj.bias"]
        keys += [f"transformer_self_attention_layers.{i}.norm.{p}" for p in ("weight", "bias")]
        keys += [f"transformer_cross_attention_layers.{i}.norm.{p}" for p in ("weight", "bias")]
        keys += [f"transformer_ffn_layers.{i}.{m}.{p}"
                 for m in ("linear1", "linear2", "norm") for p in ("weight", "bias")]
    return keys


def test_position_embedding_values_and_padding():
    pe = PositionEmbeddingSine(4, normalize=False)
    x = torch.zeros(1, 3, 2, 3)
    pos = pe(x)
    assert pos.shape == (1, 8, 2, 3)
    # unnormalised positions are 1-based counts; channel pairs (sin, cos) share a frequency
    y, xx = 2.0, 3.0  # pixel (row 1, col 2)
    freq1 = 10000 ** (2 / 4)
    expected = [math.sin(y), math.cos(y), math.sin(y / freq1), math.cos(y / freq1),
                math.sin(xx), math.cos(xx), math.sin(xx / freq1), math.cos(xx / freq1)]
    assert torch.allclose(pos[0, :, 1, 2], torch.tensor(expected), atol=1e-5)

    # normalised: the last valid row/column maps to 2*pi; padded pixels are not counted
    pe = PositionEmbeddingSine(4, normalize=True)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True
    pos = pe(x, mask)
    assert torch.allclose(pos[0, 4, 0, 1], torch.tensor(math.sin(2 * math.pi)), atol=1e-4)
    assert torch.allclose(pos[0, 5, 0, 1], torch.tensor(1.0), atol=1e-4)


def test_registry_and_dec_layers_from_config():
    assert TRANSFORMER_DECODER_REGISTRY._name == "TRANSFORMER_MODULE"
    dec = build_transformer_decoder(tiny_cfg(dec_layers=10), HIDDEN)
    assert isinstance(dec, MultiScaleMaskedTransformerDecoder)
    assert dec.num_layers == 9  # official: DEC_LAYERS - 1 blocks


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_output_shapes(pre_norm):
    torch.manual_seed(0)
    dec_layers = 3
    dec = build_transformer_decoder(tiny_cfg(dec_layers, pre_norm), HIDDEN)
    x, mask_features = fake_features()
    out = dec(x, mask_features)
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert out["pred_masks"].shape == (2, QUERIES, 16, 16)
    assert out["decoder_output"].shape == (2, QUERIES, HIDDEN)
    # one prediction per DEC_LAYERS; all but the last are auxiliary (official)
    assert len(out["aux_outputs"]) == dec_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
        assert aux["pred_masks"].shape == (2, QUERIES, 16, 16)
    # decoder_output is the decoder_norm output that produced the final class logits
    assert torch.allclose(dec.class_embed(out["decoder_output"]), out["pred_logits"], atol=1e-5)
    loss = out["pred_logits"].sum() + out["pred_masks"].sum()
    loss.backward()
    assert dec.query_feat.weight.grad is not None
    assert dec.transformer_cross_attention_layers[0].multihead_attn.in_proj_weight.grad is not None


def test_official_state_dict_keys():
    dec = build_transformer_decoder(tiny_cfg(dec_layers=3), HIDDEN)
    assert sorted(dec.state_dict().keys()) == sorted(official_keys(2, with_input_proj=False))
    assert all(len(p) == 0 for p in dec.input_proj)  # identity when in_channels == hidden
    dec = build_transformer_decoder(tiny_cfg(dec_layers=3), 32)
    assert sorted(dec.state_dict().keys()) == sorted(official_keys(2, with_input_proj=True))
    assert dec.input_proj[0].weight.shape == (HIDDEN, 32, 1, 1)
    assert dec.level_embed.weight.shape == (3, HIDDEN)
    assert dec.mask_embed.layers[2].weight.shape == (HIDDEN, HIDDEN)
    # a state dict with exactly these keys loads strictly into a fresh decoder
    fresh = build_transformer_decoder(tiny_cfg(dec_layers=3), 32)
    fresh.load_state_dict(dec.state_dict(), strict=True)
    x, mask_features = fake_features(channels=32)
    dec.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(dec(x, mask_features)["pred_masks"],
                              fresh(x, mask_features)["pred_masks"])


def test_fully_masked_queries_attend_everywhere():
    """All masks predicted empty -> every attention row is fully masked -> rows get unmasked."""
    torch.manual_seed(0)
    dec = build_transformer_decoder(tiny_cfg(dec_layers=3), HIDDEN)
    x, _ = fake_features()
    embed = dec.mask_embed(dec.decoder_norm(dec.query_feat.weight))  # (Q, MASK_DIM)
    # mask features anti-aligned with every initial query's mask embedding
    direction = -embed.detach().sum(0)
    mask_features = direction[None, :, None, None].expand(2, -1, 16, 16) * 100
    out = dec(x, mask_features.contiguous())
    assert (out["aux_outputs"][0]["pred_masks"] < 0).all()
    assert torch.isfinite(out["pred_logits"]).all()
    assert torch.isfinite(out["decoder_output"]).all()


def test_mask_former_head():
    """Whole head (pixel decoder + transformer decoder) on fabricated backbone features."""
    pytest.importorskip("part_distillation.modeling.pixel_decoder.msdeformattn",
                        reason="pixel decoder not written yet")
    from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

    from part_distillation.modeling.meta_arch.mask_former_head import MaskFormerHead

    cfg = tiny_cfg(dec_layers=3)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    channels = {"res2": 16, "res3": 24, "res4": 32, "res5": 48}
    shapes = {k: ShapeSpec(channels=channels[k], stride=s) for k, s in strides.items()}
    head = SEM_SEG_HEADS_REGISTRY.get("MaskFormerHead")(cfg, shapes)
    assert isinstance(head, MaskFormerHead)
    keys = head.state_dict().keys()
    assert any(k.startswith("pixel_decoder.") for k in keys)
    assert "predictor.query_feat.weight" in keys
    feats = {k: torch.randn(1, channels[k], 64 // s, 64 // s) for k, s in strides.items()}
    out = head(feats)
    assert out["pred_logits"].shape == (1, QUERIES, CLASSES + 1)
    assert out["pred_masks"].shape == (1, QUERIES, 16, 16)
    assert out["decoder_output"].shape == (1, QUERIES, HIDDEN)
    assert len(out["aux_outputs"]) == 2
