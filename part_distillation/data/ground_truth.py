"""The one ground-truth object type every evaluation path and ground-truth mapper reads.

Dataset dicts (what every loader in :mod:`part_distillation.data` returns, detectron2
``DatasetCatalog`` format; masks are COCO RLE at image resolution, see
:func:`part_distillation.data.pseudo_labels.encode_mask`)::

    {"file_name": str, "image_id": str, "height": int, "width": int,
     "annotation_file": str (optional: the file the objects came from, named in errors),
     "objects": [{"class_name": str, "class_code": str, "class_id": int,
                  "mask": RLE, "bbox": [x0, y0, x1, y1], "bbox_mode": 0 (XYXY_ABS),
                  "parts": [{"name": str, "raw_name": str, "part_id": int, "mask": RLE}]}]}

Class identity: ``class_code`` is the dataset's class key (the
WordNet id for ImageNet / PartImageNet, the class name for Pascal-Part, Cityscapes and the
OV-PARTS sets, the folder's class name for image folders); ``class_id`` is the index of that class
in the dataset's class list ``MetadataCatalog.get(name).thing_classes`` (-1 when the dataset has no
class list). ``part_id`` indexes ``MetadataCatalog.get(name).part_classes`` (-1 when the name is
not in the dataset's part vocabulary, e.g. raw names with ``CUSTOM_DATASETS.USE_MERGED_GT False``).

:func:`gt_objects` decodes a dict into :class:`GTObject` s; :func:`validate_record` checks a dict
without decoding more than needed and raises :class:`GroundTruthError` naming the annotation file.
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np

from .pseudo_labels import decode_mask, encode_mask, mask_to_box

_OBJECT_KEYS = ("class_name", "class_code", "class_id", "mask", "parts")


class GroundTruthError(ValueError):
    """A dataset dict breaks the ground-truth contract (message names the annotation file)."""


@dataclass
class GTObject:
    """One ground-truth object, decoded.

    Attributes:
        class_name: human-readable class name (``"cat"``, ``"diningtable"``, ``"goldfish"``).
        class_code: the dataset's class key (wnid for ImageNet-based sets, else the class name).
        class_id: index into the dataset's ``thing_classes`` (-1: no class list).
        mask: bool (H, W) object mask at image resolution.
        parts: bool (P, H, W) part masks at image resolution (P may be 0).
        part_names: P part names (merged names unless the dataset was loaded raw).
        part_ids: P indices into the dataset's ``part_classes`` (-1 where not in it).
    """

    class_name: str
    class_code: str
    class_id: int
    mask: np.ndarray
    parts: np.ndarray
    part_names: List[str] = field(default_factory=list)
    part_ids: List[int] = field(default_factory=list)

    def __post_init__(self):
        self.validate()

    def validate(self, source: str = "") -> None:
        """Raise :class:`GroundTruthError` (prefixed with ``source``) unless ``mask`` is bool
        (H, W), ``parts`` bool (P, H, W) of the same H, W and names / ids have P entries."""
        where = f"{source}: " if source else ""
        m, p = self.mask, self.parts
        if not isinstance(m, np.ndarray) or m.dtype != bool or m.ndim != 2:
            raise GroundTruthError(f"{where}object mask must be a bool (H, W) array, got "
                                   f"{getattr(m, 'dtype', type(m))} {getattr(m, 'shape', '')}")
        if not isinstance(p, np.ndarray) or p.dtype != bool or p.ndim != 3 or p.shape[1:] != m.shape:
            raise GroundTruthError(f"{where}part masks must be bool (P, {m.shape[0]}, {m.shape[1]}), "
                                   f"got {getattr(p, 'dtype', type(p))} {getattr(p, 'shape', '')}")
        if len(self.part_names) != len(p) or len(self.part_ids) != len(p):
            raise GroundTruthError(f"{where}{len(p)} part masks but {len(self.part_names)} names and "
                                   f"{len(self.part_ids)} ids")

    def __getitem__(self, key: str):
        """Read-only mapping access (``g["mask"]``, the dataset dict's key names); prefer attributes."""
        return getattr(self, key)


def _source(record: dict) -> str:
    return str(record.get("annotation_file") or record.get("file_name", "<dataset dict>"))


def object_record(class_name: str, class_code: str, class_id: int, mask: np.ndarray, parts: List[dict],
                  **extra) -> dict:
    """One object of a dataset dict (the contract above) from a bool (H, W) ``mask``: RLE mask,
    tight XYXY box (``bbox_mode`` 0, detectron2 ``BoxMode.XYXY_ABS``), ``parts`` as given (each
    ``{"name", "raw_name", "part_id", "mask" (RLE)}``) and any ``extra`` fields."""
    return {"class_name": class_name, "class_code": class_code, "class_id": int(class_id),
            "mask": encode_mask(mask), "bbox": mask_to_box(mask), "bbox_mode": 0, "parts": parts, **extra}


def part_record(name: str, raw_name: str, part_id: int, mask: np.ndarray) -> dict:
    """One part of an object record (the contract above) from a bool (H, W) ``mask``: ``name``
    (the vocabulary's name), ``raw_name`` (the annotation's), ``part_id`` (index into the dataset's
    ``part_classes``) and the RLE mask."""
    return {"name": name, "raw_name": raw_name, "part_id": int(part_id), "mask": encode_mask(mask)}


def parts_from_label_map(part_map: np.ndarray, object_mask: np.ndarray, part_of) -> List[dict]:
    """The parts of one object from a per-pixel part-id map (Cityscapes-Part's part ids, the
    OV-PARTS part maps): one :func:`part_record` per id present inside ``object_mask``, in
    ascending id order, with the mask ``object_mask & (part_map == id)``.

    Args:
        part_map: (H, W) int part ids; object_mask: (H, W) bool.
        part_of: ``id -> (name, raw_name, part_id)``, or None for an id that is no part of this
            object (background, ignore label, another class's part): it is left out.
    """
    parts = []
    for pid in np.unique(part_map[object_mask]):
        named = part_of(int(pid))
        if named is not None:
            parts.append(part_record(*named, object_mask & (part_map == pid)))
    return parts


def validate_record(record: dict) -> None:
    """Check one dataset dict against the contract above without decoding the masks (RLE sizes
    are compared with ``height`` / ``width``).

    Raises:
        GroundTruthError: a missing key, a non-int ``class_id``, or an object / part mask whose
            size differs from the image's; the message names ``annotation_file`` (or
            ``file_name``), the object index and the part name.
    """
    src = _source(record)
    for key in ("file_name", "image_id", "height", "width", "objects"):
        if key not in record:
            raise GroundTruthError(f"{src}: dataset dict lacks '{key}'")
    size = (int(record["height"]), int(record["width"]))
    for i, o in enumerate(record["objects"]):
        missing = [k for k in _OBJECT_KEYS if k not in o]
        if missing:
            raise GroundTruthError(f"{src}: object {i} lacks {missing}")
        if not isinstance(o["class_id"], (int, np.integer)):
            raise GroundTruthError(f"{src}: object {i} class_id must be an int, got {o['class_id']!r}")
        if tuple(o["mask"]["size"]) != size:
            raise GroundTruthError(f"{src}: object {i} ({o['class_name']}) mask size "
                                   f"{tuple(o['mask']['size'])} != image size {size}")
        for p in o["parts"]:
            if tuple(p["mask"]["size"]) != size:
                raise GroundTruthError(f"{src}: object {i} ({o['class_name']}) part '{p['name']}' mask "
                                       f"size {tuple(p['mask']['size'])} != image size {size}")


def gt_objects(record: dict) -> List[GTObject]:
    """Decoded, validated :class:`GTObject` s of one dataset dict, in ``record["objects"]`` order.

    Raises:
        GroundTruthError: see :func:`validate_record`.
    """
    validate_record(record)
    size = (int(record["height"]), int(record["width"]))
    out = []
    for o in record["objects"]:
        parts = o["parts"]
        masks = (np.stack([decode_mask(p["mask"]) for p in parts]) if parts
                 else np.zeros((0,) + size, bool))
        out.append(GTObject(class_name=o["class_name"], class_code=str(o["class_code"]),
                            class_id=int(o["class_id"]), mask=decode_mask(o["mask"]), parts=masks,
                            part_names=[p["name"] for p in parts],
                            part_ids=[int(p.get("part_id", -1)) for p in parts]))
    return out
