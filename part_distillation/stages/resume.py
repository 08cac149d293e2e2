"""The resume guard: ``<output_dir>/logs/config.json`` records the settings that determine a
stage's outputs; a later run into the same folder with other settings raises
:class:`StageConfigMismatch`."""
import json
import os

from ..utils.io import atomic_write_json, weights_identity  # noqa: F401  (weights_identity: re-exported)

# keys of a stage namespace that decide how the run is split or filtered, not what an output holds
# (MODEL.WEIGHTS_ALLOWED_MISSING only decides whether a checkpoint is accepted)
RUN_KEYS = ("TOTAL_PARTITIONS", "PARTITION_INDEX", "NUM_WORKERS", "OBJECTS_PER_BATCH", "DEBUG",
            "FILTERED_CODE_PATH_LIST", "EXCLUDE_CODE_PATH", "PATH_ONLY", "DEVICE", "WEIGHTS_ALLOWED_MISSING")


class StageConfigMismatch(ValueError):
    """An output folder holds results of the same stage made with other settings."""


def check_stage_config(output_dir: str, stage: str, config: dict) -> None:
    """Record ``config`` in ``<output_dir>/logs/config.json`` or, if one is recorded, require it
    to be equal.

    Raises:
        StageConfigMismatch: naming the differing keys, their old and new values, and the file.
        ValueError: the recorded file is not readable JSON (names it).
    """
    path = os.path.join(output_dir, "logs", "config.json")
    current = json.loads(json.dumps({"stage": stage, **config}))  # tuples -> lists, as stored
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt or truncated recorded stage settings ({e}); delete the "
                             "file only if you know the folder's outputs were made with this config") from None
        if recorded != current:
            diff = _diff(recorded, current)
            details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:10])
            raise StageConfigMismatch(
                f"{output_dir} holds {recorded.get('stage')} outputs made with other settings "
                f"({details}; recorded in {path}). Use another output folder, or delete it to redo.")
        return
    atomic_write_json(path, current, indent=1)


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]
