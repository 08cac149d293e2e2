"""Partition resolution, the skip exception and the counted run summary of every stage (the
runner and :func:`~part_distillation.stages.partition.partition_items` are in
:mod:`part_distillation.stages.runner`).

Sharding follows the official keys ``*.TOTAL_PARTITIONS`` / ``*.PARTITION_INDEX``: the item list is
sorted by key and item ``i`` belongs to partition ``i % TOTAL_PARTITIONS``. When the index is -1
and ``SLURM_ARRAY_TASK_ID`` is set (an sbatch array job), that id is the partition index.
"""
import collections
import logging
import os
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)


class SkipItem(Exception):
    """Raised by a per-item function to skip the item: ``reason`` is a short category counted in
    the summary (no paths: one counter per kind, not per image), ``detail`` the specifics (the
    file, the error), listed per item in the summary's ``skipped_items``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def resolve_partition(total: int, index: int) -> Tuple[int, int]:
    """Return ``(total, index)`` with defaults applied.

    ``total <= 0`` means one partition; ``index == -1`` takes ``SLURM_ARRAY_TASK_ID`` when set,
    else 0. Raises ``ValueError`` when the index is out of range.
    """
    total = 1 if total is None or total <= 0 else int(total)
    if index is None or index < 0:
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", 0))
    if not 0 <= index < total:
        raise ValueError(f"partition index {index} out of range for {total} partitions")
    return total, index


class RunSummary:
    """Counts of a stage run: processed, resumed (already done), skipped by reason (for a dataset
    stage also its dataset load's skips, ``"load <reason>"``, and the load report), failed."""

    def __init__(self):
        self.processed = 0
        self.resumed = 0
        self.skipped: Dict[str, int] = collections.Counter()
        self.skipped_items: List[Dict[str, str]] = []
        self.failed: List[Tuple[str, str]] = []
        self.extra: Dict[str, int] = collections.Counter()
        self.dataset_load: Optional[dict] = None  # the input dataset's load report (stage 1)

    def as_dict(self) -> dict:
        load = {"dataset_load": self.dataset_load} if self.dataset_load else {}
        return {
            "processed": self.processed,
            "resumed": self.resumed,
            "skipped": dict(self.skipped),
            "skipped_items": list(self.skipped_items),
            "failed": len(self.failed),
            "failed_items": [{"item": k, "error": e} for k, e in self.failed],
            **{k: v for k, v in self.extra.items()},
            **load,
        }

    def merge(self, other: "RunSummary") -> None:
        self.processed += other.processed
        self.resumed += other.resumed
        self.skipped.update(other.skipped)
        self.skipped_items.extend(other.skipped_items)
        self.failed.extend(other.failed)
        self.extra.update(other.extra)

    def add_skip(self, item: str, skip: SkipItem) -> None:
        """Count a skipped item under its reason and list it with its detail."""
        logger.warning("skipped %s (%s)", item, skip)
        self.skipped[skip.reason] += 1
        self.skipped_items.append({"item": item, "reason": skip.reason, "detail": skip.detail})

    def log(self, name: str) -> None:
        d = self.as_dict()
        logger.info(
            "%s: processed %d, resumed %d, skipped %s, failed %d%s",
            name, d["processed"], d["resumed"], d["skipped"] or 0, d["failed"],
            "".join(f", {k} {v}" for k, v in self.extra.items()),
        )
        for item, err in self.failed[:10]:
            logger.warning("%s failed on %s: %s", name, item, err.splitlines()[-1] if err else "")
