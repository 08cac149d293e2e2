"""Looking up registered classes by the name users write in configs.

The registries (detectron2 / fvcore ``Registry``) are filled through their public
``Registry.register``, which keys a class by its ``__name__``; the name a config or a command line
uses (a stage's ``NAME``, a labeler's ``NAME``, a mapper's ``NAME``) is a class attribute, and
:func:`get_by_name` finds the class by it.
"""
from typing import List


def registered_names(registry, attr: str = "NAME") -> List[str]:
    """The ``attr`` names of the classes in ``registry``, sorted."""
    return sorted(getattr(obj, attr) for _, obj in registry)


def get_by_name(registry, name: str, attr: str = "NAME", what: str = ""):
    """The class in ``registry`` whose ``attr`` equals ``name``.

    Raises:
        KeyError: no such class; the message names ``what`` (default: the registry's name) and
            lists the registered names.
    """
    for _, obj in registry:
        if getattr(obj, attr) == name:
            return obj
    raise KeyError(f"unknown {what or registry._name} {name!r}; registered: {registered_names(registry, attr)}")


def has_name(registry, name: str, attr: str = "NAME") -> bool:
    """Whether a class in ``registry`` has ``attr`` equal to ``name``."""
    return any(getattr(obj, attr) == name for _, obj in registry)
