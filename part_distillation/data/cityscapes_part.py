"""Cityscapes-Panoptic-Parts (de Geus et al., CVPR 2021) for the few-shot / supervised baselines.

Layout (official PartDistillation defaults under ``$DETECTRON2_DATASETS/cityscapes_part``;
``CUSTOM_DATASETS.CITYSCAPES_PART.IMAGES_DIRNAME`` / ``ANNOTATIONS_DIRNAME`` override the first
two folders, the part folder is the ``gtFinePanopticParts`` sibling of ``ANNOTATIONS_DIRNAME``)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png
    gtFinePanopticParts/{train,val}/<city>/<city>_<seq>_<frame>_gtFinePanopticParts.tif

Objects are the instances of ``gtFine`` ``instanceIds`` (``label_id * 1000 + n``) of the 5
part-annotated classes, Cityscapes label ids 24-28 = person, rider, car, truck, bus
(``thing_classes`` in that order; ``class_id`` = label id - 24). Parts come from the panoptic-parts
``.tif`` decoded with the ``panoptic-parts`` package (``decode_uids`` -> part ids 1..4 for
person / rider, 1..5 for vehicles; 0 unlabelled, -1 none): the **23** object-specific part
classes of the official PartDistillation evaluation (``part_classes``, e.g. ``car-window``), not
the 9 class-agnostic merged parts of the PartPQ benchmark. Images without a part file are
``no_annotation`` skips.
"""
import os
import platform
from typing import Dict, List
from unittest import mock

import numpy as np
from PIL import Image

from .ground_truth import object_record, parts_from_label_map
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader

CITYSCAPES_PART_OBJECTS = ("person", "rider", "car", "truck", "bus")  # label ids 24..28
_FIRST_LABEL_ID = 24
_HUMAN_PARTS = ("torso", "head", "arm", "leg")
_VEHICLE_PARTS = ("window", "wheel", "light", "license plate", "chassis")
CITYSCAPES_PART_CLASSES = tuple(f"{o}-{p}" for o in CITYSCAPES_PART_OBJECTS
                                for p in (_HUMAN_PARTS if o in ("person", "rider") else _VEHICLE_PARTS))


def decode_part_ids(tif_path: str) -> np.ndarray:
    """Part ids (H, W) int of a ``gtFinePanopticParts`` file via ``panoptic_parts.decode_uids``
    (-1: no part level, 0: unlabelled, 1..5: part). Raises ValueError naming the file."""
    # panoptic-parts 2.0rc6 refuses Python >= 3.10 by reading "3.1" from the version string;
    # present it a 3.7 string for the import only (the code itself runs on current Pythons).
    with mock.patch.object(platform, "python_version", return_value="3.7.0"):
        import panoptic_parts
    try:
        uids = np.asarray(Image.open(tif_path)).astype(np.int32)
        _, _, pids = panoptic_parts.decode_uids(uids)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{tif_path}: not a panoptic-parts label file ({e})") from None
    return np.asarray(pids)


