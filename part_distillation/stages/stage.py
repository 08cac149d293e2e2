"""The stage protocol: one class per stage, sharded, resumable, with a cheap completion check.

The framework is split by concern: :mod:`.build` (registry, :func:`~.build.build_stage`),
:mod:`.stage` (this base class), :mod:`.runner` (the run loop), :mod:`.partition` (work items and
partitioning), :mod:`.store` (done-manifest, gather store, reduced states), :mod:`.resume` (the
resume guard).

A stage is a subclass of :class:`Stage` registered in :data:`~part_distillation.stages.build.STAGE_REGISTRY` under its ``NAME``
(the pseudo-label ``stage`` field). It is ``@configurable`` (detectron2): its constructor takes
keyword-only arguments, and ``from_config(cfg, output_dir, ...)`` alone reads the config, so
``SomeStage(cfg, output_dir)`` and ``SomeStage(output_dir=..., run_options=..., ...)`` build the same
stage. Every stage gets ``run_options`` (:class:`~part_distillation.stages.runner.RunOptions`), the
run keys of ``cfg[CONFIG_NAMESPACE]`` (``PROPOSAL_GENERATION`` for stages 1-2, ``DENSE_CRF`` for
stage 3, ``PROPOSAL_LEARNING`` for the stage-4 predictor, ``PART_RANKING`` for stage 5):
``TOTAL_PARTITIONS`` / ``PARTITION_INDEX`` (sharding; index -1 takes ``SLURM_ARRAY_TASK_ID``),
``FILTERED_CODE_PATH_LIST`` / ``EXCLUDE_CODE_PATH`` / ``PATH_ONLY`` (class filters, see
:func:`~part_distillation.utils.class_filter.read_class_filter`) and ``DEBUG`` (only the first
:data:`~part_distillation.stages.runner.DEBUG_ITEMS` items of the partition).

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

Partitioning (``PARTITION_BY``, ``"image"`` or ``"class"``): see :mod:`.partition`. Output layout: see :mod:`.store`.

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
        NAME, CONFIG_NAMESPACE, INPUT_STAGE = "my_stage", "MY_STAGE", "dcrf"
        RECORDED_ARGUMENTS = ("threshold",)      # the arguments that determine the outputs

        @configurable
        def __init__(self, *, output_dir, run_options, threshold):
            super().__init__(output_dir=output_dir, run_options=run_options)
            self.threshold = threshold

        @classmethod
        def from_config(cls, cfg, output_dir):
            return dict(super().from_config(cfg, output_dir), threshold=cfg.MY_STAGE.THRESHOLD)

        def process(self, item):
            label = self.load_input(item)        # checked: INPUT_STAGE file of item.image_id
            return dataclasses.replace(label, objects=...), {"my_counter": 1}

plus ``add_stage_run_keys(cfg.MY_STAGE)`` in :mod:`part_distillation.config`; then
``tools/run_stage.py --stage my_stage --input-dir ... --output-dir ...`` runs it.

Resume guard: ``logs/config.json`` records ``arguments``, the value of every constructor argument
named in ``RECORDED_ARGUMENTS`` (an argument with a ``settings()`` method, such as a labeler, is
recorded as what that returns), plus the identity (path, size, SHA-1 of the first 4 MiB) of the
weight files :meth:`Stage.weight_files` names; a later run built with other arguments raises
:class:`~.resume.StageConfigMismatch` naming the argument. ``from_config`` validates the config
values (:meth:`Stage.validate_config`, errors naming the key) before the stage is built.
"""
import os
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
from detectron2.config import CfgNode, configurable

from ..config import plain_config
from ..data.images import image_id_of_path
from ..data.pseudo_labels import ImagePseudoLabel, class_code_of_dir, list_pseudo_labels, load_pseudo_label
from ..utils.sharding import RunSummary
from .partition import WorkItem
from .resume import RUN_KEYS, weights_identity
from .runner import RunOptions, run_stage


