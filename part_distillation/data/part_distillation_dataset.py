"""Stage-6 data (PartDistillation self-training, Cho et al., CVPR 2023, Sec. 3.4): stage-5 part
pseudo-labels (parts with ``label`` 0..K-1 per object class) as a training set, its augmenting
mapper, and the evaluation mapper that tells the model each object's class.

Training set: one or more stage-5 folders in the pseudo-label layout
``<folder>/<class_dir(class_code)>/<image_id>.json`` (official), read only through
:mod:`part_distillation.data.pseudo_labels`. Each file is read once when the dataset is loaded
(masks decoded to measure areas, then dropped) and filtered (official PART_DISTILLATION keys):

* an object is kept when its area / image area > MIN_OBJECT_AREA_RATIO and its class code passes
  FILTERED_CODE_PATH_LIST / EXCLUDE_CODE_PATH;
* every labelled part is kept, whatever its area and score (official ``load_annotation`` of
  ``PartDistillationDatasetMapper`` at the public commit 938fd78, the released checkpoints' code,
  where a0bb459's per-part ``MIN_AREA_RATIO`` / ``MIN_SCORE`` checks are commented out); an object
  without a labelled part is dropped. MIN_AREA_RATIO acts in the mapper, after the augmentation
  (a part's share of the parts' total area, official ``_transform_annotations``), and MIN_SCORE
  only in the model's inference;
* a part without a label (not a stage-5 file) is dropped and counted; a label outside [0, K) is
  an error (NUM_PART_CLASSES does not match stage 5).

One dataset dict per kept object (the model classifies one object class per image)::

    {"file_name", "image_id", "height", "width", "pseudo_label_path", "object_index": int,
     "part_indices": [int, ...], "class_code": str, "object_class": int}

``object_class`` indexes the class head (< NUM_OBJECT_CLASSES): the objects' ``class_id`` (index
into the dataset's class list) when every kept object has one (>= 0), otherwise the position of the object's
``class_code`` in the sorted list of the class codes found in the folders (recorded in the
dataset's metadata as ``class_codes``, with ``class_id_source`` "schema" or "vocabulary"; the
evaluation mapper uses the same list so that training and evaluation agree).

PART_DISTILLATION.PATH_ONLY (official, for ImageNet-scale folders) reads no file when the dataset
is loaded: one dict per file, filtered by the mapper (see :func:`load_part_distillation_dataset`).
"""
import functools
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from .proposal_dataset import PartEvalDatasetMapper, transform_masks, build_train_augmentations, read_image
from ..utils.class_filter import load_class_filter
from .pseudo_labels import (class_code_of_dir, list_pseudo_labels, load_pseudo_label,
                            read_or_count)
from ..utils.object_filter import object_area_ratio_keep

logger = logging.getLogger(__name__)

# Augmentation draws tried before falling back to the weak augmentation (official: 100).
MAX_AUGMENTATION_ATTEMPTS = 20


