"""The stage framework: one class per stage, sharded, resumable, with a cheap completion check.

A stage is a subclass of :class:`Stage` registered in :data:`STAGE_REGISTRY` under its ``NAME``
(the pseudo-label ``stage`` field). It reads its run keys from ``cfg[CONFIG_NAMESPACE]``
(``PROPOSAL_GENERATION`` for stages 1-2, ``DENSE_CRF`` for stage 3, ``PART_RANKING`` for stage 5):
``TOTAL_PARTITIONS`` / ``PARTITION_INDEX`` (sharding; index -1 takes ``SLURM_ARRAY_TASK_ID``),
``FILTERED_CODE_PATH_LIST`` / ``EXCLUDE_CODE_PATH`` / ``PATH_ONLY`` (class filters, see
:func:`~part_distillation.utils.class_filter.load_class_filter`) and ``DEBUG`` (only the first :data:`DEBUG_ITEMS` items of the partition).

Two forms:

* **map** (stages 1-3): ``process(item) -> ImagePseudoLabel | (ImagePseudoLabel, counters)`` per
  work item; the runner writes the file.
* **gather -> reduce -> map** (stage 5): ``gather(item) -> {class_code: float32 (N, D)}`` for every
  item (streamed to per-shard chunk files, at most ``gather_buffer_bytes`` held in memory);
  ``reduce_many({class_code: (N_c, D)}) -> {class_code: {name: ndarray}}`` per class (classes
  batched up to ``gather_buffer_bytes`` of features; default calls ``reduce(class_code, features)``);
  then ``process_with_state(item, states)`` labels every item, ``states`` a read-only mapping
  ``class_code -> {name: ndarray}`` (loaded lazily from disk; only classes this partition owns
  and gathered features for: look classes up with ``in``). Each phase resumes on its own:
  gathered chunks are kept (a kill loses at most the unflushed buffer), a class's state is kept
  when it was reduced from as many features as are gathered now.
  The gather form needs ``PARTITION_BY = "class"`` (or one partition): a class's features must all
  be in its own partition.

Partitioning (``PARTITION_BY``): ``"image"``: items sorted by key, item i -> partition
i % TOTAL_PARTITIONS. ``"class"``: classes (``item.class_code``) assigned greedily, largest first,
to the least-loaded partition (ties: lowest index); a partition owns every item of its classes.
Both are deterministic, disjoint and complete for any number of partitions.

Output layout (``part_distillation.data.pseudo_labels``)::

    <output_dir>/<class_dir>/<image_id>.json        one file per item (atomic write)
    <output_dir>/logs/config.json                   settings that determine the outputs (resume guard)
    <output_dir>/logs/done/<i>of<n>.tsv             done-manifest of partition i: "<key>\\t<bytes>\\n"
    <output_dir>/logs/summary_<i>of<n>.json         run summary (counts, skips, failures)
    <output_dir>/logs/lock_<i>of<n>                 held (flock) by the process running partition i
    <output_dir>/logs/gather/<i>of<n>/chunk_<k>.npz gather chunks + manifest.txt (gather form)
    <output_dir>/logs/reduce/<class_dir>.npz        reduced state per class (gather form)

Completion check: a manifest line is appended (and fsynced) only after the item's file was
atomically renamed into place; an item is done when its key is in any partition's manifest and the
file exists with the recorded size. No file is opened, no mask decoded (100K items: see
``bench/bench_resume.py``). A torn last manifest line (kill mid-append) is ignored. Temp files of
this partition's killed writes (``.<image_id>.json.<rand>.tmp``) are removed at start.

One process per partition: a run holds an exclusive ``fcntl.flock`` on ``logs/lock_<i>of<n>``
(:class:`~part_distillation.utils.process.OutputLock`, released by the OS when the process dies)
from before its resume guard to its summary; a second process on the same output folder and
partition is refused with :class:`~part_distillation.utils.process.OutputLockHeld` naming the
holder's pid (otherwise its start-up temp cleanup could delete the other's files in flight).

Adding a stage (sketch)::

    @register_stage
    class MyStage(PseudoLabelInputStage):        # or Stage, with list_items(inputs)
        NAME, CONFIG_NAMESPACE, INPUT_STAGE = "my_stage", "MY_STAGE", "dense_crf"
        RECORDED_CONFIG = ("MY_STAGE", "MODEL")  # what determines the outputs
        def process(self, item):
            label = self.load_input(item)        # checked: INPUT_STAGE file of item.image_id
            return dataclasses.replace(label, objects=...), {"my_counter": 1}

plus ``add_stage_run_keys(cfg.MY_STAGE)`` in :mod:`part_distillation.config`; then
``tools/run_stage.py --stage my_stage --input-dir ... --output-dir ...`` runs it.

Resume guard: ``logs/config.json`` records every key of the subtrees in ``RECORDED_CONFIG`` except
the run-control keys of :data:`RUN_KEYS`, plus the identity (path, size, SHA-1 of the first 4 MiB)
of the weight files :meth:`Stage.weight_files` names; a later run with other settings raises
:class:`StageConfigMismatch`. Config values are validated (:meth:`Stage.validate_config`) before
anything is recorded.
"""
import collections
import functools
import glob
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from detectron2.utils.registry import Registry
from tqdm import tqdm

