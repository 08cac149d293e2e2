"""What a stage run keeps on disk besides its outputs, each resumable after a kill.

Output layout (``part_distillation.data.pseudo_labels``)::

    <output_dir>/<class_dir>/<image_id>.json        one file per item (atomic write)
    <output_dir>/logs/config.json                   settings that determine the outputs (resume guard)
    <output_dir>/logs/done/<i>of<n>.tsv             done-manifest of partition i: "<key>\\t<bytes>\\n"
    <output_dir>/logs/summary_<i>of<n>.json         run summary (counts, skips, failures)
    <output_dir>/logs/lock_<i>of<n>                 held (flock) by the process running partition i
    <output_dir>/logs/gather/<i>of<n>/chunk_<k>.npz gather chunks + manifest.txt (gather form)
    <output_dir>/logs/reduce/<class_dir>.npz        reduced state per class (gather form)
"""
import collections
import glob
import logging
import os
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..data.pseudo_labels import class_dir, pseudo_label_path
from ..utils.io import atomic_write
from .partition import WorkItem

logger = logging.getLogger(__name__)


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
