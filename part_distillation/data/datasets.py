"""Named datasets in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``, through the loader
registry (:mod:`part_distillation.data.loader_registry`).

Registered on import of :mod:`part_distillation.data` (lazy: nothing is read until
``DatasetCatalog.get``; a missing folder is then a FileNotFoundError naming the path and the
expected layout). Paths are under ``$DETECTRON2_DATASETS`` (detectron2's convention, default
``<repo>/datasets``); the shared real examples under ``$PD_SHARED_DATA`` (default
``<repo>/../shared/data``). :func:`configure_datasets` re-registers them with a config's
``CUSTOM_DATASETS.*`` / ``FEWSHOT_LEARNING.*`` values; ``setup_cfg`` calls it.
``datasets/README.md`` lists every name and layout.

Metadata of every registered name (``MetadataCatalog.get(name)``): ``loader`` (registry name),
``evaluator_type`` (``"part"`` or ``"none"``), ``has_parts``, ``layout``, ``thing_classes``
(``class_id`` indexes it), ``part_classes`` (``part_id`` indexes it) where the format fixes them,
``eval_mode`` (``"match"`` / ``"evaluate"`` for the unsupervised-evaluation pairs),
``label_percentage`` and ``load_report`` (:class:`~part_distillation.data.load_report.LoadReport`,
filled by each load). Loader-specific fields are documented with each loader.
"""
import logging
import os
from typing import Dict, List

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

# importing a loader module registers its loader classes
from . import cityscapes_part, image_folder, imagenet, ov_parts, part_imagenet, pascal_part  # noqa: F401
from .ground_truth import GroundTruthError, validate_record
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY

logger = logging.getLogger(__name__)
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FOLDER_PREFIX = "folder:"


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, default ``<repo>/datasets``."""
    return os.environ.get("DETECTRON2_DATASETS", os.path.join(_REPO, "datasets"))


def shared_data_root() -> str:
    """``$PD_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return os.environ.get("PD_SHARED_DATA", os.path.join(os.path.dirname(_REPO), "shared", "data"))


def few_shot_subset(dicts: List[dict], label_percentage: float, seed: int = 1234) -> List[dict]:
    """The first ``int(len * p / 100)`` dicts after a shuffle with ``numpy.random.RandomState(seed)``
    (the official few-shot rule, ``FEWSHOT_LEARNING.LABEL_PERCENTAGE``, seed 1234); all of them,
    in order, when ``label_percentage >= 100``. Logs the kept ids' count and first ids.

    Raises:
        ValueError: ``label_percentage`` is not in (0, 100].
    """
    if not 0 < label_percentage <= 100:
        raise ValueError(f"FEWSHOT_LEARNING.LABEL_PERCENTAGE must be in (0, 100], got {label_percentage}")
    if label_percentage >= 100:
        return dicts
    order = np.random.RandomState(seed).permutation(len(dicts))
    kept = [dicts[i] for i in order[: int(len(dicts) * label_percentage / 100)]]
    logger.info("few-shot subset: %d of %d images (%s%%, seed %d); first ids %s", len(kept), len(dicts),
                label_percentage, seed, [str(d["image_id"]) for d in kept[:5]])
    return kept


def _load(name: str, loader, label_percentage: float, debug: bool) -> List[dict]:
    report: LoadReport = MetadataCatalog.get(name).load_report
    report.reset()  # the metadata holds one report object; each load refills it
    loader.check(name)
    dicts = loader.load(report)
    meta = MetadataCatalog.get(name)
    for key, value in loader.loaded.items():
        if not hasattr(meta, key):
            meta.set(**{key: value})
    if loader.EVALUATOR_TYPE == "part":
        valid = []
        for d in dicts:
            try:
                validate_record(d)
            except GroundTruthError as e:
                report.skip("bad_annotation", d.get("annotation_file", d["file_name"]), str(e))
                continue
            valid.append(d)
        dicts = valid
    if debug:
        dicts = dicts[:100]
    dicts = few_shot_subset(dicts, label_percentage)
    report.num_loaded = len(dicts)
    report.log_summary()
    return dicts


def register_dataset(name: str, loader_name: str, label_percentage: float = 100, debug: bool = False,
                     eval_mode: str = "", **options) -> None:
    """Register ``name`` in ``DatasetCatalog`` (lazy) with the registry loader ``loader_name``
    and ``options``, and its metadata (see the module docstring). Re-registering a name replaces
    it.

    Args:
        label_percentage: keep a few-shot subset (:func:`few_shot_subset`).
        debug: keep the first 100 images (official ``*.DEBUG``).
        eval_mode: ``"match"`` / ``"evaluate"`` for the unsupervised-evaluation pairs.
    Raises:
        KeyError: unknown ``loader_name``.
    """
    loader = DATASET_LOADER_REGISTRY.get(loader_name)(**options)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _load(name, loader, label_percentage, debug))
    meta = {"loader": loader_name, "evaluator_type": loader.EVALUATOR_TYPE,
            "has_parts": loader.EVALUATOR_TYPE == "part", "layout": loader.LAYOUT,
            "label_percentage": label_percentage, "load_report": LoadReport(name)}
    if eval_mode:
        meta["eval_mode"] = eval_mode
    meta.update(loader.metadata())
    MetadataCatalog.get(name).set(**meta)