from ..config import plain_config
from ..data.images import image_id_of_path
from ..data.pseudo_labels import (ImagePseudoLabel, class_code_of_dir, class_dir, list_pseudo_labels,
                                  load_pseudo_label, pseudo_label_path)
from ..utils.io import atomic_write, atomic_write_json
from ..utils.class_filter import class_allowed, load_class_filter
from ..utils.process import OutputLock
from ..utils.sharding import RunSummary, SkipItem, resolve_partition

logger = logging.getLogger(__name__)

STAGE_REGISTRY = Registry("STAGE")
STAGE_REGISTRY.__doc__ = """Stages by ``Stage.NAME`` (``object_masks``, ``pixel_grouping``, ``dense_crf``, ...)."""

# keys of a stage namespace that decide how the run is split or filtered, not what an output holds
RUN_KEYS = ("TOTAL_PARTITIONS", "PARTITION_INDEX", "NUM_WORKERS", "OBJECTS_PER_BATCH", "DEBUG",
            "FILTERED_CODE_PATH_LIST", "EXCLUDE_CODE_PATH", "PATH_ONLY", "DEVICE")
DEBUG_ITEMS = 10
_HASH_BYTES = 4 << 20


def register_stage(cls):
    """Class decorator: register a :class:`Stage` subclass under its ``NAME``."""
    STAGE_REGISTRY._do_register(cls.NAME, cls)
    return cls


class StageConfigMismatch(ValueError):
    """An output folder holds results of the same stage made with other settings."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: an image of class ``class_code``; ``source`` is what the stage reads
    (a dataset dict at stage 1, an input pseudo-label path later)."""

    image_id: str
    class_code: str
    source: Any

    @property
    def key(self) -> str:
        """``"<class_dir>/<image_id>"``: unique in a run, names the output file."""
        return f"{class_dir(self.class_code)}/{self.image_id}"


