"""The stage registry and its builder (detectron2 ``modeling/meta_arch/build.py`` style).

Stages register under their official name (``Stage.NAME``: ``object_masks``, ``proposal_generation``,
``dcrf``, ``proposal_learning``, ``part_ranking``); the deprecated names
(:data:`~part_distillation.data.pseudo_labels.DEPRECATED_STAGE_NAMES`: ``pixel_grouping``,
``dense_crf``, ``part_proposals``) resolve to them with a ``FutureWarning``.

Stage 2's groupers register in :data:`GROUPER_REGISTRY` under their ``PROPOSAL_GENERATION.GROUPING``
name (``kmeans``, ``kmeans_rgbxy``, ``grid``: :mod:`.proposal_generation`); :func:`build_segmenter`
builds the configured one.
"""
from typing import Callable

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


GROUPER_REGISTRY = Registry("PIXEL_GROUPER")
GROUPER_REGISTRY.__doc__ = """Stage-2 segment functions by ``PROPOSAL_GENERATION.GROUPING`` name: each
entry is called as ``fn(cfg, device)`` and returns ``segment_fn(image, masks, image_id) -> list of
int32 label maps (or None per object)``."""


def build_segmenter(cfg, device: str = None) -> Callable:
    """The stage-2 segment function ``(image, masks, image_id) -> label maps`` of
    :data:`GROUPER_REGISTRY` named by ``PROPOSAL_GENERATION.GROUPING`` (``kmeans``,
    ``kmeans_rgbxy``, ``grid``).

    Raises:
        ValueError: an unregistered name (the message lists the registered ones).
    """
    name = cfg.PROPOSAL_GENERATION.GROUPING
    if name not in GROUPER_REGISTRY:
        raise ValueError(f"PROPOSAL_GENERATION.GROUPING must be one of "
                         f"{sorted(k for k, _ in GROUPER_REGISTRY)}, got '{name}'")
    return GROUPER_REGISTRY.get(name)(cfg, device or cfg.MODEL.DEVICE)
