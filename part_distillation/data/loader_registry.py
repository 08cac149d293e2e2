"""The dataset-loader registry: one detectron2 ``Registry`` of loader classes, one per on-disk
format. :mod:`part_distillation.data.datasets` registers named datasets in ``DatasetCatalog``
through it; every loader module registers its class here with
``@DATASET_LOADER_REGISTRY.register()``.
"""
import os
from typing import List

from detectron2.utils.registry import Registry

from .load_report import LoadReport

DATASET_LOADER_REGISTRY = Registry("DATASET_LOADER")
DATASET_LOADER_REGISTRY.__doc__ = """Dataset loader classes (subclasses of :class:`DatasetLoader`),
looked up by class name, e.g. ``PascalPartLoader``."""


class DatasetLoader:
    """One on-disk dataset format.

    Subclasses set :attr:`LAYOUT` (the expected layout, quoted in missing-folder errors) and
    :attr:`EVALUATOR_TYPE` (``"part"``: ground-truth parts to evaluate against; ``"none"``:
    images only), take their options as keyword arguments and implement :meth:`paths`,
    :meth:`metadata` and :meth:`load`.
    """

    LAYOUT = ""
    EVALUATOR_TYPE = "part"

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
