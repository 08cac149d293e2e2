"""Stage-1 object labelers: the dataset's given masks (``OBJECT_MASK_TYPE: given``), any detectron2
instance-segmentation model (``detectron2``, e.g. the COCO Mask2Former or a model-zoo Mask R-CNN)
and Detic (``detic``, optional extra). Importing this package registers them in
:data:`~part_distillation.labelers.build.OBJECT_LABELER_REGISTRY`."""
from .build import OBJECT_LABELER_REGISTRY, build_labeler, is_labeler_name  # noqa: F401
from .common import image_class_names  # noqa: F401
from .labeler import GivenMaskLabeler, ObjectLabeler, record_class_code  # noqa: F401
from . import detectron2_model, detic  # noqa: F401,E402  (registration)
