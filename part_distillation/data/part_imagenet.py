"""PartImageNet (He et al., ECCV 2022) in its COCO-style release, images from ImageNet-1K train.

Layout (official PartDistillation defaults; ``CUSTOM_DATASETS.PART_IMAGENET.{ANNOTATIONS,IMAGES}_DIRNAME``
override the two folders)::

    $DETECTRON2_DATASETS/part_imagenet/{train,val,test}.json   # COCO: images, annotations, categories
    $DETECTRON2_DATASETS/part_imagenet/valtest.json            # optional: else val + test merged here
    $DETECTRON2_DATASETS/imagenet_1k/train/<wnid>/<file>       # images (ImageNet-1K train folders)

COCO ``images[].file_name`` is ``<wnid>_<n>.JPEG`` (no folder): the image is read from
``<images>/<wnid>/<file_name>`` (the official mapper's path correction), a ``file_name`` with a
folder is used as it is. ``annotations[]`` are part masks (polygons, or RLE; decoded with
pycocotools) with ``category_id`` into the 40 part ``categories`` (``"Quadruped Head"``, ...), each
with one of the 11 ``supercategory`` s (Quadruped, Biped, Fish, Bird, Snake, Reptile, Car,
Bicycle, Boat, Aeroplane, Bottle).

One object per image: class ``class_code`` = the wnid (158 object classes over the whole
release), mask = union of its parts. ``class_id`` indexes ``thing_classes`` = the sorted wnids
of the split; ``imagenet_1k_class_id`` (the official object class id) indexes the sorted
ImageNet-1K class list when that folder exists, else -1; :func:`imagenet_1k_to_22k` maps it to
ImageNet-22K ids for a 22K-class head. Parts: merged (``CUSTOM_DATASETS.USE_MERGED_GT True``)
unites the annotations of one category (official mapper), raw keeps one part per annotation;
``name`` = category name, ``part_id`` = index into ``part_classes`` (categories by id).
Images without part annotations are ``no_annotation`` skips, missing image files ``no_image``,
bad part annotations per-annotation skips (:func:`load_part_imagenet`).
"""
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import pycocotools.mask as mask_util

from .imagenet import imagenet_class_list
from .ground_truth import object_record
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader
from .pseudo_labels import decode_mask, encode_mask

PART_IMAGENET_SPLITS = ("train", "val", "test", "valtest")


def _read_split(annotations_dirname: str, split: str) -> dict:
    path = os.path.join(annotations_dirname, split + ".json")
    if not os.path.isfile(path) and split == "valtest":
        parts = [_read_split(annotations_dirname, s) for s in ("val", "test")]
        return {"images": parts[0]["images"] + parts[1]["images"],
                "annotations": parts[0]["annotations"] + parts[1]["annotations"],
                "categories": parts[0]["categories"]}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PartImageNet annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); truncated or damaged: download it again") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path}: not a COCO-style file (no '{key}')")
    return data


def _check_polygons(segm: list) -> None:
    """Raise ValueError unless ``segm`` is a list of COCO polygons: flat lists of an even number
    (>= 6: three points) of finite coordinates."""
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in poly):
            shown = poly if len(str(poly)) < 60 else str(poly)[:60] + "..."
            raise ValueError(f"polygon {shown} is not a list of >= 3 (x, y) points")


def segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> bool (H, W); an
    empty polygon list gives an empty mask.

    Raises:
        ValueError: a malformed polygon (``[[]]``, fewer than 3 points, odd or non-numeric
            coordinates), an RLE of another size, or anything else pycocotools cannot decode.
    """
    try:
        if isinstance(segm, list):
            _check_polygons(segm)
            rle = mask_util.merge(mask_util.frPyObjects(segm, height, width)) if segm else None
            return mask_util.decode(rle).astype(bool) if rle else np.zeros((height, width), bool)
        if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
            raise ValueError(f"segmentation of type {type(segm).__name__} is neither polygons nor an RLE")
        if [int(v) for v in segm["size"]] != [height, width]:
            raise ValueError(f"RLE of size {segm['size']} in an image of {[height, width]}")
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, height, width)
        return decode_mask(segm)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - pycocotools raises bare Exception / TypeError
        raise ValueError(f"undecodable segmentation ({type(e).__name__}: {e})") from None


def imagenet_1k_to_22k(codes_1k: Sequence[str], codes_22k: Sequence[str]) -> List[int]:
    """For each ImageNet-1K class (``class_id`` order) its index in the ImageNet-22K class list
    (-1 when absent), the official ``imagenet1k_to_22k_mapping`` for a 22K-class head."""
    index = {c: i for i, c in enumerate(codes_22k)}
    return [index.get(c, -1) for c in codes_1k]


def load_part_imagenet(annotations_dirname: str, images_dirname: str, split: str, merge: bool = True,
                       report: LoadReport = None) -> List[dict]:
    """Dataset dicts of one split (contract: :mod:`part_distillation.data.ground_truth`; module
    docstring for the fields). A part annotation with an unknown ``category_id`` or a malformed
    segmentation is a counted ``bad_part_annotation`` skip, one of zero area an ``empty_part``
    skip (both name the JSON file and the annotation id; the image keeps its other parts); an
    image left without parts is a ``bad_annotation`` skip. Raises FileNotFoundError / ValueError
    naming a missing or malformed JSON file."""
    report = report if report is not None else LoadReport(f"part_imagenet_{split}")
    json_path = os.path.join(annotations_dirname, split + ".json")
    data = _read_split(annotations_dirname, split)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    part_index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: Dict[int, List[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    wnids = sorted({os.path.basename(im["file_name"]).split("_")[0] for im in data["images"]})
    one_k = {c: i for i, c in enumerate(imagenet_class_list(images_dirname))} if os.path.isdir(images_dirname) else {}
    dicts = []
    for im in sorted(data["images"], key=lambda x: x["file_name"]):
        base = os.path.basename(im["file_name"])
        wnid = base.split("_")[0]
        rel = im["file_name"] if "/" in im["file_name"] else os.path.join(wnid, base)
        file_name = os.path.join(images_dirname, rel)
        annos = [a for a in by_image.get(im["id"], []) if not a.get("iscrowd", 0)]
        if not annos:
            report.skip("no_annotation", file_name, "no part annotation in the JSON")
            continue
        if not os.path.isfile(file_name):
            report.skip("no_image", file_name, f"image of {split}.json missing under {images_dirname}")
            continue
        h, w = int(im["height"]), int(im["width"])
        parts: Dict = {}
        for k, a in enumerate(annos):
            where = f"{json_path} annotation id {a.get('id')}"
            if a.get("category_id") not in part_index:
                report.skip("bad_part_annotation", where, f"unknown category_id {a.get('category_id')!r} "
                            f"(categories: {sorted(part_index)})")
                continue
            try:
                m = segmentation_to_mask(a.get("segmentation", []), h, w)
            except ValueError as e:
                report.skip("bad_part_annotation", where, str(e))
                continue
            if not m.any():
                report.skip("empty_part", where, "segmentation of zero area")
                continue
            key = a["category_id"] if merge else k
            if key in parts:
                parts[key]["mask"] |= m
            else:
                cat = cats[part_index[a["category_id"]]]
                parts[key] = {"name": cat["name"], "raw_name": cat["name"],
                              "part_id": part_index[a["category_id"]], "mask": m}
        if not parts:
            report.skip("bad_annotation", file_name, f"no usable part annotation in {json_path}")
            continue
        obj_mask = np.any([p["mask"] for p in parts.values()], axis=0)
        dicts.append({
            "file_name": file_name, "image_id": os.path.splitext(base)[0], "height": h, "width": w,
            "annotation_file": json_path,
            "objects": [object_record(wnid, wnid, wnids.index(wnid), obj_mask,
                                      [dict(p, mask=encode_mask(p["mask"])) for p in parts.values()],
                                      imagenet_1k_class_id=one_k.get(wnid, -1))]})
    return dicts


def part_imagenet_metadata(annotations_dirname: str, split: str) -> dict:
    """``part_classes`` (category names by id), ``super_categories`` (sorted) and
    ``part_super_category`` ({part name: super-category}) of a split's JSON."""
    cats = sorted(_read_split(annotations_dirname, split)["categories"], key=lambda c: c["id"])
    return {"part_classes": [c["name"] for c in cats],
            "super_categories": sorted({c.get("supercategory", "") for c in cats}),
            "part_super_category": {c["name"]: c.get("supercategory", "") for c in cats}}


