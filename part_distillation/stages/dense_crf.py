"""Stage 3: dense-CRF refinement of the pixel-grouping segments (pydensecrf2).

Per object, on the network-input-sized image (the resize stage 2 used, read from its pseudo-labels), cropped to the object's
box plus a margin: labels are background (0) + the object's K segments; the unary comes from those
labels with ``DENSE_CRF.GT_PROB`` (0.7); pairwise terms are a Gaussian kernel (sxy 3, compat 3) and
a bilateral kernel (sxy 20, srgb 13, compat 10); ``NUM_ITERS`` (10) mean-field steps. These are the
official PartDistillation parameters (config defaults).

``DENSE_CRF.OBJECT_PIXELS`` chooses what happens to object pixels whose CRF argmax is background:

* ``official``: the CRF argmax is the result, background included; segments may also grow
  outside the object mask.
* ``keep_parts``: every object pixel takes its most probable *part* label and nothing outside the
  object becomes a part, so the segments still partition the object.

Results are upsampled (nearest) to the image resolution and stored as ``dense_crf`` pseudo-labels;
with ``keep_parts`` the CRF grid covers every cell an object pixel reads back from and the result
is cut to the full-resolution object mask, so every object pixel has a part and no other pixel has.
"""
import dataclasses
from typing import Tuple

import numpy as np
from detectron2.data import transforms as T

from ..data.images import read_image_or_skip
from ..data.pseudo_labels import PseudoLabelError, load_pseudo_label, mask_box_slices
from .base import PseudoLabelInputStage, register_stage
from .pixel_grouping import segments_to_parts

MODES = ("keep_parts", "official")


def crf_refine(image: np.ndarray, labels: np.ndarray, object_mask: np.ndarray, n_labels: int,
               params: dict, mode: str = "keep_parts") -> np.ndarray:
    """Refine one object's label map with a dense CRF.

    Args:
        image: uint8 RGB (h, w, 3), the crop the CRF runs on.
        labels: int (h, w); 0 = background, 1..n_labels-1 = segments.
        object_mask: bool (h, w), used by ``keep_parts``.
        n_labels: background + number of segments.
        params: ``GT_PROB, GAUSSIAN_SXY, GAUSSIAN_COMPAT, BILATERAL_SXY, BILATERAL_SRGB,
            BILATERAL_COMPAT, NUM_ITERS`` (``DENSE_CRF.*``).
        mode: ``keep_parts`` or ``official`` (module docstring).

    Returns: ``(labels int32 (h, w), moved)`` where ``moved`` counts object pixels whose CRF
    argmax over all labels is background (the pixels ``keep_parts`` keeps on parts).
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    if mode not in MODES:
        raise ValueError(f"DENSE_CRF.OBJECT_PIXELS must be one of {MODES}, got '{mode}'")
    h, w = labels.shape
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=params["GT_PROB"], zero_unsure=False))
    crf.addPairwiseGaussian(sxy=params["GAUSSIAN_SXY"], compat=params["GAUSSIAN_COMPAT"])
    crf.addPairwiseBilateral(sxy=params["BILATERAL_SXY"], srgb=params["BILATERAL_SRGB"],
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params["BILATERAL_COMPAT"])
    q = np.asarray(crf.inference(params["NUM_ITERS"])).reshape(n_labels, h, w)
    full = q.argmax(0).astype(np.int32)
    moved = int((object_mask & (full == 0)).sum())
    if mode == "official":
        return full, moved
    return np.where(object_mask, q[1:].argmax(0) + 1, 0).astype(np.int32), moved


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` output rows (or columns), the input row it takes when resizing
    ``n_in`` -> ``n_out`` by nearest neighbour (pixel centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)


def _resize_nearest(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer/bool (H, W) array to ``size`` (h, w)."""
    return a[_nearest_index(a.shape[0], size[0])[:, None], _nearest_index(a.shape[1], size[1])]


