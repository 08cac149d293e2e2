"""Dense per-pixel features for pixel grouping (stage 2).

:class:`BackboneFeatures` runs a detectron2 backbone chosen by config (``MODEL.BACKBONE.NAME``:
detectron2 ResNet ``build_resnet_backbone``, Swin ``D2SwinTransformer``, EfficientNet-Lite0/1/2
``build_efficientnet_lite{0,1,2}_backbone``) on the image resized by ``INPUT.MIN_SIZE_TEST`` /
``INPUT.MAX_SIZE_TEST``, resamples the levels named in
``PROPOSAL_GENERATION.BACKBONE_FEATURE_KEY_LIST`` (official default res3+res4 here) bilinearly to
a common grid of stride ``PROPOSAL_GENERATION.FEATURE_STRIDE`` (8), concatenates them along
channels and optionally L2-normalises each pixel (``FEATURE_NORMALIZE``).

:class:`RGBXYFeatures` is the no-network baseline: mean RGB of each stride-8 cell (0..1) and its
normalised x/y position.
"""
import math
import os
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_backbone

from .backbone.efficientnet_lite import MissingWeightsError


class _BackboneHolder(torch.nn.Module):
    """Holds the backbone under the attribute ``backbone`` so that full-model checkpoints
    (``backbone.*`` keys, e.g. official Mask2Former ``model_final_*.pkl``) load as they are."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def load_backbone_weights(backbone: torch.nn.Module, weights: str) -> None:
    """Load ``weights`` (.pkl/.pth, full model or backbone-only) into ``backbone``.

    Raises:
        MissingWeightsError: the file is not on disk; the message says where it belongs.
    """
    if not weights:
        return
    if "://" in weights or not os.path.isfile(weights):
        raise MissingWeightsError(
            f"weights file not found: {weights}. Download the official checkpoint and put it "
            "there (see weights/README.md for names and places); this machine cannot download.")
    DetectionCheckpointer(_BackboneHolder(backbone)).load(weights)


class _ResizedGrid:
    """What both feature sources share: the image resized as the stage-2 input
    (``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``) and the ``FEATURE_STRIDE`` grid over it."""

    def __init__(self, cfg):
        self.stride = int(cfg.PROPOSAL_GENERATION.FEATURE_STRIDE)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)

    def resized_input(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]:
        """uint8 (H, W, 3) -> (writable resized copy (H', W', 3), (H', W'), grid size (h, w)).

        Raises:
            ValueError: the resized image is smaller than the stride.
        """
        img = np.array(self.resize.get_transform(image).apply_image(image))
        hh, ww = img.shape[:2]
        if min(hh, ww) < self.stride:
            raise ValueError(f"image {image.shape[:2]} is smaller than the feature stride {self.stride}")
        return img, (hh, ww), (math.ceil(hh / self.stride), math.ceil(ww / self.stride))


class BackboneFeatures(_ResizedGrid):
    """Callable: uint8 RGB image (H, W, 3) -> ``(features (C, h, w) float32, (H', W'))`` where
    (H', W') is the resized network input and h = ceil(H'/stride), w = ceil(W'/stride).
    The backbone is built under ``torch.manual_seed(PROPOSAL_GENERATION.SEED)``."""

    def __init__(self, cfg, device: str = "cpu"):
        super().__init__(cfg)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            # parameters that no weights file overwrites (random-init baseline) depend on the
            # seed only, so a resumed shard uses the same network as the first run
            torch.manual_seed(cfg.PROPOSAL_GENERATION.SEED)
            self.backbone = build_backbone(cfg)
        load_backbone_weights(self.backbone, cfg.MODEL.WEIGHTS)
        self.backbone.to(self.device).eval()
        pg = cfg.PROPOSAL_GENERATION
        self.keys = list(pg.BACKBONE_FEATURE_KEY_LIST)
        missing = set(self.keys) - set(self.backbone.output_shape())
        if missing:
            raise ValueError(f"backbone outputs {list(self.backbone.output_shape())} lack {sorted(missing)}")
        self.normalize = bool(pg.FEATURE_NORMALIZE)
        self.rgb = cfg.INPUT.FORMAT == "RGB"
        self.mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(cfg.MODEL.PIXEL_STD, device=self.device).view(3, 1, 1)

    @property
    def dim(self) -> int:
        shapes = self.backbone.output_shape()
        return sum(shapes[k].channels for k in self.keys)

    @torch.no_grad()
    def levels(self, image: np.ndarray) -> Tuple[Dict[str, torch.Tensor], Tuple[int, int], Tuple[int, int]]:
        """uint8 RGB (H, W, 3) -> (``{level: (1, C_l, h_l, w_l)}`` for every backbone output at
        its own stride, resized input size (H', W'), stride-grid size (h, w))."""
        img, resized, grid = self.resized_input(image)
        x = torch.from_numpy(img if self.rgb else np.ascontiguousarray(img[..., ::-1]))
        x = x.to(self.device).permute(2, 0, 1).float()
        x = ((x - self.mean) / self.std)[None]
        return self.backbone(x), resized, grid

    def __call__(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        feats, resized, grid = self.levels(image)
        return combine_levels(feats, self.keys, grid, self.normalize), resized


def combine_levels(feats: Dict[str, torch.Tensor], keys, grid: Tuple[int, int], normalize: bool,
                   per_level: bool = False) -> torch.Tensor:
    """Backbone levels ``{name: (1, C_l, h_l, w_l)}`` -> (sum C_l, h, w) float32: the levels in
    ``keys`` resampled bilinearly (align_corners False) to ``grid`` and concatenated along
    channels; ``normalize`` L2-normalises each pixel of the result. ``per_level`` (hypercolumn
    with equal level weights) L2-normalises each level first and divides by sqrt(len(keys)), so
    the dot product of two pixels is the mean of their per-level cosine similarities."""
    ups = [F.interpolate(feats[k].float(), size=grid, mode="bilinear", align_corners=False)[0] for k in keys]
    if per_level:
        ups = [F.normalize(u, dim=0) / math.sqrt(len(keys)) for u in ups]
    out = torch.cat(ups, 0)
    return F.normalize(out, dim=0) if normalize else out


class RGBXYFeatures(_ResizedGrid):
    """Baseline features: per stride-8 cell, mean RGB in [0, 1] and (x, y) in [0, 1] scaled by
    ``xy_weight``. Same call signature as :class:`BackboneFeatures`."""

    dim = 5

    def __init__(self, cfg, xy_weight: float = 1.0):
        super().__init__(cfg)
        self.xy_weight = xy_weight

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        img, (hh, ww), (h, w) = self.resized_input(image)
        rgb = F.adaptive_avg_pool2d(torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255, (h, w))[0]
        ys = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
        xs = torch.linspace(0, 1, w).view(1, w).expand(h, w)
        return torch.cat([rgb, self.xy_weight * torch.stack([xs, ys])]), (hh, ww)
