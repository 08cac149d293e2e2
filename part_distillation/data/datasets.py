"""Named datasets in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``, through the loader
registry (:mod:`part_distillation.data.loader_registry`).

Registered once, on import of :mod:`part_distillation` (detectron2 ``data/datasets/builtin.py``
style; lazy: nothing is read until ``DatasetCatalog.get``; a missing folder is then a
FileNotFoundError naming the path and the expected layout), with the official names
(``pascal_part_{train,val,valtest}``, ``part_imagenet_{train,val,test,valtest}``,
``<name>_{pre_labeling,match,evaluate}_<split>``, ``cityscapes_part_*``, ``imagenet_1k_*``,
``imagenet_22k_*``). Paths are under ``$DETECTRON2_DATASETS`` (detectron2's convention, default
``<repo>/datasets``); the shared real examples under ``$PD_SHARED_DATA`` (default
``<repo>/../shared/data``). A config's ``CUSTOM_DATASETS.*`` options are applied when data is
loaded for it (:func:`resolve_dataset` ``(name, cfg)``), never by re-registering; the few-shot
rule (:func:`few_shot_subset`) is applied once, by the trainer, to the training dicts.
``datasets/README.md`` lists every name and layout.

Metadata of every registered name (``MetadataCatalog.get(name)``): ``loader`` (registry name),
``evaluator_type`` (``"part"`` or ``"none"``), ``has_parts``, ``layout``, ``thing_classes``
(``class_id`` indexes it), ``part_classes`` (``part_id`` indexes it) where the format fixes them,
``official_eval_geometry`` (the loader's ``OFFICIAL_EVAL_GEOMETRY``), ``eval_mode`` (``"pre_labeling"`` / ``"match"`` / ``"evaluate"`` for the evaluation names)
and ``load_report`` (:class:`~part_distillation.data.load_report.LoadReport`,
filled by each load). Loader-specific fields are documented with each loader.
"""
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

# importing a loader module registers its loader classes
from . import cityscapes_part, image_folder, imagenet, ov_parts, part_imagenet, pascal_part  # noqa: F401
from ..utils.io import atomic_write_json
from .ground_truth import GroundTruthError, validate_record
from .load_report import ANNOTATION_REASONS, LoadReport
from .loader_registry import DATASET_LOADER_REGISTRY

logger = logging.getLogger(__name__)
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FOLDER_PREFIX = "folder:"
# Seed of the few-shot shuffle (official: np.random.seed(1234) in the dataset registrations).
FEWSHOT_SEED = 1234


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, default ``<repo>/datasets``."""
    return os.environ.get("DETECTRON2_DATASETS", os.path.join(_REPO, "datasets"))


def shared_data_root() -> str:
    """``$PD_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return os.environ.get("PD_SHARED_DATA", os.path.join(os.path.dirname(_REPO), "shared", "data"))


def few_shot_subset(dicts: Sequence[dict], label_percentage: float, seed: int = FEWSHOT_SEED,
                    key: str = "FEWSHOT_LEARNING.LABEL_PERCENTAGE") -> List[dict]:
    """The few-shot rule, the one place it is written (official ``register_pascal_parts`` /
    ``register_part_imagenet`` / ``register_cityscapes_part``: ``np.random.seed(1234)``,
    ``np.random.shuffle``, first ``int(N * p / 100)``): ``dicts`` in the loader's order, shuffled
    with ``numpy.random.RandomState(seed)``, the first ``int(len(dicts) * label_percentage / 100)``
    kept (rounded down, as officially: 10% of 1,000 keeps 100, 10% of 120 keeps 12). All of them,
    in order, when ``label_percentage >= 100``. Applied once, to the training split, by
    :func:`few_shot_training_dicts`; registration never applies it.

    Raises:
        ValueError: ``label_percentage`` is not in (0, 100], or the subset would be empty.
    """
    if not 0 < label_percentage <= 100:
        raise ValueError(f"{key} must be in (0, 100], got {label_percentage}")
    if label_percentage >= 100:
        return list(dicts)
    order = np.random.RandomState(seed).permutation(len(dicts))
    kept = [dicts[i] for i in order[: int(len(dicts) * label_percentage / 100)]]
    if not kept:
        raise ValueError(f"{key} {label_percentage} of {len(dicts)} images keeps "
                         "none (the official rule rounds down): raise the percentage")
    return kept


