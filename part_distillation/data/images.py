"""Robust image reading: every stage reads pixels through here.

Grayscale, palette, CMYK and RGBA images are converted to 3-channel RGB (alpha dropped). The EXIF
orientation tag (0x0112, values 2-8: a phone photo stored sideways) is applied, by every reader
here including :func:`read_image_size`, as detectron2's ``read_image`` (used by the official
mappers) does: pixels and sizes are those of the image as displayed, the frame that dataset
annotations are drawn in. Files without the tag (Pascal-Part, ADE20K) are unchanged. 16-bit grayscale images (Pillow modes ``I;16*`` / ``I``, e.g. 16-bit PNGs) are
scaled to 8 bit by ``v * 255 / 65535`` (Pillow's own conversion clips them to 255, giving an
almost white image); values outside 0..65535 and float images are refused. Unreadable files raise
:class:`ImageReadError` naming the file, including images over Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP by default: raise it deliberately if such images
are wanted; every stage resizes before the network, so the limit bounds the decoding memory).
"""
import os
from typing import Callable, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageReadError(IOError):
    """An image file is missing, empty, truncated, not an image, over the decompression-bomb
    limit or of an unsupported pixel format."""


def _open_errors(path: str, e: Exception) -> ImageReadError:
    if isinstance(e, Image.DecompressionBombError):
        return ImageReadError(f"{path}: over Pillow's decompression-bomb limit "
                              f"(PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}): {e}")
    return ImageReadError(f"{path}: not a readable image ({e})")


_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


_ORIENTATION = 0x0112  # EXIF tag; 5-8 swap width and height
_TRANSPOSED = (5, 6, 7, 8)


def _orientation(im: Image.Image) -> int:
    """The image's EXIF orientation (1 = as stored; 1 when absent or unreadable)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except (AttributeError, TypeError, ValueError, OSError, SyntaxError):
        return 1


def _displayed(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` turned as its EXIF orientation says (``ImageOps.exif_transpose``); ``im`` when 1."""
    return ImageOps.exif_transpose(im) if orientation != 1 else im


def read_image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` as displayed (EXIF orientation applied), from the header only. Raises
    :class:`ImageReadError`."""
    _check_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            return (height, width) if _orientation(im) in _TRANSPOSED else (width, height)
    except _ERRORS as e:
        raise _open_errors(path, e) from None


def _to_uint8_rgb(im: Image.Image, path: str) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{path}: {im.mode} values {arr.min()}..{arr.max()} outside 0..65535")
        gray = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageReadError(f"{path}: float (mode F) images are not supported")
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, P, CMYK, RGBA (alpha dropped), LA, ...
    return np.asarray(im, dtype=np.uint8).copy()


def _decode(path: str, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Open ``path`` and return ``convert(image)``, any failure raised as :class:`ImageReadError`."""
    _check_file(path)
    try:
        with Image.open(path) as im:
            return convert(im)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise _open_errors(path, e) from None
    except _ERRORS as e:
        raise ImageReadError(f"{path}: corrupt or unsupported image ({e})") from None


def read_image_rgb(path: str) -> np.ndarray:
    """Decode ``path`` to uint8 RGB (H, W, 3) as displayed (EXIF orientation applied: the pixels
    of detectron2's ``read_image(path, "RGB")``). Raises :class:`ImageReadError` on bad files."""

    def convert(im):
        orientation = _orientation(im)
        im.load()
        return _to_uint8_rgb(_displayed(im, orientation), path)

    return _decode(path, convert)


def read_image_resized(path: str, size_fn: Callable[[int, int], Tuple[int, int]]) -> np.ndarray:
    """Decode ``path`` straight to uint8 RGB (h, w, 3), ``(h, w) = size_fn(H, W)`` of the image's
    displayed size (EXIF orientation applied), resized with Pillow's bilinear filter: the pixels of
    ``Image.fromarray(read_image_rgb(path)).resize((w, h), Image.BILINEAR)``, what detectron2's
    ``ResizeTransform.apply_image`` does to a uint8 image, without the full-size numpy copies.

    JPEG files at least 8x the output size in both directions are decoded by libjpeg at 1/2,
    1/4 or 1/8 scale (``Image.draft``), never below 4x the output size, before the bilinear
    resize, so an 80 MP photo is never decoded at full size (10328 x 7746 to 512 x 384: decoded
    at 2582 x 1937). Their pixels differ slightly from the full decode + resize (six Pascal-Part/ADE20K photos
    upscaled to 4096 px, resized to 512 px: mean absolute difference 0.0-0.6, at most 13 grey
    levels); smaller images and other formats give exactly the pixels above. Raises
    :class:`ImageReadError` on bad files."""

    def convert(im):
        orientation = _orientation(im)
        width, height = im.size  # as stored
        turned = orientation in _TRANSPOSED
        h, w = size_fn(width, height) if turned else size_fn(height, width)  # as displayed
        fw, fh = (h, w) if turned else (w, h)  # the output size in the stored frame
        if min(width // (4 * fw), height // (4 * fh)) >= 2:
            im.draft(im.mode, (4 * fw, 4 * fh))  # a no-op for formats other than JPEG
        im.load()
        im = _displayed(im, orientation)
        if im.mode in _SIXTEEN_BIT_MODES or im.mode == "F":  # scaled (or refused) as read_image_rgb does
            im = Image.fromarray(_to_uint8_rgb(im, path))
        elif im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.uint8).copy()

    return _decode(path, convert)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty (0-byte) image file")


def image_id_of_path(path: str) -> str:
    """The image id a file stands for: its name without folder and extension (``a/cat.jpg`` and
    ``b/cat.json`` -> ``cat``). Two files of one run with the same id are refused by the stage runner."""
    return os.path.splitext(os.path.basename(path))[0]


def read_image_or_skip(path: str, size_fn: Callable[[int, int], Tuple[int, int]] = None) -> np.ndarray:
    """:func:`read_image_rgb` (or :func:`read_image_resized` with ``size_fn``), turning an
    unreadable file into a counted :class:`~part_distillation.utils.sharding.SkipItem` (reason
    ``unreadable image``, the file and error as its detail) for the stage runner."""
    from ..utils.sharding import SkipItem

    try:
        return read_image_rgb(path) if size_fn is None else read_image_resized(path, size_fn)
    except ImageReadError as e:
        raise SkipItem("unreadable image", str(e)) from None
