"""The dataset-loader base class. Loader classes (one per on-disk format) register in
:data:`~part_distillation.data.build.DATASET_LOADER_REGISTRY` with
``@DATASET_LOADER_REGISTRY.register()``; :mod:`part_distillation.data.datasets` registers named
datasets in ``DatasetCatalog`` through it.
"""
import os
from typing import List

from .build import DATASET_LOADER_REGISTRY  # noqa: F401  (re-exported for the loader modules)
from .load_report import LoadReport


class DatasetLoader:
    """One on-disk dataset format.

    Subclasses set :attr:`LAYOUT` (the expected layout, quoted in missing-folder errors),
    :attr:`EVALUATOR_TYPE` (``"part"``: ground-truth parts to evaluate against; ``"none"``:
    images only) and :attr:`OFFICIAL_EVAL_GEOMETRY` (the ground-truth geometry of the official
    evaluation mapper of the format, ``"original"`` / ``"upsampled"`` / ``"input"``, see
    :class:`part_distillation.data.proposal_dataset.PartEvalDatasetMapper`; registered as the
    ``official_eval_geometry`` metadata), take their options as keyword arguments and implement :meth:`paths`,
    :meth:`metadata` and :meth:`load`.
    """

    LAYOUT = ""
    EVALUATOR_TYPE = "part"
    OFFICIAL_EVAL_GEOMETRY = "original"

    def __init__(self, **options):
        self.options = options
        self.loaded: dict = {}  # metadata only a load can know (e.g. class lists read from disk)

    def paths(self) -> List[str]:
        """Folders / files that must exist before :meth:`load` (checked by :meth:`check`)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """Metadata known without reading the data: at least ``thing_classes`` (object class
        names; ``class_id`` indexes it) and ``part_classes`` (part vocabulary; ``part_id`` indexes
        it) where the format fixes them."""
        raise NotImplementedError

    def load(self, report: LoadReport) -> List[dict]:
        """Dataset dicts (contract: :mod:`part_distillation.data.ground_truth`); skips are
        counted in ``report``. May fill :attr:`loaded` with metadata learnt while loading; the
        registry adds its fields to the dataset's metadata."""
        raise NotImplementedError

    def check(self, name: str) -> None:
        """Raise FileNotFoundError naming the first missing path and the expected layout."""
        for p in self.paths():
            if not os.path.exists(p):
                raise FileNotFoundError(
                    f"dataset '{name}': {p} does not exist. Expected layout "
                    f"({type(self).__name__}; root $DETECTRON2_DATASETS, default ./datasets, "
                    f"see datasets/README.md):\n{self.LAYOUT}")