def few_shot_training_dicts(dicts: Sequence[dict], label_percentage: float, output_dir: str = "",
                            key: str = "FEWSHOT_LEARNING.LABEL_PERCENTAGE") -> List[dict]:
    """:func:`few_shot_subset` of a training set, with the kept image ids logged and, with
    ``output_dir``, written to ``<output_dir>/fewshot_image_ids.json`` (``{"key",
    "label_percentage", "seed", "num_images", "image_ids"}``) so that a run can be audited.
    The trainers call this once on the concatenated training dicts."""
    kept = few_shot_subset(dicts, label_percentage, key=key)
    if label_percentage >= 100:
        return kept
    ids = [str(d["image_id"]) for d in kept]
    logger.info("%s %s: %d of %d images (seed %d); first ids %s", key, label_percentage, len(kept),
                len(dicts), FEWSHOT_SEED, ids[:5])
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_json(os.path.join(output_dir, "fewshot_image_ids.json"),
                          {"key": key, "label_percentage": label_percentage, "seed": FEWSHOT_SEED,
                           "num_images": len(dicts), "image_ids": ids}, indent=1)
    return kept


def _load(name: str, loader, debug: bool) -> List[dict]:
    report: LoadReport = MetadataCatalog.get(name).load_report
    report.reset()  # the metadata holds one report object; each load refills it
    loader.check(name)
    dicts = loader.load(report)
    meta = MetadataCatalog.get(name)
    for key, value in loader.loaded.items():
        if not hasattr(meta, key):
            meta.set(**{key: value})
    if loader.EVALUATOR_TYPE == "part":
        valid = []
        for d in dicts:
            try:
                validate_record(d)
            except GroundTruthError as e:
                report.skip("bad_annotation", d.get("annotation_file", d["file_name"]), str(e))
                continue
            valid.append(d)
        dicts = valid
    if debug:
        dicts = dicts[:100]
    report.num_loaded = len(dicts)
    report.log_summary()
    return dicts


def register_dataset(name: str, loader_name: str, debug: bool = False, eval_mode: str = "",
                     **options) -> None:
    """Register ``name`` in ``DatasetCatalog`` (lazy) with the registry loader ``loader_name``
    and ``options``, and its metadata (see the module docstring). Re-registering a name replaces
    it (for names of one's own; the built-in names are registered once, at import).

    Args:
        debug: keep the first 100 images (official ``*.DEBUG``).
        eval_mode: ``"pre_labeling"`` / ``"match"`` / ``"evaluate"`` (the official evaluation
            names ``<dataset>_<mode>_<split>``).
    Raises:
        KeyError: unknown ``loader_name``.
    """
    loader = DATASET_LOADER_REGISTRY.get(loader_name)(**options)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _load(name, loader, debug))
    meta = {"loader": loader_name, "evaluator_type": loader.EVALUATOR_TYPE,
            "has_parts": loader.EVALUATOR_TYPE == "part", "layout": loader.LAYOUT,
            "official_eval_geometry": loader.OFFICIAL_EVAL_GEOMETRY,
            "load_report": LoadReport(name)}
    if eval_mode:
        meta["eval_mode"] = eval_mode
    meta.update(loader.metadata())
    MetadataCatalog.get(name).set(**meta)


def _builtin(cfg=None) -> Dict[str, dict]:
    """``{name: register_dataset kwargs}`` of every built-in dataset, with ``cfg``'s
    ``CUSTOM_DATASETS.*`` values (``None``: the defaults)."""
    d2, shared = datasets_root(), shared_data_root()
    merge = bool(cfg.CUSTOM_DATASETS.USE_MERGED_GT) if cfg is not None else True
    out = {
        "pascal_part": dict(loader_name="PascalPartLoader", root=os.path.join(d2, "pascal_part"), merge=merge),
        "pascal_part_examples": dict(loader_name="PascalPartLoader", merge=merge,
                                     root=os.path.join(shared, "pascal_part_examples")),
        # ADE names; class_ind / part names index the ADE20K-Part-234 lists (OV-PARTS)
        "ade20k_part_subset": dict(loader_name="PascalPartLoader", pascal_vocabulary=False,
                                   root=os.path.join(shared, "ade20k_part_subset"),
                                   thing_classes=list(ov_parts.ADE_PART_234_OBJECTS),
                                   part_classes=list(ov_parts.ADE_PART_234_CLASSES)),
    }
    out.update(pascal_part.builtin_datasets(d2, cfg))
    out.update(part_imagenet.builtin_datasets(d2, cfg))
    out.update(imagenet.builtin_datasets(d2))
    out.update(cityscapes_part.builtin_datasets(d2, cfg))
    out.update(ov_parts.builtin_datasets(d2))
    return out


