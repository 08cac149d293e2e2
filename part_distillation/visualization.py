"""Collages of pseudo-labels: one row per object, panels ``image | object mask | part segments``.

Panels show the object's box (plus a margin) at a fixed height; segment colours come from a fixed
palette so the same id has the same colour in every picture. Extra label maps (e.g. baselines,
ground truth) can be added as further panels with titles.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .utils.io import atomic_save_image

PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180],
], np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend label colours over ``image``. ``image`` uint8 (H, W, 3); ``labels`` int (H, W), 0 =
    no colour. Returns uint8 (H, W, 3)."""
    out = image.astype(np.float32).copy()
    fg = labels > 0
    colors = PALETTE[(labels[fg] - 1) % len(PALETTE)].astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colors
    # draw segment boundaries in white
    edge = np.zeros_like(fg)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    out[edge & fg] = 255
    return out.astype(np.uint8)


def _crop(mask: np.ndarray, margin: float = 0.1) -> Tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    my, mx = int((ys.max() - ys.min()) * margin) + 2, int((xs.max() - xs.min()) * margin) + 2
    return (slice(max(ys.min() - my, 0), min(ys.max() + my + 1, mask.shape[0])),
            slice(max(xs.min() - mx, 0), min(xs.max() + mx + 1, mask.shape[1])))


def _panel(img: np.ndarray, height: int, title: str) -> Image.Image:
    h, w = img.shape[:2]
    pil = Image.fromarray(img).resize((max(1, round(w * height / h)), height), Image.NEAREST)
    if title:
        ImageDraw.Draw(pil).text((3, 2), title, fill=(255, 255, 255))
    return pil


def legend_strip(entries: Sequence[Tuple[str, int]], height: int = 18, swatch: int = 12) -> Image.Image:
    """A one-line legend: per ``(text, value)`` a swatch of the colour :func:`overlay` gives label
    map value ``value`` (> 0), then the text."""
    width = sum(swatch + 8 + 7 * len(t) + 10 for t, _ in entries) + 4
    out = Image.new("RGB", (max(width, 1), height), (0, 0, 0))
    draw, x = ImageDraw.Draw(out), 4
    for text, value in entries:
        color = tuple(int(c) for c in PALETTE[(value - 1) % len(PALETTE)])
        draw.rectangle([x, (height - swatch) // 2, x + swatch, (height + swatch) // 2], fill=color)
        draw.text((x + swatch + 4, 3), text, fill=(255, 255, 255))
        x += swatch + 8 + 7 * len(text) + 10
    return out


def object_collage(image, rows: Sequence[Tuple[str, np.ndarray, List[Tuple[str, np.ndarray]]]],
                   height: int = 160, pad: int = 4,
                   legend: Optional[Sequence[Tuple[str, int]]] = None) -> Image.Image:
    """Build a collage.

    Args:
        image: uint8 RGB (H, W, 3), shared by all rows; or a list with one such image per row
            (rows from different pictures, e.g. one object class across images).
        rows: one ``(row_title, object_mask (H, W) bool, [(panel_title, label_map (H, W) int), ...])``
            per object (masks at the row's image resolution).
        height: panel height in pixels.
        legend: optional ``(text, label value)`` entries drawn as a strip on top
            (:func:`legend_strip`).
    """
    images = image if isinstance(image, (list, tuple)) else [image] * len(rows)
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images for {len(rows)} rows")
    row_imgs = [legend_strip(legend)] if legend else []
    for image, (title, omask, maps) in zip(images, rows):
        ys, xs = _crop(omask)
        panels = [_panel(image[ys, xs], height, title),
                  _panel(overlay(image[ys, xs], omask[ys, xs].astype(np.int32)), height, "object")]
        panels += [_panel(overlay(image[ys, xs], lab[ys, xs]), height, t) for t, lab in maps]
        w = sum(p.width for p in panels) + pad * (len(panels) - 1)
        row = Image.new("RGB", (w, height), (0, 0, 0))
        x = 0
        for p in panels:
            row.paste(p, (x, 0))
            x += p.width + pad
        row_imgs.append(row)
    if not rows:
        return Image.new("RGB", (height, height), (0, 0, 0))
    out = Image.new("RGB", (max(r.width for r in row_imgs), sum(r.height + pad for r in row_imgs) - pad))
    y = 0
    for r in row_imgs:
        out.paste(r, (0, y))
        y += r.height + pad
    return out


def save_collage(path: str, image, rows, height: int = 160,
                 legend: Optional[Sequence[Tuple[str, int]]] = None) -> Optional[str]:
    """Write :func:`object_collage` to ``path`` (PNG) atomically; returns the path."""
    atomic_save_image(path, object_collage(image, rows, height, legend=legend))
    return path
