"""Stage 1: object masks per image, written as ``object_masks`` pseudo-labels.

An :class:`ObjectLabeler` turns an image (+ its dataset record, which may carry a class name or
ground-truth masks) into :class:`~part_distillation.data.pseudo_labels.ObjectLabel` s. Labelers are
registered in :data:`OBJECT_LABELER_REGISTRY` under the names ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``
selects: ``given`` (the dataset's instance masks: the official "given mask" mode) here; the
open-vocabulary Detic labeler, prompted with the image's class name, plugs in the same way.
"""
import logging
from abc import ABC, abstractmethod
from typing import Dict, List


from ..data.images import read_image_rgb
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, decode_mask, save_pseudo_label
from ..utils.sharding import SkipItem
from .common import run_stage

logger = logging.getLogger(__name__)

OBJECT_LABELER_REGISTRY: Dict[str, type] = {}


def register_labeler(name: str):
    """Class decorator: make a labeler selectable as ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE: name``."""

    def deco(cls):
        if name in OBJECT_LABELER_REGISTRY:
            raise ValueError(f"labeler '{name}' registered twice")
        OBJECT_LABELER_REGISTRY[name] = cls
        return cls

    return deco


class ObjectLabeler(ABC):
    """Interface of stage-1 labelers.

    ``needs_image`` tells the runner whether to decode pixels (the given-mask labeler does not).
    ``__call__(image, record)``: ``image`` uint8 RGB (H, W, 3) or None, ``record`` a dataset dict
    (``file_name``, ``image_id``, ``height``, ``width``, optional ``objects``/``class_name``) ->
    list of :class:`ObjectLabel` with (H, W) bool masks. Empty masks must not be returned.
    """

    needs_image: bool = True

    @abstractmethod
    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        ...


@register_labeler("given")
class GivenMaskLabeler(ObjectLabeler):
    """Objects are the dataset's annotated instances (``record["objects"]`` with RLE masks)."""

    needs_image = False

    def __init__(self, cfg=None):
        pass

    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        if "objects" not in record:
            raise ValueError(f"{record['file_name']}: the 'given' labeler needs annotated objects")
        return [ObjectLabel(class_name=o["class_name"], mask=decode_mask(o["mask"]),
                            class_code=str(o.get("class_id", "")), score=1.0)
                for o in record["objects"]]


def build_labeler(cfg) -> ObjectLabeler:
    """The labeler named by ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``; unknown names raise
    ``KeyError`` listing the registered ones."""
    name = cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE
    if name not in OBJECT_LABELER_REGISTRY:
        raise KeyError(f"unknown OBJECT_MASK_TYPE '{name}'; registered: {sorted(OBJECT_LABELER_REGISTRY)}")
    return OBJECT_LABELER_REGISTRY[name](cfg)


def label_image(labeler: ObjectLabeler, record: dict, output_dir: str, config: dict) -> dict:
    """Label one dataset record and save its ``object_masks`` pseudo-label. Objects with empty
    masks are dropped and listed in ``skipped_objects``. Raises :class:`SkipItem` when the image
    cannot be read."""
    image = None
    if labeler.needs_image:
        try:
            image = read_image_rgb(record["file_name"])
        except IOError as e:
            raise SkipItem(f"unreadable image: {e}") from None
    kept, skipped = [], []
    for i, obj in enumerate(labeler(image, record)):
        if obj.mask.shape != (record["height"], record["width"]):
            raise ValueError(f"object mask {obj.mask.shape} != image size {(record['height'], record['width'])}")
        if not obj.mask.any():
            skipped.append({"index": i, "reason": "empty object mask"})
            continue
        kept.append(obj)
    label = ImagePseudoLabel(record["file_name"], str(record["image_id"]), record["height"],
                             record["width"], "object_masks", kept, skipped, config)
    save_pseudo_label(output_dir, label)
    return {"objects": len(kept), "objects_skipped_empty": len(skipped)}


def run_object_masks(cfg, records: List[dict], output_dir: str):
    """Stage 1 over ``records`` (dataset dicts) with sharding/resume; returns the RunSummary."""
    labeler = build_labeler(cfg)
    pg = cfg.PROPOSAL_GENERATION
    config = {"OBJECT_MASK_TYPE": pg.OBJECT_MASK_TYPE}
    return run_stage("object_masks", records, lambda r: str(r["image_id"]),
                     lambda r: label_image(labeler, r, output_dir, config), output_dir, config,
                     pg.TOTAL_PARTITIONS, pg.PARTITION_INDEX)
