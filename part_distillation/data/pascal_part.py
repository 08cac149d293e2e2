"""Pascal-Part (Chen et al., CVPR 2014) and datasets stored in its ``.mat`` schema.

Two layouts are read:

* release layout (``pascal_part``, the shared examples, the ADE20K subset)::

    <root>/JPEGImages/<id>.jpg
    <root>/Annotations_Part/<id>.mat

* official PartDistillation layout (``pascal_part_{train,val,valtest}`` and the ``{match,evaluate}``
  pairs; defaults of ``CUSTOM_DATASETS.PASCAL_PARTS.{IMAGES,ANNOTATIONS}_DIRNAME``)::

    <images_dirname>/JPEGImages/<id>.jpg              # a VOC2010 devkit folder
    <images_dirname>/ImageSets/Main/{train,val}.txt   # the VOC split lists
    <annotations_dirname>/<id>.mat                    # Pascal-Part annotations

``.mat`` schema: ``scipy.io.loadmat(path)["anno"][0, 0]["objects"][0][i]`` has ``class``,
``class_ind``, ``mask`` (H, W uint8) and ``parts`` (empty or ``parts[0][j]`` with ``part_name``
and ``mask``).

Vocabulary (official evaluation, PartDistillation ``pascal_info.py`` / ``register_pascal_parts``):
a raw part name loses its ``_<n>`` suffix (``wheel_3``, ``cfrontside_2``, ``coach_1``) and is then
mapped per object class to a merged name (:data:`PASCAL_PART_DEFINITIONS`); the merged names get
ids in the order of first appearance over the 20 classes (:data:`PASCAL_CLASSES` order), 50 in
all (:data:`PASCAL_PART_CLASSES`; the official supervised config's ``NUM_CLASSES 50``). With a
class subset (``CUSTOM_DATASETS.PASCAL_PARTS.SUBSET_CLASS_NAMES``) the subset is sorted and ids
are renumbered over it, as officially. The object class ``table`` is renamed ``diningtable``.
Merged (``CUSTOM_DATASETS.USE_MERGED_GT True``): parts of one object with the same merged name
are united into one mask named by the merged name. Raw (``False``): one part per raw annotation,
named by its raw name (``cfrontside_1``); ``part_id`` is still its merged id, as officially.
A name the vocabulary does not know for its class (neither a raw name nor a merged one: merging is
idempotent) makes the annotation file a counted ``bad_annotation`` skip; a folder given as
``--dataset`` is read with ``vocabulary="auto"`` (see :func:`load_pascal_part`). Datasets stored in this schema with other names (the ADE20K subset) are
loaded with ``pascal_vocabulary=False``: names pass through unchanged; ``part_id`` indexes the
given ``part_classes`` (OV-PARTS style ``"<object>'s <part>"`` names, e.g. ADE20K-Part-234's) or
is -1.
"""
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io

from .ground_truth import object_record
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader
from .pseudo_labels import encode_mask

logger = logging.getLogger(__name__)

# The 20 PASCAL VOC classes in the official order (detectron2 / PartDistillation CLASS_NAMES).
PASCAL_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor")

_EYES_EARS = [("leye", "eye"), ("reye", "eye"), ("lear", "ear"), ("rear", "ear")]
_QUADRUPED_LEGS = [(s + "leg", "leg") for s in ("lfu", "lfl", "rfu", "rfl", "lbu", "lbl", "rbu", "rbl")]
_VEHICLE = [("frontside", "front"), ("leftside", "side"), ("rightside", "side"), ("backside", "back"),
            ("roofside", "roof"), ("leftmirror", "mirror"), ("rightmirror", "mirror"),
            ("fliplate", "license plate"), ("bliplate", "license plate"), ("door", "door"),
            ("wheel", "wheel"), ("headlight", "headlight"), ("window", "window")]
_CAT = ([("head", "head")] + _EYES_EARS + [("nose", "nose"), ("torso", "torso"), ("neck", "neck")]
        + [(f"{s}{k}", n) for s in ("lf", "rf", "lb", "rb") for k, n in (("leg", "leg"), ("pa", "paw"))]
        + [("tail", "tail")])
