"""Data of the supervised and few-shot part-segmentation baselines (PartDistillation, Cho et al.,
CVPR 2023, Sec. 4: "supervised" and "few-shot" rows): ground-truth part datasets as training data.

* Part taxonomy (:func:`part_class_names`): the ordered part-class names of a dataset; the index
  of a name is its part-class id (``gt_classes`` in training, labels of the evaluator). Read from
  the metadata ``part_classes`` of the dataset or of its ``taxonomy_from`` parent when the loader
  sets it (the official 50-part Pascal-Part vocabulary; ADE20K-Part-234, whose per-object-class
  names such as "chair's leg" are matched through the GT ``part_id``); otherwise the sorted set of
  the part ``name`` fields found in the parent's dataset dicts.
* Train / val splits of the shared real images (:func:`register_split_datasets`): dicts sorted by
  ``image_id``, every 5th (positions 0, 5, 10, ...) to ``<name>_val``, the rest to
  ``<name>_train``; both splits share the parent's taxonomy. The parent's dicts and found
  taxonomies are cached per process (re-registering a parent under the same name is not seen).
* Few-shot training sets (:func:`load_supervised_train_dicts`, FEWSHOT_LEARNING.LABEL_PERCENTAGE,
  through the one rule :func:`~part_distillation.data.datasets.few_shot_subset`).
* :class:`SupervisedDatasetMapper` (``INPUT.DATASET_MAPPER_NAME`` ``"supervised_learning"``): the
  training mapper, with the stage-4 augmentation.
"""
import functools
import logging
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from .datasets import few_shot_training_dicts, resolve_dataset
from .ground_truth import gt_objects

from .build import DATASET_MAPPER_REGISTRY
from .proposal_dataset import ProposalDatasetMapper, transform_masks, read_image

logger = logging.getLogger(__name__)

# Every VAL_EVERY-th image (sorted by image_id, starting with the first) goes to the val split.
VAL_EVERY = 5
# Parent datasets split by register_split_datasets (names registered by data/datasets.py).
SPLIT_PARENTS = ("pascal_part_examples", "ade20k_part_subset")


def part_class_names(dataset_name: str) -> List[str]:
    """Ordered part-class names of ``dataset_name`` (index = part-class id); see module docstring.

    Raises:
        ValueError: the taxonomy is empty (the dataset has no part annotations).
    """
    meta = MetadataCatalog.get(dataset_name)
    source = meta.get("taxonomy_from", dataset_name)
    names = meta.get("part_classes", None) or MetadataCatalog.get(source).get("part_classes", None)
    if names is None:
        names = _found_part_names(source)
    if not names:
        raise ValueError(f"dataset '{dataset_name}' has no part classes (no part annotations)")
    return list(names)


@functools.lru_cache(maxsize=None)
def _found_part_names(dataset_name: str) -> Tuple[str, ...]:
    """Sorted part names of a registered dataset's dicts (cached per process)."""
    return tuple(sorted({p["name"] for record in DatasetCatalog.get(dataset_name)
                         for o in record["objects"] for p in o["parts"]}))


@functools.lru_cache(maxsize=None)
def _parent_dicts(dataset_name: str) -> Tuple[dict, ...]:
    """A registered dataset's dicts, loaded once per process for both of its splits (the ADE20K
    subset's 248 ``.mat`` files take tens of seconds to parse)."""
    return tuple(DatasetCatalog.get(dataset_name))


