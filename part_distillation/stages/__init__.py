"""Stages of the pipeline. Importing this package registers the stages of stages 1-3, the stage-4 predictor and stage 5 in
:data:`~part_distillation.stages.build.STAGE_REGISTRY`."""
from .build import STAGE_REGISTRY, build_stage, register_stage  # noqa: F401
from .partition import WorkItem  # noqa: F401
from .stage import PseudoLabelInputStage, Stage  # noqa: F401
from . import dense_crf, object_masks, proposal_generation, proposal_learning, part_ranking  # noqa: F401,E402  (register the stages)
