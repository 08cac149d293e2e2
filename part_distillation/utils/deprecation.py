"""Deprecated names that keep working with a warning (timm's ``register_model_deprecations``
pattern): an old name resolves to its current one and emits a ``FutureWarning`` naming both."""
import warnings
from typing import Mapping


def resolve_deprecated(name: str, deprecations: Mapping[str, str], kind: str) -> str:
    """``deprecations[name]`` (with a ``FutureWarning``: ``"<kind> '<old>' is deprecated, use
    '<new>'"``) when ``name`` is a deprecated name, else ``name`` unchanged."""
    new = deprecations.get(name)
    if new is None:
        return name
    warnings.warn(f"{kind} {name!r} is deprecated, use {new!r}", FutureWarning, stacklevel=3)
    return new