def split_dicts(dicts: Sequence[dict], split: str, every: int = VAL_EVERY) -> List[dict]:
    """The ``split`` ("train" or "val") of ``dicts``: sorted by ``image_id``, positions
    ``0, every, 2 * every, ...`` are val, the others train.

    Raises:
        ValueError: another split name.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    ordered = sorted(dicts, key=lambda d: str(d["image_id"]))
    return [d for i, d in enumerate(ordered) if (i % every == 0) == (split == "val")]


def register_split_datasets(parents: Sequence[str] = SPLIT_PARENTS) -> None:
    """Register ``<parent>_train`` and ``<parent>_val`` (:func:`split_dicts`) for each registered
    parent (lazy; idempotent). Metadata: the parent's, plus ``taxonomy_from=<parent>`` so both
    splits use the parent's part taxonomy, and ``split_rule``."""
    for parent in parents:
        for split in ("train", "val"):
            name = f"{parent}_{split}"
            if name in DatasetCatalog.list():
                continue
            DatasetCatalog.register(name, lambda p=parent, s=split: split_dicts(_parent_dicts(p), s))
            meta = {k: v for k, v in MetadataCatalog.get(parent).as_dict().items() if k != "name"}
            meta.setdefault("taxonomy_from", parent)
            MetadataCatalog.get(name).set(
                **meta, split_rule=f"sorted image_id, every {VAL_EVERY}th (from the first) to val")


