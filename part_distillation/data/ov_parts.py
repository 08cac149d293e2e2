"""Pascal-Part-116 and ADE20K-Part-234 in the OV-PARTS layout (Wei et al., NeurIPS 2023 D&B), so
results compare with open-vocabulary part segmenters (PartCLIPSeg, ...).

Layout under ``$DETECTRON2_DATASETS`` (OV-PARTS folder names)::

    PascalPart116/images/{train,val}/<id>.jpg
    PascalPart116/annotations_detectron2_part/{train,val}/<id>.png   # part semantic map
    PascalPart116/annotations_detectron2_obj/{train,val}/<id>.png    # object semantic map
    ADE20KPart234/images/{training,validation}/<id>.jpg
    ADE20KPart234/annotations_detectron2_part/{training,validation}/<id>.png   (16-bit)
    ADE20KPart234/ade20k_instance_{train,val}.json                            # object instances

Part maps hold the index of the part class in the OV-PARTS class list (``part_classes``, names
``"<object>'s <part>"``, 116 / 234 of them), 255 (Pascal) / 65535 (ADE) where no part. Pascal-Part-116
objects are semantic, from the object maps (index into ``thing_classes``, the 20 VOC classes; 255
where no object): one object per class present. ADE20K-Part-234 objects are the instances of the
COCO-style instance file (categories matched by name to the 44 object classes; polygons / RLE).
An object's parts are the part classes of its class inside its mask, named by the part word
(``"body"``), ``part_id`` = the OV-PARTS index. Not read: the ``train_16shot.json`` few-shot lists.
"""
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .ground_truth import object_record, parts_from_label_map
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader
from .part_imagenet import segmentation_to_mask
from .pascal_part import PASCAL_CLASSES

# (object, "part|part|...") in OV-PARTS class-index order (parts of one object are contiguous).
_PASCAL_116 = [
    ("aeroplane", "body|stern|wing|tail|engine|wheel"),
    ("bicycle", "wheel|saddle|handlebar|chainwheel|headlight"),
    ("bird", "wing|tail|head|eye|beak|torso|neck|leg|foot"),
    ("bottle", "body|cap"),
    ("bus", "wheel|headlight|front|side|back|roof|mirror|license plate|door|window"),
    ("car", "wheel|headlight|front|side|back|roof|mirror|license plate|door|window"),
    ("cat", "tail|head|eye|torso|neck|leg|nose|paw|ear"),
    ("cow", "tail|head|eye|torso|neck|leg|ear|muzzle|horn"),
    ("dog", "tail|head|eye|torso|neck|leg|nose|paw|ear|muzzle"),
    ("horse", "tail|head|eye|torso|neck|leg|ear|muzzle|hoof"),
    ("motorbike", "wheel|saddle|handlebar|headlight"),
    ("person", "head|eye|torso|neck|leg|foot|nose|ear|eyebrow|mouth|hair|lower arm|upper arm|hand"),
    ("pottedplant", "pot|plant"),
    ("sheep", "tail|head|eye|torso|neck|leg|ear|muzzle|horn"),
    ("train", "headlight|head|front|side|back|roof|coach"),
    ("tvmonitor", "screen"),
]
_ADE_234 = [
    ("person", "arm|back|foot|gaze|hand|head|leg|neck|torso"),
    ("door", "door frame|handle|knob|panel"),
    ("clock", "face|frame"),
    ("toilet", "bowl|cistern|lid"),
    ("cabinet", "door|drawer|front|shelf|side|skirt|top"),
    ("sink", "bowl|faucet|pedestal|tap|top"),
    ("lamp", "arm|base|canopy|column|cord|highlight|light source|shade|tube"),
    ("sconce", "arm|backplate|highlight|light source|shade"),
    ("chair", "apron|arm|back|base|leg|seat|seat cushion|skirt|stretcher"),
    ("chest of drawers", "apron|door|drawer|front|leg"),
    ("chandelier", "arm|bulb|canopy|chain|cord|highlight|light source|shade"),
    ("bed", "footboard|headboard|leg|side rail"),
    ("table", "apron|drawer|leg|shelf|top|wheel"),
    ("armchair", "apron|arm|back|back pillow|leg|seat|seat base|seat cushion"),
    ("ottoman", "back|leg|seat"),
    ("shelf", "door|drawer|front|shelf"),
    ("swivel chair", "back|base|seat|wheel"),
    ("fan", "blade|canopy|tube"),
    ("coffee table", "leg|top"),
    ("stool", "leg|seat"),
    ("sofa", "arm|back|back pillow|leg|seat base|seat cushion|skirt"),
    ("computer", "computer case|keyboard|monitor|mouse"),
    ("desk", "apron|door|drawer|leg|shelf|top"),
    ("wardrobe", "door|drawer|front|leg|mirror|top"),
    ("car", "bumper|door|headlight|hood|license plate|logo|mirror|wheel|window|wiper"),
    ("bus", "bumper|door|headlight|license plate|logo|mirror|wheel|window|wiper"),
    ("oven", "button panel|door|drawer|top"),
    ("cooking stove", "burner|button panel|door|drawer|oven|stove"),
    ("microwave", "button panel|door|front|side|top|window"),
    ("refrigerator", "button panel|door|drawer|side"),
    ("kitchen island", "door|drawer|front|side|top"),
    ("dishwasher", "button panel|handle|skirt"),
    ("bookcase", "door|drawer|front|side"),
    ("television receiver", "base|buttons|frame|keys|screen|speaker"),
    ("glass", "base|bowl|opening|stem"),
    ("pool table", "bed|leg|pocket"),
    ("van", "bumper|door|headlight|license plate|logo|mirror|taillight|wheel|window|wiper"),
    ("airplane", "door|fuselage|landing gear|propeller|stabilizer|turbine engine|wing"),
    ("truck", "bumper|door|headlight|license plate|logo|mirror|wheel|window"),
    ("minibike", "license plate|mirror|seat|wheel"),
    ("washer", "button panel|door|front|side"),
    ("bench", "arm|back|leg|seat"),
    ("traffic light", "housing|pole"),
    ("light", "aperture|canopy|diffusor|highlight|light source|shade"),
]
ADE_PART_234_OBJECTS: Tuple[str, ...] = tuple(sorted(o for o, _ in _ADE_234))


