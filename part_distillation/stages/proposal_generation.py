"""Stage 2, proposal generation: pixel grouping (PartDistillation Sec. 3.1) -> K class-agnostic part segments per object.

For each object of a stage-1 pseudo-label: dense features of the image (stride 8, see
:mod:`part_distillation.modeling.feature_extractor`); the object mask is area-resampled to that
grid and cells covered >= 50% are the object's feature pixels; k-means with
``NUM_SUPERPIXEL_CLUSTERS`` (K) clusters runs on them (objects batched, see
:mod:`part_distillation.modeling.kmeans`); then every object pixel at full image resolution is
assigned to a centre by ``DISTANCE_METRIC``:

* ``dot``: argmax_k x . c_k (official PartDistillation). With un-normalised features one
  large-norm centre can win almost every pixel (segments collapse).
* ``l2``: argmax_k -||x - c_k||^2 = argmax_k (2 x . c_k - ||c_k||^2), the k-means assignment.

Both scores are linear in x, so the score maps are computed on the stride-8 grid and upsampled
bilinearly to full resolution, which equals scoring bilinearly upsampled features exactly.

``POSITION_WEIGHT`` w > 0 (this project's option; 0, the official behaviour, is the default):
each feature pixel also carries w times its (x, y) position inside the object's box
(:func:`box_positions`), a spatial-coherence term as in SLIC superpixels (Achanta et al., TPAMI
2012), so k-means prefers spatially compact segments. The position channels are always scored
by nearest centre (with ``dot``, on the dot score's scale: see :func:`score_maps`); they are
linear in the pixel position, so the upsampling above stays exact.
Objects with <= K feature pixels take a fallback (``PixelGrouper``), counted.

``grid_segments`` is the learning-free 2x2 baseline (the object's box split into quadrants).
"""
import dataclasses
import logging
import zlib
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable

from ..config import plain_config
from ..data.images import read_image_or_skip
from ..data.pseudo_labels import PartLabel, mask_box_slices
from ..modeling.kmeans import batched_kmeans, pack_rows, size_batches
from .build import GROUPER_REGISTRY, build_segmenter, register_stage
from .resume import RUN_KEYS
from .stage import PseudoLabelInputStage

logger = logging.getLogger(__name__)


def grid_cell_masks(masks: torch.Tensor, resized: Tuple[int, int], grid: Tuple[int, int],
                    stride: int, min_cover: float = 0.5) -> torch.Tensor:
    """Object masks (M, H, W) bool at image resolution -> (M, h, w) bool feature-grid masks: a cell
    is inside when >= ``min_cover`` of its pixels (in the resized frame) are (``min_cover`` 0: when
    any part of it is)."""
    m = F.interpolate(masks[:, None].float(), size=resized, mode="area")
    h, w = grid
    m = F.pad(m, (0, w * stride - resized[1], 0, h * stride - resized[0]))
    cover = F.avg_pool2d(m, stride)[:, 0]
    return cover > 0 if min_cover <= 0 else cover >= min_cover


def score_maps(features: torch.Tensor, centers: torch.Tensor, metric: str, position_dims: int = 0
               ) -> torch.Tensor:
    """(C, h, w) features, (K, C) centres -> (K, h, w) assignment scores (higher wins).

    The last ``position_dims`` channels are positions (:func:`box_positions`), scored by nearest
    centre under either metric: with ``l2`` all channels are (2 x.c - ||c||^2); with ``dot`` the
    feature channels score x.c and the position channels (2 p.c - ||c||^2) / 2, the same scale
    (half the negative squared distance up to a per-pixel constant), so a position centre does not
    win by its norm.

    Raises:
        ValueError: ``metric`` is not ``"dot"`` or ``"l2"``.
    """
    s = torch.einsum("chw,kc->khw", features, centers)
    if metric == "l2":
        return 2 * s - (centers * centers).sum(-1)[:, None, None]
    if metric == "dot":
        if position_dims:
            pos = centers[:, centers.shape[1] - position_dims:]
            s = s - 0.5 * (pos * pos).sum(-1)[:, None, None]
        return s
    raise ValueError(f"DISTANCE_METRIC must be 'dot' or 'l2', got '{metric}'")


