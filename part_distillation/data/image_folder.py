"""A folder of the user's own images as a dataset, with optional per-image object masks.

Layout::

    <images_dir>/<name>.{jpg,jpeg,png,bmp,webp}   (any case)
    <masks_dir>/<image_id>.png      # optional: 0 = background, 1..N = object instances

Image ids are file stems (``cat.jpg`` -> ``cat``); when several files share a stem (``cat.jpg`` +
``cat.png``, ``x.JPG`` + ``x.jpg``) each of them keeps its extension in the id (``cat.jpg``,
``cat.png``), so ids are unique and the same files always get the same ids
(:func:`unique_image_ids`). Without a masks folder each image gets one object covering the whole
image (useful for object-centric photos). Objects carry ``class_name`` = ``class_code`` (one name
for the folder) and ``class_id`` 0 (the dataset's class list is ``[class_name]``); there are no
part annotations, so only pseudo-labels and pictures come out, not metrics.
"""
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional

import numpy as np
from PIL import Image

from .ground_truth import object_record
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def unique_image_ids(file_names: Iterable[str]) -> Dict[str, str]:
    """``{file name: image id}`` for the files of one folder: the stem, or the full file name
    where two or more files share the stem. Deterministic (depends only on the set of names)."""
    names = list(file_names)
    stems = Counter(os.path.splitext(f)[0] for f in names)
    return {f: (os.path.splitext(f)[0] if stems[os.path.splitext(f)[0]] == 1 else f) for f in names}


def load_image_folder(images_dir: str, masks_dir: Optional[str] = None, class_name: str = "object",
                      report: Optional[LoadReport] = None) -> List[dict]:
    """Dataset dicts (contract: :mod:`part_distillation.data.ground_truth`; objects without
    ``parts``), sorted by file name. Unreadable images (``unreadable_image``) and, with
    ``masks_dir``, images without a mask (``no_mask``) or with a mask of another size
    (``bad_annotation``) are skipped, logged and counted in ``report``.

    Raises:
        FileNotFoundError: ``images_dir`` (or a given ``masks_dir``) does not exist.
    """
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    if masks_dir and not os.path.isdir(masks_dir):
        raise FileNotFoundError(f"mask folder not found: {masks_dir}")
    report = report if report is not None else LoadReport(images_dir)
    files = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    ids = unique_image_ids(files)
    dicts = []
    for f in files:
        path, image_id = os.path.join(images_dir, f), ids[f]
        size = report.image_size(path)
        if size is None:
            continue
        w, h = size
        mpath = None
        if masks_dir:
            mpath = os.path.join(masks_dir, image_id + ".png")
            if not os.path.isfile(mpath):
                report.skip("no_mask", path, f"expected {mpath}")
                continue
            inst = np.asarray(Image.open(mpath))
            if inst.ndim == 3:
                inst = inst[..., 0]
            if inst.shape != (h, w):
                report.skip("bad_annotation", mpath, f"mask size {inst.shape} != image size {(h, w)}")
                continue
            masks = [inst == i for i in np.unique(inst) if i != 0]
        else:
            masks = [np.ones((h, w), bool)]
        objects = [object_record(class_name, class_name, 0, m, []) for m in masks]
        rec = {"file_name": path, "image_id": image_id, "height": h, "width": w, "objects": objects}
        if mpath:
            rec["annotation_file"] = mpath
        dicts.append(rec)
    return dicts


@DATASET_LOADER_REGISTRY.register()
class ImageFolderLoader(DatasetLoader):
    """A folder of images, optionally with instance-mask PNGs (see :func:`load_image_folder`).
    Options: ``images_dir``, ``masks_dir``, ``class_name``."""

    LAYOUT = "<images_dir>/<name>.{jpg,jpeg,png,bmp,webp}\n<masks_dir>/<image_id>.png  (optional)"
    EVALUATOR_TYPE = "none"

    def paths(self) -> List[str]:
        return [p for p in (self.options["images_dir"], self.options.get("masks_dir")) if p]

    def metadata(self) -> dict:
        return {"root": self.options["images_dir"],
                "thing_classes": [self.options.get("class_name", "object")]}

    def load(self, report: LoadReport) -> List[dict]:
        return load_image_folder(report=report, **self.options)
