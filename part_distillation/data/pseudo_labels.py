"""The one pseudo-label format every stage reads and writes.

One JSON file per image, ``<output_dir>/<image_id>.json``. Masks are COCO compressed RLE
(pycocotools) with the ``counts`` bytes decoded as ASCII, at the ORIGINAL image resolution
(``height`` x ``width``); boxes are absolute ``XYXY`` pixels in that frame. Schema (version 1)::

    {
      "schema": "part_distillation/pseudo_label", "version": 1,
      "stage": "object_masks" | "pixel_grouping" | "dense_crf" | "part_ranking" | ...,
      "image": {"file_name": str, "image_id": str, "height": int, "width": int},
      "objects": [
        {"class_name": str, "class_code": str,      # e.g. "person" / ImageNet wnid
         "mask": RLE, "bbox": [x0, y0, x1, y1], "score": float,
         "parts": [{"mask": RLE, "label": int | null, "score": float}, ...]}
      ],
      "skipped_objects": [{"index": int, "reason": str}],   # objects a stage could not process
      "config": {...}                                       # the keys of the producing stage
    }

``label`` is ``null`` until part ranking assigns class-consistent part ids (stage 5). Parts of one
object never overlap in the outputs of stages 2-3 (they partition the object's pixels).

Writes are atomic (:mod:`part_distillation.utils.io`); :func:`load_pseudo_label` validates and raises
:class:`PseudoLabelError` naming the file for a corrupt, truncated or foreign file, and
:func:`is_complete` is what resuming shards use to decide whether an image is done.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util

from ..utils.io import atomic_write_json

SCHEMA = "part_distillation/pseudo_label"
VERSION = 1


class PseudoLabelError(ValueError):
    """A pseudo-label file is missing, corrupt, truncated or does not follow the schema."""


def encode_mask(mask: np.ndarray) -> dict:
    """Binary mask (H, W) bool/uint8 -> COCO compressed RLE dict with str ``counts``."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE dict (str or bytes ``counts``) -> bool mask (H, W)."""
    rle = dict(rle)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_util.decode(rle).astype(bool)


def mask_to_box(mask: np.ndarray) -> List[float]:
    """Tight ``XYXY`` box (absolute pixels, exclusive max) of a bool mask; zeros if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@dataclass
class PartLabel:
    """One part segment of an object. ``mask``: bool (H, W) at image resolution."""

    mask: np.ndarray
    label: Optional[int] = None
    score: float = 1.0


@dataclass
class ObjectLabel:
    """One object instance. ``mask``: bool (H, W); ``bbox``: XYXY absolute pixels."""

    class_name: str
    mask: np.ndarray
    class_code: str = ""
    score: float = 1.0
    bbox: Optional[List[float]] = None
    parts: List[PartLabel] = field(default_factory=list)

    def __post_init__(self):
        if self.bbox is None:
            self.bbox = mask_to_box(self.mask)

    def part_label_map(self) -> np.ndarray:
        """int32 (H, W): 0 outside parts, ``i + 1`` on part ``i`` (later parts win overlaps)."""
        out = np.zeros(self.mask.shape, np.int32)
        for i, p in enumerate(self.parts):
            out[p.mask] = i + 1
        return out


@dataclass
class ImagePseudoLabel:
    """All pseudo-labels of one image."""

    file_name: str
    image_id: str
    height: int
    width: int
    stage: str
    objects: List[ObjectLabel] = field(default_factory=list)
    skipped_objects: List[Dict] = field(default_factory=list)
    config: Dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "stage": self.stage,
            "image": {"file_name": self.file_name, "image_id": self.image_id,
                      "height": int(self.height), "width": int(self.width)},
            "objects": [
                {
                    "class_name": o.class_name,
                    "class_code": o.class_code,
                    "mask": encode_mask(o.mask),
                    "bbox": [float(v) for v in o.bbox],
                    "score": float(o.score),
                    "parts": [{"mask": encode_mask(p.mask),
                               "label": None if p.label is None else int(p.label),
                               "score": float(p.score)} for p in o.parts],
                }
                for o in self.objects
            ],
            "skipped_objects": list(self.skipped_objects),
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "ImagePseudoLabel":
        """Validate and decode. Raises :class:`PseudoLabelError` naming ``source``."""
        try:
            if d.get("schema") != SCHEMA:
                raise PseudoLabelError(f"not a pseudo-label file (schema={d.get('schema')!r})")
            if d.get("version") != VERSION:
                raise PseudoLabelError(f"unsupported version {d.get('version')!r}")
            img = d["image"]
            h, w = int(img["height"]), int(img["width"])
            objects = []
            for o in d["objects"]:
                m = decode_mask(o["mask"])
                if m.shape != (h, w):
                    raise PseudoLabelError(f"object mask {m.shape} != image size {(h, w)}")
                parts = []
                for p in o["parts"]:
                    pm = decode_mask(p["mask"])
                    if pm.shape != (h, w):
                        raise PseudoLabelError(f"part mask {pm.shape} != image size {(h, w)}")
                    parts.append(PartLabel(pm, p.get("label"), float(p.get("score", 1.0))))
                objects.append(ObjectLabel(o["class_name"], m, o.get("class_code", ""),
                                           float(o.get("score", 1.0)), list(o["bbox"]), parts))
            return cls(img["file_name"], str(img["image_id"]), h, w, d["stage"], objects,
                       list(d.get("skipped_objects", [])), dict(d.get("config", {})))
        except PseudoLabelError as e:
            raise PseudoLabelError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise PseudoLabelError(f"{source}: malformed pseudo-label ({type(e).__name__}: {e})") from None


def pseudo_label_path(output_dir: str, image_id: str) -> str:
    """Where the pseudo-label of ``image_id`` lives inside a stage's output folder."""
    return os.path.join(output_dir, f"{image_id}.json")


def save_pseudo_label(output_dir: str, label: ImagePseudoLabel) -> str:
    """Write ``label`` atomically to ``<output_dir>/<image_id>.json``; returns the path."""
    path = pseudo_label_path(output_dir, label.image_id)
    atomic_write_json(path, label.to_dict())
    return path


def load_pseudo_label(path: str) -> ImagePseudoLabel:
    """Read and validate one file. Raises :class:`PseudoLabelError` naming ``path``."""
    if not os.path.isfile(path):
        raise PseudoLabelError(f"{path}: no such pseudo-label file")
    try:
        with open(path) as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PseudoLabelError(f"{path}: corrupt or truncated JSON ({e})") from None
    return ImagePseudoLabel.from_dict(d, source=path)


def is_complete(path: str, stage: Optional[str] = None) -> bool:
    """True when ``path`` holds a valid pseudo-label (of ``stage`` when given). Used by resume:
    a partial, corrupt or other-stage file is never trusted and gets recomputed."""
    try:
        label = load_pseudo_label(path)
    except PseudoLabelError:
        return False
    return stage is None or label.stage == stage


def list_pseudo_labels(folder: str) -> List[str]:
    """Sorted paths of the ``*.json`` pseudo-label files in ``folder`` (temp files excluded)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pseudo-label folder not found: {folder}")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith(".json") and not f.startswith("."))