def load_cityscapes_part(images_dirname: str, annotations_dirname: str, parts_dirname: str, split: str,
                         report: LoadReport = None) -> List[dict]:
    """Dataset dicts of ``split`` (contract: :mod:`part_distillation.data.ground_truth`), sorted
    by image id. Raises FileNotFoundError when the split's image folder is missing."""
    report = report if report is not None else LoadReport(f"cityscapes_part_{split}")
    img_root = os.path.join(images_dirname, split)
    if not os.path.isdir(img_root):
        raise FileNotFoundError(f"Cityscapes image folder not found: {img_root}")
    dicts = []
    for city in sorted(os.listdir(img_root)):
        for f in sorted(os.listdir(os.path.join(img_root, city))):
            if not f.endswith("_leftImg8bit.png"):
                continue
            stem = f[: -len("_leftImg8bit.png")]
            file_name = os.path.join(img_root, city, f)
            inst_path = os.path.join(annotations_dirname, split, city, stem + "_gtFine_instanceIds.png")
            part_path = os.path.join(parts_dirname, split, city, stem + "_gtFinePanopticParts.tif")
            size = report.annotated_image_size(file_name, (inst_path, part_path))
            if size is None:
                continue
            w, h = size
            try:
                inst = np.asarray(Image.open(inst_path)).astype(np.int64)
                pids = decode_part_ids(part_path)
            except (OSError, ValueError) as e:
                report.skip("bad_annotation", part_path, str(e))
                continue
            bad = [p for p, a in ((inst_path, inst), (part_path, pids)) if a.shape != (h, w)]
            if bad:
                report.skip("bad_annotation", bad[0], f"size differs from the image's {(h, w)}")
                continue
            objects = []
            for v in np.unique(inst):
                cls = int(v) // 1000 - _FIRST_LABEL_ID
                if v < 1000 or not 0 <= cls < len(CITYSCAPES_PART_OBJECTS):
                    continue
                mask = inst == v
                name = CITYSCAPES_PART_OBJECTS[cls]
                names = _HUMAN_PARTS if cls < 2 else _VEHICLE_PARTS

                def part_of(pid, name=name, names=names):
                    if pid <= 0:  # no part label
                        return None
                    part_name = f"{name}-{names[pid - 1]}"
                    return part_name, part_name, CITYSCAPES_PART_CLASSES.index(part_name)

                objects.append(object_record(name, name, cls, mask, parts_from_label_map(pids, mask, part_of)))
            dicts.append({"file_name": file_name, "image_id": stem, "height": h, "width": w,
                          "annotation_file": part_path, "objects": objects})
    return dicts


@DATASET_LOADER_REGISTRY.register()
class CityscapesPartLoader(DatasetLoader):
    """Options: ``images_dirname``, ``annotations_dirname``, ``parts_dirname``, ``split``.
    Metadata: ``thing_classes`` (5), ``part_classes`` (23), ``split``."""

    LAYOUT = ("cityscapes_part/leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png\n"
              "cityscapes_part/gtFine/{train,val}/<city>/<id>_gtFine_instanceIds.png\n"
              "cityscapes_part/gtFinePanopticParts/{train,val}/<city>/<id>_gtFinePanopticParts.tif")
    OFFICIAL_EVAL_GEOMETRY = "upsampled"  # official CityscapesPartMapper (keeps the original height/width)

    def paths(self) -> List[str]:
        o = self.options
        return [os.path.join(o["images_dirname"], o["split"]), os.path.join(o["annotations_dirname"], o["split"]),
                os.path.join(o["parts_dirname"], o["split"])]

    def metadata(self) -> dict:
        return {"thing_classes": list(CITYSCAPES_PART_OBJECTS), "part_classes": list(CITYSCAPES_PART_CLASSES),
                "split": self.options["split"]}

    def load(self, report: LoadReport) -> List[dict]:
        return load_cityscapes_part(report=report, **self.options)


def builtin_datasets(d2: str, cfg=None) -> Dict[str, dict]:
    """Official names ``cityscapes_part_{train,val}`` and the evaluation names
    ``cityscapes_part_{pre_labeling,match,evaluate}_val``, with ``cfg``'s
    ``CUSTOM_DATASETS.CITYSCAPES_PART.*`` (``None``: defaults)."""
    cp = cfg.CUSTOM_DATASETS.CITYSCAPES_PART if cfg is not None else None
    root = os.path.join(d2, "cityscapes_part")
    ann = (cp and cp.ANNOTATIONS_DIRNAME) or os.path.join(root, "gtFine")
    base = dict(loader_name="CityscapesPartLoader", debug=bool(cp and cp.DEBUG),
                images_dirname=(cp and cp.IMAGES_DIRNAME) or os.path.join(root, "leftImg8bit"),
                annotations_dirname=ann,
                parts_dirname=os.path.join(os.path.dirname(ann.rstrip("/")), "gtFinePanopticParts"))
    out = {"cityscapes_part_train": dict(base, split="train"),
           "cityscapes_part_val": dict(base, split="val")}
    for mode in ("pre_labeling", "match", "evaluate"):
        out[f"cityscapes_part_{mode}_val"] = dict(base, split="val", eval_mode=mode)
    return out