def pseudo_label_files(folder: str) -> List[Tuple[str, str]]:
    """``(path, class code of its folder)`` of every pseudo-label under ``folder``
    (:func:`~part_distillation.data.pseudo_labels.list_pseudo_labels` order); the code is ``""``
    for the no-class folder.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    return [(p, class_code_of_dir(os.path.basename(os.path.dirname(p))))
            for p in list_pseudo_labels(folder)]


@dataclass(frozen=True)
class PseudoLabelFilter:
    """The PART_DISTILLATION loading filters (module docstring), applied per file.

    Attributes:
        num_part_classes: K (NUM_PART_CLASSES).
        min_object_area_ratio: MIN_OBJECT_AREA_RATIO.
        keep_codes: train on these class codes only (None: all; FILTERED_CODE_PATH_LIST);
            exclude_codes: leave these out (EXCLUDE_CODE_PATH).
    """

    num_part_classes: int
    min_object_area_ratio: float = 0.001
    keep_codes: Optional[Tuple[str, ...]] = None
    exclude_codes: Tuple[str, ...] = ()

    def select(self, label, path: str, folder_code: str = "",
               counts: Optional[Dict[str, int]] = None) -> List[Tuple[int, List[int], str, Optional[int]]]:
        """Kept objects of one :class:`~part_distillation.data.pseudo_labels.ImagePseudoLabel`.

        Returns:
            ``(object index, kept part indices, class code, schema class_id or None)`` per kept
            object; the code is the object's ``class_code``, else ``folder_code``, else its
            ``class_name``. ``counts`` (if given) accumulates what was dropped and kept.

        Raises:
            ValueError: a part label outside [0, K) (``path`` named).
        """
        counts = counts if counts is not None else {}

        def count(key: str, n: int = 1) -> None:
            counts[key] = counts.get(key, 0) + n

        kept = []
        image_area = float(label.height * label.width)
        for oi, obj in enumerate(label.objects):
            code = obj.class_code or folder_code or obj.class_name
            if (self.keep_codes is not None and code not in self.keep_codes) or code in self.exclude_codes:
                count("objects_dropped_class")
                continue
            object_area = float(obj.mask.sum())
            if not object_area_ratio_keep(object_area, image_area, self.min_object_area_ratio):
                count("objects_dropped_area")
                continue
            parts = []
            for pi, part in enumerate(obj.parts):
                if part.label is None:
                    count("parts_unlabelled")
                    continue
                if not 0 <= int(part.label) < self.num_part_classes:
                    raise ValueError(f"{path}: part label {part.label} outside [0, "
                                     f"{self.num_part_classes}) (PART_DISTILLATION.NUM_PART_CLASSES)")
                parts.append(pi)
            count("parts_kept", len(parts))
            count("parts_dropped", len(obj.parts) - len(parts))
            if not parts:
                count("objects_dropped_no_part")
                continue
            kept.append((oi, parts, code, obj.class_id if obj.class_id >= 0 else None))
        return kept


def _check_object_class(object_class: int, num_object_classes: int, where: str) -> int:
    """``object_class``, or ValueError naming ``where`` when it is outside [0, O)."""
    if not 0 <= object_class < num_object_classes:
        raise ValueError(f"{where}: object class {object_class} outside [0, {num_object_classes}): "
                         "raise PART_DISTILLATION.NUM_OBJECT_CLASSES")
    return object_class


@functools.lru_cache(maxsize=8)
def load_part_distillation_dataset(folders: Tuple[str, ...], filt: PseudoLabelFilter,
                                   num_object_classes: int, path_only: bool = False
                                   ) -> Tuple[List[dict], List[str], str]:
    """Dataset dicts of stage-5 folders with the filters of ``filt`` (module docstring). Cached
    per argument tuple (the trainer and the evaluation mapper share one read), so files changed
    later in the same process are not re-read.

    Args:
        folders: stage-5 output folders.
        filt: the loading filters (K included).
        num_object_classes: O.
        path_only: PART_DISTILLATION.PATH_ONLY (official): read no file now (ImageNet scale); one
            dict per file ``{"pseudo_label_path", "class_code", "object_class"}``, the code being
            its class folder's and ``object_class`` its index in the sorted folder codes (always
            "vocabulary"); the mapper filters when it reads the file.

    Returns:
        ``(dicts, class_codes, class_id_source)``: dicts sorted by file then object, the sorted
        class codes, and "schema" or "vocabulary" (how ``object_class`` was set). Corrupt files
        are logged and counted; counts of dropped objects / parts are logged.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a part label outside [0, K), an object class >= O, nothing survives, or
            ``path_only`` with files in the no-class folder.
    """
    files = [f for folder in folders for f in pseudo_label_files(folder)]
    if path_only:
        if any(not code for _, code in files):
            raise ValueError("PART_DISTILLATION.PATH_ONLY needs every file in a class folder; "
                             f"{list(folders)} has files in the no-class folder")
        codes = sorted({code for _, code in files
                        if filt.keep_codes is None or code in filt.keep_codes} - set(filt.exclude_codes))
        index = {c: i for i, c in enumerate(codes)}
        dicts = [{"pseudo_label_path": path, "class_code": code,
                  "object_class": _check_object_class(index[code], num_object_classes, path)}
                 for path, code in files if code in index]
        logger.info("stage-5 pseudo-labels %s (paths only): %d files of %d classes",
                    list(folders), len(dicts), len(codes))
        if not dicts:
            raise ValueError(f"no stage-5 pseudo-label file in {list(folders)}")
        return dicts, codes, "vocabulary"
    kept, counts = [], dict(files=len(files), corrupt=0)
    for path, folder_code in files:
        label = read_or_count(path, counts)
        if label is None:
            continue
        for oi, parts, code, class_id in filt.select(label, path, folder_code, counts):
            kept.append(({"file_name": label.file_name, "image_id": label.image_id,
                          "height": label.height, "width": label.width,
                          "pseudo_label_path": path, "object_index": oi,
                          "part_indices": parts, "class_code": code}, class_id))
    logger.info("stage-5 pseudo-labels %s: %d objects kept; %s", list(folders), len(kept), counts)
    if not kept:
        raise ValueError(f"no usable stage-5 pseudo-label in {list(folders)} ({counts})")
    class_codes = sorted({d["class_code"] for d, _ in kept})
    source = "schema" if all(cid is not None for _, cid in kept) else "vocabulary"
    dicts = []
    for d, cid in kept:
        object_class = int(cid) if source == "schema" else class_codes.index(d["class_code"])
        d["object_class"] = _check_object_class(object_class, num_object_classes,
                                                f"{d['pseudo_label_path']} ({d['class_code']})")
        dicts.append(d)
    return dicts, class_codes, source


def pseudo_label_filter(cfg) -> PseudoLabelFilter:
    """:class:`PseudoLabelFilter` of PART_DISTILLATION; the class-code lists are read by the stage
    framework's :func:`~part_distillation.utils.class_filter.load_class_filter` (union of the
    FILTERED_CODE_PATH_LIST files; with PATH_ONLY their lines may be paths ending in the code)."""
    pd = cfg.PART_DISTILLATION
    keep, exclude = load_class_filter(pd)
    return PseudoLabelFilter(pd.NUM_PART_CLASSES, pd.MIN_OBJECT_AREA_RATIO,
                             None if keep is None else tuple(sorted(keep)), tuple(sorted(exclude)))


def _dataset_args(cfg) -> Optional[tuple]:
    """Arguments of :func:`load_part_distillation_dataset` from PART_DISTILLATION, or None when
    no folder is configured."""
    pd = cfg.PART_DISTILLATION
    folders = list(pd.DATASET_PATH_LIST) or ([pd.DATASET_PATH] if pd.DATASET_PATH else [])
    if not folders:
        return None
    return (tuple(os.path.abspath(f) for f in folders), pseudo_label_filter(cfg),
            pd.NUM_OBJECT_CLASSES, pd.PATH_ONLY)


def register_part_distillation_train_datasets(cfg) -> List[str]:
    """Register the stage-5 folders of PART_DISTILLATION.DATASET_PATH_LIST (else DATASET_PATH) as
    ONE dataset (one class-code vocabulary) named ``"part_distillation:<folders>"`` and return
    ``[name]``; metadata ``class_codes`` / ``class_id_source`` are set when it is loaded. With no
    folder configured, DATASETS.TRAIN is returned unchanged.

    Raises:
        ValueError: no training data configured at all.
    """
    args = _dataset_args(cfg)
    if args is None:
        if not cfg.DATASETS.TRAIN:
            raise ValueError("no training data: set PART_DISTILLATION.DATASET_PATH_LIST, "
                             "PART_DISTILLATION.DATASET_PATH or DATASETS.TRAIN")
        return list(cfg.DATASETS.TRAIN)
    name = "part_distillation:" + ",".join(args[0])
    debug = bool(cfg.PART_DISTILLATION.DEBUG)  # official: the first 100 images only

    def load() -> List[dict]:
        dicts, codes, source = load_part_distillation_dataset(*args)
        if debug:
            dicts = dicts[:100]
        meta = MetadataCatalog.get(name)
        if meta.get("class_codes", None) != codes:
            meta.set(class_codes=codes, class_id_source=source)
        return dicts

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(evaluator_type="none", root=args[0][0], has_parts=False)
    return [name]


class PartDistillationDatasetMapper:
    """Training mapper of stage 6 (INPUT.DATASET_MAPPER_NAME "part_distillation").

    Reads the image and the object's kept parts, draws the strong augmentation (see
    :func:`~part_distillation.data.proposal_dataset.build_train_augmentations`; official recipe: flip, large-scale jitter 0.1-2.0 of 640, 640 crop),
    drops parts whose share of the parts' total area after the augmentation is <= ``min_area_ratio``
    (PART_DISTILLATION.MIN_AREA_RATIO; empty parts always), and redraws up to
    :data:`MAX_AUGMENTATION_ATTEMPTS` times while no part survives, then falls back to the weak
    augmentation (no jitter; counted in ``self.fallbacks`` and logged).

    A PATH_ONLY dict (no ``object_index``) is filtered here with ``pseudo_label_filter`` and one of
    its kept objects drawn at random; with none kept the mapper returns None (detectron2's
    ``MapDataset`` then draws another image; counted in ``self.empty_files``).

    Output dict: ``image`` (3, S, S) uint8 tensor in INPUT.FORMAT order; ``instances``
    (``Instances`` (S, S)) with ``gt_masks`` ``BitMasks`` (T, S, S) and ``gt_classes`` (T,) int64
    part labels; ``object_class`` int; ``object_masks`` (1, S, S) bool (the object, same
    transforms); ``file_name``, ``image_id``, ``class_code``; ``height`` / ``width`` = S.
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], weak_augmentations: List[T.Augmentation],
                 image_format: str, min_area_ratio: float,
                 pseudo_label_filter: Optional[PseudoLabelFilter]):
        """Args: augmentations / weak_augmentations: strong and fallback lists; image_format:
        "RGB" or "BGR"; min_area_ratio: see class docstring; pseudo_label_filter: the loading
        filters, needed for PATH_ONLY dicts (None: the dicts carry their objects)."""
        self.augmentations = T.AugmentationList(augmentations)
        self.weak_augmentations = T.AugmentationList(weak_augmentations)
        self.image_format = image_format
        self.min_area_ratio = min_area_ratio
        self.pseudo_label_filter = pseudo_label_filter
        self.fallbacks = 0
        self.empty_files = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """See :func:`~part_distillation.data.proposal_dataset.build_train_augmentations`. Raises ValueError when ``is_train`` is False (use
        :class:`PartDistillationEvalDatasetMapper`)."""
        if not is_train:
            raise ValueError("PartDistillationDatasetMapper is the training mapper; use "
                             "PartDistillationEvalDatasetMapper")
        square = cfg.PART_DISTILLATION.SET_IMAGE_SQUARE
        return {"augmentations": build_train_augmentations(cfg, weak=False, square=square),
                "weak_augmentations": build_train_augmentations(cfg, weak=True, square=square),
                "image_format": cfg.INPUT.FORMAT,
                "min_area_ratio": cfg.PART_DISTILLATION.MIN_AREA_RATIO,
                "pseudo_label_filter": pseudo_label_filter(cfg)}

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        """Map one dataset dict (module docstring, or a PATH_ONLY dict) to a training sample;
        None for a PATH_ONLY file without a kept object.

        Raises:
            PseudoLabelError: the pseudo-label file is missing or corrupt.
            ValueError: the image size differs from the pseudo-label's; a PATH_ONLY dict without
                ``pseudo_label_filter``.
        """
        path = dataset_dict["pseudo_label_path"]
        label = load_pseudo_label(path)
        if "object_index" in dataset_dict:
            object_index, part_indices = dataset_dict["object_index"], dataset_dict["part_indices"]
        else:
            if self.pseudo_label_filter is None:
                raise ValueError("PATH_ONLY dataset dicts need the mapper's pseudo_label_filter")
            kept = self.pseudo_label_filter.select(label, path, dataset_dict["class_code"])
            if not kept:
                self.empty_files += 1
                return None
            object_index, part_indices, _, _ = kept[np.random.randint(len(kept))]
        image = read_image(label.file_name, self.image_format)
        if image.shape[:2] != (label.height, label.width):
            raise ValueError(f"{label.file_name}: image size {image.shape[:2]} != "
                             f"pseudo-label size {(label.height, label.width)}")
        obj = label.objects[object_index]
        parts = [obj.parts[j] for j in part_indices]
        for _ in range(MAX_AUGMENTATION_ATTEMPTS):
            sample = self._augment(image, obj.mask, parts, self.augmentations)
            if len(sample[1]):
                break
        else:
            self.fallbacks += 1
            logger.info("%s: no part left after %d augmentations; weak augmentation (fallback %d)",
                        path, MAX_AUGMENTATION_ATTEMPTS, self.fallbacks)
            sample = self._augment(image, obj.mask, parts, self.weak_augmentations)
        aug_image, instances, object_mask = sample
        size = aug_image.shape[:2]
        return {
            "file_name": label.file_name,
            "image_id": label.image_id,
            "class_code": dataset_dict["class_code"],
            "height": size[0],
            "width": size[1],
            "image": torch.as_tensor(np.ascontiguousarray(aug_image.transpose(2, 0, 1))),
            "instances": instances,
            "object_class": int(dataset_dict["object_class"]),
            "object_masks": object_mask,
        }

    def _augment(self, image: np.ndarray, object_mask: np.ndarray, parts: Sequence,
                 augmentations: T.AugmentationList) -> Tuple[np.ndarray, Instances, torch.Tensor]:
        """One augmentation draw -> (image, ``Instances`` of the surviving parts, (1, S, S) object
        mask)."""
        aug = T.AugInput(image)
        transforms = augmentations(aug)
        size = aug.image.shape[:2]
        masks = transform_masks([p.mask for p in parts], transforms, size)
        labels = torch.tensor([int(p.label) for p in parts], dtype=torch.int64)
        areas = masks.flatten(1).sum(1).float()
        share = areas / areas.sum().clamp(min=1)
        keep = (areas > 0) & (share > self.min_area_ratio)
        instances = Instances(size)
        instances.gt_masks = BitMasks(masks[keep])
        instances.gt_classes = labels[keep]
        return aug.image, instances, transform_masks([object_mask], transforms, size)


