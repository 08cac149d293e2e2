"""The stage registry and its builder (detectron2 ``modeling/meta_arch/build.py`` style).

Stages register under their official name (``Stage.NAME``: ``object_masks``, ``proposal_generation``,
``dcrf``, ``proposal_learning``, ``part_ranking``); the names used before
(:data:`~part_distillation.data.pseudo_labels.DEPRECATED_STAGE_NAMES`: ``pixel_grouping``,
``dense_crf``, ``part_proposals``) resolve to them with a ``FutureWarning``.
"""
from detectron2.utils.registry import Registry

from ..data.pseudo_labels import official_stage_name

STAGE_REGISTRY = Registry("STAGE")
STAGE_REGISTRY.__doc__ = """Stages by ``Stage.NAME`` (``object_masks``, ``proposal_generation``, ``dcrf``, ...)."""


def register_stage(cls):
    """Class decorator: register a :class:`~part_distillation.stages.stage.Stage` subclass under its ``NAME``."""
    STAGE_REGISTRY._do_register(cls.NAME, cls)
    return cls


def stage_class(name: str):
    """The registered stage class ``name`` (a deprecated name warns and gives the official stage).

    Raises:
        KeyError: ``name`` is not registered (lists the registered names).
    """
    name = official_stage_name(name)
    if name not in STAGE_REGISTRY:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(k for k, _ in STAGE_REGISTRY)}")
    return STAGE_REGISTRY.get(name)


def build_stage(name: str, cfg, output_dir: str, **kwargs):
    """The registered stage ``name`` built for ``cfg`` and ``output_dir``; unknown names raise
    ``KeyError`` listing the known ones."""
    return stage_class(name)(cfg, output_dir, **kwargs)
