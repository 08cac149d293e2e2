"""What a dataset load skipped, and why: counted per reason, with the files named.

Every loader of :mod:`part_distillation.data` fills one :class:`LoadReport`; after
``DatasetCatalog.get(name)`` it is ``MetadataCatalog.get(name).load_report`` and
:func:`part_distillation.data.datasets.load_report` returns its JSON form for a name or a folder,
for stage summaries / ``metrics.json``::

    {"dataset": str, "num_loaded": int,
     "skipped": {reason: count},                  # reason keys are fixed words, never paths
     "skipped_files": {reason: [path, ...]},      # the first MAX_FILES_PER_REASON files
     "vocabulary": "pascal" | "as-is"}            # Pascal-Part-schema folders only

Reasons used by the loaders: ``unreadable_image`` (missing / corrupt / 16-bit out of range /
over Pillow's decompression-bomb limit), ``no_annotation`` (image without annotation file),
``no_image`` (annotation without image), ``bad_annotation`` (unparsable file, masks whose size
differs from the image's, names the vocabulary does not know, no usable part left), ``no_mask`` (image folder with masks: image without mask PNG). Reasons of
:data:`ANNOTATION_REASONS` count single part annotations (the image is kept with its other parts):
``bad_part_annotation`` (unknown category, malformed segmentation), ``empty_part`` (zero area).
"""
import logging
import os
from collections import Counter
from typing import Dict, List

logger = logging.getLogger(__name__)

MAX_FILES_PER_REASON = 100
# reasons that count part annotations, not images
ANNOTATION_REASONS = ("bad_part_annotation", "empty_part")


class LoadReport:
    """Counts and names the files a dataset load skipped.

    Attributes:
        dataset: the dataset name or folder it describes.
        num_loaded: dataset dicts returned.
        skipped: ``Counter`` reason -> count.
        skipped_files: reason -> the first :data:`MAX_FILES_PER_REASON` skipped paths.
        vocabulary: the vocabulary a Pascal-Part-schema load used ("" for other formats).
    """

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.reset()

    def reset(self) -> None:
        """Forget the counts (a reload refills the same object)."""
        self.num_loaded = 0
        self.skipped: Counter = Counter()
        self.skipped_files: Dict[str, List[str]] = {}
        self.vocabulary = ""  # Pascal-Part-schema folders: "pascal" or "as-is" (the files' names)

    def skip(self, reason: str, path: str, message: str = "") -> None:
        """Count one skipped file under ``reason`` and log a warning naming it."""
        self.skipped[reason] += 1
        files = self.skipped_files.setdefault(reason, [])
        if len(files) < MAX_FILES_PER_REASON:
            files.append(path)
        logger.warning("%s: skipped %s (%s)%s", self.dataset, path, reason, f": {message}" if message else "")

    def image_size(self, file_name: str):
        """``(width, height)`` of an image file from its header, or None after counting the file as
        an ``unreadable_image`` skip."""
        from .images import ImageReadError, read_image_size

        try:
            return read_image_size(file_name)
        except ImageReadError as e:
            self.skip("unreadable_image", file_name, str(e))
            return None

    def annotated_image_size(self, file_name: str, annotations, missing: str = ""):
        """The loaders' common check: ``(width, height)`` of ``file_name`` when every path of
        ``annotations`` exists and the image's header reads; else None after counting one skip:
        ``no_annotation`` naming the first missing path (or ``missing``, when given, for an
        annotation that is not a file), or ``unreadable_image``."""
        absent = missing or next((p for p in annotations if not os.path.isfile(p)), "")
        if absent:
            self.skip("no_annotation", file_name, f"missing {absent}")
            return None
        return self.image_size(file_name)

    @property
    def num_skipped(self) -> int:
        """Images skipped (the counts of :data:`ANNOTATION_REASONS` are part annotations)."""
        return sum(n for r, n in self.skipped.items() if r not in ANNOTATION_REASONS)

    def log_summary(self) -> None:
        """One log line: loaded count and skips per reason."""
        if self.skipped:
            logger.warning("%s: %d loaded, %d skipped %s", self.dataset, self.num_loaded,
                           self.num_skipped, dict(self.skipped))
        else:
            logger.info("%s: %d loaded, none skipped", self.dataset, self.num_loaded)

    def to_dict(self) -> dict:
        """JSON-serialisable form (see the module docstring)."""
        out = {"dataset": self.dataset, "num_loaded": self.num_loaded, "skipped": dict(self.skipped),
               "skipped_files": {k: list(v) for k, v in self.skipped_files.items()}}
        if self.vocabulary:
            out["vocabulary"] = self.vocabulary
        return out
