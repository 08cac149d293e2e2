"""What every stage tool shares: shard the work list, skip finished images, write the run summary.

A stage maps input items (dataset dicts or pseudo-label files) to one pseudo-label file per image
in its output folder. ``run_stage`` applies ``*.TOTAL_PARTITIONS`` / ``*.PARTITION_INDEX``
sharding, treats an image as finished only when its output file validates for this stage
(:func:`part_distillation.data.pseudo_labels.is_complete`), runs the rest with counted skips and
failures, and writes ``<output_dir>/logs/summary_<index>of<total>.json``.
"""
import logging
import os
from typing import Callable, Optional, Sequence

from ..data.pseudo_labels import is_complete, pseudo_label_path
from ..utils.io import atomic_write_json
from ..utils.sharding import RunSummary, resolve_partition, run_items, shard

logger = logging.getLogger(__name__)


def run_stage(
    stage: str,
    items: Sequence,
    image_id: Callable[[object], str],
    process: Callable[[object], Optional[dict]],
    output_dir: str,
    total_partitions: int = -1,
    partition_index: int = -1,
    workers: int = 1,
) -> RunSummary:
    """Run ``process`` over this partition's items whose output is not yet complete."""
    total, index = resolve_partition(total_partitions, partition_index)
    mine = shard(items, image_id, total, index)
    os.makedirs(output_dir, exist_ok=True)
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