def box_positions(cells: torch.Tensor) -> torch.Tensor:
    """Feature-grid object masks (M, h, w) bool -> (M, 2, h, w) float32: (x, y) of every grid cell
    centre relative to the top-left corner of its object's box (the box of its True cells), in
    units of the box's longer side, so the object spans [0, 1] along that side and keeps its aspect
    ratio (an isotropic spatial distance, as in SLIC). Cells outside the box get values outside
    that range; an empty mask gives the whole grid's box."""
    m, h, w = cells.shape
    rows, cols = cells.any(2), cells.any(1)  # (M, h), (M, w)
    r0 = rows.int().argmax(1)
    r1 = h - 1 - rows.flip(1).int().argmax(1)
    c0 = cols.int().argmax(1)
    c1 = w - 1 - cols.flip(1).int().argmax(1)
    side = torch.maximum(r1 - r0 + 1, c1 - c0 + 1).float()[:, None]
    x = (torch.arange(w, device=cells.device)[None] + 0.5 - c0[:, None]) / side  # (M, w)
    y = (torch.arange(h, device=cells.device)[None] + 0.5 - r0[:, None]) / side  # (M, h)
    return torch.stack([x[:, None, :].expand(m, h, w), y[:, :, None].expand(m, h, w)], 1)


def interp_matrix(n: int, n_resized: int, n_out: int, stride: int) -> torch.Tensor:
    """(n_out, n) float32 weights of the 1-D resampling ``upsample_scores`` does along one axis:
    linear (align_corners False) from ``n`` grid cells to ``n * stride`` network-input pixels,
    cropped to ``n_resized``, then linear to ``n_out`` image pixels. Bilinear resizing is separable,
    so a (h, w) map resamples as ``My @ map @ Mx.T``."""
    a = F.interpolate(torch.eye(n)[None], size=n * stride, mode="linear", align_corners=False)
    return F.interpolate(a[..., :n_resized], size=n_out, mode="linear", align_corners=False)[0].T