# names registered at import -> the register_dataset kwargs they were registered with
_REGISTERED_BUILTIN: Dict[str, dict] = {}
# deprecated dataset names -> their official names (registered as aliases that warn)
DEPRECATED_DATASET_NAMES = {f"pascal_parts_{s}": f"pascal_part_{s}" for s in
                            ("train", "val", "match_train", "match_val", "evaluate_train", "evaluate_val")}


def _deprecated_alias(old: str, new: str):
    def load():
        warnings.warn(f"dataset name '{old}' is deprecated: use '{new}'", FutureWarning, stacklevel=2)
        return DatasetCatalog.get(new)
    return load


def register_builtin() -> None:
    """Register the built-in names once, at import, with their default options under
    ``$DETECTRON2_DATASETS`` (detectron2 ``data/datasets/builtin.py`` style), and the deprecated
    names of :data:`DEPRECATED_DATASET_NAMES` as aliases that warn. Idempotent: names already
    registered are kept. Config-dependent options (``CUSTOM_DATASETS.*``) are applied when a
    loader is built (:func:`resolve_dataset` with ``cfg``), never by re-registering."""
    registered = set(DatasetCatalog.list())
    for name, kwargs in _builtin().items():
        if name not in registered:
            register_dataset(name, **kwargs)
            _REGISTERED_BUILTIN[name] = kwargs
    for old, new in DEPRECATED_DATASET_NAMES.items():
        if old not in registered:
            DatasetCatalog.register(old, _deprecated_alias(old, new))
            meta = {k: v for k, v in MetadataCatalog.get(new).as_dict().items() if k != "name"}
            MetadataCatalog.get(old).set(**meta, deprecated_alias_of=new)


def configured_options(name: str, cfg) -> Optional[dict]:
    """The ``register_dataset`` kwargs of built-in ``name`` under ``cfg``'s ``CUSTOM_DATASETS.*``
    when they differ from those it was registered with at import, else ``None``."""
    if cfg is None or name not in _REGISTERED_BUILTIN:
        return None
    kwargs = _builtin(cfg).get(name)
    return None if kwargs is None or kwargs == _REGISTERED_BUILTIN[name] else kwargs


def _folder_dataset(folder: str, vocabulary: str = "") -> str:
    """Register a folder (Pascal-Part release layout, ``images/`` + ``masks/``, or plain images)
    as ``folder:<abspath>`` and return that name. A Pascal-Part-layout folder is read with
    ``vocabulary`` (``"auto"`` when empty, see
    :func:`~part_distillation.data.pascal_part.load_pascal_part`); a given ``vocabulary`` other than
    the registered one re-registers the folder."""
    folder = os.path.abspath(folder)
    name = _FOLDER_PREFIX + folder
    pascal_layout = os.path.isdir(os.path.join(folder, "Annotations_Part"))
    if name in DatasetCatalog.list() and pascal_layout and vocabulary \
            and MetadataCatalog.get(name).get("vocabulary_option", "auto") != vocabulary:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    if name not in DatasetCatalog.list():
        if pascal_layout:
            register_dataset(name, "PascalPartLoader", root=folder, vocabulary=vocabulary or "auto")
            MetadataCatalog.get(name).set(vocabulary_option=vocabulary or "auto")
        else:
            images, masks = os.path.join(folder, "images"), os.path.join(folder, "masks")
            if os.path.isdir(images) and os.path.isdir(masks):
                register_dataset(name, "ImageFolderLoader", images_dir=images, masks_dir=masks)
            else:
                register_dataset(name, "ImageFolderLoader", images_dir=folder)
    return name


def dataset_name(spec: str, vocabulary: str = "") -> str:
    """The ``DatasetCatalog`` name of ``spec``: a registered name, or a folder (registered on the
    fly as ``folder:<abspath>``, a Pascal-Part-layout one with ``vocabulary``: ``--vocabulary`` of
    the tools, see :func:`_folder_dataset`). A deprecated name (:data:`DEPRECATED_DATASET_NAMES`)
    gives its official name, with a ``FutureWarning``.

    Raises:
        KeyError: ``spec`` is neither a folder nor a registered name (lists registered names).
    """
    if os.path.isdir(spec):
        return _folder_dataset(spec, vocabulary)
    if spec in DEPRECATED_DATASET_NAMES:
        warnings.warn(f"dataset name '{spec}' is deprecated: use '{DEPRECATED_DATASET_NAMES[spec]}'",
                      FutureWarning, stacklevel=2)
        return DEPRECATED_DATASET_NAMES[spec]
    if spec not in DatasetCatalog.list():
        raise KeyError(f"unknown dataset '{spec}' (not a folder either); registered: "
                       f"{', '.join(sorted(n for n in DatasetCatalog.list() if not n.startswith(_FOLDER_PREFIX)))}")
    return spec


