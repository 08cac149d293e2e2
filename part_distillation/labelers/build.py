"""The stage-1 labeler registry and its builder (detectron2 ``modeling/meta_arch/build.py`` style).

A labeler is an :class:`~part_distillation.labelers.labeler.ObjectLabeler` subclass registered
with ``@OBJECT_LABELER_REGISTRY.register()``; its ``NAME`` is the value of
``PROPOSAL_GENERATION.OBJECT_MASK_TYPE`` that selects it (``given``, ``detectron2``, ``detic``).
"""
from detectron2.utils.registry import Registry

from ..utils.registry import get_by_name, has_name

OBJECT_LABELER_REGISTRY = Registry("OBJECT_LABELER")
OBJECT_LABELER_REGISTRY.__doc__ = """Stage-1 labelers; selected by ``NAME`` = ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``."""


def is_labeler_name(name: str) -> bool:
    """Whether ``name`` selects a registered labeler."""
    return has_name(OBJECT_LABELER_REGISTRY, name)


def build_labeler(cfg):
    """The labeler named by ``PROPOSAL_GENERATION.OBJECT_MASK_TYPE``, built from ``cfg``.

    Raises:
        KeyError: an unknown name (lists the registered ones).
    """
    name = cfg.PROPOSAL_GENERATION.OBJECT_MASK_TYPE
    return get_by_name(OBJECT_LABELER_REGISTRY, name, what="OBJECT_MASK_TYPE")(cfg)
