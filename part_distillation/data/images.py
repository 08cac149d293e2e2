"""Robust image reading: every stage reads pixels through here.

Grayscale, palette, CMYK and RGBA images are converted to 3-channel RGB (alpha dropped); EXIF
orientation is NOT applied, so pixels stay aligned with dataset masks stored in file order (as in
Pascal-Part/ADE20K). Unreadable files raise :class:`ImageReadError` naming the file.
"""
import os
from typing import Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(IOError):
    """An image file is missing, empty, truncated or not an image."""


def read_image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` from the header only. Raises :class:`ImageReadError`."""
    _check_file(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from None


def read_image_rgb(path: str) -> np.ndarray:
    """Decode ``path`` to uint8 RGB (H, W, 3). Raises :class:`ImageReadError` on bad files."""
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")  # L, P, CMYK, RGBA (alpha dropped), I;16, ...
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or unsupported image ({e})") from None


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty (0-byte) image file")


def image_id_of_path(path: str) -> str:
    """The image id a file stands for: its name without folder and extension (``a/cat.jpg`` and
    ``b/cat.json`` -> ``cat``). Two files of one run with the same id are refused by the stage runner."""
    return os.path.splitext(os.path.basename(path))[0]


def read_image_or_skip(path: str) -> np.ndarray:
    """:func:`read_image_rgb`, turning an unreadable file into a counted
    :class:`~part_distillation.utils.sharding.SkipItem` (reason ``unreadable image``, the file and
    error as its detail) for the stage runner."""
    from ..utils.sharding import SkipItem

    try:
        return read_image_rgb(path)
    except ImageReadError as e:
        raise SkipItem("unreadable image", str(e)) from None
