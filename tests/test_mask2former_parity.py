"""Numerical parity with the official Mask2Former modules.

``../shared/fixtures/mask2former_parity/`` holds state dicts, inputs and eval-mode outputs produced
by running the official Mask2Former code (commit 9b0651c) for a small ``MaskFormerHead``
(MSDeformAttn pixel decoder + masked-attention decoder) and a tiny ``D2SwinTransformer``. The
project's modules, built from the fixture's official config through our config / registries, must
load those state dicts with ``strict=True`` and reproduce the outputs within the fixture README's
tolerance (about 1e-5 absolute against outputs of magnitude up to about 4).
"""
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_sem_seg_head

import part_distillation.modeling  # noqa: F401  (registers the official module names)
from part_distillation.config import get_part_distillation_cfg
from part_distillation.modeling.pixel_decoder import ms_deform_attn as msda

from .helpers import REPO

FIXTURES = os.environ.get("PD_PARITY_FIXTURES",
                          os.path.join(os.path.dirname(REPO), "shared", "fixtures", "mask2former_parity"))
ATOL = 1e-5  # fixture README, "Observed tolerances"

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(FIXTURES, "head.pt")),
                                reason="../shared/fixtures/mask2former_parity not present")


def official_cfg(flat: dict):
    """Our config with the fixture's official keys set exactly as the official run set them
    (including DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS 8, which the official decoder ignores)."""
    cfg = get_part_distillation_cfg()
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def strip(state: dict, prefix: str) -> dict:
    assert all(k.startswith(prefix) for k in state)
    return {k[len(prefix):]: v for k, v in state.items()}


def assert_close(ours: torch.Tensor, official: torch.Tensor, what: str):
    assert ours.shape == official.shape, what
    diff = (ours - official).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs diff {diff:.3g} > {ATOL}"


@pytest.fixture(params=["pytorch", "compiled"])
def msda_impl(request):
    """Both deformable-attention cores (the compiled one only where its package imports)."""
    if request.param == "compiled" and not msda.compiled_available():
        pytest.skip("torch_ms_deform_attn not installed")
    saved = msda.get_msda_impl()
    msda.set_msda_impl(request.param)
    yield request.param
    msda.set_msda_impl(saved)


def test_mask_former_head_matches_official(msda_impl):
    fx = torch.load(os.path.join(FIXTURES, "head.pt"))
    cfg = official_cfg(fx["config"])
    assert cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS == 8  # ignored, as official
    shapes = {k: ShapeSpec(channels=v["channels"], stride=v["stride"]) for k, v in fx["input_shape"].items()}
    head = build_sem_seg_head(cfg, shapes)
    head.load_state_dict(strip(fx["state_dict"], "sem_seg_head."), strict=True)
    head.eval()
    features = {k: v.float() for k, v in fx["features"].items()}
    with torch.no_grad():
        out = head(features)
        mask_features, encoder_features, multi_scale = head.pixel_decoder.forward_features(features)
    ref = fx["outputs"]
    assert_close(out["pred_logits"], ref["pred_logits"], "pred_logits")
    assert_close(out["pred_masks"], ref["pred_masks"], "pred_masks")
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 3
    for i, (a, b) in enumerate(zip(out["aux_outputs"], ref["aux_outputs"])):
        assert_close(a["pred_logits"], b["pred_logits"], f"aux_outputs[{i}].pred_logits")
        assert_close(a["pred_masks"], b["pred_masks"], f"aux_outputs[{i}].pred_masks")
    assert_close(mask_features, ref["mask_features"], "mask_features")
    assert len(multi_scale) == len(ref["multi_scale_features"]) == 3
    for i, (a, b) in enumerate(zip(multi_scale, ref["multi_scale_features"])):
        assert_close(a, b, f"multi_scale_features[{i}]")
    assert torch.equal(encoder_features, multi_scale[0])


def test_swin_matches_official():
    fx = torch.load(os.path.join(FIXTURES, "swin.pt"))
    cfg = official_cfg(fx["config"])
    swin = build_backbone(cfg)
    swin.load_state_dict(strip(fx["state_dict"], "backbone."), strict=True)
    swin.eval()
    with torch.no_grad():
        out = swin(fx["image"].float())
    assert sorted(out) == sorted(fx["outputs"]) == ["res2", "res3", "res4", "res5"]
    for name, ref in fx["outputs"].items():
        assert_close(out[name], ref, name)
