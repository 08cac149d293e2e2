"""Stage-4 data: stage-3 pseudo-label folders as training datasets, and the dataset mappers of
part-proposal learning (PartDistillation, Cho et al., CVPR 2023, Sec. 3.2).

Training datasets: a folder of pseudo-label JSONs (:mod:`part_distillation.data.pseudo_labels`) is
registered lazily in detectron2's ``DatasetCatalog`` by :func:`register_pseudo_label_dataset`.
Loading it reads every file's header once (RLE areas only, no mask decoding) and applies the official
PROPOSAL_LEARNING filters:

* an object is dropped unless its area / image area > ``MIN_OBJECT_AREA_RATIO`` (official, strict;
  :func:`part_distillation.utils.object_filter.object_area_ratio_keep`); an image with no
  object left is dropped;
* a part is dropped when its area / its object's area < ``MIN_AREA_RATIO``.

Each dataset dict is ``{"file_name", "image_id", "height", "width", "pseudo_label_path",
"kept_objects": [{"index": int, "parts": [int, ...]}]}`` (indices into the JSON's ``objects`` /
``parts``); the mapper decodes the masks when the image is used.

Mappers (detectron2 ``Registry`` :data:`DATASET_MAPPER_REGISTRY`, chosen by
``INPUT.DATASET_MAPPER_NAME``):

* ``"proposal_learning"``: :class:`ProposalDatasetMapper`, training. One sample = one image with every
  kept part of every kept object as a class-agnostic instance (class 0), plus the kept objects'
  masks, all transformed exactly like the image.
* :class:`PartEvalDatasetMapper`: inference on ground-truth part datasets
  (:mod:`part_distillation.data.pascal_part` dicts), for the evaluators of
  :mod:`part_distillation.evaluation.evaluators`.
"""
import dataclasses
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from .build import DATASET_MAPPER_REGISTRY
from .ground_truth import gt_objects
from ..utils.masks import upsample_masks_official
from .datasets import dataset_name as resolve_name, few_shot_training_dicts
from .images import read_image_rgb
from ..utils.class_filter import class_allowed, load_class_filter
from ..utils.object_filter import object_area_ratio_keep
from .pseudo_labels import (class_code_of_dir, list_pseudo_labels, load_pseudo_label,
                            read_header, read_or_count)

logger = logging.getLogger(__name__)


