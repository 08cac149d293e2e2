"""Stage 3: dense-CRF refinement of the pixel-grouping segments (pydensecrf2).

Per object, on the network-input-sized image (the resize stage 2 used), cropped to the object's
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
import os
from typing import Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T

from ..data.images import read_image_rgb
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, load_pseudo_label, save_pseudo_label
from ..utils.sharding import SkipItem
from .common import run_stage
from .pixel_grouping import _renumber, segments_to_parts

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


def _crop_box(mask: np.ndarray, margin: int) -> Tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + 1 + margin, mask.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + 1 + margin, mask.shape[1])
    return slice(y0, y1), slice(x0, x1)


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
    """Picklable per-image job for the worker pool: stage-2 file -> stage-3 file."""

    def __init__(self, output_dir: str, min_size: int, max_size: int, params: dict, mode: str,
                 margin: int = 16):
        self.output_dir, self.min_size, self.max_size = output_dir, min_size, max_size
        self.params, self.mode, self.margin = params, mode, margin

    def __call__(self, path: str) -> dict:
        label = load_pseudo_label(path)
        try:
            image = read_image_rgb(label.file_name)
        except IOError as e:
            raise SkipItem(f"unreadable image: {e}") from None
        small = T.ResizeShortestEdge(self.min_size, self.max_size).get_transform(image).apply_image(image)
        size = small.shape[:2]
        objects, moved, total = [], 0, 0
        for obj in label.objects:
            if not obj.parts:
                objects.append(obj)
                continue
            seg = _resize_nearest(obj.part_label_map(), size)
            # every cell an object pixel reads back from, so that keep_parts labels all of them
            omask = _cells_of(obj.mask, size)
            ys, xs = _crop_box(omask, self.margin)
            n = int(seg.max()) + 1
            refined = np.zeros(size, np.int32)
            refined[ys, xs], obj_moved = crf_refine(small[ys, xs], seg[ys, xs], omask[ys, xs], n,
                                                    self.params, self.mode)
            total += int(omask.sum())
            moved += obj_moved
            full = _resize_nearest(refined, obj.mask.shape)
            if self.mode == "keep_parts":  # the cells' labels, cut back to the object's pixels
                full[~obj.mask] = 0
            full = _renumber(full)
            objects.append(ObjectLabel(obj.class_name, obj.mask, obj.class_code, obj.score, obj.bbox,
                                       segments_to_parts(full)))
        out = ImagePseudoLabel(label.file_name, label.image_id, label.height, label.width,
                               "dense_crf", objects, label.skipped_objects,
                               {**label.config, "DENSE_CRF": {**self.params, "OBJECT_PIXELS": self.mode}})
        save_pseudo_label(self.output_dir, out)
        return {"object_pixels": total, "object_pixels_moved_to_background": moved}


def run_dense_crf(cfg, input_files: Sequence[str], output_dir: str, workers: int = None):
    """Stage 3 over stage-2 pseudo-label files with sharding/resume and ``DENSE_CRF.NUM_WORKERS``
    worker processes; returns the RunSummary."""
    c = cfg.DENSE_CRF
    params = {"GT_PROB": c.GT_PROB, "GAUSSIAN_SXY": c.GAUSSIAN_SXY, "GAUSSIAN_COMPAT": c.GAUSSIAN_COMPAT,
              "BILATERAL_SXY": c.BILATERAL_SXY, "BILATERAL_SRGB": c.BILATERAL_SRGB,
              "BILATERAL_COMPAT": c.BILATERAL_COMPAT, "NUM_ITERS": c.NUM_ITERS}
    worker = CRFImageWorker(output_dir, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, params,
                            c.OBJECT_PIXELS)
    pg = cfg.PROPOSAL_GENERATION
    return run_stage("dense_crf", list(input_files), lambda p: os.path.splitext(os.path.basename(p))[0],
                     worker, output_dir,
                     {"DENSE_CRF": {**params, "OBJECT_PIXELS": c.OBJECT_PIXELS},
                      "INPUT_SIZE": [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST]},
                     pg.TOTAL_PARTITIONS, pg.PARTITION_INDEX,
                     workers=c.NUM_WORKERS if workers is None else workers)
