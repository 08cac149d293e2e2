"""Stages of the pipeline. Importing this package registers the stages of stages 1-3 in
:data:`~part_distillation.stages.base.STAGE_REGISTRY`."""
from .base import STAGE_REGISTRY, Stage, WorkItem, register_stage  # noqa: F401
from . import dense_crf, object_masks, pixel_grouping  # noqa: F401,E402  (register the stages)