def load_pseudo_label_dataset(folder: str, min_object_area_ratio: float = 0.0,
                              min_area_ratio: float = 0.0, label_percentage: float = 100,
                              class_filter: Tuple[Optional[set], set] = (None, set())) -> List[dict]:
    """Dataset dicts of a pseudo-label folder with the PROPOSAL_LEARNING area filters applied.

    Args:
        folder: a stage's pseudo-label folder (``<class_dir>/<image_id>.json``, any stage; parts
            are used), read through :func:`~part_distillation.data.pseudo_labels.read_header`.
        min_object_area_ratio: keep objects covering more than this fraction of the image
            (PROPOSAL_LEARNING.MIN_OBJECT_AREA_RATIO).
        min_area_ratio: drop parts covering less than this fraction of their object
            (PROPOSAL_LEARNING.MIN_AREA_RATIO).
        label_percentage: keep this percent of the usable images by the one few-shot rule
            (:func:`~part_distillation.data.datasets.few_shot_subset`;
            PROPOSAL_LEARNING.LABEL_PERCENTAGE; 100 = all).
        class_filter: ``(keep, exclude)`` class codes (:func:`~part_distillation.utils.class_filter.
            load_class_filter` of PROPOSAL_LEARNING), applied to each file's class folder.

    Returns:
        dicts (see module docstring), sorted by file. Corrupt or foreign JSON files are skipped
        and counted; counts of dropped images / objects / parts are logged.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no image of ``folder`` survives (empty folder, every file corrupt, or
            everything filtered out).
    """
    paths = [p for p in list_pseudo_labels(folder)
             if class_allowed(class_code_of_dir(os.path.basename(os.path.dirname(p))), *class_filter)]
    dicts = []
    counts = dict(corrupt=0, images_dropped=0, objects_dropped=0, objects_kept=0,
                  parts_dropped=0, parts_kept=0)
    for path in paths:
        header = read_or_count(path, counts, read_header)
        if header is None:
            continue
        kept = []
        for oi, (object_area, part_areas) in enumerate(zip(header.object_areas, header.part_areas)):
            if object_area <= 0 or not object_area_ratio_keep(object_area, header.height * header.width,
                                                              min_object_area_ratio):
                counts["objects_dropped"] += 1
                continue
            parts = [pi for pi, area in enumerate(part_areas) if area / object_area >= min_area_ratio]
            counts["parts_dropped"] += len(part_areas) - len(parts)
            counts["parts_kept"] += len(parts)
            counts["objects_kept"] += 1
            kept.append({"index": oi, "parts": parts})
        if not kept:
            counts["images_dropped"] += 1
            continue
        dicts.append({"file_name": header.file_name, "image_id": header.image_id,
                      "height": header.height, "width": header.width, "pseudo_label_path": path,
                      "kept_objects": kept})
    logger.info("pseudo-labels %s: %d files -> %d images; %s", folder, len(paths), len(dicts), counts)
    if not dicts:
        raise ValueError(f"no usable pseudo-label in {folder} ({len(paths)} files; {counts})")
    return few_shot_training_dicts(dicts, label_percentage, key="PROPOSAL_LEARNING.LABEL_PERCENTAGE")


def register_pseudo_label_dataset(name: str, folder: str, min_object_area_ratio: float = 0.0,
                                  min_area_ratio: float = 0.0, label_percentage: float = 100,
                                  class_filter: Tuple[Optional[set], set] = (None, set())) -> None:
    """Register ``folder`` under ``name`` (lazy: the folder is read on ``DatasetCatalog.get``).
    Re-registering a name replaces it. Metadata: ``evaluator_type="none"``, ``root=folder``,
    ``has_parts=False`` (pseudo-labels are not ground truth)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_pseudo_label_dataset(folder, min_object_area_ratio, min_area_ratio, label_percentage,
                                                class_filter))
    MetadataCatalog.get(name).set(evaluator_type="none", root=folder, has_parts=False)


def register_proposal_train_datasets(cfg) -> List[str]:
    """Register the training pseudo-label folders of ``cfg`` and return their dataset names.

    Folders: PROPOSAL_LEARNING.DATASET_PATH_LIST, else PROPOSAL_LEARNING.DATASET_PATH when set;
    each is registered as ``"pseudo_labels:<absolute folder>"`` with the config's
    MIN_OBJECT_AREA_RATIO / MIN_AREA_RATIO. With neither set, DATASETS.TRAIN is returned unchanged
    (names registered elsewhere).

    Raises:
        ValueError: no training data is configured at all.
    """
    pl = cfg.PROPOSAL_LEARNING
    folders = list(pl.DATASET_PATH_LIST) or ([pl.DATASET_PATH] if pl.DATASET_PATH else [])
    if not folders:
        if not cfg.DATASETS.TRAIN:
            raise ValueError("no training data: set PROPOSAL_LEARNING.DATASET_PATH_LIST, "
                             "PROPOSAL_LEARNING.DATASET_PATH or DATASETS.TRAIN")
        return list(cfg.DATASETS.TRAIN)
    names = []
    for folder in folders:
        name = "pseudo_labels:" + os.path.abspath(folder)
        register_pseudo_label_dataset(name, folder, pl.MIN_OBJECT_AREA_RATIO, pl.MIN_AREA_RATIO, pl.LABEL_PERCENTAGE,
                                      load_class_filter(pl))
        names.append(name)
    return names


def read_image(path: str, image_format: str) -> np.ndarray:
    """uint8 (H, W, 3) image in ``image_format`` (INPUT.FORMAT "RGB" or "BGR").

    Raises:
        ValueError: another format; ImageReadError: unreadable file.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {image_format!r}")
    image = read_image_rgb(path)
    return np.ascontiguousarray(image[:, :, ::-1]) if image_format == "BGR" else image