class PartDistillationEvalDatasetMapper(PartEvalDatasetMapper):
    """:class:`PartEvalDatasetMapper` plus ``object_classes`` (N,) int64: each ground-truth
    object's index into the model's class head.

    With a class-code vocabulary (``class_codes``: the training set's, when its pseudo-labels
    carry no ``class_id``) an object's id is the position of its ``class_code`` (else
    ``class_name``) in it, and -1 when absent (the model then predicts nothing for it; counted in
    ``self.unknown_objects``); without one it is the object's ``class_id``.
    """

    @configurable
    def __init__(self, *, class_codes: Optional[List[str]], imagenet_1k_ids: bool, **kwargs):
        """Args: class_codes: vocabulary (see class docstring) or None; imagenet_1k_ids: without a
        vocabulary, take an object's ``imagenet_1k_class_id`` (PartImageNet records: its index
        among the sorted ImageNet-1K wnids, the index a model trained on all 1,000 ImageNet-1K
        class folders gives it) where the record has one; **kwargs:
        :class:`PartEvalDatasetMapper` arguments."""
        super().__init__(**kwargs)
        self.class_index: Optional[Dict[str, int]] = (
            {c: i for i, c in enumerate(class_codes)} if class_codes is not None else None)
        self.imagenet_1k_ids = imagenet_1k_ids
        self.unknown_objects = 0

    @classmethod
    def from_config(cls, cfg, dataset_name: Optional[str] = None) -> dict:
        """PartEvalDatasetMapper's arguments (for ``dataset_name``); ``class_codes`` from the training set of
        PART_DISTILLATION.DATASET_PATH(_LIST) when its ``object_class`` came from the vocabulary
        (loading it if needed), else None."""
        ret = super().from_config(cfg, dataset_name)
        args = _dataset_args(cfg)
        ret["class_codes"] = None
        ret["imagenet_1k_ids"] = False
        missing = [] if args is None else [f for f in args[0] if not os.path.isdir(f)]
        if missing:
            # evaluating a released checkpoint without its training pseudo-labels
            ret["imagenet_1k_ids"] = cfg.PART_DISTILLATION.NUM_OBJECT_CLASSES == 1000
            logger.warning("PART_DISTILLATION.DATASET_PATH(_LIST) folder(s) %s not found: object classes from "
                           "the ground truth's %s", missing,
                           "imagenet_1k_class_id where the records have one (PartImageNet), else class_id"
                           if ret["imagenet_1k_ids"] else "class_id")
        elif args is not None:
            _, codes, source = load_part_distillation_dataset(*args)
            ret["class_codes"] = codes if source == "vocabulary" else None
        if ret["class_codes"] is None and not missing:
            logger.info("object classes from the ground truth's class_id (right for a model trained "
                        "on pseudo-labels with class_id; otherwise set PART_DISTILLATION.DATASET_PATH "
                        "to its training folders so that their class-code vocabulary is used)")
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        """:meth:`PartEvalDatasetMapper.__call__` plus ``object_classes``.

        Raises:
            KeyError: no vocabulary and an object without ``class_id``.
        """
        out = super().__call__(dataset_dict)
        ids = []
        for obj in dataset_dict["objects"]:
            if self.class_index is None:
                ids.append(int(obj.get("imagenet_1k_class_id", obj["class_id"]) if self.imagenet_1k_ids
                               else obj["class_id"]))
            else:
                ids.append(self.class_index.get(obj.get("class_code") or obj["class_name"], -1))
        self.unknown_objects += sum(i < 0 for i in ids)
        out["object_classes"] = torch.tensor(ids, dtype=torch.int64)
        return out