_COW = ([("head", "head")] + _EYES_EARS + [("muzzle", "muzzle"), ("lhorn", "horn"), ("rhorn", "horn"),
                                           ("torso", "torso"), ("neck", "neck")]
        + _QUADRUPED_LEGS + [("tail", "tail")])

# class -> [(raw part name without "_<n>", merged name)], each class in the official part order.
PASCAL_PART_DEFINITIONS: Dict[str, List[Tuple[str, str]]] = {
    "aeroplane": [("body", "body"), ("stern", "stern"), ("lwing", "wing"), ("rwing", "wing"),
                  ("tail", "tail"), ("engine", "engine"), ("wheel", "wheel")],
    "bicycle": [("fwheel", "wheel"), ("bwheel", "wheel"), ("saddle", "seat"), ("handlebar", "handlebar"),
                ("chainwheel", "chainwheel"), ("headlight", "headlight")],
    "bird": [("head", "head"), ("leye", "eye"), ("reye", "eye"), ("beak", "beak"), ("torso", "torso"),
             ("neck", "neck"), ("lwing", "wing"), ("rwing", "wing"), ("lleg", "leg"), ("lfoot", "foot"),
             ("rleg", "leg"), ("rfoot", "foot"), ("tail", "tail")],
    "boat": [],
    "bottle": [("cap", "cap"), ("body", "body")],
    "bus": _VEHICLE,
    "car": _VEHICLE,
    "cat": _CAT,
    "chair": [],
    "cow": _COW,
    "diningtable": [],
    "dog": _CAT + [("muzzle", "muzzle")],
    "horse": _COW + [(f"{s}ho", "hoof") for s in ("lf", "rf", "lb", "rb")],
    "motorbike": [("fwheel", "wheel"), ("bwheel", "wheel"), ("handlebar", "handlebar"), ("saddle", "seat"),
                  ("headlight", "headlight")],
    "person": (([("head", "head")] + _EYES_EARS
                + [("lebrow", "eyebrow"), ("rebrow", "eyebrow"), ("nose", "nose"), ("mouth", "mouth"),
                   ("hair", "hair"), ("torso", "torso"), ("neck", "neck")]
                + [(f"{s}{k}", n) for s in ("l", "r") for k, n in
                   (("larm", "arm"), ("uarm", "arm"), ("hand", "hand"))]
                + [(f"{s}{k}", n) for s in ("l", "r") for k, n in
                   (("lleg", "leg"), ("uleg", "leg"), ("foot", "foot"))])),
    "pottedplant": [("pot", "pot"), ("plant", "plant")],
    "sheep": _COW,
    "sofa": [],
    "train": [("head", "locomotive"), ("hfrontside", "locomotive_front"), ("hleftside", "locomotive_side"),
              ("hrightside", "locomotive_side"), ("hbackside", "locomotive_backside"),
              ("hroofside", "locomotive_roof"), ("headlight", "headlight"), ("coach", "coach_car"),
              ("cfrontside", "coach_front"), ("cleftside", "coach_side"), ("crightside", "coach_side"),
              ("cbackside", "coach_backside"), ("croofside", "coach_roof")],
    "tvmonitor": [("screen", "screen")],
}
_CLASS_ALIASES = {"table": "diningtable"}  # raw Pascal-Part class name -> official VOC name


def canonical_class_name(name: str) -> str:
    """Official VOC name of a Pascal-Part object class (``table`` -> ``diningtable``)."""
    return _CLASS_ALIASES.get(name, name)


def pascal_part_classes(class_names: Optional[Sequence[str]] = None) -> List[str]:
    """Merged part vocabulary in official id order: over ``class_names`` (default all 20 in
    :data:`PASCAL_CLASSES` order; a given subset is sorted first, as officially), each merged name
    once, in order of first appearance. Raises KeyError for a class not in Pascal VOC."""
    classes = sorted(canonical_class_name(c) for c in class_names) if class_names else PASCAL_CLASSES
    names: List[str] = []
    for c in classes:
        for _, merged in PASCAL_PART_DEFINITIONS[c]:
            if merged not in names:
                names.append(merged)
    return names


PASCAL_PART_CLASSES: List[str] = pascal_part_classes()