def _builtin(cfg=None) -> Dict[str, dict]:
    """``{name: register_dataset kwargs}`` of every built-in dataset, with ``cfg``'s values."""
    d2, shared = datasets_root(), shared_data_root()
    merge = bool(cfg.CUSTOM_DATASETS.USE_MERGED_GT) if cfg is not None else True
    out = {
        "pascal_part": dict(loader_name="PascalPartLoader", root=os.path.join(d2, "pascal_part"), merge=merge),
        "pascal_part_examples": dict(loader_name="PascalPartLoader", merge=merge,
                                     root=os.path.join(shared, "pascal_part_examples")),
        # ADE names; class_ind / part names index the ADE20K-Part-234 lists (OV-PARTS)
        "ade20k_part_subset": dict(loader_name="PascalPartLoader", pascal_vocabulary=False,
                                   root=os.path.join(shared, "ade20k_part_subset"),
                                   thing_classes=list(ov_parts.ADE_PART_234_OBJECTS),
                                   part_classes=list(ov_parts.ADE_PART_234_CLASSES)),
    }
    out.update(pascal_part.builtin_datasets(d2, cfg))
    out.update(part_imagenet.builtin_datasets(d2, cfg))
    out.update(imagenet.builtin_datasets(d2))
    out.update(cityscapes_part.builtin_datasets(d2, cfg))
    out.update(ov_parts.builtin_datasets(d2))
    return out


def register_builtin() -> None:
    """Register the built-in names with default options (idempotent: names already registered
    are kept)."""
    registered = set(DatasetCatalog.list())
    for name, kwargs in _builtin().items():
        if name not in registered:
            register_dataset(name, **kwargs)


def configure_datasets(cfg) -> None:
    """Re-register the built-in names with ``cfg``'s ``CUSTOM_DATASETS.USE_MERGED_GT``,
    ``CUSTOM_DATASETS.{PASCAL_PARTS,PART_IMAGENET,CITYSCAPES_PART}.*`` and
    ``FEWSHOT_LEARNING.LABEL_PERCENTAGE`` (applied to the training splits)."""
    for name, kwargs in _builtin(cfg).items():
        register_dataset(name, **kwargs)


def _folder_dataset(folder: str) -> str:
    """Register a folder (Pascal-Part release layout, ``images/`` + ``masks/``, or plain images)
    as ``folder:<abspath>`` and return that name."""
    folder = os.path.abspath(folder)
    name = _FOLDER_PREFIX + folder
    if name not in DatasetCatalog.list():
        if os.path.isdir(os.path.join(folder, "Annotations_Part")):
            register_dataset(name, "PascalPartLoader", root=folder)
        else:
            images, masks = os.path.join(folder, "images"), os.path.join(folder, "masks")
            if os.path.isdir(images) and os.path.isdir(masks):
                register_dataset(name, "ImageFolderLoader", images_dir=images, masks_dir=masks)
            else:
                register_dataset(name, "ImageFolderLoader", images_dir=folder)
    return name


def dataset_name(spec: str) -> str:
    """The ``DatasetCatalog`` name of ``spec``: a registered name, or a folder (registered on the
    fly as ``folder:<abspath>``).

    Raises:
        KeyError: ``spec`` is neither a folder nor a registered name (lists registered names).
    """
    if os.path.isdir(spec):
        return _folder_dataset(spec)
    if spec not in DatasetCatalog.list():
        raise KeyError(f"unknown dataset '{spec}' (not a folder either); registered: "
                       f"{', '.join(sorted(n for n in DatasetCatalog.list() if not n.startswith(_FOLDER_PREFIX)))}")
    return spec


def resolve_dataset(spec: str) -> List[dict]:
    """Dataset dicts for a registered name or a folder (see :func:`dataset_name`); afterwards
    :func:`load_report` ``(spec)`` tells what the load skipped.

    Raises:
        KeyError: unknown name; FileNotFoundError: the dataset's folder is missing.
    """
    return DatasetCatalog.get(dataset_name(spec))


def load_report(spec: str) -> dict:
    """JSON form of the last load's :class:`LoadReport` of ``spec`` (name or folder), for stage
    summaries and ``metrics.json``: ``{"dataset", "num_loaded", "skipped": {reason: n},
    "skipped_files": {reason: [paths]}}``."""
    return MetadataCatalog.get(dataset_name(spec)).load_report.to_dict()


def has_part_annotations(spec: str) -> bool:
    """Whether ``spec`` (name or folder) carries ground-truth parts to evaluate against."""
    return bool(MetadataCatalog.get(dataset_name(spec)).get("has_parts", False))