def _names(groups: Sequence[Tuple[str, str]]) -> List[str]:
    return [f"{obj}'s {part}" for obj, parts in groups for part in parts.split("|")]


PASCAL_PART_116_CLASSES: List[str] = _names(_PASCAL_116)
ADE_PART_234_CLASSES: List[str] = _names(_ADE_234)
OV_PARTS_SETS = {
    # name: (folder, splits {registered split: folder split}, objects, parts, no-label value)
    "pascal_part_116": ("PascalPart116", {"train": "train", "val": "val"}, PASCAL_CLASSES,
                        PASCAL_PART_116_CLASSES, 255),
    "ade20k_part_234": ("ADE20KPart234", {"train": "training", "val": "validation"}, ADE_PART_234_OBJECTS,
                        ADE_PART_234_CLASSES, 65535),
}


def _read_label_map(path: str) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


def _instances_from_json(path: str, object_classes: Sequence[str]) -> Dict[str, List[Tuple[int, dict]]]:
    """``{image file basename: [(object class index, COCO segmentation)]}`` of an OV-PARTS
    ``ade20k_instance_*.json`` (COCO ``images`` / ``annotations`` / ``categories``; categories are
    matched to ``object_classes`` by name). Raises ValueError naming the file on unknown names."""
    with open(path) as f:
        data = json.load(f)
    index = {c: i for i, c in enumerate(object_classes)}
    unknown = sorted({c["name"] for c in data["categories"]} - set(index))
    if unknown:
        raise ValueError(f"{path}: categories not in the object list: {unknown[:5]}")
    cat = {c["id"]: index[c["name"]] for c in data["categories"]}
    files = {im["id"]: os.path.basename(im["file_name"]) for im in data["images"]}
    out: Dict[str, List[Tuple[int, dict]]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            out.setdefault(files[a["image_id"]], []).append((cat[a["category_id"]], a["segmentation"]))
    return out


def load_ov_parts(root: str, split_dir: str, object_classes: Sequence[str], part_classes: Sequence[str],
                  ignore: int, instances_json: str = "", report: LoadReport = None) -> List[dict]:
    """Dataset dicts of one OV-PARTS split (contract: :mod:`part_distillation.data.ground_truth`;
    module docstring for the fields). Objects come from ``annotations_detectron2_obj`` maps, or
    from ``instances_json`` (ADE20K-Part-234's instance file) when given. Images without their
    annotations are ``no_annotation`` skips, maps of another size or with unknown indices
    ``bad_annotation``."""
    report = report if report is not None else LoadReport(root)
    img_dir = os.path.join(root, "images", split_dir)
    owner = [name.split("'s ", 1) for name in part_classes]
    instances = _instances_from_json(instances_json, object_classes) if instances_json else None
    dicts = []
    for f in sorted(os.listdir(img_dir)):
        if not f.lower().endswith(".jpg"):
            continue
        image_id = os.path.splitext(f)[0]
        file_name = os.path.join(img_dir, f)
        part_path = os.path.join(root, "annotations_detectron2_part", split_dir, image_id + ".png")
        obj_path = os.path.join(root, "annotations_detectron2_obj", split_dir, image_id + ".png")
        needed = [part_path] + ([] if instances is not None else [obj_path])
        no_instances = instances is not None and f not in instances and all(map(os.path.isfile, needed))
        size = report.annotated_image_size(file_name, needed,
                                           f"instances in {instances_json}" if no_instances else "")
        if size is None:
            continue
        w, h = size
        part_map = _read_label_map(part_path)
        maps = [(part_path, part_map, len(part_classes))]
        if instances is None:
            obj_map = _read_label_map(obj_path)
            maps.append((obj_path, obj_map, len(object_classes)))
        problem = next((f"{p}: size {a.shape} != image size {(h, w)}" for p, a, _ in maps if a.shape != (h, w)), None)
        for p, a, n in maps if problem is None else []:
            bad = set(np.unique(a).tolist()) - set(range(n)) - {ignore}
            if bad:
                problem = f"{p}: unknown class indices {sorted(bad)[:5]}"
                break
        if problem:
            report.skip("bad_annotation", part_path, problem)
            continue
        if instances is None:
            found = [(int(oid), obj_map == oid) for oid in np.unique(obj_map) if oid != ignore]
        else:
            found = [(oid, segmentation_to_mask(seg, h, w)) for oid, seg in instances[f]]
        objects = []
        for oid, mask in found:
            name = object_classes[oid]

            def part_of(pid, name=name):  # the ignore label, another class's part: none
                return None if pid == ignore or owner[pid][0] != name else (owner[pid][1], part_classes[pid], pid)

            objects.append(object_record(name, name, oid, mask, parts_from_label_map(part_map, mask, part_of)))
        dicts.append({"file_name": file_name, "image_id": image_id, "height": h, "width": w,
                      "annotation_file": part_path, "objects": objects})
    return dicts


@DATASET_LOADER_REGISTRY.register()
class OVPartsLoader(DatasetLoader):
    """Options: ``root`` (the ``PascalPart116`` / ``ADE20KPart234`` folder), ``split_dir``,
    ``object_classes``, ``part_classes``, ``ignore``, ``instances_json`` (ADE: objects from it).
    Metadata: ``thing_classes``, ``part_classes`` (OV-PARTS names), ``ignore_label``."""

    LAYOUT = ("<root>/images/<split>/<id>.jpg\n<root>/annotations_detectron2_part/<split>/<id>.png\n"
              "PascalPart116: <root>/annotations_detectron2_obj/<split>/<id>.png  (splits train, val)\n"
              "ADE20KPart234: <root>/ade20k_instance_{train,val}.json  (splits training, validation)\n"
              "(root: $DETECTRON2_DATASETS/PascalPart116 or $DETECTRON2_DATASETS/ADE20KPart234)")

    def paths(self) -> List[str]:
        o = self.options
        objects = o.get("instances_json") or os.path.join(o["root"], "annotations_detectron2_obj", o["split_dir"])
        return [os.path.join(o["root"], d, o["split_dir"])
                for d in ("images", "annotations_detectron2_part")] + [objects]

    def metadata(self) -> dict:
        o = self.options
        return {"root": o["root"], "thing_classes": list(o["object_classes"]),
                "part_classes": list(o["part_classes"]), "ignore_label": o["ignore"]}

    def load(self, report: LoadReport) -> List[dict]:
        return load_ov_parts(report=report, **self.options)


def builtin_datasets(d2: str) -> Dict[str, dict]:
    """``pascal_part_116_{train,val}``, ``ade20k_part_234_{train,val}``."""
    out = {}
    for name, (folder, splits, objects, parts, ignore) in OV_PARTS_SETS.items():
        for split, split_dir in splits.items():
            root = os.path.join(d2, folder)
            out[f"{name}_{split}"] = dict(
                loader_name="OVPartsLoader", root=root, split_dir=split_dir, object_classes=list(objects),
                part_classes=list(parts), ignore=ignore,
                instances_json=os.path.join(root, f"ade20k_instance_{split}.json") if name == "ade20k_part_234" else "")
    return out
