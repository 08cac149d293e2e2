"""Supervised part-segmentation baseline of PartDistillation (Cho et al., CVPR 2023, Sec. 4,
"supervised" / "few-shot" comparisons): Mask2Former trained on ground-truth parts.

Registered in detectron2's ``META_ARCH_REGISTRY`` as ``SupervisedModel`` (official
``MODEL.META_ARCHITECTURE`` name). It is :class:`ProposalModel` (same backbone, ``MaskFormerHead``,
checkpoint keys, freezing, object-mask handling) with K = MODEL.SEM_SEG_HEAD.NUM_CLASSES part
classes (official Pascal-Part config: 50) and these official switches:

* SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING: every part is trained as class 0 (part proposals from
  ground truth instead of stage-3 pseudo-labels);
* SUPERVISED_MODEL.CLASS_AGNOSTIC_INFERENCE (or class-agnostic learning): inference returns
  :class:`ProposalModel`'s class-agnostic ``proposals`` / ``part_seg`` (foreground probability =
  1 - p(no-object)), evaluated with AR@K and best-match mIoU;
* SUPERVISED_MODEL.USE_PER_PIXEL_LABEL: class-agnostic proposals as non-overlapping per-pixel
  segments (ProposalModel's ``"per_pixel"`` output mode, keeping every segment) instead of the
  top-k overlapping masks;
* SUPERVISED_MODEL.APPLY_MASKING_WITH_OBJECT_MASK: mask probabilities multiplied by the object
  mask before proposal scoring (as PROPOSAL_LEARNING's key of the same name).

Otherwise (per-class inference) each object gets a per-pixel part-class map: Mask2Former's
semantic inference ``argmax_k sum_q p_q(k) * sigmoid(m_q)`` (``p_q`` the softmax over the K
classes without no-object, ``m_q`` the mask logits bilinearly resized to the original image size),
evaluated only inside the object mask.

Weights: MODEL.WEIGHTS may be a PartDistillation / SupervisedModel checkpoint or a Mask2Former
one; detectron2's ``DetectionCheckpointer`` skips entries whose shapes differ (e.g. the
``sem_seg_head.predictor.class_embed`` of an 80-class COCO model), which keep their fresh
initialisation, and logs them.
"""
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances

from .maskformer_model import MaskFormer
from .proposal_model import ProposalModel

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class SupervisedModel(ProposalModel):
    """Mask2Former on ground-truth parts (see module docstring).

    Training inputs: as :class:`ProposalModel`, with ``instances.gt_classes`` (T,) int64 part-class
    ids in [0, K) (from :class:`part_distillation.data.supervised_dataset.SupervisedDatasetMapper`).
    Training returns the weighted losses.

    Inference inputs: ``image``, ``object_masks`` (O, h, w) bool at the input size, ``height`` /
    ``width`` the original size. Returns per image either ``{"part_sem_seg": [O x (H, W) int64]}``
    (part-class id inside the object, -1 outside) or, class-agnostic, ProposalModel's
    ``{"proposals", "part_seg"}``.
    """

    @configurable
    def __init__(self, *, num_classes: int, class_agnostic_learning: bool,
                 class_agnostic_inference: bool, **kwargs):
        """Args:
            num_classes: K part classes of the head (MODEL.SEM_SEG_HEAD.NUM_CLASSES).
            class_agnostic_learning: train every part as class 0.
            class_agnostic_inference: return class-agnostic proposals (implied by
                ``class_agnostic_learning``).
            kwargs: :class:`ProposalModel` arguments.
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.class_agnostic_learning = class_agnostic_learning
        self.class_agnostic_inference = class_agnostic_inference or class_agnostic_learning

    @classmethod
    def from_config(cls, cfg) -> dict:
        """:meth:`MaskFormer.common_config` (criterion with K = MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        plus SUPERVISED_MODEL.{CLASS_AGNOSTIC_LEARNING, CLASS_AGNOSTIC_INFERENCE,
        USE_PER_PIXEL_LABEL, APPLY_MASKING_WITH_OBJECT_MASK}."""
        sm = cfg.SUPERVISED_MODEL
        return {
            **MaskFormer.common_config(cfg),
            "apply_object_mask": sm.APPLY_MASKING_WITH_OBJECT_MASK,
            "output_mode": "per_pixel" if sm.USE_PER_PIXEL_LABEL else "proposals",
            "min_area_ratio": 0.0,  # per-pixel proposals keep every segment
            "min_score": -1.0,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "class_agnostic_learning": sm.CLASS_AGNOSTIC_LEARNING,
            "class_agnostic_inference": sm.CLASS_AGNOSTIC_INFERENCE,
        }

    def target_labels(self, instances: Instances, count: int) -> torch.Tensor:
        """(T,) int64 ``instances.gt_classes`` (zeros with class-agnostic learning).

        Raises:
            ValueError: a class id outside [0, K).
        """
        if self.class_agnostic_learning:
            return super().target_labels(instances, count)
        labels = instances.gt_classes.to(self.device, dtype=torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"gt_classes {labels.tolist()} outside [0, {self.num_classes}) "
                             "(MODEL.SEM_SEG_HEAD.NUM_CLASSES)")
        return labels

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Class-agnostic: :meth:`ProposalModel.inference`. Per class: per object (H, W) int64
        part-class map, -1 outside the object (CPU tensors).

        Raises:
            KeyError: an input lacks ``object_masks``; ValueError: their size is not the input's.
        """
        if self.class_agnostic_inference:
            return super().inference(batched_inputs, images, outputs)
        class_probs = outputs["pred_logits"].float().softmax(-1)[..., :-1]  # (B, Q, K)
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            object_masks = self.input_object_masks(x, (h, w))
            out_size = (int(x.get("height", h)), int(x.get("width", w)))
            # mask logits: (Q, h', w') at 1/4 of the padded input -> padded input -> crop -> original
            logits = F.interpolate(outputs["pred_masks"][i: i + 1].float(), size=images.tensor.shape[-2:],
                                   mode="bilinear", align_corners=False)[:, :, :h, :w]
            probs = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)[0].sigmoid()
            full_objects = F.interpolate(object_masks[None].float(), size=out_size, mode="nearest")[0] > 0.5
            maps = []
            for obj in full_objects:
                seg = torch.full(out_size, -1, dtype=torch.int64, device=self.device)
                if obj.any():
                    scores = class_probs[i].T @ probs[:, obj]  # (K, N) semantic scores of the object's pixels
                    seg[obj] = scores.argmax(0)
                maps.append(seg.cpu())
            results.append({"part_sem_seg": maps})
        return results
