"""The one pseudo-label format every stage reads and writes.

One JSON file per image, laid out as the official code does: ``<output_dir>/<class_dir>/<image_id>.json``
where ``class_dir = class_dir(class_code)`` is the image's class code made a safe folder name
(:func:`class_dir`, reversible), so no folder holds millions of files. Masks are COCO compressed
RLE (pycocotools) with the ``counts`` bytes decoded as ASCII, at the ORIGINAL image resolution
(``height`` x ``width``); boxes are absolute ``XYXY`` pixels in that frame. Schema (version 1)::

    {
      "schema": "part_distillation/pseudo_label", "version": 1,
      "stage": "object_masks" | "proposal_generation" | "dcrf" | "part_ranking" | ...,
      "image": {"file_name": str, "image_id": str, "height": int, "width": int,
                "class_code": str},                 # the class whose folder holds the file
      "objects": [
        {"class_name": str,                         # human-readable name ("person", "goldfish")
         "class_code": str,                         # dataset class key: ImageNet wnid, Pascal-Part class name
         "class_id": int,                           # index into the dataset's class list (-1: unknown)
         "mask": RLE, "bbox": [x0, y0, x1, y1], "score": float,
         "parts": [{"mask": RLE, "label": int | null, "score": float,
                    "feature": {"dtype": "float32", "b64": str}}, ...]}   # "feature": optional
      ],
      "skipped_objects": [{"index": int, "reason": str, "stage": str}],
      "config": {...}                               # the keys of the producing stage
    }

``skipped_objects[].index`` means one thing at every stage: the object's position in the stage-1
labeler's output (before stage 1 dropped empty masks), its identity across stages; ``stage`` says
which stage skipped it. Stage-1 entries are objects no file lists; later entries are objects that
stay in ``objects`` without parts. :meth:`ImagePseudoLabel.object_indices` maps ``objects[i]`` to
that index. ``config["INPUT_SIZE"]`` (stage 2 onwards) is stage 2's network input size
``[INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST]``; stage 3 resizes with it.

``feature`` (only in ``proposal_learning`` files of the stage-4 predictor) is the part's query
feature (``decoder_output``, D floats) as base64 of little-endian float32 bytes; stage 5 clusters
these instead of running the network again. Files without features do not carry the key. A
file's features are finite and all of one dimension D (checked at load).

``label`` is ``null`` until part ranking assigns class-consistent part ids (stage 5), then an
integer (a non-integer label is refused at load, never truncated). Parts of one
object never overlap in the outputs of stages 2-3 (they partition the object's pixels).

Writes are atomic (:mod:`part_distillation.utils.io`); :func:`load_pseudo_label` validates and raises
:class:`PseudoLabelError` naming the file for a corrupt, truncated or foreign file, and
:func:`is_complete` is what resuming shards use to decide whether an image is done.
"""
import base64
import functools
import json
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from ..utils.deprecation import resolve_deprecated
from ..utils.io import atomic_write_json
from .images import image_id_of_path

logger = logging.getLogger(__name__)

SCHEMA = "part_distillation/pseudo_label"
VERSION = 1

# Deprecated stage names -> the official ones: files that record them load as the official stage
# (with a FutureWarning), and the stage registry resolves them alike.
DEPRECATED_STAGE_NAMES = {"pixel_grouping": "proposal_generation", "dense_crf": "dcrf",
                          "part_proposals": "proposal_learning"}


def official_stage_name(name: str) -> str:
    """The official stage name of ``name`` (a deprecated name warns, see :data:`DEPRECATED_STAGE_NAMES`)."""
    return resolve_deprecated(name, DEPRECATED_STAGE_NAMES, "stage")


class PseudoLabelError(ValueError):
    """A pseudo-label file is missing, corrupt, truncated or does not follow the schema."""


