"""Collages of pseudo-labels: one row per object, panels ``image | object mask | part segments``.

Panels show the object's box (plus a margin) at a fixed height, each under a title band (the title
is never drawn over the image); segment colours come from a fixed palette so the same id has the
same colour in every picture. Extra label maps (variants, stages, ground truth) are further panels;
a row may end with a legend (colour swatch + name per id, e.g. the ground-truth part names).
"""
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

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


FONT_SIZE = 12
MIN_PANEL_WIDTH = 120  # narrow objects are centred on a panel this wide, so titles fit


@lru_cache(maxsize=None)
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _wrap(title: str, width: int, font) -> List[str]:
    """Split ``title`` into lines no wider than ``width`` px, breaking after '/' or '_' (or
    anywhere when a piece is still too wide)."""
    pieces, cur = [], ""
    for ch in title:
        cur += ch
        if ch in "/_ ":
            pieces.append(cur)
            cur = ""
    pieces.append(cur)
    lines = [""]
    for piece in pieces:
        if font.getlength(lines[-1] + piece) <= width or not lines[-1]:
            lines[-1] += piece
        else:
            lines.append(piece)
    out = []
    for line in lines:  # hard-break a piece wider than the panel
        while font.getlength(line) > width and len(line) > 1:
            cut = 1
            while cut < len(line) and font.getlength(line[: cut + 1]) <= width:
                cut += 1
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def _titled(body: Image.Image, title: str, band: int) -> Image.Image:
    """``body`` under a dark band of height ``band`` holding ``title`` (wrapped, white)."""
    out = Image.new("RGB", (body.width, band + body.height), (32, 32, 32))
    out.paste(body, (0, band))
    draw, font = ImageDraw.Draw(out), _font()
    for j, line in enumerate(_wrap(title, body.width - 4, font)[: band // (FONT_SIZE + 2)]):
        draw.text((2, 1 + j * (FONT_SIZE + 2)), line.strip(), fill=(255, 255, 255), font=font)
    return out


def _panel(img: np.ndarray, height: int) -> Image.Image:
    h, w = img.shape[:2]
    pil = Image.fromarray(img).resize((max(1, round(w * height / h)), height), Image.NEAREST)
    if pil.width < MIN_PANEL_WIDTH:
        wide = Image.new("RGB", (MIN_PANEL_WIDTH, height), (0, 0, 0))
        wide.paste(pil, ((MIN_PANEL_WIDTH - pil.width) // 2, 0))
        pil = wide
    return pil


def legend_panel(names: Sequence[str], height: int) -> Image.Image:
    """Swatch + name for ids 1..len(names) (``PALETTE`` colours), in as many columns as needed."""
    font, step = _font(), FONT_SIZE + 4
    per_col = max(1, (height - 4) // step)
    cols = [list(range(i, min(i + per_col, len(names)))) for i in range(0, len(names), per_col)] or [[]]
    col_w = [int(max([font.getlength(names[i]) for i in c] + [40])) + 22 for c in cols]
    out = Image.new("RGB", (sum(col_w) + 4, height), (255, 255, 255))
    draw, x = ImageDraw.Draw(out), 4
    for c, w in zip(cols, col_w):
        for row, i in enumerate(c):
            y = 2 + row * step
            draw.rectangle([x, y + 1, x + 12, y + 13], fill=tuple(int(v) for v in PALETTE[i % len(PALETTE)]),
                           outline=(0, 0, 0))
            draw.text((x + 17, y), names[i], fill=(0, 0, 0), font=font)
        x += w
    return out


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


def object_collage(image, rows: Sequence[tuple], height: int = 160, pad: int = 4,
                   legend: Optional[Sequence[Tuple[str, int]]] = None) -> Image.Image:
    """Build a collage.

    Args:
        image: uint8 RGB (H, W, 3), shared by all rows; or a list with one such image per row
            (rows from different pictures, e.g. one object class across images).
        rows: one ``(row_title, object_mask (H, W) bool, [(panel_title, label_map (H, W) int), ...]
            [, legend_names])`` per object (masks at the row's image resolution);
            ``legend_names[i]`` names id ``i + 1`` (e.g. the ground-truth parts) and is drawn as a
            legend panel ending the row.
        height: panel height in pixels (a title band of two text lines sits above each panel).
        legend: optional ``(text, label value)`` entries drawn as a strip on top
            (:func:`legend_strip`).

    Raises:
        ValueError: a list of images whose length is not the number of rows.
    """
    band = 2 * (FONT_SIZE + 2) + 2
    images = image if isinstance(image, (list, tuple)) else [image] * len(rows)
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images for {len(rows)} rows")
    row_imgs = [legend_strip(legend)] if legend else []
    for image, row in zip(images, rows):
        title, omask, maps = row[:3]
        names = row[3] if len(row) > 3 else None
        ys, xs = _crop(omask)
        panels = [_titled(_panel(image[ys, xs], height), title, band),
                  _titled(_panel(overlay(image[ys, xs], omask[ys, xs].astype(np.int32)), height), "object", band)]
        panels += [_titled(_panel(overlay(image[ys, xs], lab[ys, xs]), height), t, band) for t, lab in maps]
        if names:
            panels.append(_titled(legend_panel(names, height), "GT part names", band))
        w = sum(p.width for p in panels) + pad * (len(panels) - 1)
        out_row = Image.new("RGB", (w, height + band), (0, 0, 0))
        x = 0
        for p in panels:
            out_row.paste(p, (x, 0))
            x += p.width + pad
        row_imgs.append(out_row)
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


def draw_part_predictions(image: np.ndarray, part_segs: Sequence[np.ndarray],
                          object_names: Sequence[str], part_names: Optional[Sequence[Sequence[str]]] = None,
                          alpha: float = 0.5, legend: bool = False) -> np.ndarray:
    """Parts of every object drawn over ``image`` with detectron2's ``Visualizer``: each part
    label filled in a colour of detectron2's colormap (``detectron2.utils.colormap``, fixed per
    label id, so part ``l`` has one colour in every picture) and captioned ``<object class>:
    part <l>`` (or ``part_names[i][l - 1]``) at the segment. With ``legend`` a white band below
    the image lists every drawn (object, part) caption with its colour swatch, so that small
    segments whose caption detectron2 leaves out are named too.

    Args:
        image: (H, W, 3) uint8 RGB.
        part_segs: per object an (H, W) int label map, 0 = no part, ``l >= 1`` = part label
            (the models' ``part_seg`` outputs).
        object_names: per object its class name (or ``"object <i>"``).
        part_names: optional names of each object's part labels.
        legend: add the legend band (the output is then taller than ``image``).
    Returns:
        (H, W, 3) uint8 RGB overlay, or (H + band, W, 3) with ``legend``.
    Raises:
        ValueError: a label map whose size differs from the image's, or name count mismatch.
    """
    if len(part_segs) != len(object_names):
        raise ValueError(f"{len(part_segs)} label maps but {len(object_names)} object names")
    colors = colormap(rgb=True, maximum=1)
    vis = Visualizer(np.asarray(image), instance_mode=ColorMode.IMAGE)
    entries = []
    for i, (seg, obj) in enumerate(zip(part_segs, object_names)):
        seg = np.asarray(seg)
        if seg.shape != image.shape[:2]:
            raise ValueError(f"object {i} ({obj}): label map {seg.shape} != image {image.shape[:2]}")
        for label in np.unique(seg):
            if label <= 0:
                continue
            name = (part_names[i][label - 1] if part_names is not None and label - 1 < len(part_names[i])
                    else f"part {label}")
            color = colors[(label - 1) % len(colors)]
            vis.draw_binary_mask(seg == label, color=color, text=f"{obj}: {name}", alpha=alpha)
            entries.append((f"{obj}: {name}", tuple(int(round(255 * c)) for c in color)))
    out = vis.output.get_image()
    return np.concatenate([out, _legend_band(entries, out.shape[1])]) if legend else out


def _legend_band(entries: Sequence[Tuple[str, Tuple[int, int, int]]], width: int) -> np.ndarray:
    """White (h, ``width``, 3) uint8 band: per ``(text, RGB colour)`` a swatch and the text,
    wrapped into as many lines as needed (a band of one empty line when there are none)."""
    font, step, x0 = _font(), FONT_SIZE + 6, 4
    lines, x = [[]], x0
    for text, color in entries:
        w = 18 + int(font.getlength(text)) + 12
        if x + w > width and lines[-1]:
            lines.append([])
            x = x0
        lines[-1].append((x, text, color))
        x += w
    band = Image.new("RGB", (width, step * len(lines) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for row, line in enumerate(lines):
        y = 2 + row * step
        for x, text, color in line:
            draw.rectangle([x, y + 1, x + 12, y + 13], fill=color, outline=(0, 0, 0))
            draw.text((x + 17, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(band)


def save_part_predictions(path: str, image: np.ndarray, part_segs, object_names, part_names=None,
                          legend: bool = False) -> None:
    """:func:`draw_part_predictions` saved atomically to ``path`` (format from the extension)."""
    atomic_save_image(path, Image.fromarray(draw_part_predictions(image, part_segs, object_names, part_names,
                                                                  legend=legend)))


def outline_object(image: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int] = (255, 255, 0),
                   width: int = 3) -> np.ndarray:
    """``image`` with the boundary of ``mask`` drawn ``width`` px thick (inside the mask) in ``color``.
    ``image`` uint8 (H, W, 3), ``mask`` bool (H, W); returns a new uint8 (H, W, 3)."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} != image {image.shape[:2]}")
    edge = mask & ~binary_erosion(mask, iterations=max(1, width), border_value=0)
    out = image.copy()
    out[edge] = color
    return out
