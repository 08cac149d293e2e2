"""Stage 1: object masks per image, written as ``object_masks`` pseudo-labels.

An :class:`ObjectLabeler` turns an image (+ its dataset record, which may carry a class name or
ground-truth masks) into :class:`~part_distillation.data.pseudo_labels.ObjectLabel` s. Labelers are
registered in :data:`OBJECT_LABELER_REGISTRY` under the names ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``
selects: ``given`` (the dataset's instance masks: the official "given mask" mode) here,
``detectron2`` (any detectron2 instance-segmentation model, e.g. the COCO Mask2Former) and
``detic`` (open vocabulary, prompted with the partition's class names) in
:mod:`part_distillation.labelers`.
"""
import logging
from abc import ABC, abstractmethod
from typing import Dict, List


from ..data.images import read_image_rgb
from ..data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, decode_mask, is_complete, pseudo_label_path,
                                  save_pseudo_label)
from ..utils.sharding import SkipItem, resolve_partition, shard
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
    import part_distillation.labelers  # noqa: F401  (registers the model labelers)

    name = cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE
    if name not in OBJECT_LABELER_REGISTRY:
        raise KeyError(f"unknown OBJECT_MASK_TYPE '{name}'; registered: {sorted(OBJECT_LABELER_REGISTRY)}")
    return OBJECT_LABELER_REGISTRY[name](cfg)


def save_objects(record: dict, objects: List[ObjectLabel], output_dir: str, config: dict) -> dict:
    """Save the ``object_masks`` pseudo-label of ``record``. Objects with empty masks are dropped
    and listed in ``skipped_objects``. Raises ``ValueError`` for a mask of the wrong size."""
    kept, skipped = [], []
    for i, obj in enumerate(objects):
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


def label_image(labeler: ObjectLabeler, record: dict, output_dir: str, config: dict) -> dict:
    """Label one dataset record and save its ``object_masks`` pseudo-label (:func:`save_objects`).
    Raises :class:`SkipItem` when the image cannot be read."""
    image = None
    if labeler.needs_image:
        try:
            image = read_image_rgb(record["file_name"])
        except IOError as e:
            raise SkipItem(f"unreadable image: {e}") from None
    return save_objects(record, labeler(image, record), output_dir, config)


def _image_id(record: dict) -> str:
    return str(record["image_id"])


def run_object_masks(cfg, records: List[dict], output_dir: str, labeler: ObjectLabeler = None):
    """Stage 1 over ``records`` (dataset dicts) with sharding/resume; returns the RunSummary.

    Labelers with ``label_stream`` (model labelers) label this partition's unfinished images in
    batches, decoded by DataLoader workers, in the order the runner visits them; labelers with
    ``set_classes`` (Detic) get the sorted class names of this partition's records first."""
    labeler = labeler if labeler is not None else build_labeler(cfg)
    pg = cfg.PROPOSAL_GENERATION
    config = {"OBJECT_MASK_TYPE": pg.OBJECT_MASK_TYPE}
    if pg.OBJECT_MASK_TYPE != "given":
        config.update(LABELER_CONFIG=pg.LABELER_CONFIG, OBJECT_TOP_K=pg.OBJECT_TOP_K,
                      OBJECT_CLASS_FILTER=pg.OBJECT_CLASS_FILTER)
    if not hasattr(labeler, "label_stream"):
        def process(record):
            return label_image(labeler, record, output_dir, config)
    else:
        total, index = resolve_partition(pg.TOTAL_PARTITIONS, pg.PARTITION_INDEX)
        mine = shard(records, _image_id, total, index)
        if hasattr(labeler, "set_classes"):
            from ..labelers.common import image_class_names

            labeler.set_classes(sorted({n for r in mine for n in image_class_names(r)}))
        todo = [r for r in mine if not is_complete(pseudo_label_path(output_dir, _image_id(r)), "object_masks")]
        stream = iter(labeler.label_stream(todo))

        def process(record):
            got, objects = next(stream)
            if got is not record:  # the runner must visit the partition in the stream's order
                raise RuntimeError(f"batched labelling out of order at {_image_id(record)}")
            if isinstance(objects, IOError):
                raise SkipItem(f"unreadable image: {objects}")
            return save_objects(record, objects, output_dir, config)

    return run_stage("object_masks", records, _image_id, process, output_dir, config,
                     pg.TOTAL_PARTITIONS, pg.PARTITION_INDEX)