def load_supervised_train_dicts(cfg) -> List[dict]:
    """Training dicts of the supervised / few-shot baselines: DATASETS.TRAIN (ground-truth part
    datasets, loaded with the config's ``CUSTOM_DATASETS.*`` options), images without any part
    dropped (counted), then the few-shot subset of FEWSHOT_LEARNING.LABEL_PERCENTAGE (100 = all),
    applied here once (:func:`~part_distillation.data.datasets.few_shot_training_dicts`: the
    official seed-1234 rule; the kept ids are logged and written to
    ``OUTPUT_DIR/fewshot_image_ids.json``).

    Raises:
        ValueError: DATASETS.TRAIN is empty or has no image with parts.
    """
    if not cfg.DATASETS.TRAIN:
        raise ValueError("SupervisedModel trains on ground-truth part datasets: set DATASETS.TRAIN")
    if cfg.CUSTOM_DATASETS.LABEL_PERCENTAGE != 100:
        raise ValueError(f"CUSTOM_DATASETS.LABEL_PERCENTAGE {cfg.CUSTOM_DATASETS.LABEL_PERCENTAGE} is not "
                         "supported (the official code declares it but its few-shot runs use "
                         "FEWSHOT_LEARNING.LABEL_PERCENTAGE): set FEWSHOT_LEARNING.LABEL_PERCENTAGE")
    dicts = [d for name in cfg.DATASETS.TRAIN for d in resolve_dataset(name, cfg)]
    with_parts = [d for d in dicts if any(o["parts"] for o in d["objects"])]
    if len(with_parts) < len(dicts):
        logger.info("supervised training: dropped %d of %d images without part annotations",
                    len(dicts) - len(with_parts), len(dicts))
    if not with_parts:
        raise ValueError(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has no image with parts")
    return few_shot_training_dicts(with_parts, cfg.FEWSHOT_LEARNING.LABEL_PERCENTAGE, cfg.OUTPUT_DIR)


@DATASET_MAPPER_REGISTRY.register()
class SupervisedDatasetMapper(ProposalDatasetMapper):
    """Training mapper of the supervised baselines: ground-truth part dataset dicts
    (``objects[].parts[]`` with ``name`` and RLE ``mask``) -> Mask2Former targets, with the
    augmentation of :class:`ProposalDatasetMapper` (INPUT.IMAGE_SIZE_BASE resize, optional crop,
    large-scale jitter to INPUT.IMAGE_SIZE squares, flip).

    Output dict: ``image`` (3, S, S) uint8 tensor in INPUT.FORMAT order; ``instances``
    (``Instances`` of size (S, S)) with ``gt_masks`` ``BitMasks`` (T, S, S) (every part of every
    object with at least one pixel left after the augmentation) and ``gt_classes`` (T,) int64
    part-class ids (:func:`part_class_names` of DATASETS.TRAIN[0]; all 0 with
    SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING); ``object_masks`` (O, S, S) bool of all objects;
    ``file_name``, ``image_id``, ``height`` / ``width`` = S.
    """

    NAME = "supervised_learning"

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str,
                 part_classes: Sequence[str], class_agnostic: bool):
        """Args: augmentations, image_format: as :class:`ProposalDatasetMapper`; part_classes:
        taxonomy (index = id); class_agnostic: label every part 0."""
        super().__init__(augmentations=augmentations, image_format=image_format)
        self.class_ids: Dict[str, int] = {n: i for i, n in enumerate(part_classes)}
        self.class_agnostic = class_agnostic

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """Augmentations as :meth:`ProposalDatasetMapper.from_config`; taxonomy of
        DATASETS.TRAIN[0] (every training dataset must share it); SUPERVISED_MODEL.
        CLASS_AGNOSTIC_LEARNING.

        Raises:
            ValueError: DATASETS.TRAIN empty, datasets with different taxonomies, or (per-class
                learning) a taxonomy larger than MODEL.SEM_SEG_HEAD.NUM_CLASSES.
        """
        args = super().from_config(cfg, is_train)
        if not cfg.DATASETS.TRAIN:
            raise ValueError("SupervisedDatasetMapper needs DATASETS.TRAIN (its part taxonomy)")
        taxonomies = {name: part_class_names(name) for name in cfg.DATASETS.TRAIN}
        classes = taxonomies[cfg.DATASETS.TRAIN[0]]
        if any(t != classes for t in taxonomies.values()):
            raise ValueError(f"DATASETS.TRAIN datasets have different part taxonomies: {taxonomies}")
        agnostic = cfg.SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING
        check_num_classes(cfg, classes)
        return {**args, "part_classes": classes, "class_agnostic": agnostic}

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one ground-truth dataset dict to a training sample.

        Raises:
            KeyError: a part name outside the taxonomy (names the part and the image).
            ValueError: the image size differs from the dict's ``height`` / ``width``.
        """
        image = read_image(dataset_dict["file_name"], self.image_format)
        if image.shape[:2] != (dataset_dict["height"], dataset_dict["width"]):
            raise ValueError(f"{dataset_dict['file_name']}: image size {image.shape[:2]} != "
                             f"annotation size {(dataset_dict['height'], dataset_dict['width'])}")
        objects = gt_objects(dataset_dict)
        parts, classes = [], []
        for o in objects:
            for mask, name, part_id in zip(o.parts, o.part_names, o.part_ids):
                # by name, or by the dataset's part_id where the taxonomy names parts per object
                # class (ADE20K-Part-234: "chair's leg" for the part named "leg")
                cid = self.class_ids.get(name, part_id if 0 <= part_id < len(self.class_ids) else None)
                if cid is None:
                    raise KeyError(f"{dataset_dict['image_id']}: part '{name}' is not in the part "
                                   f"taxonomy ({len(self.class_ids)} classes)")
                parts.append(mask)
                classes.append(0 if self.class_agnostic else cid)
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        size = aug.image.shape[:2]
        part_masks = transform_masks(parts, transforms, size)
        gt_classes = torch.tensor(classes, dtype=torch.int64)
        if len(part_masks):
            keep = part_masks.flatten(1).any(1)
            part_masks, gt_classes = part_masks[keep], gt_classes[keep]
        instances = Instances(size)
        instances.gt_masks = BitMasks(part_masks)
        instances.gt_classes = gt_classes
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict["image_id"],
            "height": size[0],
            "width": size[1],
            "image": torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
            "instances": instances,
            "object_masks": transform_masks([o["mask"] for o in objects], transforms, size),
        }


def check_num_classes(cfg, part_classes: Sequence[str]) -> None:
    """Per-class learning needs MODEL.SEM_SEG_HEAD.NUM_CLASSES >= the taxonomy size (extra head
    classes never receive targets; the official Pascal-Part config uses 50).

    Raises:
        ValueError: NUM_CLASSES too small.
    """
    num = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if not cfg.SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING and num < len(part_classes):
        raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num} < {len(part_classes)} part classes "
                         f"of the taxonomy ({list(part_classes)})")
    if not cfg.SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING and num > len(part_classes):
        logger.warning("MODEL.SEM_SEG_HEAD.NUM_CLASSES = %d > %d part classes: head classes %d.. "
                       "never get a target", num, len(part_classes), len(part_classes))


register_split_datasets()
