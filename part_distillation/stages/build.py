"""The stage registry and its builder (detectron2 ``modeling/meta_arch/build.py`` style)."""
from detectron2.utils.registry import Registry

STAGE_REGISTRY = Registry("STAGE")
STAGE_REGISTRY.__doc__ = """Stages by ``Stage.NAME`` (``object_masks``, ``pixel_grouping``, ``dense_crf``, ...)."""


def register_stage(cls):
    """Class decorator: register a :class:`~part_distillation.stages.stage.Stage` subclass under its ``NAME``."""
    STAGE_REGISTRY._do_register(cls.NAME, cls)
    return cls


def stage_class(name: str):
    """The registered stage class ``name``.

    Raises:
        KeyError: ``name`` is not registered (lists the registered names).
    """
    if name not in STAGE_REGISTRY:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(k for k, _ in STAGE_REGISTRY)}")
    return STAGE_REGISTRY.get(name)


def build_stage(name: str, cfg, output_dir: str, **kwargs):
    """The registered stage ``name``; unknown names raise ``KeyError`` listing the known ones."""
    return stage_class(name)(cfg, output_dir, **kwargs)