def transform_masks(masks: Sequence[np.ndarray], transforms: T.TransformList,
                     size: Sequence[int]) -> torch.Tensor:
    """Apply ``transforms`` (nearest-neighbour) to (H, W) bool masks -> (N, h, w) bool tensor;
    padding (value 128/255 from the pad transforms) becomes False."""
    out = [transforms.apply_segmentation(m.astype(np.uint8)) == 1 for m in masks]
    if not out:
        return torch.zeros((0, *size), dtype=torch.bool)
    return torch.from_numpy(np.stack(out))


def build_train_augmentations(cfg, weak: bool = False, square: bool = False) -> List[T.Augmentation]:
    """The training augmentation of stages 4 and 6 and the supervised baselines (PartDistillation
    Sec. 4: flip, large-scale jitter, crop): a base resize, ResizeShortestEdge(INPUT.IMAGE_SIZE_BASE,
    INPUT.MAX_SIZE_TRAIN) or with ``square`` (PART_DISTILLATION.SET_IMAGE_SQUARE) a fit into an
    IMAGE_SIZE_BASE square + pad; then the optional INPUT.CROP, large-scale jitter
    ResizeScale(INPUT.MIN_SCALE .. MAX_SCALE of INPUT.IMAGE_SIZE) + FixedSizeCrop(IMAGE_SIZE), or
    with ``weak`` scale 1 + FixedSizeCrop (stage 6's fallback); then INPUT.RANDOM_FLIP."""
    base, size = cfg.INPUT.IMAGE_SIZE_BASE, cfg.INPUT.IMAGE_SIZE
    if square:
        augs = [T.ResizeScale(1.0, 1.0, base, base), T.FixedSizeCrop((base, base))]
    else:
        augs = [T.ResizeShortestEdge(base, cfg.INPUT.MAX_SIZE_TRAIN)]
    if weak:
        augs += [T.ResizeScale(1.0, 1.0, size, size), T.FixedSizeCrop((size, size))]
    else:
        if cfg.INPUT.CROP.ENABLED:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        augs += [T.ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
                 T.FixedSizeCrop((size, size))]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs


