"""Deprecated module path: the stage framework lives in :mod:`.build`, :mod:`.stage`,
:mod:`.runner`, :mod:`.partition`, :mod:`.store` and :mod:`.resume`. ``from
part_distillation.stages.base import X`` keeps working for the names this module held, with a
``FutureWarning`` naming the new module; nothing in the package imports through this path
(``tests/test_architecture.py``)."""
import importlib
import warnings

# name -> the module (of this package) that holds it now
MOVED_NAMES = {
    "STAGE_REGISTRY": "build", "register_stage": "build", "build_stage": "build",
    "Stage": "stage", "PseudoLabelInputStage": "stage",
    "DEBUG_ITEMS": "runner", "run_stage": "runner",
    "WorkItem": "partition", "check_unique_ids": "partition", "assign_classes": "partition",
    "partition_items": "partition",
    "DoneManifest": "store", "GatherStore": "store", "ReducedStates": "store",
    "remove_stale_temp_files": "store",
    "RUN_KEYS": "resume", "StageConfigMismatch": "resume", "check_stage_config": "resume",
    "weights_identity": "resume",
}


def __getattr__(name: str):
    """``MOVED_NAMES[name]``'s object, with a ``FutureWarning``; ``AttributeError`` otherwise."""
    if name not in MOVED_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = f"{__package__}.{MOVED_NAMES[name]}"
    warnings.warn(f"{__name__}.{name} is deprecated, import it from {new}", FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(new), name)
