"""What every stage tool shares: shard the work list, skip finished images, write the run summary.

A stage maps input items (dataset dicts or pseudo-label files) to one pseudo-label file per image
in its output folder. ``run_stage`` applies ``*.TOTAL_PARTITIONS`` / ``*.PARTITION_INDEX``
sharding, treats an image as finished only when its output file validates for this stage
(:func:`part_distillation.data.pseudo_labels.is_complete`), runs the rest with counted skips and
failures, and writes ``<output_dir>/logs/summary_<index>of<total>.json``.

Resuming is only safe with the same settings: the stage's config is recorded in
``<output_dir>/logs/config.json`` on the first run, and a later run into the same folder with
different settings raises :class:`StageConfigMismatch` instead of mixing old and new outputs.
"""
import json
import logging
import os
from typing import Callable, Optional, Sequence

from ..data.pseudo_labels import is_complete, pseudo_label_path
from ..utils.io import atomic_write_json
from ..utils.sharding import RunSummary, resolve_partition, run_items, shard

logger = logging.getLogger(__name__)


class StageConfigMismatch(ValueError):
    """An output folder holds results of the same stage made with other settings."""


def check_stage_config(output_dir: str, stage: str, config: dict) -> None:
    """Record ``config`` for ``output_dir`` or, if one is recorded, require it to be equal.

    Raises:
        StageConfigMismatch: naming the differing keys, their old and new values, and the file.
    """
    path = os.path.join(output_dir, "logs", "config.json")
    current = json.loads(json.dumps({"stage": stage, **config}))  # tuples -> lists, as stored
    if os.path.isfile(path):
        with open(path) as f:
            recorded = json.load(f)
        if recorded != current:
            diff = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
            details = "; ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in diff)
            raise StageConfigMismatch(
                f"{output_dir} holds {recorded.get('stage')} outputs made with other settings "
                f"({details}; recorded in {path}). Use another output folder, or delete it to redo.")
        return
    atomic_write_json(path, current, indent=1)


def run_stage(
    stage: str,
    items: Sequence,
    image_id: Callable[[object], str],
    process: Callable[[object], Optional[dict]],
    output_dir: str,
    config: dict,
    total_partitions: int = -1,
    partition_index: int = -1,
    workers: int = 1,
) -> RunSummary:
    """Run ``process`` over this partition's items whose output is not yet complete.

    ``config`` (JSON-serialisable) is the settings that determine the outputs; see
    :func:`check_stage_config`."""
    total, index = resolve_partition(total_partitions, partition_index)
    mine = shard(items, image_id, total, index)
    os.makedirs(output_dir, exist_ok=True)
    check_stage_config(output_dir, stage, config)
    summary = run_items(
        mine,
        key=image_id,
        is_done=lambda it: is_complete(pseudo_label_path(output_dir, image_id(it)), stage),
        process=process,
        desc=f"{stage} [{index + 1}/{total}]",
        workers=workers,
    )
    summary.log(stage)
    atomic_write_json(os.path.join(output_dir, "logs", f"summary_{index}of{total}.json"),
                      {"stage": stage, "partition": [index, total], **summary.as_dict()}, indent=1)
    return summary
