"""Atomic file output (write to a temporary file in the target folder, then ``os.replace``), and
the identity of a weights file.

A reader therefore sees either the old file, no file, or the complete new file; a job killed
mid-write leaves only a ``.tmp`` file, which resuming ignores and overwrites.
"""
import hashlib
import json
import os
import tempfile
from typing import Any, Callable


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: str, write_fn: Callable[[Any], None], mode: str = "w") -> None:
    """Call ``write_fn(fileobj)`` on a temp file next to ``path`` and rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
    not the owner-only 0600 of a temp file, so shared outputs stay readable.

    Args:
        path: destination file; its folder is created if missing.
        write_fn: writes the content to the given open file object.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj: Any, indent: int = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


def atomic_save_image(path: str, image) -> None:
    """Save a PIL image (format from the extension) to ``path`` atomically."""
    fmt = os.path.splitext(path)[1].lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    atomic_write(path, lambda f: image.save(f, format=fmt), mode="wb")


_HASH_BYTES = 4 << 20


def weights_identity(path: str) -> dict:
    """``{"path", "size", "sha1_4MiB"}`` of a weights file (absolute path; size and hash ``None``
    when the file does not exist, e.g. a model-zoo URL)."""
    if not os.path.isfile(path):
        return {"path": path, "size": None, "sha1_4MiB": None}
    with open(path, "rb") as f:
        digest = hashlib.sha1(f.read(_HASH_BYTES)).hexdigest()
    return {"path": os.path.abspath(path), "size": os.path.getsize(path), "sha1_4MiB": digest}
