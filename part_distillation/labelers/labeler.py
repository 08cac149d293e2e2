"""The stage-1 labeler interface and the given-mask labeler (the dataset's own instance masks,
the official "given mask" mode), plus the class code of dataset records."""
from abc import ABC, abstractmethod
from typing import List

import pycocotools.mask as mask_util
from detectron2.config import configurable

from ..data.pseudo_labels import ObjectLabel, decode_mask, primary_class_code
from .build import OBJECT_LABELER_REGISTRY


class ObjectLabeler(ABC):
    """Interface of stage-1 labelers.

    ``NAME`` is the ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE`` value that selects it.
    ``needs_image`` tells the runner whether to decode pixels (the given-mask labeler does not).
    ``__call__(image, record)``: ``image`` uint8 RGB (H, W, 3) or None, ``record`` a dataset dict
    (``file_name``, ``image_id``, ``height``, ``width``, optional ``objects``/``class_code``) ->
    list of :class:`ObjectLabel` with (H, W) bool masks, ``class_code`` and ``class_id`` set.
    ``settings()``: JSON-ready, what determines its outputs: its ``NAME`` and the constructor
    arguments (recorded by stage 1's resume guard; e.g. its model config and the weights'
    identity). Labelers are ``@configurable`` (keyword-only constructor arguments,
    ``from_config(cfg)`` reads the config), built by
    :func:`~part_distillation.labelers.build.build_labeler`.
    """

    NAME = ""
    needs_image: bool = True

    @abstractmethod
    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        ...

    def settings(self) -> dict:
        return {"NAME": self.NAME}


@OBJECT_LABELER_REGISTRY.register()
class GivenMaskLabeler(ObjectLabeler):
    """Objects are the dataset's annotated instances (``record["objects"]`` with RLE masks);
    ``class_code`` is the object's ``class_code``, else its ``class_name``."""

    NAME = "given"
    needs_image = False

    @configurable
    def __init__(self):
        pass

    @classmethod
    def from_config(cls, cfg) -> dict:
        """No arguments: the masks are the dataset's."""
        return {}

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
