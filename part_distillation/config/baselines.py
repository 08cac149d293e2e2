"""The supervised and few-shot baselines (official ``add_supervised_model_config`` and
``add_fewshot_learning_config``; read by ``SupervisedModel`` and
:mod:`part_distillation.data.supervised_dataset`)."""
from detectron2.config import CfgNode as CN


def add_supervised_model_config(cfg: CN) -> None:
    """``SUPERVISED_MODEL.*``: how the supervised model trains and infers."""
    sm = cfg.SUPERVISED_MODEL = CN()
    sm.USE_PER_PIXEL_LABEL = False  # class-agnostic inference: per-pixel segments, not top-k masks
    sm.APPLY_MASKING_WITH_OBJECT_MASK = True
    sm.CLASS_AGNOSTIC_LEARNING = False  # train every GT part as class 0 (supervised proposals)
    sm.CLASS_AGNOSTIC_INFERENCE = False  # output class-agnostic proposals (AR / best-match mIoU)


def add_fewshot_learning_config(cfg: CN) -> None:
    """``FEWSHOT_LEARNING.*``: the share of labelled training images."""
    fs = cfg.FEWSHOT_LEARNING = CN()
    fs.LABEL_PERCENTAGE = 100  # training splits keep this % of images (seed-1234 shuffle, official)
