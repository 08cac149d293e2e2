"""Class filter lists of a stage namespace (official ``FILTERED_CODE_PATH_LIST`` /
``EXCLUDE_CODE_PATH`` / ``PATH_ONLY`` / ``SINGLE_CLASS_CODE``), read once for every stage."""
import os
from typing import Optional, Tuple


def load_class_filter(ns) -> Tuple[Optional[set], set]:
    """``(keep, exclude)`` class-code sets of a stage namespace.

    ``FILTERED_CODE_PATH_LIST``: files listing the class codes to keep (keep the codes in every one
    of them; empty list: keep all -> ``None``). ``EXCLUDE_CODE_PATH``: a file of class codes to
    drop. ``SINGLE_CLASS_CODE`` (where the namespace has it): keep only that code. A file is text
    (one code per line, blank lines and ``#`` comments ignored) or, ending in ``.pkl`` / ``.pth``,
    a pickled list of codes as the official metadata files (``torch.load``). With ``PATH_ONLY``
    the entries are paths (e.g. ImageNet class folders) and the class code is each one's last path
    component.

    Raises:
        FileNotFoundError: a listed file does not exist (names the key).
    """
    def read(path, key):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{key}: class list {path} not found")
        if path.endswith((".pkl", ".pth")):
            import torch

            lines = [str(c) for c in torch.load(path, weights_only=True)]
        else:
            with open(path) as f:
                lines = [ln.strip() for ln in f]
            lines = [ln for ln in lines if ln and not ln.startswith("#")]
        return {os.path.basename(ln.rstrip("/")) if ns.PATH_ONLY else ln for ln in lines}

    keep = None
    for p in ns.FILTERED_CODE_PATH_LIST:
        codes = read(p, "FILTERED_CODE_PATH_LIST")
        keep = codes if keep is None else keep & codes
    if ns.get("SINGLE_CLASS_CODE"):
        keep = {ns.SINGLE_CLASS_CODE} if keep is None else keep & {ns.SINGLE_CLASS_CODE}
    exclude = read(ns.EXCLUDE_CODE_PATH, "EXCLUDE_CODE_PATH") if ns.EXCLUDE_CODE_PATH else set()
    return keep, exclude


def class_allowed(class_code: str, keep: Optional[set], exclude: set) -> bool:
    """Whether ``class_code`` passes ``(keep, exclude)`` of :func:`load_class_filter`."""
    return (keep is None or class_code in keep) and class_code not in exclude
