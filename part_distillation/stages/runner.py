"""The stage runner: validate, list, filter, partition, check the resume guard, then map (or
gather -> reduce -> map) over the unfinished items of this partition and write the summary."""
import functools
import logging
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from ..data.pseudo_labels import ImagePseudoLabel, pseudo_label_path
from ..utils.class_filter import class_allowed, class_filter_args, read_class_filter
from ..utils.io import atomic_write_json
from ..utils.process import OutputLock
from ..utils.sharding import RunSummary, SkipItem, resolve_partition
from .partition import WorkItem, check_unique_ids, partition_items, source_name
from .resume import check_stage_config
from .store import DoneManifest, GatherStore, ReducedStates, remove_stale_temp_files

logger = logging.getLogger(__name__)

DEBUG_ITEMS = 10  # items of a partition run when the namespace's DEBUG is set


@dataclass(frozen=True)
class RunOptions:
    """How a stage run is split and filtered (not what an output holds: never recorded by the
    resume guard). :meth:`from_config` reads the run keys of a stage namespace
    (:func:`~part_distillation.config.add_stage_run_keys`).

    Attributes:
        namespace: the config namespace they come from (for messages).
        total_partitions: partitions of the work (<= 0: one).
        partition_index: this run's partition (-1: ``SLURM_ARRAY_TASK_ID`` when set, else 0).
        filtered_code_path_list, exclude_code_path, path_only, single_class_code: the class
            filter (:func:`~part_distillation.utils.class_filter.read_class_filter`).
        debug: only the first :data:`DEBUG_ITEMS` items of the partition.
    """

    namespace: str
    total_partitions: int
    partition_index: int
    filtered_code_path_list: Tuple[str, ...]
    exclude_code_path: str
    path_only: bool
    single_class_code: str
    debug: bool

    @classmethod
    def from_config(cls, cfg, namespace: str) -> "RunOptions":
        """The run keys of ``cfg[namespace]`` (``SINGLE_CLASS_CODE`` where the namespace has it)."""
        ns = cfg[namespace]
        return cls(namespace=namespace, total_partitions=int(ns.TOTAL_PARTITIONS),
                   partition_index=int(ns.PARTITION_INDEX), debug=bool(ns.DEBUG), **class_filter_args(ns))

    def partition(self) -> Tuple[int, int]:
        """``(total, index)`` resolved (:func:`~part_distillation.utils.sharding.resolve_partition`).

        Raises:
            ValueError: the index is out of range (names the namespace's keys).
        """
        try:
            return resolve_partition(self.total_partitions, self.partition_index)
        except ValueError as e:
            raise ValueError(f"{self.namespace}.TOTAL_PARTITIONS / PARTITION_INDEX: {e}") from None

    def class_filter(self):
        """``(keep, exclude)`` class-code sets (:func:`~part_distillation.utils.class_filter.read_class_filter`)."""
        return read_class_filter(filtered_code_path_list=self.filtered_code_path_list,
                                 exclude_code_path=self.exclude_code_path, path_only=self.path_only,
                                 single_class_code=self.single_class_code)


