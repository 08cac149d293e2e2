"""Dataset registration in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

Registered on import of :mod:`part_distillation.data`:

==========================  =================================================================
name                        folder (Pascal-Part layout: JPEGImages/ + Annotations_Part/*.mat)
==========================  =================================================================
``pascal_part``             ``$PD_DATASETS/pascal_part`` (full Pascal-Part, see datasets/README)
``pascal_part_examples``    ``$PD_SHARED_DATA/pascal_part_examples`` (18 images, test fixture)
``ade20k_part_subset``      ``$PD_SHARED_DATA/ade20k_part_subset`` (248 images)
==========================  =================================================================

``PD_DATASETS`` defaults to ``<repo>/datasets`` and ``PD_SHARED_DATA`` to ``<repo>/../shared/data``.
Loading is lazy: a missing folder is an error when the dataset is used, not at import.
:func:`resolve_dataset` also accepts a folder path: Pascal-Part layout, ``images/`` + ``masks/``
(instance-mask PNGs, see :mod:`part_distillation.data.image_folder`), or a plain image folder
(each image is one whole-image object).
"""
import os
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .image_folder import load_image_folder
from .pascal_part import load_pascal_part

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def datasets_root() -> str:
    return os.environ.get("PD_DATASETS", os.path.join(_REPO, "datasets"))


def shared_data_root() -> str:
    return os.environ.get("PD_SHARED_DATA", os.path.join(os.path.dirname(_REPO), "shared", "data"))


def register_part_dataset(name: str, root: str, merge: bool = True) -> None:
    """Register a Pascal-Part-layout folder under ``name`` (lazy; metadata ``evaluator_type``
    ``"part"``, ``root``)."""
    DatasetCatalog.register(name, lambda: load_pascal_part(root, merge=merge))
    MetadataCatalog.get(name).set(evaluator_type="part", root=root, has_parts=True)


def register_image_folder(name: str, images_dir: str, masks_dir: Optional[str] = None,
                          class_name: str = "object") -> None:
    """Register a folder of the user's images (optional instance-mask PNGs) under ``name``."""
    DatasetCatalog.register(name, lambda: load_image_folder(images_dir, masks_dir, class_name))
    MetadataCatalog.get(name).set(evaluator_type="none", root=images_dir, has_parts=False)


def register_builtin() -> None:
    """Register the built-in names (idempotent)."""
    builtin = {
        "pascal_part": os.path.join(datasets_root(), "pascal_part"),
        "pascal_part_examples": os.path.join(shared_data_root(), "pascal_part_examples"),
        "ade20k_part_subset": os.path.join(shared_data_root(), "ade20k_part_subset"),
    }
    for name, root in builtin.items():
        if name not in DatasetCatalog.list():
            register_part_dataset(name, root)


def resolve_dataset(spec: str) -> List[dict]:
    """Dataset dicts for a registered name or a folder.

    Raises:
        KeyError: ``spec`` is neither a folder nor a registered name (lists registered names).
    """
    if os.path.isdir(spec):
        if os.path.isdir(os.path.join(spec, "Annotations_Part")):
            return load_pascal_part(spec)
        images, masks = os.path.join(spec, "images"), os.path.join(spec, "masks")
        if os.path.isdir(images) and os.path.isdir(masks):
            return load_image_folder(images, masks)
        return load_image_folder(spec)
    if spec not in DatasetCatalog.list():
        raise KeyError(f"unknown dataset '{spec}' (not a folder either); registered: "
                       f"{', '.join(sorted(DatasetCatalog.list()))}")
    return DatasetCatalog.get(spec)


def has_part_annotations(spec: str) -> bool:
    """Whether ``spec`` (name or folder) carries ground-truth parts to evaluate against."""
    if os.path.isdir(spec):
        return os.path.isdir(os.path.join(spec, "Annotations_Part"))
    return bool(MetadataCatalog.get(spec).get("has_parts", False))