@DATASET_MAPPER_REGISTRY.register()
class ProposalDatasetMapper:
    """Training mapper of part-proposal learning (INPUT.DATASET_MAPPER_NAME "proposal_learning").

    Augmentations (official PartDistillation recipe): base resize of the short side to
    INPUT.IMAGE_SIZE_BASE (long side at most INPUT.MAX_SIZE_TRAIN), optional random crop
    (INPUT.CROP.ENABLED, TYPE, SIZE), large-scale jitter (ResizeScale of INPUT.MIN_SCALE ..
    MAX_SCALE of an INPUT.IMAGE_SIZE square, then FixedSizeCrop/pad to IMAGE_SIZE x IMAGE_SIZE),
    random horizontal flip.

    Output dict: ``image`` (3, S, S) uint8 tensor in INPUT.FORMAT order; ``instances``
    (``Instances`` of size (S, S)) with ``gt_masks`` ``BitMasks`` (T, S, S) and ``gt_classes`` (T,)
    int64 zeros, T = parts with at least one pixel left after the augmentation (may be 0);
    ``object_masks`` (O, S, S) bool of the kept objects (same transforms); plus ``file_name``,
    ``image_id``, and ``height`` / ``width`` = S.
    """

    NAME = "proposal_learning"

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str):
        """Args: augmentations: applied in order; image_format: "RGB" or "BGR"."""
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """Augmentations from INPUT.{IMAGE_SIZE_BASE, MAX_SIZE_TRAIN, CROP.*, MIN_SCALE, MAX_SCALE,
        IMAGE_SIZE, RANDOM_FLIP}. Raises ValueError when ``is_train`` is False (use
        :class:`PartEvalDatasetMapper` for inference)."""
        if not is_train:
            raise ValueError("ProposalDatasetMapper is the training mapper; use PartEvalDatasetMapper")
        return {"augmentations": build_train_augmentations(cfg), "image_format": cfg.INPUT.FORMAT}

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one pseudo-label dataset dict (see module docstring) to a training sample.

        Raises:
            PseudoLabelError: the pseudo-label file is missing or corrupt.
            ValueError: the image size differs from the pseudo-label's.
        """
        label = load_pseudo_label(dataset_dict["pseudo_label_path"])
        image = read_image(dataset_dict["file_name"], self.image_format)
        if image.shape[:2] != (label.height, label.width):
            raise ValueError(f"{dataset_dict['file_name']}: image size {image.shape[:2]} != "
                             f"pseudo-label size {(label.height, label.width)}")
        objects = [label.objects[k["index"]] for k in dataset_dict["kept_objects"]]
        parts = [label.objects[k["index"]].parts[j].mask
                 for k in dataset_dict["kept_objects"] for j in k["parts"]]
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        image = aug.image
        size = image.shape[:2]
        part_masks = transform_masks(parts, transforms, size)
        part_masks = part_masks[part_masks.flatten(1).any(1)] if len(part_masks) else part_masks
        instances = Instances(size)
        instances.gt_masks = BitMasks(part_masks)
        instances.gt_classes = torch.zeros(len(part_masks), dtype=torch.int64)
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict["image_id"],
            "height": size[0],
            "width": size[1],
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "object_masks": transform_masks([o.mask for o in objects], transforms, size),
        }


# CUSTOM_DATASETS.EVAL_GEOMETRY values (see PartEvalDatasetMapper)
EVAL_GEOMETRIES = ("official", "original", "upsampled", "input")


def resolve_eval_geometry(setting: str, dataset_name: Optional[str]) -> str:
    """The ground-truth geometry ``"original"`` / ``"upsampled"`` / ``"input"`` of
    CUSTOM_DATASETS.EVAL_GEOMETRY ``setting`` for ``dataset_name``: ``"official"`` gives the
    dataset's (a registered name or a folder) ``official_eval_geometry`` metadata (that of its loader; ``"original"`` for a dataset
    the official code has no mapper for) and, with no dataset name, ``"original"``.

    Raises:
        ValueError: ``setting`` not in :data:`EVAL_GEOMETRIES` (names the key).
    """
    if setting not in EVAL_GEOMETRIES:
        raise ValueError(f"CUSTOM_DATASETS.EVAL_GEOMETRY must be one of {EVAL_GEOMETRIES}, got {setting!r}")
    if setting != "official":
        return setting
    if dataset_name is None:
        return "original"
    return MetadataCatalog.get(resolve_name(dataset_name)).get("official_eval_geometry", "original")


class PartEvalDatasetMapper:
    """Inference mapper for ground-truth part datasets (dicts of
    :func:`part_distillation.data.pascal_part.load_pascal_part`).

    Resizes with ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST). Output dict:
    ``image`` (3, h, w) uint8 tensor; ``object_masks`` (O, h, w) bool tensor at the input
    resolution (model input; nearest-neighbour); ``objects``: O
    :class:`~part_distillation.data.ground_truth.GTObject` s for the evaluators (``mask``,
    ``parts`` (P, ., .), ``part_names``, ``class_name``, ...); ``height`` / ``width``, the size the
    model writes its outputs at and the size of the ``objects`` masks; plus ``file_name`` and
    ``image_id``.

    The ground-truth geometry (``geometry``, CUSTOM_DATASETS.EVAL_GEOMETRY through
    :func:`resolve_eval_geometry`):

    * ``"original"`` (ours): ``height`` / ``width`` = the original image size H x W, ``objects``
      exactly as annotated;
    * ``"upsampled"`` (official Pascal-Part path, ``VOCPartsMapper`` + ``PartDistillationModel.
      inference``): the masks are resized to the input size (nearest) and back to H x W with the
      official :func:`~part_distillation.utils.masks.upsample_masks_official` (bilinear, > 0: up to
      one input pixel wider on every side); ``height`` / ``width`` = H x W;
    * ``"input"`` (official PartImageNet path, ``PartImageNetMapper``, which sets ``height`` /
      ``width`` to the resized image): ``height`` / ``width`` = the input size h x w and the masks
      resized to it (nearest; the official code rasterises the resized polygons, which can differ
      on edge pixels).
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str,
                 geometry: str = "original"):
        """Args: augmentations: applied in order; image_format: "RGB" or "BGR"; geometry:
        ``"original"``, ``"upsampled"`` or ``"input"`` (see the class docstring).

        Raises:
            ValueError: unknown ``geometry``."""
        if geometry not in EVAL_GEOMETRIES[1:]:
            raise ValueError(f"geometry must be one of {EVAL_GEOMETRIES[1:]}, got {geometry!r}")
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.geometry = geometry

    @classmethod
    def from_config(cls, cfg, dataset_name: Optional[str] = None) -> dict:
        """Resize from INPUT.{MIN_SIZE_TEST, MAX_SIZE_TEST}; format INPUT.FORMAT; geometry from
        CUSTOM_DATASETS.EVAL_GEOMETRY for ``dataset_name`` (:func:`resolve_eval_geometry`)."""
        geometry = resolve_eval_geometry(cfg.CUSTOM_DATASETS.EVAL_GEOMETRY, dataset_name)
        if dataset_name is not None:
            logger.info("evaluation ground truth of %s: geometry %r (CUSTOM_DATASETS.EVAL_GEOMETRY %r)",
                        dataset_name, geometry, cfg.CUSTOM_DATASETS.EVAL_GEOMETRY)
        return {"augmentations": [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
                "image_format": cfg.INPUT.FORMAT, "geometry": geometry}

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one part-dataset dict. Raises ValueError when the image size differs from the
        dict's ``height`` / ``width``."""
        image = read_image(dataset_dict["file_name"], self.image_format)
        height, width = image.shape[:2]
        if (height, width) != (dataset_dict["height"], dataset_dict["width"]):
            raise ValueError(f"{dataset_dict['file_name']}: image size {(height, width)} != "
                             f"annotation size {(dataset_dict['height'], dataset_dict['width'])}")
        objects = gt_objects(dataset_dict)
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        size = aug.image.shape[:2]
        object_masks = transform_masks([o.mask for o in objects], transforms, size)
        out_size = size if self.geometry == "input" else (height, width)
        if self.geometry != "original":
            objects = [self._resample(o, small, transforms, size, out_size)
                       for o, small in zip(objects, object_masks)]
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict["image_id"],
            "height": int(out_size[0]),
            "width": int(out_size[1]),
            "image": torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
            "object_masks": object_masks,
            "objects": objects,
        }

    @staticmethod
    def _resample(obj, small_mask: torch.Tensor, transforms: T.TransformList, size, out_size):
        """``obj`` with its mask (``small_mask``: already at the input ``size``) and part masks
        resized to the input ``size`` (nearest) and back to ``out_size`` by the official bilinear
        > 0 rule (a no-op when ``out_size`` is ``size``)."""
        parts = transform_masks(list(obj.parts), transforms, size)
        return dataclasses.replace(obj, mask=upsample_masks_official(small_mask, out_size).numpy(),
                                   parts=upsample_masks_official(parts, out_size).numpy())
