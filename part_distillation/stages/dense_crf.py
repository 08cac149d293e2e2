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

Results are upsampled (nearest) to the image resolution and stored as ``dcrf`` pseudo-labels;
with ``keep_parts`` the CRF grid covers every cell an object pixel reads back from and the result
is cut to the full-resolution object mask, so every object pixel has a part and no other pixel has.

Memory per worker (one image at a time): the image is decoded straight to the CRF size
(:func:`~part_distillation.data.images.read_image_resized`; JPEGs at least 8x that size at
reduced scale), the stage-2 masks stay COCO RLE until their object's turn, and then at most one
object mask (bool), one decoded part mask (uint8) and one output buffer plus the upsampled
window of the object's CRF box (uint8) exist at full resolution; parts are RLE-encoded as they
are cut. The peak is thus a few bytes per image pixel whatever the number of objects and parts
(``bench/bench_crf_memory.py`` prints it; figures in docs/BENCHMARKS.md).
"""
import dataclasses
from typing import List, Tuple

import numpy as np
from detectron2.config import configurable
from detectron2.data import transforms as T

from ..data.images import read_image_or_skip
from ..data.pseudo_labels import (PartLabel, PseudoLabelError, decode_mask, encode_mask, load_pseudo_label,
                                   mask_box_slices)
from .build import register_stage
from .stage import PseudoLabelInputStage

MODES = ("keep_parts", "official")
STAGE, INPUT_STAGE = "dcrf", "proposal_generation"  # this stage's name and its input's


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


def _cells_of(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """bool (h, w): the cells of a ``size`` grid that some pixel of the (H, W) bool ``mask`` takes
    its value from when a ``size`` map is resized back to (H, W) by nearest neighbour
    (:func:`_nearest_index`). Reduces the mask over each cell's block of rows, then of columns,
    so the only temporaries are (h, W) and (h, w)."""
    cells = np.zeros(size, bool)
    rows = _nearest_index(size[0], mask.shape[0])  # the cell row of every mask row, non-decreasing
    cols = _nearest_index(size[1], mask.shape[1])
    row_cells, row_starts = np.unique(rows, return_index=True)
    col_cells, col_starts = np.unique(cols, return_index=True)
    by_rows = np.logical_or.reduceat(mask, row_starts, axis=0)
    cells[np.ix_(row_cells, col_cells)] = np.logical_or.reduceat(by_rows, col_starts, axis=1)
    return cells


def _part_rles(refined: np.ndarray, box: Tuple[slice, slice], object_mask: np.ndarray,
               keep_parts: bool) -> List[dict]:
    """The parts of a CRF label map, upsampled (nearest) to full resolution and COCO-RLE encoded.

    Args:
        refined: uint8/int32 (h, w), 0 outside ``box``; ``i`` = part ``i``.
        box: row and column slices of ``refined`` the CRF ran on.
        object_mask: bool (H, W), the object at full resolution.
        keep_parts: cut the parts to ``object_mask``.

    Returns: one stored RLE dict (str ``counts``) per id 1..max present after the cut, in id
    order: ``encode_mask`` of each of ``segments_to_parts`` of the full (H, W) upsampled map.
    Only the full-resolution rows and columns that read from ``box`` are built (uint8), and the
    parts are encoded one at a time from one reused Fortran uint8 (H, W) buffer.
    """
    (h, w), (H, W) = refined.shape, object_mask.shape
    rows, cols = _nearest_index(h, H), _nearest_index(w, W)  # the cell of each full-res row/column
    y0, y1 = np.searchsorted(rows, [box[0].start, box[0].stop])  # rows is non-decreasing
    x0, x1 = np.searchsorted(cols, [box[1].start, box[1].stop])
    crop = refined[rows[y0:y1]][:, cols[x0:x1]]
    if keep_parts:  # the cells' labels, cut back to the object's pixels
        crop *= object_mask[y0:y1, x0:x1]
    buf = np.zeros((H, W), np.uint8, order="F")
    window = buf[y0:y1, x0:x1]
    out = []
    for i in range(1, int(crop.max(initial=0)) + 1):
        np.equal(crop, i, out=window, casting="unsafe")
        if window.any():  # ids the cut (or the CRF) emptied are skipped
            out.append(encode_mask(buf))
    return out


class CRFImageWorker:
    """Picklable per-image job for the worker pool: stage-2 file -> stage-3 pseudo-label. The CRF
    runs at stage 2's network input size, read from the file (``config["INPUT_SIZE"]``).

    Memory: the image is decoded straight to that size (JPEGs at reduced scale:
    :func:`~part_distillation.data.images.read_image_resized`); masks stay COCO RLE until their
    object is processed, and then one object mask, one part mask and one uint8 output buffer
    exist at full resolution at a time (module docstring)."""

    def __init__(self, params: dict, mode: str, margin: int = 16):
        self.params, self.mode, self.margin = params, mode, margin

    def __call__(self, path: str):
        """``(ImagePseudoLabel, counters)``; the label's masks are COCO RLE dicts (stored form).
        Raises PseudoLabelError (not a stage-2 file, or one without ``INPUT_SIZE``) and SkipItem
        (unreadable image)."""
        label = load_pseudo_label(path, INPUT_STAGE, decode=False)
        if "INPUT_SIZE" not in label.config:
            raise PseudoLabelError(f"{path}: no INPUT_SIZE (stage 2's network input size) in its config")
        min_size, max_size = label.config["INPUT_SIZE"]
        # the pixels T.ResizeShortestEdge(min_size, max_size) gives the decoded image
        small = read_image_or_skip(label.file_name, lambda height, width: T.ResizeShortestEdge.get_output_shape(
            height, width, min_size, max_size))
        size = small.shape[:2]
        objects, moved, total = [], 0, 0
        for obj in label.objects:
            if not obj.parts:
                objects.append(obj)
                continue
            mask = decode_mask(obj.mask)  # bool (H, W), the object's only full-resolution copy
            # the part label map sampled at the CRF grid's nearest pixels, decoding one part at a
            # time and never building the map at full resolution
            iy, ix = _nearest_index(mask.shape[0], size[0]), _nearest_index(mask.shape[1], size[1])
            seg = np.zeros(size, np.int32)
            for i, p in enumerate(obj.parts):
                seg[decode_mask(p.mask)[iy][:, ix]] = i + 1
            # every cell an object pixel reads back from, so that keep_parts labels all of them
            omask = _cells_of(mask, size)
            ys, xs = mask_box_slices(omask, self.margin)
            n = int(seg.max()) + 1
            refined = np.zeros(size, np.uint8 if n <= 256 else np.int32)
            refined[ys, xs], obj_moved = crf_refine(small[ys, xs], seg[ys, xs], omask[ys, xs], n,
                                                    self.params, self.mode)
            total += int(omask.sum())
            moved += obj_moved
            parts = _part_rles(refined, (ys, xs), mask, self.mode == "keep_parts")
            objects.append(dataclasses.replace(obj, parts=[PartLabel(rle, None, 1.0) for rle in parts]))
            del mask
        out = dataclasses.replace(label, stage=STAGE, objects=objects,
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
    ``DENSE_CRF.TOTAL_PARTITIONS`` / ``PARTITION_INDEX``.

    Args:
        output_dir, run_options: see :class:`~part_distillation.stages.stage.Stage`.
        params: the CRF parameters ``{key: value}`` for every key of :data:`PARAM_KEYS`
            (``DENSE_CRF.*``; see :func:`crf_refine`).
        mode: ``"official"`` or ``"keep_parts"`` (``DENSE_CRF.OBJECT_PIXELS``, module docstring).
        num_workers: processes :meth:`run` uses when not told (``DENSE_CRF.NUM_WORKERS``).
    """

    NAME = STAGE
    CONFIG_NAMESPACE = "DENSE_CRF"
    INPUT_STAGE = INPUT_STAGE
    RECORDED_ARGUMENTS = ("params", "mode")

    @configurable
    def __init__(self, *, output_dir: str, run_options, params: dict, mode: str, num_workers: int):
        super().__init__(output_dir=output_dir, run_options=run_options)
        if sorted(params) != sorted(PARAM_KEYS):
            raise ValueError(f"DenseCRFStage params must have the keys {list(PARAM_KEYS)}, got {sorted(params)}")
        self.params, self.mode, self.num_workers = dict(params), mode, int(num_workers)
        self.worker = CRFImageWorker(self.params, mode)

    @classmethod
    def from_config(cls, cfg, output_dir: str) -> dict:
        """DENSE_CRF.{GT_PROB, GAUSSIAN_SXY, GAUSSIAN_COMPAT, BILATERAL_SXY, BILATERAL_SRGB,
        BILATERAL_COMPAT, NUM_ITERS} (``params``), OBJECT_PIXELS (``mode``), NUM_WORKERS."""
        c = cfg.DENSE_CRF
        return dict(super().from_config(cfg, output_dir), params={k: c[k] for k in PARAM_KEYS},
                    mode=c.OBJECT_PIXELS, num_workers=c.NUM_WORKERS)

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
        return super().run(inputs, self.num_workers if workers is None else workers)

    def process(self, item):
        return self.worker(item.source)