def resolve_dataset(spec: str, cfg=None) -> List[dict]:
    """Dataset dicts for a registered name or a folder (see :func:`dataset_name`); afterwards
    :func:`load_report` ``(spec)`` tells what the load skipped. With ``cfg``, a built-in name is
    loaded with that config's ``CUSTOM_DATASETS.*`` options (merged GT, folders, class subset,
    debug) by a loader built for this call; the catalog entry is left as registered.

    Raises:
        KeyError: unknown name; FileNotFoundError: the dataset's folder is missing.
    """
    name = dataset_name(spec)
    options = configured_options(name, cfg)
    if options is None:
        return DatasetCatalog.get(name)
    options = dict(options)
    loader = DATASET_LOADER_REGISTRY.get(options.pop("loader_name"))
    debug = options.pop("debug", False)
    options.pop("eval_mode", None)
    return _load(name, loader(**options), debug)


def dataset_metadata(spec: str, cfg=None) -> dict:
    """Metadata of ``spec`` (name or folder) as a dict: ``MetadataCatalog``'s, with the class
    lists of the loader ``cfg``'s options build (e.g. ``CUSTOM_DATASETS.PASCAL_PARTS.
    SUBSET_CLASS_NAMES`` renumbers ``part_classes``)."""
    name = dataset_name(spec)
    meta = MetadataCatalog.get(name).as_dict()
    options = configured_options(name, cfg)
    if options is not None:
        options = {k: v for k, v in options.items() if k not in ("loader_name", "debug", "eval_mode")}
        meta.update(DATASET_LOADER_REGISTRY.get(_REGISTERED_BUILTIN[name]["loader_name"])(**options).metadata())
    return meta


def load_report(spec: str) -> dict:
    """JSON form of the last load's :class:`LoadReport` of ``spec`` (name or folder), for stage
    summaries and ``metrics.json``: ``{"dataset", "num_loaded", "skipped": {reason: n},
    "skipped_files": {reason: [paths]}}``."""
    return MetadataCatalog.get(dataset_name(spec)).load_report.to_dict()


# share of a dataset's images a load may skip before a run stops (check_load_skips)
MAX_SKIPPED_SHARE = 0.05


class TooManySkippedError(ValueError):
    """A dataset load skipped more than the accepted share of its images; the message names the
    reasons, example files and the option that accepts it."""


def format_load_skips(report: dict) -> str:
    """One line for summaries and ``metrics.md``: ``"<n> images loaded, <m> skipped (reason:
    count, ...)"`` of a :func:`load_report` (the reasons include part-annotation skips)."""
    skipped = report.get("skipped", {})
    images = sum(n for r, n in skipped.items() if r not in ANNOTATION_REASONS)
    text = f"{report['num_loaded']} images loaded, {images} skipped"
    if skipped:
        text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items())) + ")"
    if report.get("vocabulary"):
        text += f"; vocabulary {report['vocabulary']}"
    return text


def check_load_skips(spec: str, accept: bool = False, max_share: float = MAX_SKIPPED_SHARE,
                     option: str = "--accept-skips") -> dict:
    """The :func:`load_report` of ``spec``'s last load, refused when it skipped more than
    ``max_share`` of its images (skipped / (loaded + skipped); part-annotation skips of
    :data:`~part_distillation.data.load_report.ANNOTATION_REASONS` do not count) unless ``accept``: a run on the rest
    would report metrics on a fraction of the data as if it were all of it.

    Raises:
        TooManySkippedError: naming the dataset, the counts per reason, example files and
            ``option`` (the flag that accepts it).
    """
    report = load_report(spec)
    skipped = sum(n for r, n in report["skipped"].items() if r not in ANNOTATION_REASONS)
    total = skipped + report["num_loaded"]
    if total and skipped / total > max_share:
        examples = "; ".join(f"{r}: {', '.join(files[:2])}" for r, files in sorted(report["skipped_files"].items()))
        if not accept:
            raise TooManySkippedError(
                f"dataset {spec}: {skipped} of {total} images skipped ({100 * skipped / total:.0f}% > "
                f"{100 * max_share:.0f}%): {format_load_skips(report)}; e.g. {examples}. Fix the files "
                f"(a folder of another part vocabulary: --vocabulary as-is), or pass {option} to run "
                "on the loaded images only")
        logger.warning("dataset %s: %s (%s: accepted)", spec, format_load_skips(report), option)
    return report


def has_part_annotations(spec: str) -> bool:
    """Whether ``spec`` (name or folder) carries ground-truth parts to evaluate against."""
    return bool(MetadataCatalog.get(dataset_name(spec)).get("has_parts", False))
