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
from typing import List

import pycocotools.mask as mask_util
from detectron2.utils.registry import Registry

from ..data.images import read_image_or_skip
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, decode_mask, primary_class_code
from ..utils.sharding import SkipItem
from .build import register_stage
from .partition import WorkItem
from .stage import Stage

logger = logging.getLogger(__name__)

OBJECT_LABELER_REGISTRY = Registry("OBJECT_LABELER")
OBJECT_LABELER_REGISTRY.__doc__ = """Stage-1 labelers by ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE`` name."""


def register_labeler(name: str):
    """Class decorator: make a labeler selectable as ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE: name``
    (raises ``AssertionError`` when the name is taken)."""

    def deco(cls):
        OBJECT_LABELER_REGISTRY._do_register(name, cls)
        return cls

    return deco


class ObjectLabeler(ABC):
    """Interface of stage-1 labelers.

    ``needs_image`` tells the runner whether to decode pixels (the given-mask labeler does not).
    ``__call__(image, record)``: ``image`` uint8 RGB (H, W, 3) or None, ``record`` a dataset dict
    (``file_name``, ``image_id``, ``height``, ``width``, optional ``objects``/``class_code``) ->
    list of :class:`ObjectLabel` with (H, W) bool masks, ``class_code`` and ``class_id`` set.
    ``settings()``: what besides ``OBJECT_MASK_TYPE`` determines its outputs (recorded by the
    resume guard; e.g. its config file and the weights' identity).
    """

    needs_image: bool = True

    @abstractmethod
    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        ...

    def settings(self) -> dict:
        return {}


@register_labeler("given")
class GivenMaskLabeler(ObjectLabeler):
    """Objects are the dataset's annotated instances (``record["objects"]`` with RLE masks);
    ``class_code`` is the object's ``class_code``, else its ``class_name``."""

    needs_image = False

    def __init__(self, cfg=None):
        pass

    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        if "objects" not in record:
            raise ValueError(f"{record['file_name']}: the 'given' labeler needs annotated objects")
        return [ObjectLabel(class_name=o["class_name"], mask=decode_mask(o["mask"]),
                            class_code=object_class_code(o), score=1.0, class_id=int(o.get("class_id", -1)))
                for o in record["objects"]]


def object_class_code(obj: dict) -> str:
    """Class code of a dataset object dict: ``class_code``, else ``class_name``."""
    return str(obj.get("class_code") or obj["class_name"])


def record_class_code(record: dict) -> str:
    """The class whose folder holds a dataset image's outputs: the record's ``class_code`` (e.g. an
    ImageNet image's wnid), else the class code of its largest annotated object, else ``""``."""
    if record.get("class_code"):
        return str(record["class_code"])
    return primary_class_code([(object_class_code(o), float(mask_util.area(_rle(o["mask"]))))
                               for o in record.get("objects", [])])


def _rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def build_labeler(cfg) -> ObjectLabeler:
    """The labeler named by ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``; unknown names raise
    ``KeyError`` listing the registered ones."""
    import part_distillation.labelers  # noqa: F401  (registers the model labelers)

    name = cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE
    if name not in OBJECT_LABELER_REGISTRY:
        raise KeyError(f"unknown OBJECT_MASK_TYPE '{name}'; registered: {sorted(k for k, _ in OBJECT_LABELER_REGISTRY)}")
    return OBJECT_LABELER_REGISTRY.get(name)(cfg)


@register_stage
class ObjectMasksStage(Stage):
    """Stage 1 over dataset dicts (``run(records)``): one ``object_masks`` pseudo-label per image.
    Objects with fewer than ``PROPOSAL_GENERATION.MIN_OBJECT_AREA`` pixels (empty masks always) or
    a score below ``SAVE_SCORE_THRESHOLD`` are dropped and listed in ``skipped_objects`` (``index``
    into the labeler's output); an unreadable image is a counted skip."""

    NAME = "object_masks"
    CONFIG_NAMESPACE = "PROPOSAL_GENERATION"
    RECORDED_CONFIG = ("PROPOSAL_GENERATION",)

    def __init__(self, cfg, output_dir: str, labeler: ObjectLabeler = None):
        super().__init__(cfg, output_dir)
        self.labeler = labeler or build_labeler(cfg)
        self._stream = None

    def prepare(self, mine: List[WorkItem], todo: List[WorkItem]) -> None:
        """Model labelers: one with ``set_classes`` (Detic) gets the sorted image-level class names
        of this partition's images (all of them, so a resumed run prompts the same vocabulary); one
        with ``label_stream`` labels the unfinished images in batches, decoded by DataLoader
        workers, which :meth:`process` consumes in the same order (so stage 1 runs with one
        worker process)."""
        if hasattr(self.labeler, "set_classes"):
            from ..labelers.common import image_class_names

            self.labeler.set_classes(sorted({n for it in mine for n in image_class_names(it.source)}))
        if hasattr(self.labeler, "label_stream"):
            self._stream = iter(self.labeler.label_stream([it.source for it in todo]))

    @classmethod
    def validate_config(cls, cfg) -> None:
        super().validate_config(cfg)
        if cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE not in OBJECT_LABELER_REGISTRY:
            build_labeler(cfg)  # raises naming the registered labelers

    @staticmethod
    def default_input(cfg):
        return cfg.PROPOSAL_GENERATION.DATASET_NAME or None

    def settings(self) -> dict:
        return {**super().settings(), "LABELER": self.labeler.settings()}

    def list_items(self, records: List[dict]) -> List[WorkItem]:
        return [WorkItem(str(r["image_id"]), record_class_code(r), r) for r in records]

    def process(self, item: WorkItem):
        record = item.source
        if self._stream is not None:
            got, objects = next(self._stream)
            if got is not record:  # the runner visits the unfinished items in the stream's order
                raise RuntimeError(f"batched labelling out of order at {item.key}")
            if isinstance(objects, IOError):
                raise SkipItem("unreadable image", f"{record['file_name']}: {objects}")
        else:
            image = read_image_or_skip(record["file_name"]) if self.labeler.needs_image else None
            objects = self.labeler(image, record)
        pg = self.cfg.PROPOSAL_GENERATION
        kept, skipped = [], []
        for i, obj in enumerate(objects):
            if obj.mask.shape != (record["height"], record["width"]):
                raise ValueError(f"object mask {obj.mask.shape} != image size {(record['height'], record['width'])}")
            area = int(obj.mask.sum())
            reason = ("empty object mask" if area == 0 else
                      "smaller than MIN_OBJECT_AREA" if area < pg.MIN_OBJECT_AREA else
                      "score below SAVE_SCORE_THRESHOLD" if obj.score < pg.SAVE_SCORE_THRESHOLD else None)
            if reason:
                skipped.append({"index": i, "reason": reason, "stage": self.NAME})
            else:
                kept.append(obj)
        label = ImagePseudoLabel(record["file_name"], item.image_id, record["height"], record["width"],
                                 self.NAME, kept, skipped, {"OBJECT_MASK_TYPE": pg.OBJECT_MASK_TYPE},
                                 item.class_code)
        counts = {"objects": len(kept), "objects_skipped_empty": sum(s["reason"] == "empty object mask" for s in skipped)}
        counts["objects_dropped_small_or_low_score"] = len(skipped) - counts["objects_skipped_empty"]
        return label, counts
