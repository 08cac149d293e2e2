"""Tests of the D2SwinTransformer backbone: shapes, official state-dict keys, checkpoint loading."""
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from part_distillation.config import get_part_distillation_cfg
from part_distillation.modeling.backbone.swin import D2SwinTransformer, WindowAttention, window_partition

DEPTHS = [1, 1, 2, 1]


def tiny_cfg(out_features=("res2", "res3", "res4", "res5"), use_checkpoint=False):
    cfg = get_part_distillation_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    sw = cfg.MODEL.SWIN
    sw.EMBED_DIM = 32
    sw.DEPTHS = DEPTHS
    sw.NUM_HEADS = [1, 2, 4, 8]
    sw.WINDOW_SIZE = 7
    sw.DROP_PATH_RATE = 0.0
    sw.OUT_FEATURES = list(out_features)
    sw.USE_CHECKPOINT = use_checkpoint
    return cfg


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_backbone(cfg).eval()


@pytest.mark.parametrize(
    "size, expected",
    [((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]), ((70, 90), [(18, 23), (9, 12), (5, 6), (3, 3)])],
)
def test_output_shapes_and_strides(size, expected):
    model = build(tiny_cfg())
    assert isinstance(model, D2SwinTransformer)
    assert model.size_divisibility == 32
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=32, stride=4),
        "res3": ShapeSpec(channels=64, stride=8),
        "res4": ShapeSpec(channels=128, stride=16),
        "res5": ShapeSpec(channels=256, stride=32),
    }
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for (name, spec), hw in zip(model.output_shape().items(), expected):
        assert out[name].shape == (2, spec.channels, *hw) and torch.isfinite(out[name]).all()


def expected_swin_keys(depths=DEPTHS, norms=(0, 1, 2, 3)):
    keys = ["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"]
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            keys += [p + "attn.relative_position_bias_table", p + "attn.relative_position_index"]
            for sub in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys += [p + sub + ".weight", p + sub + ".bias"]
        if i < len(depths) - 1:
            keys += [f"layers.{i}.downsample.reduction.weight", f"layers.{i}.downsample.norm.weight",
                     f"layers.{i}.downsample.norm.bias"]
    for i in norms:
        keys += [f"norm{i}.weight", f"norm{i}.bias"]
    return sorted(keys)


def test_state_dict_keys_are_official():
    sd = build(tiny_cfg()).state_dict()
    assert sorted(sd) == expected_swin_keys()
    assert sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (13 * 13, 1)
    assert sd["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (13 * 13, 8)
    assert sd["layers.0.blocks.0.attn.relative_position_index"].shape == (49, 49)
    assert sd["layers.0.blocks.0.attn.relative_position_index"].dtype == torch.int64
    assert sd["layers.1.downsample.reduction.weight"].shape == (128, 256)  # Linear(4C, 2C), no bias
    assert sd["layers.1.downsample.norm.weight"].shape == (256,)


def test_out_features_subset():
    model = build(tiny_cfg(out_features=["res3", "res4"]))
    assert set(model.output_shape()) == {"res3", "res4"}
    assert sorted(model.state_dict()) == expected_swin_keys(norms=(1, 2))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"res3": (1, 64, 8, 8), "res4": (1, 128, 4, 4)}


def test_relative_position_index_and_shifted_window_attention():
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, window=3, num_heads=2, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0)
    torch.nn.init.normal_(attn.relative_position_bias_table)
    idx = attn.relative_position_index
    # token 0 is (0, 0), token 8 is (2, 2): offset (-2, -2) -> row 0, (2, 2) -> last row, self -> centre
    assert idx[0, 8] == 0 and idx[8, 0] == 24 and (idx.diagonal() == 12).all()
    # an explicit softmax(q k^T * scale + bias + mask) v over 2 images x 2 windows
    x = torch.randn(4, 9, 8)
    mask = torch.zeros(2, 9, 9)
    mask[1, :4, 4:] = -100.0
    out = attn(x, mask)
    q, k, v = attn.qkv(x).view(4, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[idx.view(-1)].view(9, 9, 2).permute(2, 0, 1)
    logits = q @ k.transpose(-1, -2) * 4**-0.5 + bias + mask.repeat(2, 1, 1)[:, None]
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(4, 9, 8))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_window_partition_order():
    x = torch.arange(2 * 4 * 6).float().view(2, 4, 6, 1)
    w = window_partition(x, 2)
    assert w.shape == (12, 4, 1)
    assert w[1, :, 0].tolist() == [2.0, 3.0, 8.0, 9.0]  # image 0, window row 0, column 1
    assert w[6, 0, 0].item() == 24.0  # first window of image 1


def test_gradient_checkpointing_gives_same_result():
    x = torch.randn(1, 3, 40, 40)
    outs = []
    for use_ckpt in (False, True):
        model = build(tiny_cfg(use_checkpoint=use_ckpt)).train()
        out = model(x)
        sum(o.square().mean() for o in out.values()).backward()
        outs.append((out["res5"].detach(), model.layers[2].blocks[1].attn.qkv.weight.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_official_style_pkl_round_trip(tmp_path):
    """A checkpoint in the official ``model_final_*.pkl`` layout (numpy arrays under "model") saved
    from one instance loads exactly into a fresh one through DetectionCheckpointer."""
    src, dst = build(tiny_cfg(), seed=0), build(tiny_cfg(), seed=1)
    path = tmp_path / "model_final_tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in src.state_dict().items()}, "__author__": "test"}, f)
    DetectionCheckpointer(dst).load(str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = src(x), dst(x)
    for k in a:
        assert torch.equal(a[k], b[k])
