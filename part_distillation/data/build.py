"""The data registries and their builders (detectron2 ``modeling/meta_arch/build.py`` style):
dataset loaders (one class per on-disk format, looked up by class name by
:mod:`part_distillation.data.datasets`) and training dataset mappers (selected by
``INPUT.DATASET_MAPPER_NAME`` = the mapper's ``NAME``, the official name of its stage:
``proposal_learning``, ``supervised_learning``, ``part_distillation``; the deprecated names of
:data:`DEPRECATED_MAPPER_NAMES` resolve to them with a ``FutureWarning``). Implementations register
with the public ``@REGISTRY.register()``."""
from detectron2.utils.registry import Registry

from ..utils.deprecation import resolve_deprecated
from ..utils.registry import get_by_name, has_name

DATASET_LOADER_REGISTRY = Registry("DATASET_LOADER")
DATASET_LOADER_REGISTRY.__doc__ = """Dataset loader classes (subclasses of
:class:`~part_distillation.data.loader_registry.DatasetLoader`), looked up by class name, e.g.
``PascalPartLoader``."""

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers, selected by ``cfg.INPUT.DATASET_MAPPER_NAME`` = their ``NAME``; a
registered class is called as ``cls(cfg, is_train=True)`` and maps one dataset dict to a model
input dict.
"""


# deprecated mapper names -> the official stage names the mappers carry now
DEPRECATED_MAPPER_NAMES = {"part_proposal": "proposal_learning", "part_supervised": "supervised_learning"}


def is_mapper_name(name: str) -> bool:
    """Whether ``name`` selects a registered training mapper (a deprecated name included; no warning)."""
    return has_name(DATASET_MAPPER_REGISTRY, DEPRECATED_MAPPER_NAMES.get(name, name))


def build_train_mapper(cfg, name=None):
    """The training mapper named ``name`` (default INPUT.DATASET_MAPPER_NAME), built as
    ``cls(cfg, is_train=True)``.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    name = resolve_deprecated(name or cfg.INPUT.DATASET_MAPPER_NAME, DEPRECATED_MAPPER_NAMES,
                              "INPUT.DATASET_MAPPER_NAME")
    return get_by_name(DATASET_MAPPER_REGISTRY, name, what="INPUT.DATASET_MAPPER_NAME")(cfg, is_train=True)
