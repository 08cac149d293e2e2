"""Building the project config: every key declared, YAML ``_BASE_`` inheritance and ``KEY VALUE``
overrides, with unknown keys reported by name.

detectron2's ``CfgNode`` rejects unknown keys on ``merge_from_file`` / ``merge_from_list`` with
``KeyError: 'Non-existent config key: ...'``; :func:`get_part_distillation_cfg` declares every key
so that a misspelt key in a YAML or on the command line fails with that error naming the key.
"""
import contextlib
import difflib
import logging
import os
import warnings
import re

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .baselines import add_fewshot_learning_config, add_supervised_model_config
from .datasets import add_custom_datasets_config
from .maskformer2 import add_maskformer2_config
from .runtime import add_efficientnet_config, add_seed_config, add_wandb_config, add_weights_config
from .stages import (add_dense_crf_config, add_part_distillation_config, add_part_ranking_config,
                     add_pixel_grouping_config, add_proposal_generation_config, add_proposal_learning_config)

# every namespace's declaration, in the order they are added
NAMESPACE_CONFIGS = (
    add_maskformer2_config, add_wandb_config, add_proposal_generation_config, add_pixel_grouping_config,
    add_dense_crf_config, add_proposal_learning_config, add_part_ranking_config, add_part_distillation_config,
    add_custom_datasets_config, add_supervised_model_config, add_fewshot_learning_config, add_seed_config,
    add_efficientnet_config, add_weights_config,
)


def with_overrides(cfg: CN, overrides) -> CN:
    """A frozen copy of ``cfg`` with ``KEY VALUE`` ``overrides`` merged (``cfg`` is unchanged)."""
    c = cfg.clone()
    c.defrost()
    c.merge_from_list(list(overrides))
    c.freeze()
    return c


def plain_config(node, exclude=()) -> object:
    """A ``CfgNode`` (sub)tree as JSON-ready nested dicts (keys sorted) and lists, leaving out keys
    named in ``exclude`` at any depth (e.g. the stages' run keys). Used for recorded settings,
    ``metrics.json`` and the W&B run config."""
    if isinstance(node, dict):
        return {k: plain_config(v, exclude) for k, v in sorted(node.items()) if k not in exclude}
    if isinstance(node, (list, tuple)):
        return [plain_config(v, exclude) for v in node]
    return node


def get_part_distillation_cfg() -> CN:
    """detectron2 defaults + every namespace of :data:`NAMESPACE_CONFIGS`; ``new_allowed`` stays off so
    that an unknown key is a ``KeyError`` naming it."""
    cfg = get_cfg()
    for add in NAMESPACE_CONFIGS:
        add(cfg)
    return cfg


# Deprecated config paths -> the official-name paths: loading one warns (the file is a stub whose
# _BASE_ is the new path).
DEPRECATED_CONFIG_PATHS = {
    "configs/part_proposal/official/": "configs/proposal_learning/",
    "configs/part_proposal/Base-PartProposal.yaml": "configs/proposal_learning/Base-ProposalLearning.yaml",
    "configs/part_proposal/": "configs/proposal_learning/",
    "configs/supervised/Base-Supervised.yaml": "configs/supervised_learning/Base-SupervisedLearning.yaml",
    "configs/supervised/": "configs/supervised_learning/",
    "configs/fewshot/": "configs/fewshot_learning/",
    "configs/pixel_grouping/R50.yaml": "configs/proposal_generation/R50.yaml",
    "configs/pixel_grouping/swin_L.yaml": "configs/proposal_generation/swin_L.yaml",
    "configs/pixel_grouping/effnet_lite0_cpu.yaml": "configs/proposal_generation/effnet_lite0_cpu.yaml",
    "configs/Base-PixelGrouping.yaml": "configs/proposal_generation/Base-ProposalGeneration.yaml",
    "configs/labelers/": "configs/detic/",
}


def warn_deprecated_config_path(config_file: str) -> None:
    """``FutureWarning`` naming the new path when ``config_file`` is one of
    :data:`DEPRECATED_CONFIG_PATHS` (a file or a folder prefix, matched on the path's tail)."""
    path = config_file.replace(os.sep, "/")
    for old, new in DEPRECATED_CONFIG_PATHS.items():
        i = path.find(old)
        if i >= 0 and (i == 0 or path[i - 1] == "/"):
            newpath = new if not old.endswith("/") else new + path[i + len(old):]
            warnings.warn(f"config path {config_file} is deprecated: use {newpath}", FutureWarning, stacklevel=3)
            return


# Official weights paths -> the canonical ones (weights/README.md): the official per-stage configs
# name weights/m2f/..., the official training docs weights/mask2former/... (one file, two names).
WEIGHTS_PATH_ALIASES = {"weights/m2f/": "weights/mask2former/"}


def canonical_weights_path(path: str) -> str:
    """``path`` with an official alias prefix (:data:`WEIGHTS_PATH_ALIASES`, at the start or after
    a ``/``) replaced by the canonical one, when ``path`` itself does not exist and the canonical
    file does (logged); else ``path`` unchanged."""
    if not path or os.path.exists(path):
        return path
    for alias, canonical in WEIGHTS_PATH_ALIASES.items():
        i = path.find(alias)
        if i >= 0 and (i == 0 or path[i - 1] == "/"):
            new = path[:i] + canonical + path[i + len(alias):]
            if os.path.exists(new):
                logging.getLogger(__name__).info("MODEL.WEIGHTS %s: official path, using the canonical %s", path, new)
                return new
    return path


def setup_cfg(config_file: str = "", opts=None, freeze: bool = True) -> CN:
    """Build the config from a YAML (with ``_BASE_`` inheritance) and ``KEY VALUE`` overrides.

    Raises:
        KeyError: naming the key, when the YAML or an override uses an undeclared key.
        FileNotFoundError: when ``config_file`` does not exist.
    """
    cfg = get_part_distillation_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        warn_deprecated_config_path(config_file)
        with _named_key_errors(cfg, config_file):
            cfg.merge_from_file(config_file)
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {list(opts)}")
        with _named_key_errors(cfg, "command line"):
            cfg.merge_from_list(list(opts))
    cfg.MODEL.WEIGHTS = canonical_weights_path(cfg.MODEL.WEIGHTS)
    if freeze:
        cfg.freeze()
    return cfg


def _all_keys(node: CN, prefix: str = ""):
    for k, v in node.items():
        yield prefix + k
        if isinstance(v, CN):
            yield from _all_keys(v, prefix + k + ".")


@contextlib.contextmanager
def _named_key_errors(cfg: CN, source: str):
    """yacs reports unknown keys as ``KeyError`` (files) or ``AssertionError`` (lists); turn both
    into a ``KeyError`` that names the key, where it came from and the closest declared keys."""
    try:
        yield
    except (KeyError, AssertionError) as e:
        m = re.search(r"Non-existent (?:config )?key: ([\w.]+)", str(e))
        if not m:
            raise
        key = m.group(1)
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown config key '{key}' in {source}{hint}") from None