class UnknownNameError(ValueError):
    """An annotation file names an object class or part that the Pascal-Part vocabulary does not
    know (the file comes from another vocabulary, or is damaged)."""


def merge_part_name(raw: str, class_name: str) -> str:
    """Merged name of Pascal-Part part ``raw`` of an object of ``class_name``
    (``("cfrontside_2", "train")`` -> ``"coach_front"``). Idempotent: an already-merged name of the
    class (``"eye"`` of a person, ``"coach_front"`` of a train: what converted datasets such as
    Pascal-Part-116 store) is its own merged name.

    Raises:
        KeyError: the class has no part named ``raw`` (after dropping ``_<n>``) in the official
            definitions, nor a merged part of that name (or the class is not a Pascal class).
    """
    definitions = PASCAL_PART_DEFINITIONS.get(canonical_class_name(class_name))
    if definitions is None:
        raise KeyError(f"'{class_name}' is not a Pascal-Part object class")
    if any(raw == merged for _, merged in definitions):
        return raw
    base = raw.split("_")[0]
    for name, merged in definitions:
        if name == base:
            return merged
    raise KeyError(f"'{raw}' is not a Pascal-Part part of class '{class_name}'")


def _str(x) -> str:
    """Unwrap a MATLAB string cell (``array(['person'])``) into a str."""
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        x = x.flat[0]
    return str(x)


def load_part_annotation(mat_path: str, merge: bool = True, pascal_vocabulary: bool = True,
                         class_names: Optional[Sequence[str]] = None,
                         part_classes: Optional[Sequence[str]] = None) -> List[dict]:
    """Objects of one ``.mat`` file as dataset-dict ``objects`` (masks RLE-encoded; contract in
    :mod:`part_distillation.data.ground_truth`).

    Args:
        merge: unite parts by merged name (``CUSTOM_DATASETS.USE_MERGED_GT``); only with
            ``pascal_vocabulary``.
        pascal_vocabulary: apply the official Pascal-Part vocabulary (class list, ``table`` ->
            ``diningtable``, merged part names and ids); False keeps the file's names and
            ``class_id`` as the file's ``class_ind``.
        part_classes: without the Pascal vocabulary: ``part_id`` = index of
            ``"<class>'s <part>"`` in this list (-1 when absent or not given).
        class_names: Pascal vocabulary only: keep objects of these classes; ``class_id`` and
            ``part_id`` index the (sorted) subset's lists.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a Pascal-Part annotation (message names the file).
        UnknownNameError: with the Pascal vocabulary and no class subset, an object class or a
            part name (raw or merged) that it does not know (message names the file).
    """
    if not os.path.isfile(mat_path):
        raise FileNotFoundError(f"annotation file not found: {mat_path}")
    try:
        raw_objects = scipy.io.loadmat(mat_path)["anno"][0, 0]["objects"][0]
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad annotation file
        raise ValueError(f"{mat_path}: not a Pascal-Part annotation ({type(e).__name__}: {e})") from None
    classes = sorted(map(canonical_class_name, class_names)) if class_names else list(PASCAL_CLASSES)
    part_ids = {n: i for i, n in enumerate(pascal_part_classes(class_names))}
    ov_ids = {n: i for i, n in enumerate(part_classes or ())}
    objects = []
    for o in raw_objects:
        mask = np.asarray(o["mask"]).astype(bool)
        class_name = _str(o["class"])
        if pascal_vocabulary:
            class_name = canonical_class_name(class_name)
            if class_name not in classes:
                if not class_names:  # not a subset: a class the vocabulary does not know
                    raise UnknownNameError(f"{mat_path}: '{class_name}' is not a Pascal-Part object class")
                continue
            class_id = classes.index(class_name)
        else:
            ind = np.asarray(o["class_ind"])
            class_id = int(ind.flat[0]) if ind.size else -1
        parts: Dict[str, dict] = {}
        raw_parts = o["parts"][0] if o["parts"].size else []
        for k, p in enumerate(raw_parts):
            raw = _str(p["part_name"])
            pm = np.asarray(p["mask"]).astype(bool)
            if pascal_vocabulary:
                try:
                    merged = merge_part_name(raw, class_name)
                except KeyError as e:
                    raise UnknownNameError(f"{mat_path}: {e.args[0]}") from None
                name, pid = (merged if merge else raw), part_ids[merged]
            else:
                name, pid = raw, ov_ids.get(f"{class_name}'s {raw}", -1)
            key = name if merge or not pascal_vocabulary else f"{k}:{raw}"
            if key in parts:
                parts[key]["mask"] |= pm
                parts[key]["raw_name"] += "+" + raw
            else:
                parts[key] = {"name": name, "raw_name": raw, "part_id": pid, "mask": pm}
        objects.append(object_record(class_name, class_name, class_id, mask,
                                     [dict(p, mask=encode_mask(p["mask"])) for p in parts.values()]))
    return objects


