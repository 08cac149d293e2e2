"""Class filter lists of a stage namespace (official ``FILTERED_CODE_PATH_LIST`` /
``EXCLUDE_CODE_PATH`` / ``PATH_ONLY`` / ``SINGLE_CLASS_CODE``), read once for every stage."""
import os
from typing import Optional, Sequence, Tuple


def load_class_filter(ns) -> Tuple[Optional[set], set]:
    """``(keep, exclude)`` class-code sets of a stage namespace: :func:`read_class_filter` of its
    ``FILTERED_CODE_PATH_LIST``, ``EXCLUDE_CODE_PATH``, ``PATH_ONLY`` and ``SINGLE_CLASS_CODE``
    (where the namespace has it).

    Raises:
        FileNotFoundError: a listed file does not exist (names the key).
    """
    return read_class_filter(**class_filter_args(ns))


def class_filter_args(ns) -> dict:
    """The keyword arguments of :func:`read_class_filter` from a stage namespace's
    ``FILTERED_CODE_PATH_LIST`` (a tuple), ``EXCLUDE_CODE_PATH``, ``PATH_ONLY`` and
    ``SINGLE_CLASS_CODE`` (``""`` where the namespace has no such key)."""
    return dict(filtered_code_path_list=tuple(ns.FILTERED_CODE_PATH_LIST), exclude_code_path=ns.EXCLUDE_CODE_PATH,
                path_only=bool(ns.PATH_ONLY), single_class_code=ns.get("SINGLE_CLASS_CODE", "") or "")


def read_class_filter(*, filtered_code_path_list: Sequence[str], exclude_code_path: str, path_only: bool,
                      single_class_code: str) -> Tuple[Optional[set], set]:
    """``(keep, exclude)`` class-code sets.

    ``filtered_code_path_list``: files listing the class codes to keep (keep the codes in every one
    of them; empty list: keep all -> ``None``). ``exclude_code_path``: a file of class codes to
    drop (``""``: none). ``single_class_code``: keep only that code (``""``: no such limit). A file
    is text (one code per line, blank lines and ``#`` comments ignored) or, ending in ``.pkl`` /
    ``.pth``, a pickled list of codes as the official metadata files (``torch.load``). With
    ``path_only`` the entries are paths (e.g. ImageNet class folders) and the class code is each
    one's last path component.

    Raises:
        FileNotFoundError: a listed file does not exist (names the official key).
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
        return {os.path.basename(ln.rstrip("/")) if path_only else ln for ln in lines}

    keep = None
    for p in filtered_code_path_list:
        codes = read(p, "FILTERED_CODE_PATH_LIST")
        keep = codes if keep is None else keep & codes
    if single_class_code:
        keep = {single_class_code} if keep is None else keep & {single_class_code}
    exclude = read(exclude_code_path, "EXCLUDE_CODE_PATH") if exclude_code_path else set()
    return keep, exclude


def class_allowed(class_code: str, keep: Optional[set], exclude: set) -> bool:
    """Whether ``class_code`` passes ``(keep, exclude)`` of :func:`load_class_filter`."""
    return (keep is None or class_code in keep) and class_code not in exclude