class Stage:
    """Base class of every stage (see the module docstring for the protocol).

    Args:
        cfg: the frozen project config.
        output_dir: the stage's output folder.
    """

    NAME = ""
    CONFIG_NAMESPACE = ""
    PARTITION_BY = "image"
    INPUT_KIND = "dataset"  # what run() takes: "dataset" (dataset dicts) or "pseudo_labels" (a folder)
    RECORDED_CONFIG: Tuple[str, ...] = ()  # config subtrees / keys whose values determine the outputs
    gather_buffer_bytes = 256 << 20

    def __init__(self, cfg, output_dir: str):
        self.cfg, self.output_dir = cfg, output_dir

    @property
    def ns(self):
        """The stage's config namespace ``cfg[CONFIG_NAMESPACE]``."""
        return self.cfg[self.CONFIG_NAMESPACE]

    # ---- to implement ----
    @classmethod
    def validate_config(cls, cfg) -> None:
        """Raise ``ValueError`` naming the key for a bad enum/range value (called before anything
        is recorded or computed). Subclasses extend it and call ``super()``."""
        ns = cfg[cls.CONFIG_NAMESPACE]
        if cls.PARTITION_BY not in ("image", "class"):
            raise ValueError(f"{cls.__name__}.PARTITION_BY must be 'image' or 'class'")
        try:
            resolve_partition(ns.TOTAL_PARTITIONS, ns.PARTITION_INDEX)
        except ValueError as e:
            raise ValueError(f"{cls.CONFIG_NAMESPACE}.TOTAL_PARTITIONS / PARTITION_INDEX: {e} (stage {cls.NAME} "
                             f"shards by its own namespace)") from None

    def list_items(self, inputs) -> List[WorkItem]:
        """All work items of ``inputs`` (every partition's)."""
        raise NotImplementedError

    @staticmethod
    def default_input(cfg):
        """The input the tools use when the command line names none (a config key), or None."""
        return None

    def process(self, item: WorkItem):
        """Map form: ``ImagePseudoLabel`` or ``(ImagePseudoLabel, counters dict)``; raise
        :class:`SkipItem` to skip with a counted reason."""
        raise NotImplementedError

    def prepare(self, mine: List[WorkItem], todo: List[WorkItem]) -> None:
        """Called once per run before any item is processed, with this partition's items and the
        unfinished ones (in processing order); e.g. to start batched inference. Default: nothing."""

    def gather(self, item: WorkItem) -> Dict[str, np.ndarray]:
        """Gather form: ``{class_code: float32 (N, D)}`` features of one item (may be empty), or
        ``(features, counters dict)``; raise :class:`SkipItem` to skip with a counted reason.
        Every feature of a run has the same D and is finite (checked by the runner)."""
        raise NotImplementedError

    def check_gathered(self, summary: RunSummary) -> None:
        """Gather form: called once the partition's features are gathered, before clustering,
        with the run summary (gather counters included); raise to stop the run. Default: nothing."""

    def reduce(self, class_code: str, features: np.ndarray) -> Dict[str, np.ndarray]:
        """Gather form: the state of one class from all its features (N, D) float32."""
        raise NotImplementedError

    def reduce_many(self, features: Dict[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
        """Gather form: states of several classes at once (override to batch, e.g. on a GPU)."""
        return {c: self.reduce(c, f) for c, f in features.items()}

    def process_with_state(self, item: WorkItem, states: Mapping[str, Dict[str, np.ndarray]]):
        """Gather form: like :meth:`process`, given the reduced states by class code."""
        raise NotImplementedError

    def weight_files(self) -> List[str]:
        """Weight files whose identity the resume guard records (default: ``MODEL.WEIGHTS`` when
        ``MODEL`` is recorded and it is set)."""
        if "MODEL" in self.RECORDED_CONFIG and self.cfg.MODEL.WEIGHTS:
            return [self.cfg.MODEL.WEIGHTS]
        return []

    def settings(self) -> dict:
        """What ``logs/config.json`` records: the ``RECORDED_CONFIG`` subtrees without
        :data:`RUN_KEYS`, plus ``WEIGHTS_IDENTITY``."""
        out = {}
        for name in self.RECORDED_CONFIG:
            node = self.cfg
            for part in name.split("."):
                node = node[part]
            out[name] = plain_config(node, RUN_KEYS)
        out["WEIGHTS_IDENTITY"] = [weights_identity(p) for p in self.weight_files()]
        return out

    @property
    def is_gather_form(self) -> bool:
        return type(self).gather is not Stage.gather

    # ---- the runner ----
    def run(self, inputs, workers: int = 1) -> RunSummary:
        """Run this stage's partition over ``inputs``; returns the :class:`RunSummary` (also written
        to ``logs/summary_<i>of<n>.json``).

        Raises:
            ValueError: a bad config value, duplicate image ids, a class filter file missing.
            StageConfigMismatch: ``output_dir`` holds outputs made with other settings.
            OutputLockHeld: another process runs this partition into ``output_dir``.
        """
        self.validate_config(self.cfg)
        ns = self.ns
        total, index = resolve_partition(ns.TOTAL_PARTITIONS, ns.PARTITION_INDEX)
        items = self.list_items(inputs)
        check_unique_ids(items)
        keep, exclude = load_class_filter(ns)
        items = [it for it in items if class_allowed(it.class_code, keep, exclude)]
        if self.is_gather_form and self.PARTITION_BY != "class" and total > 1:
            raise ValueError(f"stage {self.NAME}: the gather form needs PARTITION_BY 'class' to run "
                             f"in {total} partitions")
        mine, owned = partition_items(items, total, index, self.PARTITION_BY)
        if ns.DEBUG:
            mine = mine[:DEBUG_ITEMS]
            logger.info("%s.DEBUG: only %d items", self.CONFIG_NAMESPACE, len(mine))
        os.makedirs(self.output_dir, exist_ok=True)
        tag = f"{index}of{total}"
        with OutputLock(os.path.join(self.output_dir, "logs", f"lock_{tag}"),
                        f"stage {self.NAME} output folder {self.output_dir} partition {index + 1}/{total}"):
            return self._run_locked(mine, owned, index, total, workers)

    def _run_locked(self, mine: List[WorkItem], owned: Optional[set], index: int, total: int,
                    workers: int) -> RunSummary:
        """:meth:`run` once the lock of partition ``index`` of ``total`` is held."""
        tag, desc = f"{index}of{total}", f"{self.NAME} [{index + 1}/{total}]"
        check_stage_config(self.output_dir, self.NAME, self.settings())
        remove_stale_temp_files(self.output_dir, mine)
        manifest = DoneManifest(self.output_dir, tag)
        done = manifest.done_keys()
        summary = RunSummary()
        todo = []
        for it in mine:
            if manifest.is_done(it, done):
                summary.resumed += 1
            else:
                todo.append(it)
        t0 = time.time()
        self.prepare(mine, todo)
        if self.is_gather_form:
            states = self._gather_and_reduce(mine, owned, tag, desc, summary)
            fn = functools.partial(_run_one, self, states)
        else:
            fn = functools.partial(_run_one, self, None)
        _map(fn, todo, desc, workers, summary, manifest)
        summary.extra["seconds"] = round(time.time() - t0, 1)
        summary.log(self.NAME)
        atomic_write_json(os.path.join(self.output_dir, "logs", f"summary_{tag}.json"),
                          {"stage": self.NAME, "partition": [index, total], **summary.as_dict()}, indent=1)
        return summary

    def _gather_and_reduce(self, mine: List[WorkItem], owned: Optional[set], tag: str, desc: str,
                           summary: RunSummary) -> "ReducedStates":
        store = GatherStore(os.path.join(self.output_dir, "logs", "gather", tag), self.gather_buffer_bytes)
        gathered = store.gathered_keys()
        dims = store.feature_dims()
        for it in tqdm([it for it in mine if it.key not in gathered], desc=desc + " gather", dynamic_ncols=True):
            try:
                feats = self.gather(it)
            except SkipItem as e:
                summary.add_skip(it.key, e)
                feats = {}
            if isinstance(feats, tuple):
                feats, counters = feats
                summary.extra.update(counters)
            feats = {c: _check_features(it, c, f, dims) for c, f in feats.items()}
            store.add(it.key, feats)
        store.flush()
        self.check_gathered(summary)
        reduce_dir = os.path.join(self.output_dir, "logs", "reduce")
        counts = store.feature_counts()
        classes = sorted(c for c in counts if owned is None or c in owned)
        todo = [c for c in classes if not ReducedStates.is_current(reduce_dir, c, counts[c])]
        batch, nbytes = [], 0
        for c in todo + [None]:
            if c is not None and (not batch or nbytes + store.bytes_of(c) <= self.gather_buffer_bytes):
                batch.append(c)
                nbytes += store.bytes_of(c)
                continue
            if batch:
                states = self.reduce_many({b: store.features_of(b) for b in batch})
                for b in batch:
                    ReducedStates.save(reduce_dir, b, states[b], counts[b])
            batch, nbytes = ([c], store.bytes_of(c)) if c is not None else ([], 0)
        summary.extra["classes_reduced"] = len(todo)
        return ReducedStates(reduce_dir, classes)


class PseudoLabelInputStage(Stage):
    """A stage whose inputs are another stage's pseudo-labels (``INPUT_STAGE``): ``run(folder or
    list of files)``; items keep the input's ``<class_dir>/<image_id>``."""

    INPUT_KIND = "pseudo_labels"
    INPUT_STAGE = ""

    def list_items(self, inputs) -> List[WorkItem]:
        files = list_pseudo_labels(inputs) if isinstance(inputs, str) else list(inputs)
        return [WorkItem(image_id_of_path(p), class_code_of_dir(os.path.basename(os.path.dirname(p))), p) for p in files]

    def load_input(self, item: WorkItem) -> ImagePseudoLabel:
        """The item's input pseudo-label, checked to be an ``INPUT_STAGE`` file of that image id."""
        return load_pseudo_label(item.source, self.INPUT_STAGE or None)


def weights_identity(path: str) -> dict:
    """``{"path", "size", "sha1_4MiB"}`` of a weights file (absolute path; size and hash ``None``
    when the file does not exist, e.g. a model-zoo URL)."""
    if not os.path.isfile(path):
        return {"path": path, "size": None, "sha1_4MiB": None}
    with open(path, "rb") as f:
        digest = hashlib.sha1(f.read(_HASH_BYTES)).hexdigest()
    return {"path": os.path.abspath(path), "size": os.path.getsize(path), "sha1_4MiB": digest}


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


def check_unique_ids(items: Sequence[WorkItem]) -> None:
    """Raise ``ValueError`` naming both sources when two items share an image id (``cat.jpg`` and
    ``cat.png`` would write the same output file)."""
    seen = {}
    for it in items:
        if it.image_id in seen:
            raise ValueError(f"duplicate image id {it.image_id!r}: {_name(seen[it.image_id])} and "
                             f"{_name(it.source)}; image ids must be unique in a run (rename one)")
        seen[it.image_id] = it.source


def _name(source) -> str:
    return source.get("file_name", str(source)) if isinstance(source, dict) else str(source)


def assign_classes(counts: Mapping[str, int], total: int) -> Dict[str, int]:
    """Class code -> partition: largest class first to the least-loaded partition (deterministic)."""
    load = [0] * total
    out = {}
    for c in sorted(counts, key=lambda c: (-counts[c], c)):
        p = min(range(total), key=lambda i: (load[i], i))
        out[c] = p
        load[p] += counts[c]
    return out


def partition_items(items: Sequence[WorkItem], total: int, index: int, by: str
                    ) -> Tuple[List[WorkItem], Optional[set]]:
    """``(items of partition index, owned class codes or None)``; items sorted by key."""
    ordered = sorted(items, key=lambda it: it.key)
    if by == "image":
        return ordered[index::total], None
    owner = assign_classes(collections.Counter(it.class_code for it in ordered), total)
    owned = {c for c, p in owner.items() if p == index}
    return [it for it in ordered if it.class_code in owned], owned


def remove_stale_temp_files(output_dir: str, items: Sequence[WorkItem]) -> int:
    """Delete ``.<image_id>.json.<rand>.tmp`` files of ``items`` (left by killed writes of this
    partition; other partitions' in-flight files are not touched). Returns the count."""
    by_dir = collections.defaultdict(set)
    for it in items:
        by_dir[class_dir(it.class_code)].add(f".{it.image_id}.json.")
    removed = 0
    for d, prefixes in by_dir.items():
        folder = os.path.join(output_dir, d)
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            n = entry.name
            if n.startswith(".") and n.endswith(".tmp") and ".json." in n \
                    and n[: n.index(".json.") + 6] in prefixes:
                os.unlink(entry.path)
                removed += 1
    if removed:
        logger.info("removed %d stale temp files in %s", removed, output_dir)
    return removed


class DoneManifest:
    """Per-partition append-only list of finished items, ``logs/done/<tag>.tsv``:
    ``<key>\\t<file size in bytes>\\n``, appended and fsynced after the file's atomic rename."""

    def __init__(self, output_dir: str, tag: str):
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "logs", "done")
        self.path = os.path.join(self.folder, f"{tag}.tsv")

    def done_keys(self) -> Dict[str, int]:
        """Key -> recorded size over every partition's manifest (any partition count)."""
        out = {}
        for path in sorted(glob.glob(os.path.join(self.folder, "*.tsv"))):
            with open(path) as f:
                data = f.read()
            for line in data.split("\n")[:-1]:  # the text after the last newline may be torn
                key, _, size = line.rpartition("\t")
                if key and size.isdigit():
                    out[key] = int(size)
        return out

    def output_path(self, item: WorkItem) -> str:
        return pseudo_label_path(self.output_dir, item.image_id, item.class_code)

    def is_done(self, item: WorkItem, done: Mapping[str, int]) -> bool:
        size = done.get(item.key)
        if size is None:
            return False
        try:
            return os.stat(self.output_path(item)).st_size == size
        except FileNotFoundError:
            return False

    def add(self, key: str, size: int) -> None:
        os.makedirs(self.folder, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{key}\t{size}\n")
            f.flush()
            os.fsync(f.fileno())


def _run_one(stage: Stage, states, item: WorkItem) -> Tuple[str, Any]:
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
        raise ValueError(f"{_name(item.source)}: {int((~np.isfinite(f)).any(1).sum())} of its {len(f)} "
                         f"features of class {class_code!r} are NaN or infinite; rerun the stage that "
                         "wrote it (or its model, if the network produced them)")
    if dims and f.shape[1] not in dims:
        raise ValueError(f"{_name(item.source)}: features of dimension {f.shape[1]} (class {class_code!r}), "
                         f"but {sorted(dims)} in the items gathered before; every input must come from "
                         "the same model (rerun the stage that wrote it)")
    dims.add(f.shape[1])
    return f


class GatherStore:
    """Per-partition gathered features on disk: ``chunk_<k>.npz`` files (arrays ``keys`` (item
    keys), ``classes`` (class codes), ``f<j>`` (N_j, D) float32 of ``classes[j]``) and
    ``manifest.txt`` (chunk names, appended after each chunk's atomic write). At most
    ``buffer_bytes`` of features are held in memory; a chunk not in the manifest is discarded."""

    def __init__(self, folder: str, buffer_bytes: int):
        self.folder, self.buffer_bytes = folder, buffer_bytes
        os.makedirs(folder, exist_ok=True)
        self.manifest = os.path.join(folder, "manifest.txt")
        self.chunks = []
        if os.path.isfile(self.manifest):
            with open(self.manifest) as f:
                self.chunks = f.read().split("\n")[:-1]
        for stray in set(os.listdir(folder)) - set(self.chunks) - {"manifest.txt"}:
            os.unlink(os.path.join(folder, stray))  # chunks of a kill before their manifest line
        self._keys, self._feats, self._bytes = [], collections.defaultdict(list), 0
        self._index = None

    def gathered_keys(self) -> set:
        keys = set()
        for c in self.chunks:
            with np.load(os.path.join(self.folder, c)) as z:
                keys.update(z["keys"].tolist())
        return keys

    def add(self, key: str, feats: Dict[str, np.ndarray]) -> None:
        self._keys.append(key)
        for c, f in feats.items():
            if len(f):
                self._feats[c].append(f)
                self._bytes += f.nbytes
        if self._bytes >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._keys:
            return
        name = f"chunk_{len(self.chunks):06d}.npz"
        classes = sorted(self._feats)
        arrays = {f"f{j}": np.concatenate(self._feats[c]) for j, c in enumerate(classes)}
        atomic_write(os.path.join(self.folder, name),
                     lambda f: np.savez(f, keys=np.array(self._keys), classes=np.array(classes, dtype=str),
                                        rows=np.array([len(arrays[f"f{j}"]) for j in range(len(classes))], np.int64),
                                        dims=np.array([arrays[f"f{j}"].shape[1] for j in range(len(classes))], np.int64),
                                        **arrays), mode="wb")
        with open(self.manifest, "a") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.chunks.append(name)
        self._keys, self._feats, self._bytes, self._index = [], collections.defaultdict(list), 0, None

    def _chunk_index(self) -> Dict[str, List[Tuple[str, str, int, int]]]:
        """class -> [(chunk, array name, rows, bytes)] in chunk order."""
        if self._index is None:
            self._index = collections.defaultdict(list)
            for c in self.chunks:
                with np.load(os.path.join(self.folder, c)) as z:
                    for j, (cls, rows, dim) in enumerate(zip(z["classes"].tolist(), z["rows"].tolist(),
                                                             z["dims"].tolist())):
                        self._index[cls].append((c, f"f{j}", rows, rows * dim * 4))
        return self._index

    def feature_dims(self) -> set:
        """The feature dimensions D of the chunks written so far (one, or none when empty)."""
        return {e[3] // (4 * e[2]) for v in self._chunk_index().values() for e in v if e[2]}

    def feature_counts(self) -> Dict[str, int]:
        return {c: sum(e[2] for e in v) for c, v in self._chunk_index().items()}

    def bytes_of(self, class_code: str) -> int:
        return sum(e[3] for e in self._chunk_index()[class_code])

    def features_of(self, class_code: str) -> np.ndarray:
        parts = []
        for chunk, name, _, _ in self._chunk_index()[class_code]:
            with np.load(os.path.join(self.folder, chunk)) as z:
                parts.append(z[name])
        return np.concatenate(parts)


class ReducedStates(Mapping):
    """Read-only ``class_code -> {name: ndarray}`` over ``logs/reduce/<class_dir>.npz`` (loaded on
    first access, a few cached). Picklable (worker processes load their own)."""

    CACHE = 8

    def __init__(self, folder: str, classes: Sequence[str]):
        self.folder, self.classes = folder, list(classes)
        self._cache: "collections.OrderedDict[str, dict]" = collections.OrderedDict()

    @staticmethod
    def path(folder: str, class_code: str) -> str:
        return os.path.join(folder, class_dir(class_code) + ".npz")

    @classmethod
    def save(cls, folder: str, class_code: str, state: Dict[str, np.ndarray], num_features: int) -> None:
        state = state if isinstance(state, dict) else {"state": state}
        atomic_write(cls.path(folder, class_code),
                     lambda f: np.savez(f, _num_features=np.int64(num_features), **state), mode="wb")

    @classmethod
    def is_current(cls, folder: str, class_code: str, num_features: int) -> bool:
        """A state exists and was reduced from ``num_features`` features."""
        p = cls.path(folder, class_code)
        if not os.path.isfile(p):
            return False
        with np.load(p) as z:
            return int(z["_num_features"]) == num_features

    def __getitem__(self, class_code: str) -> Dict[str, np.ndarray]:
        if class_code in self._cache:
            self._cache.move_to_end(class_code)
            return self._cache[class_code]
        if class_code not in self.classes:
            raise KeyError(class_code)
        with np.load(self.path(self.folder, class_code)) as z:
            state = {k: z[k] for k in z.files if k != "_num_features"}
        self._cache[class_code] = state
        if len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)
        return state

    def __iter__(self):
        return iter(self.classes)

    def __len__(self):
        return len(self.classes)


def build_stage(name: str, cfg, output_dir: str, **kwargs) -> Stage:
    """The registered stage ``name``; unknown names raise ``KeyError`` listing the known ones."""
    if name not in STAGE_REGISTRY:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(k for k, _ in STAGE_REGISTRY)}")
    return STAGE_REGISTRY.get(name)(cfg, output_dir, **kwargs)