def encode_mask(mask) -> dict:
    """Binary mask (H, W) bool/uint8 -> COCO compressed RLE dict with str ``counts``. A mask
    that is already such a dict (str or bytes ``counts``) is returned in that stored form.
    A Fortran-ordered uint8 mask is encoded without a copy."""
    if isinstance(mask, dict):
        return {"size": [int(v) for v in mask["size"]], "counts": _coco_rle(mask)["counts"].decode("ascii")}
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE dict (str or bytes ``counts``) -> bool mask (H, W) (Fortran order: a view of
    pycocotools' 0/1 uint8 output, no second full-size copy)."""
    return mask_util.decode(_coco_rle(rle)).view(bool)


def mask_area(mask) -> int:
    """Pixels set in a bool (H, W) mask or in a COCO RLE dict (counted from the RLE)."""
    return int(mask_util.area(_coco_rle(mask))) if isinstance(mask, dict) else int(mask.sum())


def mask_shape(mask) -> Tuple[int, int]:
    """``(H, W)`` of a mask array or of a COCO RLE dict (its ``size``)."""
    return tuple(int(v) for v in mask["size"]) if isinstance(mask, dict) else tuple(mask.shape)


def mask_box_slices(mask: np.ndarray, margin: int = 0) -> Tuple[slice, slice]:
    """Row and column slices of the bounding box of a non-empty (H, W) bool mask, grown by
    ``margin`` pixels on each side and clipped to the mask. Raises ``ValueError`` if it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        raise ValueError("bounding box of an empty mask")
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, mask.shape[0])),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, mask.shape[1])))


def mask_to_box(mask) -> List[float]:
    """Tight ``XYXY`` box (absolute pixels, exclusive max) of a bool mask or a COCO RLE dict;
    zeros if empty."""
    if isinstance(mask, dict):
        x, y, w, h = (float(v) for v in mask_util.toBbox(_coco_rle(mask)))
        return [x, y, x + w, y + h] if w > 0 and h > 0 else [0.0, 0.0, 0.0, 0.0]
    if not mask.any():
        return [0.0, 0.0, 0.0, 0.0]
    ys, xs = mask_box_slices(mask)
    return [float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)]


@dataclass
class PartLabel:
    """One part segment of an object. ``mask``: bool (H, W) at image resolution, or its COCO RLE
    dict as stored (labels loaded with ``decode=False``, or built by a stage only to be written);
    ``feature``: float32 (D,) query feature of the segment, or None (see the module docstring)."""

    mask: np.ndarray
    label: Optional[int] = None
    score: float = 1.0
    feature: Optional[np.ndarray] = None


def encode_feature(feature: np.ndarray) -> dict:
    """float (D,) -> ``{"dtype": "float32", "b64": base64 of the little-endian float32 bytes}``."""
    return {"dtype": "float32",
            "b64": base64.b64encode(np.asarray(feature, "<f4").reshape(-1).tobytes()).decode("ascii")}


def decode_feature(d: dict) -> np.ndarray:
    """Inverse of :func:`encode_feature` -> float32 (D,). Raises ValueError on another dtype, a
    byte count that is not a multiple of 4, or a NaN / infinite value (k-means would turn it into
    a NaN centroid and one label for every part of the class)."""
    if d.get("dtype") != "float32":
        raise ValueError(f"feature dtype {d.get('dtype')!r}, expected 'float32'")
    raw = base64.b64decode(d["b64"], validate=True)
    if len(raw) % 4:
        raise ValueError(f"feature of {len(raw)} bytes, not a multiple of 4")
    f = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(f).all():
        raise ValueError(f"feature with {int((~np.isfinite(f)).sum())} NaN or infinite values of {f.size}")
    return f


def _part_label(value) -> Optional[int]:
    """A file's part ``label``: null or an integer (``2.7``, ``"3"``, ``true`` are refused, never
    truncated). Raises ValueError."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"part label {value!r} is not an integer or null")


