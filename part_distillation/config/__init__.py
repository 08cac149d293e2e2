"""Config keys of every stage, one ``add_<namespace>_config`` per namespace (the official layout).

Key names follow the official PartDistillation / Mask2Former configs so that their YAMLs and
command-line habits carry over (``PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS``,
``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES``, ...). :func:`setup_cfg` builds a config from a YAML and
overrides; :func:`get_part_distillation_cfg` is the config with every key declared.

Modules: :mod:`.maskformer2` (Mask2Former, Swin), :mod:`.stages` (stages 1-6), :mod:`.baselines`
(supervised, few-shot), :mod:`.datasets` (``CUSTOM_DATASETS``), :mod:`.runtime` (W&B, seeding,
EfficientNet), :mod:`.unread` (declared official keys nothing reads, with the reason),
:mod:`.config` (building and merging).
"""
from .baselines import add_fewshot_learning_config, add_supervised_model_config  # noqa: F401
from .config import (NAMESPACE_CONFIGS, get_part_distillation_cfg, plain_config, setup_cfg,  # noqa: F401
                     with_overrides)
from .datasets import add_custom_datasets_config  # noqa: F401
from .maskformer2 import add_maskformer2_config  # noqa: F401
from .runtime import add_efficientnet_config, add_seed_config, add_wandb_config, add_weights_config  # noqa: F401
from .stages import (add_dense_crf_config, add_part_distillation_config, add_part_ranking_config,  # noqa: F401
                     add_pixel_grouping_config, add_proposal_generation_config, add_proposal_learning_config,
                     add_stage_run_keys)
from .unread import ACCEPTED_UNREAD_KEYS  # noqa: F401
