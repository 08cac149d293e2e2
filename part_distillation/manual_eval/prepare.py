"""Prepare a blinded study from prediction folders in the pseudo-label schema.

An *object* is identified across methods by its image id and its stage-1 index
(:meth:`~part_distillation.data.pseudo_labels.ImagePseudoLabel.object_indices`), so every method
must come from the same stage-1 object masks (stage 3/5/6 outputs of one run, or predictions on
them); the object masks of the sampled objects are checked to agree (mask IoU >= 0.5).

A panel's *segments* are its object's parts as drawn (the part label map: later parts win
overlaps), those with at least one visible pixel, numbered 1..n by decreasing area; panels are
drawn by the demo's renderer with segment ``k`` in colour ``k`` for every method, so colours say
nothing about the method. Panel files have random names; the method behind a panel is only in the database.
"""
import hashlib
import json
import logging
import os
import re
import shutil
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..data.images import read_image_rgb
from ..data.pseudo_labels import encode_mask, list_pseudo_labels, load_pseudo_label, mask_box_slices
from ..utils.io import atomic_save_image, atomic_write_json
from ..visualization import draw_part_predictions, outline_object
from .store import DB_NAME, IMAGES_DIR, SCHEMA, StudyError, connect

logger = logging.getLogger(__name__)

METHOD_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MIN_OBJECT_IOU = 0.5  # sampled objects' masks must agree this well across methods
CONTEXT_HEIGHT = 320


def _index(folder: str) -> Dict[tuple, dict]:
    """``{(image_id, stage-1 index): {"path", "class_code", "class_name", "position"}}`` of a folder."""
    out = {}
    for path in list_pseudo_labels(folder):
        label = load_pseudo_label(path, decode=False)
        for pos, (idx, obj) in enumerate(zip(label.object_indices(), label.objects)):
            out[(label.image_id, idx)] = {"path": path, "class_code": obj.class_code or obj.class_name,
                                          "class_name": obj.class_name, "position": pos}
    return out


def segment_map(obj) -> np.ndarray:
    """int32 (H, W) of an object's segments as the study shows them: 0 elsewhere, ``k`` on the
    ``k``-th largest visible part (1-based). ``obj``: an ObjectLabel with decoded masks."""
    drawn = obj.part_label_map() if obj.parts else np.zeros(obj.mask.shape, np.int32)
    areas = np.bincount(drawn.ravel(), minlength=len(obj.parts) + 1)[1:]
    order = [i for i in np.argsort(-areas, kind="stable") if areas[i] > 0]
    lut = np.zeros(len(obj.parts) + 1, np.int32)
    for k, i in enumerate(order):
        lut[i + 1] = k + 1
    return lut[drawn]


def render_panel(image: np.ndarray, object_mask: np.ndarray, seg: np.ndarray, height: int = 240) -> Image.Image:
    """One study panel: the object's box (grown by 10% of its size) scaled to ``height`` px, its
    segments drawn by the demo's renderer (:func:`~part_distillation.visualization.draw_part_predictions`:
    colour per segment number, caption ``segment: k``). ``image`` uint8 (H, W, 3); ``object_mask``
    bool (H, W); ``seg`` int (H, W) from :func:`segment_map`. Returns a PIL RGB image."""
    ys, xs = np.nonzero(object_mask)
    margin = max(2, int(0.1 * max(ys.max() - ys.min(), xs.max() - xs.min())))
    rows, cols = mask_box_slices(object_mask, margin)
    crop, crop_seg = image[rows, cols], seg[rows, cols].astype(np.int32)
    size = (max(1, round(crop.shape[1] * height / crop.shape[0])), height)
    crop = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR))
    crop_seg = np.asarray(Image.fromarray(crop_seg, "I").resize(size, Image.NEAREST)).astype(np.int32)
    n = int(seg.max())
    return Image.fromarray(draw_part_predictions(crop, [crop_seg], ["segment"], [[str(k) for k in range(1, n + 1)]]))


def _choose_classes(common: Dict[str, list], indexes: Dict[str, dict], classes, class_list, rng) -> List[str]:
    if isinstance(classes, int) or (isinstance(classes, str) and classes.isdigit()):
        pool = sorted(common)
        if class_list is not None:
            pool = [c for c in class_list if c in common]
        n = int(classes)
        if n > len(pool):
            logger.warning("%d classes asked, %d have objects in every method", n, len(pool))
        return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()) if pool else []
    wanted = list(classes) if classes is not None else sorted(common)
    missing = []
    for c in wanted:
        if c not in common:
            have = {m: sum(1 for v in idx.values() if v["class_code"] == c) for m, idx in indexes.items()}
            missing.append(f"class {c!r}: objects per method {have}")
    if missing:
        raise StudyError("classes without an object present in every method's predictions: " + "; ".join(missing))
    return wanted