def _part_dict(p: PartLabel) -> dict:
    d = {"mask": encode_mask(p.mask), "label": None if p.label is None else int(p.label),
         "score": float(p.score)}
    if p.feature is not None:
        d["feature"] = encode_feature(p.feature)
    return d


@dataclass
class ObjectLabel:
    """One object instance. ``mask``: bool (H, W) or its COCO RLE dict (as for
    :class:`PartLabel`); ``bbox``: XYXY absolute pixels."""

    class_name: str
    mask: np.ndarray
    class_code: str = ""
    score: float = 1.0
    bbox: Optional[List[float]] = None
    parts: List[PartLabel] = field(default_factory=list)
    class_id: int = -1

    def __post_init__(self):
        if self.bbox is None:
            self.bbox = mask_to_box(self.mask)

    def part_label_map(self) -> np.ndarray:
        """int32 (H, W): 0 outside parts, ``i + 1`` on part ``i`` (later parts win overlaps).
        Needs decoded (array) masks."""
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
    class_code: str = ""  # the image's class (its folder); "" -> that of its largest object

    def folder_class(self) -> str:
        """The class code whose folder holds this file: ``class_code``, else the class code of the
        largest object, else ``""``."""
        if self.class_code:
            return self.class_code
        return primary_class_code([(o.class_code or o.class_name, mask_area(o.mask)) for o in self.objects])

    def object_indices(self) -> List[int]:
        """For each of ``objects``, its index in the stage-1 labeler's output (the ``index`` of
        ``skipped_objects``): the positions stage 1 did not drop, in order."""
        dropped = {int(e["index"]) for e in self.skipped_objects if e.get("stage", "object_masks") == "object_masks"}
        out, i = [], 0
        while len(out) < len(self.objects):
            if i not in dropped:
                out.append(i)
            i += 1
        return out

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "stage": self.stage,
            "image": {"file_name": self.file_name, "image_id": self.image_id,
                      "height": int(self.height), "width": int(self.width),
                      "class_code": self.folder_class()},
            "objects": [
                {
                    "class_name": o.class_name,
                    "class_code": o.class_code,
                    "class_id": int(o.class_id),
                    "mask": encode_mask(o.mask),
                    "bbox": [float(v) for v in o.bbox],
                    "score": float(o.score),
                    "parts": [_part_dict(p) for p in o.parts],
                }
                for o in self.objects
            ],
            "skipped_objects": list(self.skipped_objects),
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>", decode: bool = True) -> "ImagePseudoLabel":
        """Validate and decode (``decode=False``: masks stay COCO RLE dicts with str ``counts``,
        their sizes checked from the RLE). Raises :class:`PseudoLabelError` naming ``source``."""
        try:
            if d.get("schema") != SCHEMA:
                raise PseudoLabelError(f"not a pseudo-label file (schema={d.get('schema')!r})")
            if d.get("version") != VERSION:
                raise PseudoLabelError(f"unsupported version {d.get('version')!r}")
            img = d["image"]
            h, w = int(img["height"]), int(img["width"])
            read_mask = decode_mask if decode else encode_mask
            objects, dims = [], {}
            for oi, o in enumerate(d["objects"]):
                m = read_mask(o["mask"])
                if mask_shape(m) != (h, w):
                    raise PseudoLabelError(f"object mask {mask_shape(m)} != image size {(h, w)}")
                parts = []
                for pi, p in enumerate(o["parts"]):
                    where = f"object {oi} part {pi}"
                    pm = read_mask(p["mask"])
                    if mask_shape(pm) != (h, w):
                        raise PseudoLabelError(f"{where}: part mask {mask_shape(pm)} != image size {(h, w)}")
                    try:
                        label = _part_label(p.get("label"))
                        feature = decode_feature(p["feature"]) if "feature" in p else None
                    except ValueError as e:
                        raise PseudoLabelError(f"{where}: {e}") from None
                    if feature is not None:
                        dims.setdefault(feature.size, where)
                        if len(dims) > 1:
                            raise PseudoLabelError(
                                "features of different dimensions in one file: "
                                + ", ".join(f"{n} ({at})" for n, at in dims.items()))
                    parts.append(PartLabel(pm, label, float(p.get("score", 1.0)), feature))
                objects.append(ObjectLabel(o["class_name"], m, o.get("class_code", ""),
                                           float(o.get("score", 1.0)), list(o["bbox"]), parts,
                                           int(o.get("class_id", -1))))
            return cls(img["file_name"], str(img["image_id"]), h, w, official_stage_name(d["stage"]), objects,
                       list(d.get("skipped_objects", [])), dict(d.get("config", {})),
                       str(img.get("class_code", "")))
        except PseudoLabelError as e:
            raise PseudoLabelError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise PseudoLabelError(f"{source}: malformed pseudo-label ({type(e).__name__}: {e})") from None


