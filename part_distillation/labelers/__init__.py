"""Stage-1 object labelers that run a detector: any detectron2 instance-segmentation model
(``OBJECT_MASK_TYPE: detectron2``, e.g. the COCO Mask2Former or a model-zoo Mask R-CNN) and
Detic (``OBJECT_MASK_TYPE: detic``, optional extra). Importing this package registers them in
:data:`part_distillation.stages.object_masks.OBJECT_LABELER_REGISTRY`."""
from . import detectron2_model, detic  # noqa: F401  (registration)
