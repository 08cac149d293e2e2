"""Stage 1: object masks per image, written as ``object_masks`` pseudo-labels.

An :class:`ObjectLabeler` turns an image (+ its dataset record, which may carry a class name or
ground-truth masks) into :class:`~part_distillation.data.pseudo_labels.ObjectLabel` s. Labelers are
registered in :data:`~part_distillation.labelers.build.OBJECT_LABELER_REGISTRY` under the names
``PROPOSAL_GENERATION.OBJECT_MASK_TYPE`` selects: ``given`` (the dataset's instance masks: the
official "given mask" mode),
``detectron2`` (any detectron2 instance-segmentation model, e.g. the COCO Mask2Former) and
``detic`` (open vocabulary, prompted with the partition's class names) in
:mod:`part_distillation.labelers`.
"""
import logging
from typing import List, Optional

from detectron2.config import configurable

from ..data.images import read_image_or_skip
from ..data.pseudo_labels import ImagePseudoLabel
from ..labelers import ObjectLabeler, build_labeler, image_class_names, is_labeler_name, record_class_code
from ..utils.sharding import SkipItem
from .build import register_stage
from .partition import WorkItem
from .stage import Stage

logger = logging.getLogger(__name__)


@register_stage
class ObjectMasksStage(Stage):
    """Stage 1 over dataset dicts (``run(records)``): one ``object_masks`` pseudo-label per image.
    Objects with fewer than ``min_object_area`` pixels (empty masks always) or a score below
    ``save_score_threshold`` are dropped and listed in ``skipped_objects`` (``index`` into the
    labeler's output); an unreadable image is a counted skip.

    Args:
        output_dir, run_options: see :class:`~part_distillation.stages.stage.Stage`.
        labeler: the :class:`ObjectLabeler` (from the config:
            :func:`~part_distillation.labelers.build.build_labeler`, ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``).
        min_object_area: pixels at full resolution (``PROPOSAL_GENERATION.MIN_OBJECT_AREA``).
        save_score_threshold: ``PROPOSAL_GENERATION.SAVE_SCORE_THRESHOLD``.
    """

    NAME = "object_masks"
    CONFIG_NAMESPACE = "PROPOSAL_GENERATION"
    RECORDED_ARGUMENTS = ("labeler", "min_object_area", "save_score_threshold")

    @configurable
    def __init__(self, *, output_dir: str, run_options, labeler: ObjectLabeler, min_object_area: int,
                 save_score_threshold: float):
        super().__init__(output_dir=output_dir, run_options=run_options)
        self.labeler, self.min_object_area = labeler, int(min_object_area)
        self.save_score_threshold = float(save_score_threshold)
        self._stream = None

    @classmethod
    def from_config(cls, cfg, output_dir: str, labeler: Optional[ObjectLabeler] = None) -> dict:
        """``labeler`` (default: :func:`build_labeler` of ``cfg``), PROPOSAL_GENERATION.{MIN_OBJECT_AREA,
        SAVE_SCORE_THRESHOLD}."""
        pg = cfg.PROPOSAL_GENERATION
        return dict(super().from_config(cfg, output_dir), labeler=labeler or build_labeler(cfg),
                    min_object_area=pg.MIN_OBJECT_AREA, save_score_threshold=pg.SAVE_SCORE_THRESHOLD)

    def prepare(self, mine: List[WorkItem], todo: List[WorkItem]) -> None:
        """Model labelers: one with ``set_classes`` (Detic) gets the sorted image-level class names
        of this partition's images (all of them, so a resumed run prompts the same vocabulary); one
        with ``label_stream`` labels the unfinished images in batches, decoded by DataLoader
        workers, which :meth:`process` consumes in the same order (so stage 1 runs with one
        worker process)."""
        if hasattr(self.labeler, "set_classes"):
            self.labeler.set_classes(sorted({n for it in mine for n in image_class_names(it.source)}))
        if hasattr(self.labeler, "label_stream"):
            self._stream = iter(self.labeler.label_stream([it.source for it in todo]))

    @classmethod
    def validate_config(cls, cfg) -> None:
        super().validate_config(cfg)
        if not is_labeler_name(cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE):
            build_labeler(cfg)  # raises naming the registered labelers

    @staticmethod
    def default_input(cfg):
        return cfg.PROPOSAL_GENERATION.DATASET_NAME or None

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
        kept, skipped = [], []
        for i, obj in enumerate(objects):
            if obj.mask.shape != (record["height"], record["width"]):
                raise ValueError(f"object mask {obj.mask.shape} != image size {(record['height'], record['width'])}")
            area = int(obj.mask.sum())
            reason = ("empty object mask" if area == 0 else
                      "smaller than MIN_OBJECT_AREA" if area < self.min_object_area else
                      "score below SAVE_SCORE_THRESHOLD" if obj.score < self.save_score_threshold else None)
            if reason:
                skipped.append({"index": i, "reason": reason, "stage": self.NAME})
            else:
                kept.append(obj)
        label = ImagePseudoLabel(record["file_name"], item.image_id, record["height"], record["width"],
                                 self.NAME, kept, skipped, {"OBJECT_MASK_TYPE": self.labeler.NAME},
                                 item.class_code)
        counts = {"objects": len(kept), "objects_skipped_empty": sum(s["reason"] == "empty object mask" for s in skipped)}
        counts["objects_dropped_small_or_low_score"] = len(skipped) - counts["objects_skipped_empty"]
        return label, counts