VOCABULARIES = ("pascal", "as-is", "auto")
# "auto": the folder is read as-is when more than this share of its annotation files name classes
# or parts the Pascal-Part vocabulary does not know
AUTO_AS_IS_SHARE = 0.5


def _load_ids(image_ids: Iterable[str], image_dir: str, ann_dir: str, report: LoadReport,
              unknown: Optional[List[str]] = None, **options) -> List[dict]:
    """Dataset dicts of ``image_ids``; with ``unknown`` (a list), files that raise
    :class:`UnknownNameError` are appended there instead of being counted as skips."""
    dicts = []
    for image_id in image_ids:
        file_name = os.path.join(image_dir, image_id + ".jpg")
        ann = os.path.join(ann_dir, image_id + ".mat")
        if os.path.isfile(ann) and not os.path.isfile(file_name):
            report.skip("no_image", ann, f"no image {file_name}")
            continue
        size = report.annotated_image_size(file_name, (ann,))
        if size is None:
            continue
        w, h = size
        try:
            objects = load_part_annotation(ann, **options)
        except UnknownNameError as e:
            if unknown is not None:
                unknown.append(str(e))
                continue
            report.skip("bad_annotation", ann, str(e))
            continue
        except ValueError as e:
            report.skip("bad_annotation", ann, str(e))
            continue
        dicts.append({"file_name": file_name, "image_id": image_id, "height": h, "width": w,
                      "annotation_file": ann, "objects": objects})
    return dicts


def load_pascal_part(root: str, merge: bool = True, class_names: Optional[Sequence[str]] = None,
                     pascal_vocabulary: bool = True, part_classes: Optional[Sequence[str]] = None,
                     report: Optional[LoadReport] = None, vocabulary: str = "") -> List[dict]:
    """Every image of a release-layout folder (``JPEGImages/`` + ``Annotations_Part/``) as
    dataset dicts (contract: :mod:`part_distillation.data.ground_truth`), sorted by id.

    Images without an annotation file, annotations without an image, unreadable images and bad
    annotation files are skipped, logged and counted in ``report`` (see
    :mod:`part_distillation.data.load_report`). Options as in :func:`load_part_annotation`;
    ``vocabulary`` (``--vocabulary`` of the tools) overrides ``pascal_vocabulary``: ``"pascal"``,
    ``"as-is"`` (the files' names), or ``"auto"``: Pascal-Part unless more than
    :data:`AUTO_AS_IS_SHARE` of the annotation files name classes or parts it does not know, then
    as-is (logged, with the option that forces either); the choice is in ``report.vocabulary``.

    Raises:
        FileNotFoundError: ``root`` lacks ``JPEGImages`` or ``Annotations_Part``.
        ValueError: an unknown ``vocabulary``.
    """
    if vocabulary and vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
    img_dir, ann_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations_Part")
    for d in (img_dir, ann_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"Pascal-Part layout expected: missing folder {d}")
    report = report if report is not None else LoadReport(root)
    ids = {os.path.splitext(f)[0] for f in os.listdir(img_dir) if f.lower().endswith(".jpg")}
    ids |= {f[: -len(".mat")] for f in os.listdir(ann_dir) if f.endswith(".mat")}
    options = dict(merge=merge, class_names=class_names, part_classes=part_classes)
    if vocabulary in ("pascal", "as-is"):
        pascal_vocabulary = vocabulary == "pascal"
    if vocabulary != "auto":
        report.vocabulary = "pascal" if pascal_vocabulary else "as-is"
        return _load_ids(sorted(ids), img_dir, ann_dir, report, pascal_vocabulary=pascal_vocabulary, **options)
    unknown: List[str] = []
    dicts = _load_ids(sorted(ids), img_dir, ann_dir, report, unknown=unknown, pascal_vocabulary=True, **options)
    if len(unknown) > AUTO_AS_IS_SHARE * (len(dicts) + len(unknown)):
        logger.warning("%s: %d of %d annotation files name classes or parts that Pascal-Part does not "
                       "know (e.g. %s): loaded with their own names (--vocabulary as-is; pass "
                       "--vocabulary pascal to skip them instead)", root, len(unknown),
                       len(dicts) + len(unknown), unknown[0])
        report.reset()
        report.vocabulary = "as-is"
        return _load_ids(sorted(ids), img_dir, ann_dir, report, pascal_vocabulary=False, **options)
    for message in unknown:
        report.skip("bad_annotation", message.split(": ", 1)[0], message)
    report.vocabulary = "pascal"
    logger.info("%s: Pascal-Part vocabulary (--vocabulary auto)", root)
    return dicts