@DATASET_LOADER_REGISTRY.register()
class PartImageNetLoader(DatasetLoader):
    """Options: ``annotations_dirname``, ``images_dirname``, ``split``, ``merge``. Metadata after a
    load: ``thing_classes`` (sorted wnids of the split), ``part_classes``, ``super_categories``,
    ``part_super_category``, ``class_super_category`` ({wnid: super-category})."""

    LAYOUT = ("$DETECTRON2_DATASETS/part_imagenet/{train,val,test}.json  [+ valtest.json, else val+test]\n"
              "$DETECTRON2_DATASETS/imagenet_1k/train/<wnid>/<wnid>_<n>.JPEG\n"
              "(CUSTOM_DATASETS.PART_IMAGENET.{ANNOTATIONS,IMAGES}_DIRNAME override the two folders)")
    OFFICIAL_EVAL_GEOMETRY = "input"  # official PartImageNetMapper (height/width = the resized image)

    def paths(self) -> List[str]:
        return [self.options["annotations_dirname"], self.options["images_dirname"]]

    def metadata(self) -> dict:
        return {"split": self.options["split"], "json_file": os.path.join(
            self.options["annotations_dirname"], self.options["split"] + ".json"),
            "image_root": self.options["images_dirname"]}

    def load(self, report: LoadReport) -> List[dict]:
        dicts = load_part_imagenet(report=report, **self.options)
        meta = part_imagenet_metadata(self.options["annotations_dirname"], self.options["split"])
        super_of = meta["part_super_category"]
        classes = sorted({d["objects"][0]["class_code"] for d in dicts})
        meta["thing_classes"] = classes
        meta["class_super_category"] = {d["objects"][0]["class_code"]: super_of[d["objects"][0]["parts"][0]["name"]]
                                        for d in dicts}
        self.loaded = meta
        return dicts


def builtin_datasets(d2: str, cfg=None) -> Dict[str, dict]:
    """Official names ``part_imagenet_{train,val,test,valtest}`` and the evaluation names
    ``part_imagenet_{pre_labeling,match,evaluate}_{val,test,valtest}``, with ``cfg``'s
    ``CUSTOM_DATASETS.*`` (``None``: defaults)."""
    pi = cfg.CUSTOM_DATASETS.PART_IMAGENET if cfg is not None else None
    merge = bool(cfg.CUSTOM_DATASETS.USE_MERGED_GT) if cfg is not None else True
    base = dict(loader_name="PartImageNetLoader", merge=merge, debug=bool(pi and pi.DEBUG),
                annotations_dirname=(pi and pi.ANNOTATIONS_DIRNAME) or os.path.join(d2, "part_imagenet"),
                images_dirname=(pi and pi.IMAGES_DIRNAME) or os.path.join(d2, "imagenet_1k", "train"))
    out = {f"part_imagenet_{s}": dict(base, split=s) for s in PART_IMAGENET_SPLITS}
    for s in ("val", "test", "valtest"):
        for mode in ("pre_labeling", "match", "evaluate"):
            out[f"part_imagenet_{mode}_{s}"] = dict(base, split=s, eval_mode=mode)
    return out