def run_stage(stage, inputs, workers: int = 1) -> RunSummary:
    """Run ``stage``'s partition over ``inputs`` (validate, list, filter, partition, resume check,
    map or gather -> reduce -> map, summary); returns the :class:`RunSummary` (also written to
    ``<output_dir>/logs/summary_<i>of<n>.json``).

    Args:
        stage: a :class:`~part_distillation.stages.stage.Stage`.
        inputs: what ``stage.list_items`` takes (dataset dicts, or a pseudo-label folder / files).
        workers: processes for the map phase (1: in this process).

    Raises:
        ValueError: a partition index out of range, duplicate image ids, a class filter file missing.
        StageConfigMismatch: ``output_dir`` holds outputs made with other arguments.
        OutputLockHeld: another process runs this partition into ``output_dir``.
    """
    opts = stage.run_options
    total, index = opts.partition()
    items = stage.list_items(inputs)
    check_unique_ids(items)
    keep, exclude = opts.class_filter()
    items = [it for it in items if class_allowed(it.class_code, keep, exclude)]
    if stage.is_gather_form and stage.PARTITION_BY != "class" and total > 1:
        raise ValueError(f"stage {stage.NAME}: the gather form needs PARTITION_BY 'class' to run "
                         f"in {total} partitions")
    mine, owned = partition_items(items, total, index, stage.PARTITION_BY)
    if opts.debug:
        mine = mine[:DEBUG_ITEMS]
        logger.info("%s.DEBUG: only %d items", opts.namespace, len(mine))
    os.makedirs(stage.output_dir, exist_ok=True)
    tag = f"{index}of{total}"
    with OutputLock(os.path.join(stage.output_dir, "logs", f"lock_{tag}"),
                    f"stage {stage.NAME} output folder {stage.output_dir} partition {index + 1}/{total}"):
        return _run_locked(stage, mine, owned, index, total, workers)


def _run_locked(stage, mine: List[WorkItem], owned: Optional[set], index: int, total: int,
                workers: int) -> RunSummary:
    """:func:`run_stage` once the lock of partition ``index`` of ``total`` is held."""
    tag, desc = f"{index}of{total}", f"{stage.NAME} [{index + 1}/{total}]"
    check_stage_config(stage.output_dir, stage.NAME, stage.settings())
    remove_stale_temp_files(stage.output_dir, mine)
    manifest = DoneManifest(stage.output_dir, tag)
    done = manifest.done_keys()
    summary = RunSummary()
    if stage.input_report:  # what the dataset load skipped, before this stage saw any image
        summary.dataset_load = stage.input_report
        for reason, n in stage.input_report.get("skipped", {}).items():
            summary.skipped[f"load {reason}"] += n
    todo = []
    for it in mine:
        if manifest.is_done(it, done):
            summary.resumed += 1
        else:
            todo.append(it)
    t0 = time.time()
    stage.prepare(mine, todo)
    if stage.is_gather_form:
        states = gather_and_reduce(stage, mine, owned, tag, desc, summary)
        fn = functools.partial(_run_one, stage, states)
    else:
        fn = functools.partial(_run_one, stage, None)
    _map(fn, todo, desc, workers, summary, manifest)
    summary.extra["seconds"] = round(time.time() - t0, 1)
    summary.log(stage.NAME)
    atomic_write_json(os.path.join(stage.output_dir, "logs", f"summary_{tag}.json"),
                      {"stage": stage.NAME, "partition": [index, total], **summary.as_dict()}, indent=1)
    return summary


def gather_and_reduce(stage, mine: List[WorkItem], owned: Optional[set], tag: str, desc: str,
                      summary: RunSummary) -> ReducedStates:
    """Gather form, phases 1-2: gather the features of ``mine`` into the partition's
    :class:`GatherStore` (resuming), then reduce each owned class whose state is missing or was
    reduced from another feature count, classes batched up to ``stage.gather_buffer_bytes``."""
    store = GatherStore(os.path.join(stage.output_dir, "logs", "gather", tag), stage.gather_buffer_bytes)
    gathered = store.gathered_keys()
    dims = store.feature_dims()
    for it in tqdm([it for it in mine if it.key not in gathered], desc=desc + " gather", dynamic_ncols=True):
        try:
            feats = stage.gather(it)
        except SkipItem as e:
            summary.add_skip(it.key, e)
            feats = {}
        if isinstance(feats, tuple):
            feats, counters = feats
            summary.extra.update(counters)
        feats = {c: _check_features(it, c, f, dims) for c, f in feats.items()}
        store.add(it.key, feats)
    store.flush()
    stage.check_gathered(summary)
    reduce_dir = os.path.join(stage.output_dir, "logs", "reduce")
    counts = store.feature_counts()
    classes = sorted(c for c in counts if owned is None or c in owned)
    todo = [c for c in classes if not ReducedStates.is_current(reduce_dir, c, counts[c])]
    batch, nbytes = [], 0
    for c in todo + [None]:
        if c is not None and (not batch or nbytes + store.bytes_of(c) <= stage.gather_buffer_bytes):
            batch.append(c)
            nbytes += store.bytes_of(c)
            continue
        if batch:
            states = stage.reduce_many({b: store.features_of(b) for b in batch})
            for b in batch:
                ReducedStates.save(reduce_dir, b, states[b], counts[b])
        batch, nbytes = ([c], store.bytes_of(c)) if c is not None else ([], 0)
    summary.extra["classes_reduced"] = len(todo)
    return ReducedStates(reduce_dir, classes)