def prepare_study(methods: Dict[str, str], out_dir: str, classes: Union[None, int, Sequence[str]] = None,
                  per_class: int = 2, seed: int = 0, class_list: Optional[Sequence[str]] = None,
                  panel_height: int = 240) -> dict:
    """Sample objects, render one panel per (object, method) and write the study folder.

    Args:
        methods: ``{name: prediction folder}`` (pseudo-label schema), at least two, names of
            letters, digits, ``_.-``.
        out_dir: the study folder (created; refused when it already holds answers).
        classes: None (every class with objects in all methods), an int N (N classes drawn from
            ``class_list`` or from all those classes) or a list of class codes.
        per_class: objects drawn per class (fewer when a class has fewer; counted in the summary).
        seed: draws classes, objects, the item order and each item's panel order.

    Returns:
        The summary also written to ``<out_dir>/study.json``.

    Raises:
        StudyError: bad method names, a folder sharing no object with the others, requested classes
            missing from some method (named with per-method counts), disagreeing object masks, or
            an existing study with answers.
    """
    if len(methods) < 2:
        raise StudyError(f"a study compares at least two methods, got {list(methods)}")
    for name, folder in methods.items():
        if not METHOD_NAME.match(name):
            raise StudyError(f"method name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        if not os.path.isdir(folder):
            raise StudyError(f"method {name!r}: prediction folder not found: {folder}")
    db_path = os.path.join(out_dir, DB_NAME)
    if os.path.isfile(db_path):
        conn = connect(out_dir)
        try:
            n = conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
        finally:
            conn.close()
        if n:
            raise StudyError(f"{out_dir} already holds a study with {n} saved answers; prepare into a new folder")
    indexes = {name: _index(folder) for name, folder in methods.items()}
    first = next(iter(indexes))
    common_keys = set.intersection(*(set(ix) for ix in indexes.values()))
    for name, ix in indexes.items():
        if not ix:
            raise StudyError(f"method {name!r}: no objects in {methods[name]}")
        if not common_keys & set(ix):
            raise StudyError(f"method {name!r} ({methods[name]}) shares no object with the other methods")
    lacking = {name: len(set().union(*(set(ix) for ix in indexes.values())) - set(ix)) for name, ix in indexes.items()}
    common: Dict[str, list] = {}
    for key in sorted(common_keys):
        common.setdefault(indexes[first][key]["class_code"], []).append(key)
    rng = np.random.default_rng(seed)
    chosen = _choose_classes(common, indexes, classes, class_list, rng)
    picked, short = [], {}
    for c in chosen:
        keys = common[c]
        take = rng.choice(len(keys), size=min(per_class, len(keys)), replace=False)
        picked += [keys[i] for i in sorted(take)]
        if len(keys) < per_class:
            short[c] = len(keys)
    if not picked:
        raise StudyError("no object to show: no class has an object in every method")
    order = rng.permutation(len(picked))
    tmp_dir = out_dir.rstrip("/") + ".preparing"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(os.path.join(tmp_dir, IMAGES_DIR))
    conn = connect(tmp_dir, create=True)
    conn.executescript(SCHEMA)
    names = list(methods)
    conn.execute("BEGIN")
    for name in names:
        conn.execute("INSERT INTO methods (name, folder) VALUES (?, ?)", (name, os.path.abspath(methods[name])))
    method_ids = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM methods")}
    token = lambda *a: hashlib.sha256(("/".join(map(str, (seed,) + a))).encode()).hexdigest()[:16]  # noqa: E731
    for position, k in enumerate(order):
        image_id, idx = picked[k]
        labels = {m: load_pseudo_label(indexes[m][(image_id, idx)]["path"]) for m in names}
        objs = {m: labels[m].objects[indexes[m][(image_id, idx)]["position"]] for m in names}
        ref = objs[first]
        for m in names[1:]:
            iou = float(mask_util.iou([_rle(objs[m].mask)], [_rle(ref.mask)], [0])[0, 0])
            if iou < MIN_OBJECT_IOU:
                raise StudyError(f"object {idx} of image {image_id}: its mask in {m!r} differs from {first!r} "
                                 f"(IoU {iou:.2f}); the methods must share stage-1 object masks")
        image = read_image_rgb(labels[first].file_name)
        context = outline_object(image, ref.mask)
        h, w = context.shape[:2]
        ctx_file = f"{IMAGES_DIR}/{token('ctx', position)}.png"
        atomic_save_image(os.path.join(tmp_dir, ctx_file), Image.fromarray(context).resize(
            (max(1, round(w * CONTEXT_HEIGHT / h)), CONTEXT_HEIGHT), Image.BILINEAR))
        cur = conn.execute("INSERT INTO items (position, class_code, class_name, image_id, object_index, "
                           "context_file) VALUES (?, ?, ?, ?, ?, ?)",
                           (position + 1, indexes[first][(image_id, idx)]["class_code"], ref.class_name,
                            image_id, idx, ctx_file))
        item_id = cur.lastrowid
        slots = np.random.default_rng([seed, position]).permutation(len(names))
        for slot, mi in enumerate(slots):
            m = names[mi]
            seg = segment_map(objs[m])
            n = int(seg.max())
            panel_file = f"{IMAGES_DIR}/{token('panel', position, slot)}.png"
            atomic_save_image(os.path.join(tmp_dir, panel_file), render_panel(image, ref.mask, seg, panel_height))
            pid = conn.execute("INSERT INTO panels (item_id, method_id, slot, image_file, num_segments) "
                               "VALUES (?, ?, ?, ?, ?)", (item_id, method_ids[m], slot, panel_file, n)).lastrowid
            areas = np.bincount(seg.ravel(), minlength=n + 1)[1:]
            conn.executemany("INSERT INTO segments (panel_id, number, area) VALUES (?, ?, ?)",
                             [(pid, i + 1, int(a)) for i, a in enumerate(areas)])
    summary = {"seed": seed, "per_class": per_class, "methods": {m: os.path.abspath(f) for m, f in methods.items()},
               "classes": chosen, "num_items": len(picked), "classes_short_of_per_class": short,
               "objects_lacking_per_method": lacking, "created": time.time()}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in summary.items()])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    atomic_write_json(os.path.join(tmp_dir, "study.json"), summary, indent=1)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp_dir, out_dir)
    if short:
        logger.warning("classes with fewer than %d objects in every method: %s", per_class, short)
    return summary


def _rle(mask) -> dict:
    rle = encode_mask(mask)
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}