class Stage:
    """Base class of every stage (see the module docstring for the protocol).

    Args:
        output_dir: the stage's output folder.
        run_options: how the run is split and filtered (:class:`~.runner.RunOptions`).
    """

    NAME = ""
    CONFIG_NAMESPACE = ""
    PARTITION_BY = "image"
    INPUT_KIND = "dataset"  # what run() takes: "dataset" (dataset dicts) or "pseudo_labels" (a folder)
    RECORDED_ARGUMENTS: Tuple[str, ...] = ()  # constructor arguments (attributes) that determine the outputs
    gather_buffer_bytes = 256 << 20
    # a dataset stage's input: the load report of its dataset (data.datasets.load_report), set by
    # the caller; the runner adds its skips to the summary ("load <reason>" and "dataset_load")
    input_report: Optional[dict] = None

    @configurable
    def __init__(self, *, output_dir: str, run_options: RunOptions):
        self.output_dir, self.run_options = output_dir, run_options

    @classmethod
    def from_config(cls, cfg, output_dir: str) -> dict:
        """``output_dir`` and the run options of ``cfg[CONFIG_NAMESPACE]``, after
        :meth:`validate_config`. Subclasses extend the dict with their own arguments."""
        cls.validate_config(cfg)
        return {"output_dir": output_dir, "run_options": RunOptions.from_config(cfg, cls.CONFIG_NAMESPACE)}

    # ---- to implement ----
    @classmethod
    def validate_config(cls, cfg) -> None:
        """Raise ``ValueError`` naming the key for a bad enum/range value (called before anything
        is recorded or computed). Subclasses extend it and call ``super()``."""
        if cls.PARTITION_BY not in ("image", "class"):
            raise ValueError(f"{cls.__name__}.PARTITION_BY must be 'image' or 'class'")
        try:
            RunOptions.from_config(cfg, cls.CONFIG_NAMESPACE).partition()
        except ValueError as e:
            raise ValueError(f"{e} (stage {cls.NAME} shards by its own namespace)") from None

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
        """Weight files whose identity the resume guard records (default: none)."""
        return []

    def settings(self) -> dict:
        """What ``logs/config.json`` records: ``arguments`` (``{name: value}`` of
        ``RECORDED_ARGUMENTS``, :func:`recorded_value` of each) and ``WEIGHTS_IDENTITY``."""
        return {"arguments": {name: recorded_value(getattr(self, name)) for name in self.RECORDED_ARGUMENTS},
                "WEIGHTS_IDENTITY": [weights_identity(p) for p in self.weight_files()]}

    @property
    def is_gather_form(self) -> bool:
        return type(self).gather is not Stage.gather

    def run(self, inputs, workers: int = 1) -> RunSummary:
        """Run this stage's partition over ``inputs`` (:func:`~part_distillation.stages.runner.run_stage`);
        returns the :class:`RunSummary` (also written to ``logs/summary_<i>of<n>.json``).

        Raises:
            ValueError: a partition index out of range, duplicate image ids, a class filter file missing.
            StageConfigMismatch: ``output_dir`` holds outputs made with other arguments.
            OutputLockHeld: another process runs this partition into ``output_dir``.
        """
        return run_stage(self, inputs, workers)


def recorded_value(value):
    """A constructor argument as the resume guard records it (JSON-ready): ``value.settings()``
    when it has that method (labelers), a ``CfgNode`` as nested dicts without
    :data:`~.resume.RUN_KEYS`, tuples as lists, anything else as it is."""
    if callable(getattr(value, "settings", None)):
        return value.settings()
    if isinstance(value, CfgNode):
        return plain_config(value, RUN_KEYS)
    if isinstance(value, dict):
        return {k: recorded_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [recorded_value(v) for v in value]
    return value


class PseudoLabelInputStage(Stage):
    """A stage whose inputs are another stage's pseudo-labels (``INPUT_STAGE``): ``run(folder or
    list of files)``; items keep the input's ``<class_dir>/<image_id>``."""

    INPUT_KIND = "pseudo_labels"
    INPUT_STAGE = ""

    def list_items(self, inputs) -> List[WorkItem]:
        """Work items of a pseudo-label folder (or a list of files).

        Raises:
            FileNotFoundError: the folder is missing, or holds no ``<class_dir>/<image_id>.json``
                file (e.g. files one level too deep), which would otherwise be a run of 0 images.
        """
        files = list_pseudo_labels(inputs) if isinstance(inputs, str) else list(inputs)
        if isinstance(inputs, str) and not files:
            raise FileNotFoundError(
                f"{inputs}: no pseudo-label files <class_dir>/<image_id>.json for {self.NAME or type(self).__name__} "
                f"(its input is a {self.INPUT_STAGE or 'pseudo-label'} folder; check the path and its layout)")
        return [WorkItem(image_id_of_path(p), class_code_of_dir(os.path.basename(os.path.dirname(p))), p) for p in files]

    def load_input(self, item: WorkItem) -> ImagePseudoLabel:
        """The item's input pseudo-label, checked to be an ``INPUT_STAGE`` file of that image id."""
        return load_pseudo_label(item.source, self.INPUT_STAGE or None)
