"""Tests of multi-scale deformable attention and the MSDeformAttn pixel decoder."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from part_distillation.config import get_part_distillation_cfg
from part_distillation.modeling.pixel_decoder import ms_deform_attn as msda
from part_distillation.modeling.pixel_decoder.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn_core_grid_sample,
)
from part_distillation.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnPixelDecoder,
    build_pixel_decoder,
)

SHAPES = [(7, 9), (4, 5), (2, 3)]
DIM = 64
FEATURE_SHAPES = {
    "res2": ShapeSpec(channels=16, stride=4),
    "res3": ShapeSpec(channels=24, stride=8),
    "res4": ShapeSpec(channels=32, stride=16),
    "res5": ShapeSpec(channels=40, stride=32),
}


@pytest.fixture
def impl():
    """Restore the module-level implementation switch after a test changes it."""
    saved = msda.get_msda_impl()
    yield msda.set_msda_impl
    msda.set_msda_impl(saved)


def core_inputs(dtype, n=2, heads=2, d=4, lq=5, points=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(SHAPES, dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(n, int(areas.sum()), heads, d, generator=g, dtype=dtype)
    # include samples outside [0, 1] to exercise the zero padding
    locs = torch.rand(n, lq, heads, len(SHAPES), points, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(n, lq, heads, len(SHAPES), points, generator=g, dtype=dtype)
    return value, shapes, starts, locs, weights


def forward_and_grads(fn, value, shapes, starts, locs, weights):
    leaves = [t.clone().requires_grad_() for t in (value, locs, weights)]
    out = fn(leaves[0], shapes, starts, leaves[1], leaves[2])
    g = torch.Generator().manual_seed(1)
    (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def ours(v, sh, st, lo, w):
    return ms_deform_attn_core_grid_sample(v, sh, lo, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_core_matches_package_reference_and_kernel(dtype):
    pkg = pytest.importorskip("torch_ms_deform_attn")
    inputs = core_inputs(dtype)
    out, grads = forward_and_grads(ours, *inputs)
    assert out.shape == (2, 5, 2 * 4) and out.dtype == dtype
    others = {
        "reference": lambda v, sh, st, lo, w: pkg.ms_deform_attn_core_pytorch(v, sh, lo, w),
        "compiled": pkg.ms_deform_attn,  # the native kernel runs on CPU too
    }
    for name, fn in others.items():
        ref_out, ref_grads = forward_and_grads(fn, *inputs)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5, msg=name)
        for which, a, b in zip(("value", "locations", "weights"), grads, ref_grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{name} grad {which}")


def test_core_single_sample_is_bilinear_interpolation():
    """A point at pixel centre (i + .5)/W, (j + .5)/H reads exactly that pixel."""
    value, shapes, starts, _, _ = core_inputs(torch.float64, n=1, heads=1, d=2, lq=1, points=1)
    locs = torch.full((1, 1, 1, 3, 1, 2), -5.0, dtype=torch.float64)  # far outside: zeros
    locs[0, 0, 0, 1, 0] = torch.tensor([(2 + 0.5) / 5, (1 + 0.5) / 4])  # level 1 (H=4, W=5), x=2, y=1
    weights = torch.ones(1, 1, 1, 3, 1, dtype=torch.float64)
    out = ms_deform_attn_core_grid_sample(value, shapes, locs, weights)
    expected = value[0, starts[1] + 1 * 5 + 2, 0]
    torch.testing.assert_close(out[0, 0], expected)


def module_inputs(n=2, lq=6):
    g = torch.Generator().manual_seed(3)
    shapes = torch.tensor(SHAPES, dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    query = torch.randn(n, lq, 32, generator=g)
    ref = torch.rand(n, lq, len(SHAPES), 2, generator=g)
    src = torch.randn(n, int(areas.sum()), 32, generator=g)
    mask = torch.zeros(n, int(areas.sum()), dtype=torch.bool)
    mask[1, -4:] = True
    return query, ref, src, shapes, starts, mask


def test_module_paths_agree_and_padding_mask_is_applied(impl):
    pytest.importorskip("torch_ms_deform_attn")
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    # non-trivial offsets and weights so that the comparison is not at the init values
    for lin in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.normal_(lin.weight, std=0.3)
    query, ref, src, shapes, starts, mask = module_inputs()
    outs = {}
    for name in ("pytorch", "compiled"):
        impl(name)
        outs[name] = attn(query, ref, src, shapes, starts, mask)
    assert outs["pytorch"].shape == (2, 6, 32)
    torch.testing.assert_close(outs["pytorch"], outs["compiled"], atol=1e-5, rtol=1e-5)
    impl("pytorch")
    # masked positions contribute nothing: changing their features leaves the output unchanged
    src2 = src.clone()
    src2[mask] = 100.0
    torch.testing.assert_close(attn(query, ref, src2, shapes, starts, mask), outs["pytorch"])


def test_impl_switch_validates_and_compiled_requires_package(impl, monkeypatch):
    with pytest.raises(ValueError, match="PD_MSDA_IMPL"):
        impl("cuda")
    impl("compiled")
    monkeypatch.setattr(msda, "_compiled", None)
    with pytest.raises(RuntimeError, match="torch_ms_deform_attn"):
        msda.ms_deform_attn_core(*core_inputs(torch.float32))
    impl("auto")  # auto falls back to the grid-sample core without the package
    assert msda.ms_deform_attn_core(*core_inputs(torch.float32)).shape == (2, 5, 8)


def test_msdeformattn_init_matches_deformable_detr():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # head 0 points along +x, head 1 along +y, at distances 1 and 2 on every level
    torch.testing.assert_close(bias[0, :, 0], torch.tensor([[1.0, 0.0]] * 3))
    torch.testing.assert_close(bias[1, :, 1], torch.tensor([[0.0, 2.0]] * 3), atol=1e-6, rtol=0)
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.attention_weights.bias.abs().sum() == 0


def tiny_cfg(enc_layers=2):
    cfg = get_part_distillation_cfg()
    head = cfg.MODEL.SEM_SEG_HEAD
    head.CONVS_DIM = DIM
    head.MASK_DIM = DIM
    head.NORM = "GN"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.COMMON_STRIDE = 4
    head.TRANSFORMER_ENC_LAYERS = enc_layers
    cfg.MODEL.MASK_FORMER.NHEADS = 4  # the encoder's heads, as official (N_HEADS is ignored)
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.0
    return cfg


def features_for(h, w, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, s.channels, -(-h // s.stride), -(-w // s.stride), generator=g)
        for k, s in FEATURE_SHAPES.items()
    }


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (70, 90)])
def test_pixel_decoder_output_shapes(size):
    torch.manual_seed(0)
    decoder = build_pixel_decoder(tiny_cfg(), FEATURE_SHAPES)
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    assert SEM_SEG_HEADS_REGISTRY.get("MSDeformAttnPixelDecoder") is MSDeformAttnPixelDecoder
    feats = features_for(*size)
    mask_features, enc_features, multi_scale = decoder.forward_features(feats)
    h4, w4 = feats["res2"].shape[-2:]
    assert mask_features.shape == (2, DIM, h4, w4)
    assert enc_features.shape == (2, DIM, *feats["res5"].shape[-2:])
    assert [tuple(m.shape) for m in multi_scale] == [(2, DIM, *feats[k].shape[-2:]) for k in ("res5", "res4", "res3")]
    assert multi_scale[0] is enc_features
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in (mask_features, *multi_scale))


def test_pixel_decoder_backward_and_impl_independence(impl):
    pytest.importorskip("torch_ms_deform_attn")
    torch.manual_seed(0)
    decoder = build_pixel_decoder(tiny_cfg(enc_layers=1), FEATURE_SHAPES)
    feats = features_for(64, 96)
    outs = {}
    for name in ("pytorch", "compiled"):
        impl(name)
        outs[name] = decoder.forward_features(feats)[0]
    torch.testing.assert_close(outs["pytorch"], outs["compiled"], atol=1e-5, rtol=1e-5)
    outs["compiled"].square().mean().backward()
    enc = decoder.transformer.encoder.layers[0]
    # (level_embed only reaches the output through the zero-initialised offset/weight layers)
    for p in (decoder.input_proj[0][0].weight, enc.self_attn.sampling_offsets.weight, decoder.adapter_1.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def expected_pixel_decoder_keys(enc_layers=2, levels=3):
    keys = ["transformer.level_embed", "mask_features.weight", "mask_features.bias"]
    for i in range(levels):
        keys += [f"input_proj.{i}.0.weight", f"input_proj.{i}.0.bias", f"input_proj.{i}.1.weight", f"input_proj.{i}.1.bias"]
    for i in range(enc_layers):
        p = f"transformer.encoder.layers.{i}."
        for sub in ("self_attn.sampling_offsets", "self_attn.attention_weights", "self_attn.value_proj",
                    "self_attn.output_proj", "norm1", "linear1", "linear2", "norm2"):
            keys += [p + sub + ".weight", p + sub + ".bias"]
    for conv in ("adapter_1", "layer_1"):  # GN: no conv bias
        keys += [f"{conv}.weight", f"{conv}.norm.weight", f"{conv}.norm.bias"]
    return sorted(keys)


def test_pixel_decoder_state_dict_uses_official_names():
    decoder = build_pixel_decoder(tiny_cfg(enc_layers=2), FEATURE_SHAPES)
    sd = decoder.state_dict()
    assert sorted(sd) == expected_pixel_decoder_keys()
    heads, points, levels = 4, 4, 3  # MASK_FORMER.NHEADS, the fixed 4 points
    assert sd["transformer.level_embed"].shape == (levels, DIM)
    assert sd["transformer.encoder.layers.0.self_attn.sampling_offsets.weight"].shape == (heads * levels * points * 2, DIM)
    assert sd["transformer.encoder.layers.0.self_attn.attention_weights.weight"].shape == (heads * levels * points, DIM)
    assert sd["transformer.encoder.layers.0.linear1.weight"].shape == (1024, DIM)  # official FFN width
    # input_proj is highest stride first: res5 (40 channels), res4, res3
    assert [sd[f"input_proj.{i}.0.weight"].shape[1] for i in range(3)] == [40, 32, 24]
    assert sd["adapter_1.weight"].shape == (DIM, 16, 1, 1) and sd["layer_1.weight"].shape == (DIM, DIM, 3, 3)
