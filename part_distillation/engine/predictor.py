"""Run a trained part model on one image with given object masks, detectron2 ``DefaultPredictor``
style: ``PartPredictor(cfg)`` builds ``cfg``'s model, loads MODEL.WEIGHTS as ``tools/train_net.py
--eval-only`` does, and ``predictor(image_bgr, object_masks, object_classes)`` returns the parts::

    predictor = PartPredictor(setup_cfg("configs/part_distillation/tiny_cpu.yaml",
                                        ["MODEL.WEIGHTS", "output/part_distillation/tiny_cpu/model_final.pth"]))
    parts = predictor(cv2.imread("cat.jpg"), object_masks, object_classes)
    parts["part_seg"][0]   # (H, W) int64 label map of the first object

Models: the stage-4 ``ProposalModel`` (class-agnostic segments) and the stage-6
``PartDistillationModel`` (segments labelled with the object class's K part classes). Where the
object masks come from is the caller's choice: ``demo/demo.py`` composes a stage-1 labeler
(:mod:`part_distillation.labelers`) or given mask files with this predictor.
:meth:`PartPredictor.to_pseudo_label` turns the output into the project's pseudo-label format.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..data.proposal_dataset import transform_masks
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel
from ..modeling.meta_arch.part_distillation_model import PartDistillationModel
from .trainer import load_eval_weights

# the pseudo-label ``stage`` of each model's predictions (official stage names)
PREDICTION_STAGES = {"ProposalModel": "proposal_learning", "PartDistillationModel": "part_distillation"}


class PartPredictor:
    """Stage-4 or stage-6 model of ``cfg`` in eval mode with MODEL.WEIGHTS loaded.

    Loading is :func:`~part_distillation.engine.trainer.load_eval_weights` (the ``--eval-only``
    path): official and project checkpoints load through detectron2's checkpointer, and a
    checkpoint that leaves parameters outside MODEL.WEIGHTS_ALLOWED_MISSING at their
    initialisation raises ``IncompleteWeightsError``; an empty MODEL.WEIGHTS keeps the
    initialised network (fvcore logs it).

    Attributes:
        model: the network; ``labelled``: True for the stage-6 model (part labels are part classes
            of the object's class), False for stage 4 (segment ids mean nothing across images);
        stage: the pseudo-label stage name of its predictions (:data:`PREDICTION_STAGES`).

    Raises:
        ValueError: MODEL.META_ARCHITECTURE builds neither model.
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        if self.cfg.MODEL.META_ARCHITECTURE not in PREDICTION_STAGES:
            raise ValueError(f"PartPredictor runs {sorted(PREDICTION_STAGES)}, not MODEL.META_ARCHITECTURE "
                             f"{self.cfg.MODEL.META_ARCHITECTURE!r}")
        self.model = build_model(self.cfg)
        load_eval_weights(self.cfg, self.model, self.cfg.MODEL.WEIGHTS)
        self.model.eval()
        self.labelled = isinstance(self.model, PartDistillationModel)
        self.stage = PREDICTION_STAGES[self.cfg.MODEL.META_ARCHITECTURE]
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, original_image: np.ndarray, object_masks: Sequence[np.ndarray],
                 object_classes: Optional[Sequence[int]] = None) -> Dict[str, List]:
        """Parts of each object of one image.

        Args:
            original_image: (H, W, 3) uint8 in BGR order (``cv2.imread``; as detectron2's
                ``DefaultPredictor``), converted to INPUT.FORMAT.
            object_masks: N (H, W) bool masks at the image's resolution (or an (N, H, W) array).
            object_classes: stage 6: N ints, each object's index into the class head (0 <= c <
                PART_DISTILLATION.NUM_OBJECT_CLASSES; -1: class unknown to the model, no parts);
                required. Stage 4: ignored.

        Returns:
            ``{"part_seg": N (H, W) int64 tensors, "proposals": N dicts}``, the model's outputs
            (:class:`~part_distillation.modeling.meta_arch.proposal_model.ProposalModel` /
            :class:`~part_distillation.modeling.meta_arch.part_distillation_model.PartDistillationModel`):
            ``part_seg`` 0 = no part, ``v >= 1`` = segment ``v`` (stage 6: part class ``v - 1``),
            and ``proposals[i]["pred_masks"]`` cleared outside the full-resolution object mask.

        Raises:
            ValueError: a mask of another size than the image, or stage 6 without one class per mask.
        """
        image = np.asarray(original_image)
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        masks = [np.asarray(m, dtype=bool) for m in object_masks]
        for i, m in enumerate(masks):
            if m.shape != (height, width):
                raise ValueError(f"object mask {i} is {m.shape}, the image {(height, width)}")
        aug = T.AugInput(np.ascontiguousarray(image))
        transforms = T.AugmentationList([self.aug])(aug)
        x = {"image": torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
             "object_masks": transform_masks(masks, transforms, aug.image.shape[:2]),
             "height": height, "width": width}
        if self.labelled:
            if object_classes is None or len(object_classes) != len(masks):
                raise ValueError(f"the stage-6 model needs one object class per mask: {len(masks)} masks, "
                                 f"classes {None if object_classes is None else list(object_classes)}")
            x["object_classes"] = torch.as_tensor([int(c) for c in object_classes], dtype=torch.int64)
        if not masks:
            return {"part_seg": [], "proposals": []}
        with torch.no_grad():
            out = self.model([x])[0]
        for seg, props, m in zip(out["part_seg"], out["proposals"], masks):
            inside = torch.from_numpy(m)
            seg[~inside] = 0
            props["pred_masks"] = props["pred_masks"] & inside
        return {"part_seg": out["part_seg"], "proposals": out["proposals"]}


    def to_pseudo_label(self, file_name: str, image_id: str, objects: Sequence[ObjectLabel],
                        outputs: Dict) -> ImagePseudoLabel:
        """The pseudo-label (:mod:`part_distillation.data.pseudo_labels`, stage :attr:`stage`) of
        one image's predictions.

        Args:
            file_name, image_id: the image; objects: its N objects (full-resolution (H, W) masks
                and class fields, as given to :meth:`__call__`, in that order); outputs: the
                result of :meth:`__call__`.

        Returns:
            one object per input object, with one part per distinct value ``v > 0`` of its
            ``part_seg``: mask ``part_seg == v``, ``label`` ``v - 1`` (stage 6) or null (stage 4),
            ``score`` that segment's score (1.0 where the model gives none: stage 4 with
            overlapping proposals).

        Raises:
            ValueError: no object, or ``outputs`` without one label map per object.
        """
        if not objects or len(outputs["part_seg"]) != len(objects):
            raise ValueError(f"{len(outputs['part_seg'])} label maps for {len(objects)} objects "
                             "(at least one object needed)")
        out = []
        for obj, seg, props in zip(objects, outputs["part_seg"], outputs["proposals"]):
            seg = seg.numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
            values = [int(v) for v in np.unique(seg) if v > 0]
            parts = [PartLabel(seg == v, v - 1 if self.labelled else None, self._score(props, v))
                     for v in values]
            out.append(ObjectLabel(obj.class_name, obj.mask, obj.class_code, obj.score, obj.bbox,
                                   parts, obj.class_id))
        height, width = objects[0].mask.shape
        return ImagePseudoLabel(file_name, image_id, int(height), int(width), self.stage, out)

    def _score(self, proposals: Dict[str, torch.Tensor], value: int) -> float:
        """Score of segment ``value`` of a ``part_seg``: stage 6 that of the segment labelled
        ``value - 1``; stage 4 per-pixel output that of the ``value``-th proposal; else 1.0."""
        scores = proposals["scores"].tolist()
        if self.labelled:
            return float(dict(zip(proposals["labels"].tolist(), scores)).get(value - 1, 1.0))
        if self.model.output_mode == "per_pixel" and value - 1 < len(scores):
            return float(scores[value - 1])
        return 1.0