def _run_one(stage, states, item: WorkItem) -> Tuple[str, Any]:
    """Run one item (in a worker process when ``workers > 1``) and write its file; returns
    ``(status, payload)``: ``("ok", (size, counters))``, ``("skip", SkipItem)`` or ``("fail", tb)``."""
    try:
        out = stage.process(item) if states is None else stage.process_with_state(item, states)
        label, counters = out if isinstance(out, tuple) else (out, None)
        if not isinstance(label, ImagePseudoLabel):
            raise TypeError(f"{type(stage).__name__}.process must return an ImagePseudoLabel")
        if label.image_id != item.image_id:
            raise ValueError(f"{item.key}: the stage produced image id {label.image_id!r}")
        label.class_code = item.class_code
        label.stage = stage.NAME
        path = pseudo_label_path(stage.output_dir, item.image_id, item.class_code)
        atomic_write_json(path, label.to_dict())
        return "ok", (os.path.getsize(path), counters)
    except SkipItem as e:
        return "skip", e
    except Exception:  # noqa: BLE001 - counted and logged, the shard goes on
        return "fail", traceback.format_exc()


def _map(fn, todo: List[WorkItem], desc: str, workers: int, summary: RunSummary,
         manifest: DoneManifest) -> None:
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(min(workers, len(todo)))
        outcomes: Iterable = pool.imap(fn, todo)
    else:
        pool, outcomes = None, map(fn, todo)
    try:
        for item, (status, payload) in tqdm(zip(todo, outcomes), desc=desc, total=len(todo), dynamic_ncols=True):
            if status == "skip":
                summary.add_skip(item.key, payload)
            elif status == "fail":
                logger.error("%s: failed on %s\n%s", desc, item.key, payload)
                summary.failed.append((item.key, payload))
            else:
                size, counters = payload
                manifest.add(item.key, size)
                summary.processed += 1
                if counters:
                    summary.extra.update(counters)
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _check_features(item: WorkItem, class_code: str, f, dims: set) -> np.ndarray:
    """``f`` as gathered features of ``item``: float32 (N, D), finite, D the dimension of every
    feature gathered before into this partition (``dims``: the dimensions seen, extended in place).

    Raises:
        ValueError: another type or shape (a stage bug), or non-finite values or another D (a bad
            input: the message names the item's file and what to do).
    """
    f = np.asarray(f)
    if f.ndim != 2 or f.dtype != np.float32:
        raise ValueError(f"gather must return float32 (N, D) arrays, got {f.dtype} {f.shape} for {class_code!r}")
    if not len(f):
        return f
    if not np.isfinite(f).all():
        raise ValueError(f"{source_name(item.source)}: {int((~np.isfinite(f)).any(1).sum())} of its {len(f)} "
                         f"features of class {class_code!r} are NaN or infinite; rerun the stage that "
                         "wrote it (or its model, if the network produced them)")
    if dims and f.shape[1] not in dims:
        raise ValueError(f"{source_name(item.source)}: features of dimension {f.shape[1]} (class {class_code!r}), "
                         f"but {sorted(dims)} in the items gathered before; every input must come from "
                         "the same model (rerun the stage that wrote it)")
    dims.add(f.shape[1])
    return f
