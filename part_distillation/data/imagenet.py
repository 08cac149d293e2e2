"""ImageNet-1K / ImageNet-21K (22K) image folders for stages 1-6 (no annotations).

Layouts (official PartDistillation paths under ``$DETECTRON2_DATASETS``)::

    imagenet_1k/train/<wnid>/<wnid>_<n>.JPEG     # 1,000 class folders; class list = sorted wnids
    imagenet_1k/val/<wnid>/*.JPEG                # (val sorted into class folders)
    imagenet_1k/words.txt                         # optional "<wnid>\\t<name>" lines
    imagenet_22k/<wnid>/*.JPEG                   # 21,841 class folders (fall 2011 release)
    imagenet_22k/synsets.dat                      # class list, one wnid per line (its order = class_id)
    imagenet_22k/words.txt                        # "<wnid>\\t<name>" lines (WordNet words)

Records (``evaluator_type`` ``"none"``; no image header is read, so ``height`` / ``width`` are
absent)::

    {"file_name", "image_id": "<stem>", "class_code": wnid, "class_id": int,
     "class_name": str, "objects": []}

``image_id`` is the file's stem (official names ``<wnid>_<n>`` are unique across classes), so
stage outputs land in ``<class_code>/<stem>.json`` (official layout) and every later stage reads
the id back from the file name; stems shared by two files of one folder keep their extension
(:func:`part_distillation.data.image_folder.unique_image_ids`); two classes holding the same
stem are refused by the stage runner (duplicate image id).

Class filters (official ``FILTERED_CODE_PATH_LIST`` / ``EXCLUDE_CODE_PATH`` of
``PROPOSAL_GENERATION`` / ``PART_RANKING`` / ``PART_DISTILLATION``): each file is a list of wnids,
as text (one per line), JSON, or a ``torch.save`` d list (the official ``.pkl`` files); the kept
classes are those in every FILTERED list and not in the EXCLUDE list. ``class_id`` always indexes
the full class list (``thing_classes``), so filtering or partitioning never renumbers classes.
:func:`partition_class_codes` splits classes into contiguous partitions (official rule).

Listing 14M files: :func:`iter_imagenet` streams records class by class with ``os.scandir`` (no
``stat`` per file, no header reads), so work can start after the first folder;
``bench/bench_list_imagenet.py`` times it.
"""
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence

from .image_folder import IMAGE_EXTENSIONS, unique_image_ids
from .load_report import LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY, DatasetLoader


