"""The stage registry and its builder (detectron2 ``modeling/meta_arch/build.py`` style).

Stages register under their official name (``Stage.NAME``: ``object_masks``, ``proposal_generation``,
``dcrf``, ``proposal_learning``, ``part_ranking``); the deprecated names
(:data:`~part_distillation.data.pseudo_labels.DEPRECATED_STAGE_NAMES`: ``pixel_grouping``,
``dense_crf``, ``part_proposals``) resolve to them with a ``FutureWarning``.
"""
from detectron2.utils.registry import Registry

from ..data.pseudo_labels import official_stage_name
from ..utils.registry import get_by_name, has_name

STAGE_REGISTRY = Registry("STAGE")
STAGE_REGISTRY.__doc__ = """Stage classes; looked up by ``Stage.NAME`` (``object_masks``, ``proposal_generation``, ``dcrf``, ...)."""


def register_stage(cls):
    """Class decorator: register a :class:`~part_distillation.stages.stage.Stage` subclass
    (``STAGE_REGISTRY.register``), selectable by its ``NAME``.

    Raises:
        ValueError: another registered stage has the same ``NAME``.
    """
    if has_name(STAGE_REGISTRY, cls.NAME):
        raise ValueError(f"a stage named {cls.NAME!r} is already registered")
    STAGE_REGISTRY.register(cls)
    return cls


def stage_class(name: str):
    """The registered stage class ``name`` (a deprecated name warns and gives the official stage).

    Raises:
        KeyError: ``name`` is not registered (lists the registered names).
    """
    return get_by_name(STAGE_REGISTRY, official_stage_name(name), what="stage")


def build_stage(name: str, cfg, output_dir: str, **kwargs):
    """The registered stage ``name`` built for ``cfg`` and ``output_dir``; unknown names raise
    ``KeyError`` listing the known ones."""
    return stage_class(name)(cfg, output_dir, **kwargs)
