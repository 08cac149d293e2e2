"""What the model labelers share: which predictions become objects, the image's own class names,
and batched inference with decoding / resizing in DataLoader worker processes."""
import json
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..data.images import read_image_rgb
from ..data.pseudo_labels import ObjectLabel
from ..utils.io import weights_identity
from .labeler import ObjectLabeler

logger = logging.getLogger(__name__)

CLASS_FILTERS = ("none", "image_class", "image_class_else_all")

# Pascal VOC class names -> COCO thing classes (the COCO models' vocabulary); others are equal
PASCAL_TO_COCO = {"aeroplane": "airplane", "motorbike": "motorcycle", "tvmonitor": "tv",
                  "diningtable": "dining table", "pottedplant": "potted plant", "sofa": "couch"}


def image_class_names(record: dict) -> List[str]:
    """The image-level labels of a dataset record: ``record["class_name"]`` (ImageNet-style) or
    the class names of its annotated objects, in order, without repeats."""
    names = [record["class_name"]] if record.get("class_name") else [o["class_name"] for o in record.get("objects", [])]
    return list(dict.fromkeys(names))


def select_predictions(class_names: Sequence[str], scores: np.ndarray, image_classes: Sequence[str],
                       class_filter: str, top_k: int) -> np.ndarray:
    """Indices of the predictions kept as objects, best score first.

    ``class_filter`` (PROPOSAL_GENERATION.OBJECT_CLASS_FILTER): ``none`` = top ``top_k`` by score;
    ``image_class`` = top ``top_k`` of those whose class is one of ``image_classes`` (Pascal names
    mapped to COCO ones), possibly none; ``image_class_else_all`` = the same, or the top ``top_k``
    of all when no prediction has the image's class (official Detic labelling).

    Raises:
        ValueError: unknown ``class_filter``.
    """
    if class_filter not in CLASS_FILTERS:
        raise ValueError(f"OBJECT_CLASS_FILTER must be one of {CLASS_FILTERS}, got {class_filter!r}")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if class_filter != "none":
        wanted = {c for n in image_classes for c in (n, PASCAL_TO_COCO.get(n, n))}
        own = order[[class_names[i] in wanted for i in order]] if len(order) else order
        if len(own) or class_filter == "image_class":
            order = own
    return order[:top_k]


def objects_from_instances(inst, class_names: Sequence[str], record: dict, class_filter: str,
                           top_k: int) -> List[ObjectLabel]:
    """detectron2 ``Instances`` at image resolution (``pred_classes``, ``scores``, ``pred_masks``
    (N, H, W), optional ``pred_boxes`` XYXY pixels) -> the kept :class:`ObjectLabel` s, best first:
    class name = predicted class, class code = the record's ``class_code`` (ImageNet wnid) if any."""
    names = [class_names[int(c)] for c in inst.pred_classes]
    keep = select_predictions(names, inst.scores.numpy(), image_class_names(record), class_filter, top_k)
    masks = inst.pred_masks.numpy().astype(bool)
    boxes = inst.pred_boxes.tensor.numpy() if inst.has("pred_boxes") else None
    code = record.get("class_code")
    return [ObjectLabel(class_name=names[i], mask=masks[i], class_code=code or names[i], score=float(inst.scores[i]),
                        bbox=None if boxes is None else [float(v) for v in boxes[i]]) for i in keep]


class _Images(torch.utils.data.Dataset):
    """``records[i]`` -> ``(i, transformed image, error)``; decoding and ``transform`` run in the
    DataLoader's worker processes. An unreadable image gives ``(i, None, message)``."""

    def __init__(self, records: Sequence[dict], transform: Callable[[np.ndarray], object]):
        self.records, self.transform = records, transform

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        try:
            image = read_image_rgb(self.records[i]["file_name"])
        except IOError as e:
            return i, None, str(e)
        return i, self.transform(image), None


class BatchedModelLabeler(ObjectLabeler):
    """A labeler whose model takes several images per forward.

    Subclasses implement ``transform(image uint8 (H, W, 3)) -> model input`` (runs in worker
    processes: keep it picklable) and ``predict(inputs, records) -> List[List[ObjectLabel]]``.
    ``__call__`` labels one image; :meth:`label_stream` labels many with a DataLoader
    (``batch_size`` images per forward, ``num_workers`` decoding processes).
    """

    batch_size: int = 1
    num_workers: int = 0

    def transform(self, image: np.ndarray):
        raise NotImplementedError

    def predict(self, inputs: list, records: List[dict]) -> List[List[ObjectLabel]]:
        raise NotImplementedError

    def __call__(self, image, record: dict) -> List[ObjectLabel]:
        return self.predict([self.transform(image)], [record])[0]

    def settings(self) -> dict:
        """``NAME``, ``top_k``, ``class_filter``, the labeler's own config (``model_cfg``, a
        detectron2 CfgNode) and the identity of its MODEL.WEIGHTS, for the stage's resume guard."""
        return {**super().settings(), "top_k": self.top_k, "class_filter": self.class_filter,
                "MODEL_CONFIG": json.loads(json.dumps(self.model_cfg, default=str)),
                "WEIGHTS_IDENTITY": weights_identity(self.model_cfg.MODEL.WEIGHTS)}

    def label_stream(self, records: Sequence[dict]) -> Iterable:
        """Yield ``(record, objects or an IOError)`` in the order of ``records``."""
        loader = torch.utils.data.DataLoader(_Images(records, self.transform), batch_size=self.batch_size,
                                             num_workers=self.num_workers, collate_fn=list)
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            preds = self.predict([x for _, x in good], [records[i] for i, _ in good]) if good else []
            by_index: Dict[int, object] = {i: p for (i, _), p in zip(good, preds)}
            for i, _, err in batch:
                yield records[i], by_index.get(i, IOError(err))


def check_weights(path: str, what: str, how: str) -> Optional[str]:
    """``path`` if it exists, None for ``""`` (random init, logged); else FileNotFoundError saying
    where the file goes and how to get it."""
    if not path:
        logger.warning("%s: MODEL.WEIGHTS is empty, the model is randomly initialised", what)
        return None
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weights not found at {path}. {how}")
    return path
