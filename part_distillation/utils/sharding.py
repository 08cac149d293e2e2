"""Deterministic sharding of work lists and the resumable, counted loop every stage tool uses.

Sharding follows the official keys ``*.TOTAL_PARTITIONS`` / ``*.PARTITION_INDEX``: the item list is
sorted by key and item ``i`` belongs to partition ``i % TOTAL_PARTITIONS``. When the index is -1
and ``SLURM_ARRAY_TASK_ID`` is set (an sbatch array job), that id is the partition index.
"""
import collections
import functools
import logging
import os
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SkipItem(Exception):
    """Raised by a per-item function to skip the item with a reason (logged and counted)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


def shard(items: Sequence[T], key: Callable[[T], str], total: int, index: int) -> List[T]:
    """The items of partition ``index`` of ``total`` (sorted by ``key``, strided)."""
    total, index = resolve_partition(total, index)
    ordered = sorted(items, key=key)
    return ordered[index::total]


class RunSummary:
    """Counts of a stage run: processed, resumed (already done), skipped by reason, failed."""

    def __init__(self):
        self.processed = 0
        self.resumed = 0
        self.skipped: Dict[str, int] = collections.Counter()
        self.failed: List[Tuple[str, str]] = []
        self.extra: Dict[str, int] = collections.Counter()

    def as_dict(self) -> dict:
        return {
            "processed": self.processed,
            "resumed": self.resumed,
            "skipped": dict(self.skipped),
            "failed": len(self.failed),
            "failed_items": [{"item": k, "error": e} for k, e in self.failed],
            **{k: v for k, v in self.extra.items()},
        }

    def merge(self, other: "RunSummary") -> None:
        self.processed += other.processed
        self.resumed += other.resumed
        self.skipped.update(other.skipped)
        self.failed.extend(other.failed)
        self.extra.update(other.extra)

    def log(self, name: str) -> None:
        d = self.as_dict()
        logger.info(
            "%s: processed %d, resumed %d, skipped %s, failed %d%s",
            name, d["processed"], d["resumed"], d["skipped"] or 0, d["failed"],
            "".join(f", {k} {v}" for k, v in self.extra.items()),
        )
        for item, err in self.failed[:10]:
            logger.warning("%s failed on %s: %s", name, item, err.splitlines()[-1] if err else "")


def _call(process: Callable, item) -> Tuple[str, object]:
    """Run ``process(item)`` and turn its outcome into ``(status, payload)``."""
    try:
        return "ok", process(item)
    except SkipItem as e:
        return "skip", e.reason
    except Exception:  # noqa: BLE001 - counted and logged, the shard goes on
        return "fail", traceback.format_exc()


def run_items(
    items: Sequence[T],
    key: Callable[[T], str],
    is_done: Callable[[T], bool],
    process: Callable[[T], Optional[Dict[str, int]]],
    desc: str,
    workers: int = 1,
) -> RunSummary:
    """Run ``process`` on every item that ``is_done`` does not report finished.

    ``process`` may raise :class:`SkipItem` (counted under its reason) and may return a dict of
    extra counters to add (e.g. skipped objects). Any other exception is logged with its traceback,
    counted as failed and the loop goes on: one bad image never loses the rest of a shard.
    With ``workers > 1`` items run in a ``spawn`` process pool (``process`` must be picklable).
    """
    summary = RunSummary()
    t0 = time.time()
    todo = []
    for item in items:
        if is_done(item):
            summary.resumed += 1
        else:
            todo.append(item)
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(todo))) as pool:
            results = pool.imap(functools.partial(_call, process), todo)
            outcomes = list(tqdm(results, desc=desc, total=len(todo), dynamic_ncols=True))
    else:
        outcomes = [_call(process, item) for item in tqdm(todo, desc=desc, dynamic_ncols=True)]
    for item, (status, payload) in zip(todo, outcomes):
        name = key(item)
        if status == "skip":
            logger.warning("%s: skipped %s (%s)", desc, name, payload)
            summary.skipped[payload] += 1
        elif status == "fail":
            logger.error("%s: failed on %s\n%s", desc, name, payload)
            summary.failed.append((name, payload))
        else:
            summary.processed += 1
            if payload:
                summary.extra.update(payload)
    summary.extra["seconds"] = round(time.time() - t0, 1)
    return summary