def read_split_list(path: str) -> List[str]:
    """Image ids of a VOC ``ImageSets/Main/<split>.txt`` list (one id per line, blank lines
    ignored). Raises FileNotFoundError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC split list not found: {path}")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


# official split names (the dataset name's last "_" field) and evaluation modes of the names
PASCAL_PART_SPLITS = ("train", "val", "valtest")
EVAL_MODES = ("pre_labeling", "match", "evaluate")


def split_list_path(images_dirname: str, split: str) -> str:
    """``<images_dirname>/ImageSets/Main/<split>.txt``; for ``valtest`` without such a list,
    ``val.txt``."""
    path = os.path.join(images_dirname, "ImageSets", "Main", f"{split}.txt")
    if split == "valtest" and not os.path.isfile(path):
        return os.path.join(images_dirname, "ImageSets", "Main", "val.txt")
    return path


def load_pascal_parts_split(images_dirname: str, annotations_dirname: str, split: str,
                            merge: bool = True, class_names: Optional[Sequence[str]] = None,
                            report: Optional[LoadReport] = None) -> List[dict]:
    """The images of VOC split ``split`` (``<images_dirname>/ImageSets/Main/<split>.txt``) with
    their Pascal-Part annotations (``<annotations_dirname>/<id>.mat``), official vocabulary.
    Images of the list without an annotation file are counted ``no_annotation`` skips (VOC lists
    hold some); other skips as in :func:`load_pascal_part`.

    Raises:
        FileNotFoundError: the split list is missing.
    """
    report = report if report is not None else LoadReport(f"pascal_part_{split}")
    ids = read_split_list(split_list_path(images_dirname, split))
    return _load_ids(ids, os.path.join(images_dirname, "JPEGImages"), annotations_dirname, report,
                     merge=merge, class_names=class_names, pascal_vocabulary=True)


@DATASET_LOADER_REGISTRY.register()
class PascalPartLoader(DatasetLoader):
    """Release layout (``pascal_part``, ``pascal_part_examples``, ``ade20k_part_subset``).
    Options: ``root``, ``merge``, ``class_names``, ``pascal_vocabulary``, and without the Pascal
    vocabulary ``thing_classes`` / ``part_classes`` (the class lists the files index, reported as
    metadata; see :func:`load_pascal_part`)."""

    LAYOUT = "<root>/JPEGImages/<id>.jpg\n<root>/Annotations_Part/<id>.mat"
    OFFICIAL_EVAL_GEOMETRY = "upsampled"  # official VOCPartsMapper (keeps the original height/width)

    def paths(self) -> List[str]:
        root = self.options["root"]
        return [os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations_Part")]

    def metadata(self) -> dict:
        if self.options.get("vocabulary") == "auto":  # class lists known after the load
            return {"root": self.options["root"]}
        if not self.options.get("pascal_vocabulary", True) or self.options.get("vocabulary") == "as-is":
            return {"root": self.options["root"], "thing_classes": list(self.options.get("thing_classes") or []),
                    "part_classes": list(self.options.get("part_classes") or [])}
        names = self.options.get("class_names")
        return {"root": self.options["root"], "part_classes": pascal_part_classes(names),
                "thing_classes": sorted(map(canonical_class_name, names)) if names else list(PASCAL_CLASSES)}

    def load(self, report: LoadReport) -> List[dict]:
        # thing_classes is metadata only: class_id comes from the files' class_ind
        dicts = load_pascal_part(report=report, **{k: v for k, v in self.options.items() if k != "thing_classes"})
        if self.options.get("vocabulary") == "auto":
            if report.vocabulary == "pascal":
                self.loaded = dict(PascalPartLoader(**dict(self.options, vocabulary="pascal")).metadata())
            else:  # the files' own names: no class lists (evaluation takes the records' names)
                self.loaded = {}
            self.loaded["vocabulary"] = report.vocabulary
        return dicts


@DATASET_LOADER_REGISTRY.register()
class PascalPartsSplitLoader(DatasetLoader):
    """Official layout with VOC split lists (``pascal_part_{train,val,valtest}`` and their
    evaluation names). Options: ``images_dirname``, ``annotations_dirname``, ``split``,
    ``merge``, ``class_names`` (see :func:`load_pascal_parts_split`)."""

    LAYOUT = ("<images_dirname>/JPEGImages/<id>.jpg            (VOC2010 devkit folder)\n"
              "<images_dirname>/ImageSets/Main/{train,val}.txt\n"
              "<annotations_dirname>/<id>.mat                  (Pascal-Part annotations)\n"
              "defaults: $DETECTRON2_DATASETS/pascal_parts/{images,annotations}; "
              "CUSTOM_DATASETS.PASCAL_PARTS.{IMAGES,ANNOTATIONS}_DIRNAME override them")
    OFFICIAL_EVAL_GEOMETRY = "upsampled"  # official VOCPartsMapper (keeps the original height/width)

    def paths(self) -> List[str]:
        o = self.options
        return [os.path.join(o["images_dirname"], "JPEGImages"),
                split_list_path(o["images_dirname"], o["split"]),
                o["annotations_dirname"]]

    def metadata(self) -> dict:
        names = self.options.get("class_names")
        return {"split": self.options["split"], "images_dirname": self.options["images_dirname"],
                "annotations_dirname": self.options["annotations_dirname"],
                "part_classes": pascal_part_classes(names),
                "thing_classes": sorted(map(canonical_class_name, names)) if names else list(PASCAL_CLASSES)}

    def load(self, report: LoadReport) -> List[dict]:
        return load_pascal_parts_split(report=report, **self.options)


def builtin_datasets(d2: str, cfg=None) -> Dict[str, dict]:
    """Official names ``pascal_part_{train,val,valtest}`` and the evaluation names
    ``pascal_part_{pre_labeling,match,evaluate}_{train,val,valtest}``, with ``cfg``'s
    ``CUSTOM_DATASETS.USE_MERGED_GT`` and ``CUSTOM_DATASETS.PASCAL_PARTS.*`` (``None``: defaults).
    ``valtest`` reads ``ImageSets/Main/valtest.txt``, or ``val.txt`` when there is none (the VOC
    devkit has no valtest list; the official configs evaluate on ``pascal_part_valtest``)."""
    pp = cfg.CUSTOM_DATASETS.PASCAL_PARTS if cfg is not None else None
    root = os.path.join(d2, "pascal_parts")
    base = dict(loader_name="PascalPartsSplitLoader",
                merge=bool(cfg.CUSTOM_DATASETS.USE_MERGED_GT) if cfg is not None else True,
                images_dirname=(pp and pp.IMAGES_DIRNAME) or os.path.join(root, "images"),
                annotations_dirname=(pp and pp.ANNOTATIONS_DIRNAME) or os.path.join(root, "annotations"),
                class_names=list(pp.SUBSET_CLASS_NAMES) if pp is not None and pp.SUBSET_CLASS_NAMES else None,
                debug=bool(pp and pp.DEBUG))
    out = {}
    for split in PASCAL_PART_SPLITS:
        out[f"pascal_part_{split}"] = dict(base, split=split)
        for mode in EVAL_MODES:
            out[f"pascal_part_{mode}_{split}"] = dict(base, split=split, eval_mode=mode)
    return out