def upsample_scores(scores: torch.Tensor, resized: Tuple[int, int], out_size: Tuple[int, int],
                    stride: int, rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
    """(K, h, w) stride-grid scores -> (K, len(rows), len(cols)): the window ``rows, cols`` of the
    scores at image resolution ``out_size`` (bilinear, via the resized network-input frame so grid
    cells stay aligned with the pixels they came from). Only the window is computed, with the
    separable weights of :func:`interp_matrix` (memory O(K x window), not O(K x image))."""
    k, h, w = scores.shape
    my = interp_matrix(h, resized[0], out_size[0], stride)[rows].to(scores)
    mx = interp_matrix(w, resized[1], out_size[1], stride)[cols].to(scores)
    return torch.einsum("yh,khx->kyx", my, torch.einsum("khw,xw->khx", scores, mx))


def object_seed(base_seed: int, image_id: str, index: int) -> int:
    """Per-object random seed, stable across runs, shards and batch sizes."""
    return (zlib.crc32(f"{image_id}/{index}".encode()) + 7919 * int(base_seed)) % (2 ** 31)


class PixelGrouper:
    """Splits the objects of one image into K segments with k-means on dense features.

    Small objects (fallback): an object whose mask covers >= 50% of at most K feature cells would
    give k-means fewer than K + 1 points. It takes every cell it touches at all as its points
    instead; when those are still <= K, each touched cell is a centre (so the object gets up to
    that many segments, one when it lies inside a single cell), otherwise k-means runs on them.
    Chosen over one segment for the whole object and over the 2x2 grid by the small-object rows of
    the evaluation on both shared datasets (docs/BENCHMARKS.md, "Small objects"). Counted in ``last_counts``.

    ``@configurable``: built as ``PixelGrouper(cfg, feature_fn=..., device=...)`` (the values of
    :meth:`from_config`) or with every keyword argument explicit (no defaults, so that a bench or
    test states the setting it measures).

    ``position_weight`` w > 0 appends w times each cell's :func:`box_positions` (x, y) inside its
    object's box to its features, for k-means and for the assignment (module docstring); the
    k-means inertia then includes the position term.

    Args:
        feature_fn: image (H, W, 3) uint8 -> (features (C, h, w), resized (H', W')).
        k, metric, position_weight, stride, iters, tol, restarts, objects_per_batch, seed: see
            ``PROPOSAL_GENERATION.*`` in :mod:`part_distillation.config` (:meth:`from_config`).
        device: where k-means runs.

    Raises:
        ValueError: ``metric`` is not ``"dot"`` or ``"l2"``; ``position_weight`` < 0.
    """

    @configurable
    def __init__(self, *, feature_fn: Callable, k: int, metric: str, position_weight: float, stride: int,
                 iters: int, tol: float, restarts: int, objects_per_batch: int, seed: int, device: str):
        if metric not in ("dot", "l2"):
            raise ValueError(f"DISTANCE_METRIC must be 'dot' or 'l2', got '{metric}'")
        if position_weight < 0:
            raise ValueError(f"PROPOSAL_GENERATION.POSITION_WEIGHT must be >= 0, got {position_weight}")
        self.feature_fn, self.k, self.metric, self.stride = feature_fn, k, metric, stride
        self.position_weight = float(position_weight)
        self.iters, self.tol, self.restarts = iters, tol, restarts
        self.objects_per_batch, self.seed, self.device = objects_per_batch, seed, torch.device(device)
        self.last_counts = {"objects_small_fallback": 0}  # of the latest call
        self.last_inertia: List[Optional[float]] = []  # of the latest call, per object

    @classmethod
    def from_config(cls, cfg, feature_fn: Callable, device: str = "cpu") -> dict:
        """PROPOSAL_GENERATION.{NUM_SUPERPIXEL_CLUSTERS, DISTANCE_METRIC, POSITION_WEIGHT,
        FEATURE_STRIDE, KMEANS_ITERS, KMEANS_TOL, KMEANS_RESTARTS, OBJECTS_PER_BATCH, SEED}."""
        pg = cfg.PROPOSAL_GENERATION
        return dict(feature_fn=feature_fn, k=pg.NUM_SUPERPIXEL_CLUSTERS, metric=pg.DISTANCE_METRIC,
                    position_weight=pg.POSITION_WEIGHT, stride=pg.FEATURE_STRIDE, iters=pg.KMEANS_ITERS,
                    tol=pg.KMEANS_TOL, restarts=pg.KMEANS_RESTARTS, objects_per_batch=pg.OBJECTS_PER_BATCH,
                    seed=pg.SEED, device=device)

    def __call__(self, image: np.ndarray, masks: Sequence[np.ndarray], image_id: str
                 ) -> List[Optional[np.ndarray]]:
        """Segment label maps for each object mask: int32 (H, W), 0 outside the object and 1..K on
        its segments (ids renumbered to be consecutive), or None for an empty mask. Objects with
        <= K feature pixels take the small-object fallback (class docstring) and are counted in
        ``self.last_counts["objects_small_fallback"]`` (this call's count). ``self.last_inertia``
        holds each object's k-means inertia (sum of squared distances of its points, features
        and position channels, to their centre;
        None for empty masks and objects whose touched cells are the centres)."""
        self.last_counts = {"objects_small_fallback": 0}
        self.last_inertia = [None] * len(masks)
        if not len(masks):
            return []
        feats, resized = self.feature_fn(image)
        feats = feats.to(self.device)
        c, h, w = feats.shape
        full = torch.from_numpy(np.stack(masks)).to(self.device)
        cells = grid_cell_masks(full, resized, (h, w), self.stride).view(len(masks), -1)
        flat = feats.view(c, -1).T  # (h*w, C)
        out: List[Optional[np.ndarray]] = [None] * len(masks)
        sizes = cells.sum(1).tolist()
        small = [i for i in range(len(masks)) if sizes[i] <= self.k and bool(full[i].any())]
        if small:  # fallback points: every cell the object touches at all
            touched = grid_cell_masks(full[small], resized, (h, w), self.stride, 0.0).view(len(small), -1)
            for j, i in enumerate(small):
                cells[i] = touched[j]
                sizes[i] = int(touched[j].sum())
            self.last_counts["objects_small_fallback"] = len(small)
        # per object: the image features, followed by w * (x, y) in the object's box when w > 0
        pos = self.position_weight * box_positions(cells.view(len(masks), h, w)) if self.position_weight else None
        dims = 0 if pos is None else pos.shape[1]

        def object_feats(i):  # (C + dims, h, w)
            return feats if pos is None else torch.cat([feats, pos[i]])

        def points(i):  # (n_i, C + dims): the object's k-means points
            if pos is None:
                return flat[cells[i]]
            return torch.cat([flat[cells[i]], pos[i].view(dims, -1).T[cells[i]]], 1)

        for i in small:
            if sizes[i] <= self.k:  # each touched cell is its own centre
                out[i] = assign_segments(object_feats(i), points(i), full[i], resized, self.metric, self.stride,
                                         dims)
        ok = [i for i in range(len(masks)) if sizes[i] > self.k]
        # similar sizes share a batch, so little of it is padding (rows are independent: same result)
        for idx in size_batches([sizes[i] for i in ok], self.objects_per_batch):
            idx = [ok[j] for j in idx]
            x, valid = pack_rows([points(i) for i in idx])
            res = batched_kmeans(x, valid, self.k, [object_seed(self.seed, image_id, i) for i in idx],
                                 self.iters, self.tol, self.restarts)
            for row, i in enumerate(idx):
                out[i] = assign_segments(object_feats(i), res.centers[row], full[i], resized, self.metric,
                                         self.stride, dims)
                self.last_inertia[i] = float(res.inertia[row])
        return out


# rows of an object's box scored at a time by assign_segments: bounds its memory to
# K x ASSIGN_ROWS x box width floats (an 80 MP image needs no K full-size score maps)
ASSIGN_ROWS = 512


def assign_segments(features: torch.Tensor, centers: torch.Tensor, mask: torch.Tensor,
                    resized: Tuple[int, int], metric: str, stride: int, position_dims: int = 0) -> np.ndarray:
    """Assign every pixel of one object to a centre.

    Args:
        features: (C, h, w) stride-grid features of the image; centers: (K, C).
        mask: (H, W) bool object mask at image resolution (non-empty).
        resized: (H', W') network-input size the grid was computed on.
        position_dims: the last channels that are positions (:func:`score_maps`).
    Returns:
        int32 (H, W): 0 outside the object, segment ids 1..n (renumbered) inside.

    Only the object's bounding box is scored, ``ASSIGN_ROWS`` rows at a time.
    """
    scores = score_maps(features, centers, metric, position_dims)
    ys, xs = mask_box_slices(mask.cpu().numpy())
    inside = mask[ys, xs]
    box = torch.zeros(inside.shape, dtype=torch.int32, device=mask.device)
    for r0 in range(0, inside.shape[0], ASSIGN_ROWS):
        rows = slice(ys.start + r0, min(ys.start + r0 + ASSIGN_ROWS, ys.stop))
        up = upsample_scores(scores, resized, tuple(mask.shape), stride, rows, xs)
        # max().indices, not argmax(): on CPU torch's argmax over the leading dim is several times slower
        box[r0: r0 + up.shape[1]] = up.max(0).indices.int() + 1
    box[~inside] = 0
    seg = np.zeros(tuple(mask.shape), np.int32)
    seg[ys, xs] = _renumber(box.cpu().numpy())
    return seg


def _renumber(seg: np.ndarray) -> np.ndarray:
    """Map the present non-zero ids of a (H, W) non-negative int label map to 1..n in order."""
    present = np.bincount(seg.ravel())
    present[0] = 0
    lut = np.zeros(len(present), np.int32)
    lut[present > 0] = np.arange(1, int((present > 0).sum()) + 1)
    return lut[seg]


def grid_segments(mask: np.ndarray, rows: int = 2, cols: int = 2) -> np.ndarray:
    """Baseline without learning: the object's bounding box split into ``rows x cols`` equal
    cells, intersected with the mask -> int32 (H, W) label map (0 outside, ids renumbered)."""
    ys, xs = mask_box_slices(mask)
    y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    r = np.clip((yy - y0) * rows // max(y1 - y0, 1), 0, rows - 1)
    c = np.clip((xx - x0) * cols // max(x1 - x0, 1), 0, cols - 1)
    return _renumber(np.where(mask, r * cols + c + 1, 0).astype(np.int32))


@GROUPER_REGISTRY.register()
def kmeans(cfg, device: str) -> Callable:
    """The method (Sec. 3.1): k-means on backbone features (``BackboneFeatures``)."""
    from ..modeling.feature_extractor import BackboneFeatures

    return PixelGrouper(cfg, feature_fn=BackboneFeatures(cfg, device), device=device)


@GROUPER_REGISTRY.register()
def kmeans_rgbxy(cfg, device: str) -> Callable:
    """Baseline without a network: k-means on colour + position.

    Raises:
        ValueError: DISTANCE_METRIC is not ``l2``. RGB+XY vectors are not normalised, so with
            ``dot`` the largest-norm (brightest, lower right) centre takes most pixels, which is
            not k-means' own nearest-centre rule. POSITION_WEIGHT is not 0: the baseline has its
            own (image) XY channels, a second position term would make it another baseline.
    """
    from ..modeling.feature_extractor import RGBXYFeatures

    if cfg.PROPOSAL_GENERATION.DISTANCE_METRIC != "l2":
        raise ValueError("GROUPING kmeans_rgbxy needs PROPOSAL_GENERATION.DISTANCE_METRIC l2 "
                         f"(got '{cfg.PROPOSAL_GENERATION.DISTANCE_METRIC}')")
    if cfg.PROPOSAL_GENERATION.POSITION_WEIGHT:
        raise ValueError("GROUPING kmeans_rgbxy needs PROPOSAL_GENERATION.POSITION_WEIGHT 0 (it has its own XY "
                         f"channels; got {cfg.PROPOSAL_GENERATION.POSITION_WEIGHT})")
    return PixelGrouper(cfg, feature_fn=RGBXYFeatures(cfg), device=device)


@GROUPER_REGISTRY.register()
def grid(cfg, device: str) -> Callable:
    """Learning-free baseline: the object's box split 2x2 (:func:`grid_segments`)."""
    return lambda image, masks, image_id: [grid_segments(m) for m in masks]


def segments_to_parts(seg: np.ndarray) -> List[PartLabel]:
    """int label map (0 = none) -> one :class:`PartLabel` per present id (label unknown)."""
    return [PartLabel(seg == i, None, 1.0) for i in range(1, int(seg.max()) + 1) if (seg == i).any()]


# the PROPOSAL_GENERATION keys each stage-2 file's config records (with BACKBONE, WEIGHTS, INPUT_SIZE)
FILE_CONFIG_KEYS = ("GROUPING", "NUM_SUPERPIXEL_CLUSTERS", "DISTANCE_METRIC", "FEATURE_NORMALIZE",
                    "BACKBONE_FEATURE_KEY_LIST", "POSITION_WEIGHT", "FEATURE_STRIDE", "SEED", "KMEANS_RESTARTS")


@register_stage
class ProposalGenerationStage(PseudoLabelInputStage):
    """Stage 2 over stage-1 pseudo-labels (``run(folder or files)``): every object split into
    segments by ``segment_fn``. Objects that get no segments keep no parts and are listed in
    ``skipped_objects`` (reason ``too_small_for_k``).

    Args:
        output_dir, run_options: see :class:`~part_distillation.stages.stage.Stage`.
        segment_fn: ``(image, masks, image_id) -> list of int32 label maps or None`` (from the
            config: :func:`build_segmenter`, ``PROPOSAL_GENERATION.GROUPING``).
        segment_settings: JSON-ready, everything that determines ``segment_fn``'s output (from the
            config: the PROPOSAL_GENERATION, MODEL and INPUT nodes without the run keys); recorded
            by the resume guard.
        file_config: what each output file's ``config`` records about how its segments were made
            (from the config: PROPOSAL_GENERATION's :data:`FILE_CONFIG_KEYS`, MODEL.BACKBONE.NAME
            as ``BACKBONE``, MODEL.WEIGHTS as ``WEIGHTS``).
        input_size: ``(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``, the network input size of the
            features, recorded in each file as ``INPUT_SIZE`` (stage 3 runs at that size).
        weights: the backbone's weight file (``MODEL.WEIGHTS``; ``""``: none), whose identity the
            resume guard records.
    """

    NAME = "proposal_generation"
    CONFIG_NAMESPACE = "PROPOSAL_GENERATION"
    INPUT_STAGE = "object_masks"
    RECORDED_ARGUMENTS = ("segment_settings", "input_size")

    @configurable
    def __init__(self, *, output_dir: str, run_options, segment_fn: Callable, segment_settings: dict,
                 file_config: dict, input_size: Tuple[int, int], weights: str):
        super().__init__(output_dir=output_dir, run_options=run_options)
        self.segment_fn, self.segment_settings = segment_fn, segment_settings
        self.file_config, self.input_size, self.weights = dict(file_config), tuple(input_size), weights

    @classmethod
    def from_config(cls, cfg, output_dir: str, segment_fn: Optional[Callable] = None) -> dict:
        """``segment_fn`` (default: :func:`build_segmenter` of ``cfg``) and the settings above."""
        args = super().from_config(cfg, output_dir)  # validates first
        pg = cfg.PROPOSAL_GENERATION
        file_config = {k: _plain_value(pg[k]) for k in FILE_CONFIG_KEYS}
        file_config.update(BACKBONE=cfg.MODEL.BACKBONE.NAME, WEIGHTS=cfg.MODEL.WEIGHTS)
        return dict(args, segment_fn=segment_fn or build_segmenter(cfg),
                    segment_settings={name: plain_config(cfg[name], RUN_KEYS)
                                      for name in ("PROPOSAL_GENERATION", "MODEL", "INPUT")},
                    file_config=file_config, input_size=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
                    weights=cfg.MODEL.WEIGHTS)

    def weight_files(self) -> List[str]:
        return [self.weights] if self.weights else []

    @staticmethod
    def default_input(cfg):
        return cfg.PROPOSAL_GENERATION.OBJECT_MASK_PATH or None

    @classmethod
    def validate_config(cls, cfg) -> None:
        super().validate_config(cfg)
        pg = cfg.PROPOSAL_GENERATION
        if not pg.WITH_GIVEN_MASK:
            raise ValueError("PROPOSAL_GENERATION.WITH_GIVEN_MASK False is not supported: stage 2 groups the "
                             "pixels of stage-1 object masks (run stage 1 with the labeler you want)")
        _choice("PROPOSAL_GENERATION.GROUPING", pg.GROUPING, tuple(sorted(k for k, _ in GROUPER_REGISTRY)))
        _choice("PROPOSAL_GENERATION.DISTANCE_METRIC", pg.DISTANCE_METRIC, ("dot", "l2"))
        for key in ("NUM_SUPERPIXEL_CLUSTERS", "FEATURE_STRIDE", "KMEANS_ITERS", "KMEANS_RESTARTS",
                    "OBJECTS_PER_BATCH"):
            if int(pg[key]) < 1:
                raise ValueError(f"PROPOSAL_GENERATION.{key} must be >= 1, got {pg[key]}")
        if pg.KMEANS_TOL < 0:
            raise ValueError(f"PROPOSAL_GENERATION.KMEANS_TOL must be >= 0, got {pg.KMEANS_TOL}")
        if cfg.INPUT.MIN_SIZE_TEST < 1 or cfg.INPUT.MAX_SIZE_TEST < cfg.INPUT.MIN_SIZE_TEST:
            raise ValueError(f"INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST must satisfy 1 <= min <= max, got "
                             f"{cfg.INPUT.MIN_SIZE_TEST} / {cfg.INPUT.MAX_SIZE_TEST}")

    def process(self, item):
        label = self.load_input(item)
        image = read_image_or_skip(label.file_name)
        if image.shape[:2] != (label.height, label.width):
            raise ValueError(f"image {image.shape[:2]} != pseudo-label size {(label.height, label.width)}")
        segs = self.segment_fn(image, [o.mask for o in label.objects], label.image_id)
        objects, skipped = [], list(label.skipped_objects)
        for index, obj, seg in zip(label.object_indices(), label.objects, segs):
            if seg is None:
                skipped.append({"index": index, "reason": "too_small_for_k", "stage": self.NAME})
            objects.append(dataclasses.replace(obj, parts=[] if seg is None else segments_to_parts(seg)))
        config = dict(self.file_config, INPUT_SIZE=list(self.input_size))
        out = dataclasses.replace(label, stage=self.NAME, objects=objects, skipped_objects=skipped, config=config)
        return out, {"objects": len(objects), "objects_too_small_for_k": sum(s is None for s in segs),
                     **getattr(self.segment_fn, "last_counts", {})}


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _plain_value(v):
    return list(v) if isinstance(v, (list, tuple)) else v