def _cells_of(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """bool (h, w): the cells of a ``size`` grid that some pixel of the (H, W) ``mask`` takes its
    value from when a ``size`` map is resized back to (H, W) by :func:`_resize_nearest`."""
    cells = np.zeros(size, bool)
    ys, xs = np.nonzero(mask)
    cells[_nearest_index(size[0], mask.shape[0])[ys], _nearest_index(size[1], mask.shape[1])[xs]] = True
    return cells


class CRFImageWorker:
    """Picklable per-image job for the worker pool: stage-2 file -> stage-3 pseudo-label. The CRF
    runs at stage 2's network input size, read from the file (``config["INPUT_SIZE"]``)."""

    def __init__(self, params: dict, mode: str, margin: int = 16):
        self.params, self.mode, self.margin = params, mode, margin

    def __call__(self, path: str):
        """``(ImagePseudoLabel, counters)``. Raises PseudoLabelError (not a stage-2 file, or one
        without ``INPUT_SIZE``) and SkipItem (unreadable image)."""
        label = load_pseudo_label(path, "pixel_grouping")
        if "INPUT_SIZE" not in label.config:
            raise PseudoLabelError(f"{path}: no INPUT_SIZE (stage 2's network input size) in its config")
        min_size, max_size = label.config["INPUT_SIZE"]
        image = read_image_or_skip(label.file_name)
        small = T.ResizeShortestEdge(min_size, max_size).get_transform(image).apply_image(image)
        size = small.shape[:2]
        objects, moved, total = [], 0, 0
        for obj in label.objects:
            if not obj.parts:
                objects.append(obj)
                continue
            # the part label map sampled at the CRF grid's nearest pixels, without building it at
            # full resolution (at 80 MP an int32 map is 320 MB)
            iy, ix = _nearest_index(obj.mask.shape[0], size[0]), _nearest_index(obj.mask.shape[1], size[1])
            seg = np.zeros(size, np.int32)
            for i, p in enumerate(obj.parts):
                seg[p.mask[iy][:, ix]] = i + 1
            # every cell an object pixel reads back from, so that keep_parts labels all of them
            omask = _cells_of(obj.mask, size)
            ys, xs = mask_box_slices(omask, self.margin)
            n = int(seg.max()) + 1
            refined = np.zeros(size, np.uint8 if n <= 256 else np.int32)
            refined[ys, xs], obj_moved = crf_refine(small[ys, xs], seg[ys, xs], omask[ys, xs], n,
                                                    self.params, self.mode)
            total += int(omask.sum())
            moved += obj_moved
            full = _resize_nearest(refined, obj.mask.shape)  # uint8 at full resolution (K < 256)
            if self.mode == "keep_parts":  # the cells' labels, cut back to the object's pixels
                full[~obj.mask] = 0
            objects.append(dataclasses.replace(obj, parts=segments_to_parts(full)))  # absent ids skipped
        out = dataclasses.replace(label, stage="dense_crf", objects=objects,
                                  config={**label.config, "DENSE_CRF": {**self.params, "OBJECT_PIXELS": self.mode}})
        # official: those pixels became background; keep_parts: they stayed on their best part
        key = ("object_pixels_moved_to_background" if self.mode == "official"
               else "object_pixels_crf_background_kept_on_parts")
        return out, {"object_pixels": total, key: moved}


PARAM_KEYS = ("GT_PROB", "GAUSSIAN_SXY", "GAUSSIAN_COMPAT", "BILATERAL_SXY", "BILATERAL_SRGB",
              "BILATERAL_COMPAT", "NUM_ITERS")


@register_stage
class DenseCRFStage(PseudoLabelInputStage):
    """Stage 3 over stage-2 pseudo-labels (``run(folder or files, workers)``), sharded by
    ``DENSE_CRF.TOTAL_PARTITIONS`` / ``PARTITION_INDEX``, ``DENSE_CRF.NUM_WORKERS`` processes."""

    NAME = "dense_crf"
    CONFIG_NAMESPACE = "DENSE_CRF"
    INPUT_STAGE = "pixel_grouping"
    RECORDED_CONFIG = ("DENSE_CRF",)

    def __init__(self, cfg, output_dir: str):
        super().__init__(cfg, output_dir)
        c = cfg.DENSE_CRF
        self.worker = CRFImageWorker({k: c[k] for k in PARAM_KEYS}, c.OBJECT_PIXELS)

    @classmethod
    def validate_config(cls, cfg) -> None:
        super().validate_config(cfg)
        c = cfg.DENSE_CRF
        if c.OBJECT_PIXELS not in MODES:
            raise ValueError(f"DENSE_CRF.OBJECT_PIXELS must be one of {list(MODES)}, got {c.OBJECT_PIXELS!r}")
        if not 0.0 < c.GT_PROB < 1.0:
            raise ValueError(f"DENSE_CRF.GT_PROB must be in (0, 1), got {c.GT_PROB}")
        for key in ("NUM_ITERS", "NUM_WORKERS"):
            if int(c[key]) < 1:
                raise ValueError(f"DENSE_CRF.{key} must be >= 1, got {c[key]}")
        for key in ("GAUSSIAN_SXY", "GAUSSIAN_COMPAT", "BILATERAL_SXY", "BILATERAL_SRGB", "BILATERAL_COMPAT"):
            if c[key] <= 0:
                raise ValueError(f"DENSE_CRF.{key} must be > 0, got {c[key]}")

    def run(self, inputs, workers: int = None):
        return super().run(inputs, self.cfg.DENSE_CRF.NUM_WORKERS if workers is None else workers)

    def process(self, item):
        return self.worker(item.source)
