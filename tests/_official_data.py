"""A ``$DETECTRON2_DATASETS`` of two real Pascal-Part images in the official layouts, and a runner of
``tools/train_net.py`` as a user types it, shared by the official-command tests.

Layouts built by :func:`build_official_datasets`: Pascal-Part (``pascal_parts/``: VOC split list +
``.mat`` annotations, split ``val``), PartImageNet (``part_imagenet/{val,test}.json``: one image
each, its largest object's merged GT parts as COCO RLE) and ImageNet-1K
(``imagenet_1k/train/<wnid>/<wnid>_1.JPEG``, one image under each of :data:`WNIDS`)."""
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util

from part_distillation.data import resolve_dataset
from part_distillation.data.ground_truth import gt_objects

from .helpers import PASCAL_EXAMPLES, REPO

# the small-size overrides of every official command here (the architecture stays the config's)
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192", "INPUT.IMAGE_SIZE", "128",
         "DATALOADER.NUM_WORKERS", "0"]
WNIDS = ("n01440764", "n02085620")  # one PartImageNet / ImageNet-1K class per image


def build_official_datasets(root) -> None:
    """Write the three layouts (module docstring) under the folder ``root`` (a ``pathlib.Path``),
    images and ``.mat`` files as symlinks to ``../shared/data/pascal_part_examples``."""
    recs = [r for r in resolve_dataset("pascal_part_examples") if any(o["parts"] for o in r["objects"])][:2]
    voc = root / "pascal_parts"
    for sub in ("images/JPEGImages", "images/ImageSets/Main", "annotations"):
        (voc / sub).mkdir(parents=True)
    ids = [str(r["image_id"]) for r in recs]
    for i in ids:
        os.symlink(os.path.join(PASCAL_EXAMPLES, "JPEGImages", f"{i}.jpg"), voc / "images/JPEGImages" / f"{i}.jpg")
        os.symlink(os.path.join(PASCAL_EXAMPLES, "Annotations_Part", f"{i}.mat"), voc / "annotations" / f"{i}.mat")
    (voc / "images/ImageSets/Main/val.txt").write_text("\n".join(ids) + "\n")
    # PartImageNet layout: image k is class WNIDS[k], its largest object's merged parts the annotations;
    # image and annotation ids distinct across the splits (part_imagenet_valtest merges val + test)
    names = sorted({n for r in recs for g in gt_objects(r) for n in g.part_names})
    cats = [{"id": j, "name": n} for j, n in enumerate(names)]
    (root / "part_imagenet").mkdir()
    for k, (split, rec) in enumerate(zip(("val", "test"), recs)):
        wnid = WNIDS[k]
        folder = root / "imagenet_1k" / "train" / wnid
        folder.mkdir(parents=True)
        os.symlink(rec["file_name"], folder / f"{wnid}_1.JPEG")
        obj = max((g for g in gt_objects(rec) if len(g.part_names)), key=lambda g: g.mask.sum())
        annos = []
        for m, n in zip(obj.parts, obj.part_names):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            annos.append({"id": 100 * k + len(annos) + 1, "image_id": k + 1, "category_id": names.index(n),
                          "iscrowd": 0,
                          "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
        (root / "part_imagenet" / f"{split}.json").write_text(json.dumps(
            {"images": [{"id": k + 1, "file_name": f"{wnid}_1.JPEG", "height": rec["height"], "width": rec["width"]}],
             "annotations": annos, "categories": cats}))


def tool_status(datasets_root, cwd, tool, *args, timeout=600, pythonpath_first=""):
    """``(exit status, stdout + stderr)`` of ``tools/<tool>`` with ``args`` in a subprocess
    (``$DETECTRON2_DATASETS`` = ``datasets_root``, one thread, working directory ``cwd``, so the
    configs' relative paths land there; ``pythonpath_first``: a folder put before ``$PYTHONPATH``)."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    if pythonpath_first:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath_first), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=str(cwd))
    return proc.returncode, proc.stdout + proc.stderr


def run_tool(datasets_root, cwd, tool, *args, timeout=600):
    """:func:`tool_status`, asserting exit status 0 (the tail of the output in the message);
    returns the output."""
    rc, out = tool_status(datasets_root, cwd, tool, *args, timeout=timeout)
    assert rc == 0, out[-6000:]
    return out


def config(name: str) -> str:
    """The path of ``configs/<name>`` (an official top-level config)."""
    return os.path.join(REPO, "configs", name)