def read_words(path: str) -> Dict[str, str]:
    """``{wnid: name}`` from a ``words.txt`` (``<wnid>\\t<names>`` per line); ``{}`` if absent."""
    if not os.path.isfile(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            wnid, _, name = line.rstrip("\n").partition("\t")
            if wnid:
                out[wnid.strip()] = name.strip()
    return out


def read_code_list(path: str) -> List[str]:
    """wnids of a class-filter file: text (one per line), ``.json`` list, or a ``torch.save`` d
    list (``.pkl`` / ``.pth``, loaded with ``weights_only=True``).

    Raises:
        FileNotFoundError: naming the file; ValueError: the file holds no list of strings.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class filter list not found: {path}")
    if path.endswith((".pkl", ".pth", ".pt")):
        import torch

        codes = torch.load(path, weights_only=True)
    elif path.endswith(".json"):
        with open(path) as f:
            codes = json.load(f)
    else:
        with open(path) as f:
            codes = [line.strip() for line in f if line.strip()]
    if not isinstance(codes, (list, tuple, set)) or not all(isinstance(c, str) for c in codes):
        raise ValueError(f"{path}: expected a list of wnids, got {type(codes).__name__}")
    return list(codes)


def filter_class_codes(codes: Sequence[str], filtered_code_path_list: Sequence[str] = (),
                       exclude_code_path: str = "") -> List[str]:
    """``codes`` (order kept) that are in every non-empty FILTERED list and not in the EXCLUDE
    list (official ``FILTERED_CODE_PATH_LIST`` / ``EXCLUDE_CODE_PATH``)."""
    kept = list(codes)
    for p in filtered_code_path_list:
        if p:
            allowed = set(read_code_list(p))
            kept = [c for c in kept if c in allowed]
    if exclude_code_path:
        excluded = set(read_code_list(exclude_code_path))
        kept = [c for c in kept if c not in excluded]
    return kept


def partition_class_codes(codes: Sequence[str], total_partitions: int, partition_index: int) -> List[str]:
    """Partition ``partition_index`` of ``total_partitions`` contiguous class chunks (official
    rule: ``len // total`` classes each, the last one takes the remainder).

    Raises:
        ValueError: ``partition_index`` outside ``0..total_partitions-1``.
    """
    if total_partitions <= 1:
        return list(codes)
    if not 0 <= partition_index < total_partitions:
        raise ValueError(f"PARTITION_INDEX {partition_index} outside 0..{total_partitions - 1}")
    size = len(codes) // total_partitions
    end = (partition_index + 1) * size if partition_index + 1 < total_partitions else len(codes)
    return list(codes[partition_index * size: end])


def imagenet_class_list(root: str, synsets_file: str = "") -> List[str]:
    """The class list (``class_id`` order): ``synsets_file`` lines if given, else the sorted
    sub-folder names of ``root`` (the standard ImageNet-1K index order)."""
    if synsets_file:
        return read_code_list(synsets_file)
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir())


def iter_imagenet(root: str, class_codes: Sequence[str], class_list: Sequence[str],
                  names: Optional[Dict[str, str]] = None, report: Optional[LoadReport] = None) -> Iterator[dict]:
    """Stream records (module docstring) of ``class_codes``, class by class in the given order,
    files sorted by name within a class. Classes without a folder are counted ``no_image``
    skips. ``class_id`` indexes ``class_list``."""
    ids = {c: i for i, c in enumerate(class_list)}
    names = names or {}
    for code in class_codes:
        folder = os.path.join(root, code)
        try:
            with os.scandir(folder) as it:
                files = sorted(e.name for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS))
        except FileNotFoundError:
            if report is not None:
                report.skip("no_image", folder, "class folder missing")
            continue
        stems = unique_image_ids(files)
        for f in files:
            yield {"file_name": os.path.join(folder, f), "image_id": stems[f], "class_code": code,
                   "class_id": ids[code], "class_name": names.get(code, code), "objects": []}


@DATASET_LOADER_REGISTRY.register()
class ImageNetLoader(DatasetLoader):
    """ImageNet folders. Options: ``root`` (the folder holding ``<wnid>/``), ``synsets_file``
    (class list; empty: sorted folders), ``words_file``, ``filtered_code_path_list``,
    ``exclude_code_path``, ``total_partitions``, ``partition_index``. Metadata: ``thing_classes``
    (class names, full list) and ``class_codes`` (full wnid list) after a load, ``root``."""

    LAYOUT = ("imagenet_1k/train/<wnid>/<wnid>_<n>.JPEG  [+ imagenet_1k/words.txt]\n"
              "imagenet_22k/<wnid>/*.JPEG + imagenet_22k/synsets.dat + imagenet_22k/words.txt")
    EVALUATOR_TYPE = "none"

    def paths(self) -> List[str]:
        o = self.options
        return [o["root"]] + [p for p in (o.get("synsets_file"),) if p]

    def metadata(self) -> dict:
        return {"root": self.options["root"]}

    def records(self, report: LoadReport) -> Iterator[dict]:
        """Stream the records of the kept classes (filters, then partition), see
        :func:`iter_imagenet`; fills :attr:`loaded` with the class lists first. Stages that
        must not wait for a full listing use this instead of ``DatasetCatalog.get``."""
        o = self.options
        codes = imagenet_class_list(o["root"], o.get("synsets_file", ""))
        names = read_words(o.get("words_file", ""))
        kept = filter_class_codes(codes, o.get("filtered_code_path_list", ()), o.get("exclude_code_path", ""))
        kept = partition_class_codes(kept, o.get("total_partitions", -1), o.get("partition_index", 0))
        self.loaded = {"class_codes": codes, "thing_classes": [names.get(c, c) for c in codes]}
        return iter_imagenet(o["root"], kept, codes, names, report)

    def load(self, report: LoadReport) -> List[dict]:
        return list(self.records(report))


def builtin_datasets(d2: str) -> Dict[str, dict]:
    """Official names ``imagenet_1k_{train,val}``, ``imagenet_22k_train`` and the stage-5
    names ``imagenet_{1k,22k}_{pre_labeling,post_labeling}_train`` (the same images; official
    ``configs/PartRanking.yaml``)."""
    one_k, tt_k = os.path.join(d2, "imagenet_1k"), os.path.join(d2, "imagenet_22k")
    out = {f"imagenet_1k_{s}": dict(loader_name="ImageNetLoader", root=os.path.join(one_k, s),
                                     words_file=os.path.join(one_k, "words.txt")) for s in ("train", "val")}
    out["imagenet_22k_train"] = dict(loader_name="ImageNetLoader", root=tt_k,
                                     synsets_file=os.path.join(tt_k, "synsets.dat"),
                                     words_file=os.path.join(tt_k, "words.txt"))
    for size in ("1k", "22k"):
        for mode in ("pre_labeling", "post_labeling"):
            out[f"imagenet_{size}_{mode}_train"] = dict(out[f"imagenet_{size}_train"], eval_mode=mode)
    return out
