"""Work items and partitioning: what a stage processes and which partition owns it.

``"image"`` partitioning: items sorted by key, item i -> partition i % TOTAL_PARTITIONS.
``"class"``: classes assigned greedily, largest first, to the least-loaded partition (ties: lowest
index); a partition owns every item of its classes. Both are deterministic, disjoint and complete
for any number of partitions.
"""
import collections
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..data.pseudo_labels import class_dir


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


def check_unique_ids(items: Sequence[WorkItem]) -> None:
    """Raise ``ValueError`` naming both sources when two items share an image id (``cat.jpg`` and
    ``cat.png`` would write the same output file)."""
    seen = {}
    for it in items:
        if it.image_id in seen:
            raise ValueError(f"duplicate image id {it.image_id!r}: {source_name(seen[it.image_id])} and "
                             f"{source_name(it.source)}; image ids must be unique in a run (rename one)")
        seen[it.image_id] = it.source


def source_name(source) -> str:
    """How a work item's ``source`` is named in messages: a dataset dict's ``file_name``, else the
    source itself (a pseudo-label path)."""
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