NO_CLASS_DIR = "_noclass"  # folder of images without any class code
_RESERVED_DIRS = {"logs", "collages"}  # folders the stage runner and the main job write beside classes


def primary_class_code(codes_and_areas: Sequence) -> str:
    """The class code of the largest ``(class_code, area)`` pair (first one on ties); ``""`` if
    there is none. Decides the folder of an image whose dataset gives no image-level class."""
    best, best_area = "", -1
    for code, area in codes_and_areas:
        if area > best_area:
            best, best_area = str(code), area
    return best


@functools.lru_cache(maxsize=1 << 16)
def class_dir(class_code: str) -> str:
    """Safe, reversible folder name of a class code (percent-encoding of everything but letters,
    digits and ``-_.,+=@``; a leading dot and the reserved names ``logs``/``collages`` are encoded
    too). ``""`` -> ``_noclass``. Inverse: :func:`class_code_of_dir`."""
    if not class_code:
        return NO_CLASS_DIR
    out = urllib.parse.quote(class_code, safe="-_.,+=@")
    if out.startswith("."):
        out = "%2E" + out[1:]
    if out in _RESERVED_DIRS:
        out = "%{:02X}".format(ord(out[0])) + out[1:]
    return out


def class_code_of_dir(name: str) -> str:
    """Inverse of :func:`class_dir` (``_noclass`` -> ``""``)."""
    return "" if name == NO_CLASS_DIR else urllib.parse.unquote(name)


def pseudo_label_path(output_dir: str, image_id: str, class_code: str = "") -> str:
    """Where the pseudo-label of ``image_id`` of class ``class_code`` lives inside a stage's
    output folder: ``<output_dir>/<class_dir(class_code)>/<image_id>.json``."""
    return os.path.join(output_dir, class_dir(class_code), f"{image_id}.json")


def save_pseudo_label(output_dir: str, label: ImagePseudoLabel) -> str:
    """Write ``label`` atomically to ``<output_dir>/<class_dir>/<image_id>.json`` (class from
    :meth:`ImagePseudoLabel.folder_class`); returns the path."""
    path = pseudo_label_path(output_dir, label.image_id, label.folder_class())
    atomic_write_json(path, label.to_dict())
    return path


def load_pseudo_label(path: str, stage: Optional[str] = None, decode: bool = True) -> ImagePseudoLabel:
    """Read and validate one file: schema, masks' sizes, the image id equal to the file name,
    and (when given) the producing ``stage``. ``decode=False`` keeps every mask as its COCO RLE
    dict (no full-resolution array; :func:`decode_mask` one when needed). Raises
    :class:`PseudoLabelError` naming ``path``."""
    label = ImagePseudoLabel.from_dict(_json_file(path), source=path, decode=decode)
    _check_identity(path, label.image_id, label.stage, stage)
    return label


