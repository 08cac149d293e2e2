"""Pascal-Part (Chen et al., CVPR 2014) in its release layout, and datasets stored the same way.

Layout::

    <root>/JPEGImages/<id>.jpg
    <root>/Annotations_Part/<id>.mat   # scipy.io.loadmat(path)["anno"][0, 0]:
                                       #   objects[0][i]: class, class_ind, mask (H, W uint8),
                                       #   parts (empty or parts[0][j]: part_name, mask)

Dataset dicts (detectron2 ``DatasetCatalog`` format, masks as COCO RLE at image resolution)::

    {"file_name", "image_id", "height", "width",
     "objects": [{"class_name", "class_id", "mask": RLE, "bbox": XYXY, "bbox_mode",
                  "parts": [{"name": merged name, "raw_name": str, "mask": RLE}]}]}

Part names are mapped to the merged taxonomy of :data:`PASCAL_PART_MERGE` (left/right, front/back,
upper/lower and numbered variants merged into one part, e.g. ``lleg``/``rleg`` -> ``leg``,
``wheel_3`` -> ``wheel``), as part-discovery evaluations on Pascal-Part do. Several raw parts that
merge into one name inside an object are united into one mask. Names the map does not know (e.g.
ADE20K part names) pass through unchanged. ``datasets/README.md`` tabulates the map.
"""
import logging
import os
import re
from typing import Dict, List, Optional

import numpy as np
import scipy.io

from .images import read_image_size
from .pseudo_labels import encode_mask, mask_to_box

logger = logging.getLogger(__name__)

# raw Pascal-Part name -> merged name (names absent here pass through unchanged)
PASCAL_PART_MERGE: Dict[str, str] = {
    # eyes, ears, brows, horns (person, animals, birds)
    "leye": "eye", "reye": "eye", "lear": "ear", "rear": "ear",
    "lebrow": "eyebrow", "rebrow": "eyebrow", "lhorn": "horn", "rhorn": "horn",
    # person limbs
    "llarm": "arm", "luarm": "arm", "rlarm": "arm", "ruarm": "arm",
    "lhand": "hand", "rhand": "hand",
    "llleg": "leg", "luleg": "leg", "rlleg": "leg", "ruleg": "leg",
    "lfoot": "foot", "rfoot": "foot",
    # birds, aeroplanes
    "lwing": "wing", "rwing": "wing", "lleg": "leg", "rleg": "leg",
    # quadrupeds
    "lfleg": "leg", "rfleg": "leg", "lbleg": "leg", "rbleg": "leg",
    "lfuleg": "leg", "lflleg": "leg", "rfuleg": "leg", "rflleg": "leg",
    "lbuleg": "leg", "lblleg": "leg", "rbuleg": "leg", "rblleg": "leg",
    "lfpa": "paw", "rfpa": "paw", "lbpa": "paw", "rbpa": "paw",
    "lfho": "hoof", "rfho": "hoof", "lbho": "hoof", "rbho": "hoof",
    # two-wheelers
    "fwheel": "wheel", "bwheel": "wheel", "saddle": "saddle",
    # bus / car sides and plates
    "frontside": "front", "backside": "back", "leftside": "side", "rightside": "side",
    "roofside": "roof", "leftmirror": "mirror", "rightmirror": "mirror",
    "fliplate": "license_plate", "bliplate": "license_plate",
    # train: locomotive (h*) and coach (c*) sides
    "hfrontside": "front", "hbackside": "back", "hleftside": "side", "hrightside": "side",
    "hroofside": "roof", "cfrontside": "front", "cbackside": "back", "cleftside": "side",
    "crightside": "side", "croofside": "roof",
}
# Pascal-Part numbers repeated parts: wheel_1, door_2, window_10, headlight_3, engine_1, coach_2.
_NUMBERED = re.compile(r"^(wheel|door|window|headlight|engine|coach)_\d+$")


def merge_part_name(raw: str) -> str:
    """Merged taxonomy name of a raw Pascal-Part part name; unknown names pass unchanged."""
    if raw in PASCAL_PART_MERGE:
        return PASCAL_PART_MERGE[raw]
    m = _NUMBERED.match(raw)
    return m.group(1) if m else raw


def _str(x) -> str:
    """Unwrap a MATLAB string cell (``array(['person'])``) into a str."""
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        x = x.flat[0]
    return str(x)


def load_part_annotation(mat_path: str, merge: bool = True) -> Optional[List[dict]]:
    """Objects of one ``.mat`` file as dataset-dict ``objects`` (masks RLE-encoded).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a Pascal-Part annotation (message names the file).
    """
    if not os.path.isfile(mat_path):
        raise FileNotFoundError(f"annotation file not found: {mat_path}")
    try:
        anno = scipy.io.loadmat(mat_path)["anno"][0, 0]
        raw_objects = anno["objects"][0]
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad annotation file
        raise ValueError(f"{mat_path}: not a Pascal-Part annotation ({type(e).__name__}: {e})") from None
    objects = []
    for o in raw_objects:
        mask = np.asarray(o["mask"]).astype(bool)
        parts_by_name: Dict[str, np.ndarray] = {}
        raw_names: Dict[str, List[str]] = {}
        if o["parts"].size:
            for p in o["parts"][0]:
                raw = _str(p["part_name"])
                name = merge_part_name(raw) if merge else raw
                pm = np.asarray(p["mask"]).astype(bool)
                parts_by_name[name] = parts_by_name.get(name, np.zeros_like(pm)) | pm
                raw_names.setdefault(name, []).append(raw)
        objects.append({
            "class_name": _str(o["class"]),
            "class_id": int(np.asarray(o["class_ind"]).flat[0]) if np.asarray(o["class_ind"]).size else -1,
            "mask": encode_mask(mask),
            "bbox": mask_to_box(mask),
            "bbox_mode": 0,  # detectron2 BoxMode.XYXY_ABS
            "parts": [{"name": n, "raw_name": "+".join(raw_names[n]), "mask": encode_mask(m)}
                      for n, m in parts_by_name.items()],
        })
    return objects


def load_pascal_part(root: str, merge: bool = True, class_names: Optional[List[str]] = None) -> List[dict]:
    """All images of a Pascal-Part-layout folder as detectron2 dataset dicts.

    Images without an annotation file (or annotations without an image) are skipped with a
    warning and counted; ``class_names`` keeps only objects of those classes.

    Raises:
        FileNotFoundError: ``root`` lacks ``JPEGImages`` or ``Annotations_Part``.
    """
    img_dir, ann_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations_Part")
    for d in (img_dir, ann_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"Pascal-Part layout expected: missing folder {d}")
    dicts, missing = [], 0
    for ann in sorted(f for f in os.listdir(ann_dir) if f.endswith(".mat")):
        image_id = ann[: -len(".mat")]
        file_name = os.path.join(img_dir, image_id + ".jpg")
        if not os.path.isfile(file_name):
            missing += 1
            continue
        objects = load_part_annotation(os.path.join(ann_dir, ann), merge=merge)
        if class_names:
            objects = [o for o in objects if o["class_name"] in class_names]
        w, h = read_image_size(file_name)
        for o in objects:
            if tuple(o["mask"]["size"]) != (h, w):
                raise ValueError(f"{ann}: object mask size {tuple(o['mask']['size'])} != image size {(h, w)}")
        dicts.append({"file_name": file_name, "image_id": image_id, "height": h, "width": w,
                      "objects": objects})
    if missing:
        logger.warning("%s: %d annotations have no image and were skipped", root, missing)
    return dicts
