"""A folder of the user's own images as a dataset, with optional per-image object masks.

Layout::

    <images_dir>/<id>.{jpg,jpeg,png,bmp,webp}
    <masks_dir>/<id>.png      # optional: 0 = background, 1..N = object instances

Without a masks folder each image gets one object covering the whole image (useful for
object-centric photos). Objects carry ``class_name`` (one name for the folder); there are no part
annotations, so only pseudo-labels and pictures come out, not metrics.
"""
import logging
import os
from typing import List, Optional

import numpy as np
from PIL import Image

from .images import ImageReadError, image_id_of_path, read_image_size
from .pseudo_labels import encode_mask, mask_to_box

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_image_folder(images_dir: str, masks_dir: Optional[str] = None,
                      class_name: str = "object") -> List[dict]:
    """Dataset dicts (same format as :func:`part_distillation.data.pascal_part.load_pascal_part`,
    objects without ``parts``). Unreadable images are skipped with a warning and counted.

    Raises:
        FileNotFoundError: ``images_dir`` (or a given ``masks_dir``) does not exist.
    """
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    if masks_dir and not os.path.isdir(masks_dir):
        raise FileNotFoundError(f"mask folder not found: {masks_dir}")
    dicts, bad = [], 0
    for f in sorted(os.listdir(images_dir)):
        if not f.lower().endswith(IMAGE_EXTENSIONS):
            continue
        path = os.path.join(images_dir, f)
        image_id = image_id_of_path(f)
        try:
            w, h = read_image_size(path)
        except ImageReadError as e:
            logger.warning("skipping %s", e)
            bad += 1
            continue
        if masks_dir:
            mpath = os.path.join(masks_dir, image_id + ".png")
            if not os.path.isfile(mpath):
                logger.warning("no object mask for %s (expected %s); skipped", f, mpath)
                bad += 1
                continue
            inst = np.asarray(Image.open(mpath))
            if inst.ndim == 3:
                inst = inst[..., 0]
            if inst.shape != (h, w):
                raise ValueError(f"{mpath}: mask size {inst.shape} != image size {(h, w)}")
            masks = [inst == i for i in np.unique(inst) if i != 0]
        else:
            masks = [np.ones((h, w), bool)]
        objects = [{"class_name": class_name, "class_id": -1, "mask": encode_mask(m),
                    "bbox": mask_to_box(m), "bbox_mode": 0, "parts": []} for m in masks]
        dicts.append({"file_name": path, "image_id": image_id, "height": h, "width": w,
                      "objects": objects})
    if bad:
        logger.warning("%s: %d images skipped (unreadable or without mask)", images_dir, bad)
    return dicts