@dataclass
class PseudoLabelHeader:
    """What a pseudo-label file says without decoding any mask: image fields, stage, and the
    pixel areas of objects (``object_areas[i]``) and parts (``part_areas[i][j]``) from the RLEs."""

    file_name: str
    image_id: str
    height: int
    width: int
    stage: str
    class_code: str
    object_areas: List[float]
    part_areas: List[List[float]]


def _json_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise PseudoLabelError(f"{path}: no such pseudo-label file")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PseudoLabelError(f"{path}: corrupt or truncated JSON ({e})") from None


def read_header(path: str, stage: Optional[str] = None) -> PseudoLabelHeader:
    """Read one file's :class:`PseudoLabelHeader` (schema, version, image id = file name and, when
    given, ``stage`` checked; masks not decoded). Raises :class:`PseudoLabelError` naming ``path``."""
    d = _json_file(path)
    try:
        if d.get("schema") != SCHEMA or d.get("version") != VERSION:
            raise PseudoLabelError(f"not a version-{VERSION} pseudo-label file "
                                   f"(schema={d.get('schema')!r}, version={d.get('version')!r})")
        img = d["image"]
        areas = [float(mask_util.area(_coco_rle(o["mask"]))) for o in d["objects"]]
        parts = [[float(mask_util.area(_coco_rle(p["mask"]))) for p in o["parts"]] for o in d["objects"]]
        header = PseudoLabelHeader(img["file_name"], str(img["image_id"]), int(img["height"]),
                                   int(img["width"]), official_stage_name(d["stage"]), str(img.get("class_code", "")), areas, parts)
    except PseudoLabelError as e:
        raise PseudoLabelError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise PseudoLabelError(f"{path}: malformed pseudo-label ({type(e).__name__}: {e})") from None
    _check_identity(path, header.image_id, header.stage, stage)
    return header


def _coco_rle(rle: dict) -> dict:
    """JSON RLE (str ``counts``) -> the bytes form pycocotools takes."""
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _check_identity(path: str, image_id: str, found_stage: str, stage: Optional[str]) -> None:
    stem = image_id_of_path(path)
    if image_id != stem:
        raise PseudoLabelError(f"{path}: holds image id {image_id!r}, not the file's name {stem!r} "
                               "(renamed or copied file)")
    if stage is not None and found_stage != official_stage_name(stage):
        raise PseudoLabelError(f"{path}: a {found_stage!r} pseudo-label where {official_stage_name(stage)!r} was expected")


def read_or_count(path: str, counts: dict, read: Callable = None):
    """``read(path)`` (default :func:`load_pseudo_label`), or None for a file that raises
    :class:`PseudoLabelError`: the error (naming the file) is logged and ``counts["corrupt"]``
    incremented, the counted skip of the dataset loaders that read pseudo-label folders."""
    try:
        return (read or load_pseudo_label)(path)
    except PseudoLabelError as e:
        logger.warning("skipping pseudo-label %s", e)
        counts["corrupt"] = counts.get("corrupt", 0) + 1
        return None


def is_complete(path: str, stage: Optional[str] = None) -> bool:
    """True when ``path`` holds a valid pseudo-label (of ``stage`` when given) whose image id is
    its file name. Decodes every mask: the stage runner's resume uses the cheap done-manifest of
    :mod:`part_distillation.stages.store` instead."""
    try:
        load_pseudo_label(path, stage)
    except PseudoLabelError:
        return False
    return True


def list_pseudo_labels(folder: str) -> List[str]:
    """Sorted paths of the pseudo-label files of ``folder``: ``<folder>/<class_dir>/*.json``
    (the ``logs`` folder and temp files excluded)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pseudo-label folder not found: {folder}")
    out = []
    for d in sorted(os.listdir(folder)):
        sub = os.path.join(folder, d)
        if d in _RESERVED_DIRS or d.startswith(".") or not os.path.isdir(sub):
            continue
        out.extend(os.path.join(sub, f) for f in sorted(os.listdir(sub))
                   if f.endswith(".json") and not f.startswith("."))
    return out
