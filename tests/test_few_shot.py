"""The one few-shot rule (official: seed-1234 shuffle, first int(N * p / 100)), applied once on the
training path of the official training-split names and of stage 4's pseudo-label folders."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from part_distillation.config import setup_cfg
from part_distillation.data import cityscapes_part, part_imagenet, pascal_part
from part_distillation.data.datasets import few_shot_subset, resolve_dataset
from part_distillation.data.supervised_dataset import load_supervised_train_dicts


def _rle(h=4, w=4):
    m = np.zeros((h, w), np.uint8, order="F")
    m[:2, :2] = 1
    return mask_util.encode(m)


def _records(n):
    return [{"file_name": f"/x/img{i:04d}.jpg", "image_id": f"img{i:04d}", "height": 4, "width": 4,
             "annotation_file": f"/x/img{i:04d}.mat",
             "objects": [{"class_name": "cat", "class_code": "cat", "class_id": 7, "mask": _rle(),
                          "bbox": [0, 0, 2, 2], "bbox_mode": 0,
                          "parts": [{"name": "head", "raw_name": "head", "part_id": 10, "mask": _rle()}]}]}
            for i in range(n)]


def test_few_shot_subset_is_the_official_rule():
    dicts = _records(1000)
    kept = few_shot_subset(dicts, 10)
    assert len(kept) == 100 and len(few_shot_subset(_records(120), 10)) == 12
    assert len(few_shot_subset(_records(30), 50)) == 15 and len(few_shot_subset(_records(49), 10)) == 4  # floor
    official = list(dicts)
    np.random.seed(1234)
    np.random.shuffle(official)
    assert kept == official[:100]
    assert few_shot_subset(dicts, 100) == dicts
    for bad in (0, -5, 101):
        with pytest.raises(ValueError, match="LABEL_PERCENTAGE"):
            few_shot_subset(dicts, bad)
    with pytest.raises(ValueError, match="keeps none"):
        few_shot_subset(_records(5), 10)


@pytest.mark.parametrize("name, loader_cls", [("pascal_part_train", pascal_part.PascalPartsSplitLoader),
                                              ("part_imagenet_train", part_imagenet.PartImageNetLoader),
                                              ("cityscapes_part_train", cityscapes_part.CityscapesPartLoader)])
@pytest.mark.parametrize("n, pct, expected", [(1000, 10, 100), (120, 10, 12), (30, 50, 15)])
def test_training_split_keeps_the_percentage_once(tmp_path, monkeypatch, name, loader_cls, n, pct, expected):
    """Loading the registered training split never subsets; the trainer's training dicts keep
    exactly int(n * pct / 100), the ids written to OUTPUT_DIR/fewshot_image_ids.json."""
    monkeypatch.setattr(loader_cls, "check", lambda self, name: None)
    monkeypatch.setattr(loader_cls, "load", lambda self, report: _records(n))
    cfg = setup_cfg("", ["DATASETS.TRAIN", f"('{name}',)", "FEWSHOT_LEARNING.LABEL_PERCENTAGE", pct,
                         "OUTPUT_DIR", str(tmp_path)])
    assert len(resolve_dataset(name, cfg)) == n  # registration / loading keep everything
    kept = load_supervised_train_dicts(cfg)
    assert len(kept) == expected
    with open(os.path.join(tmp_path, "fewshot_image_ids.json")) as f:
        log = json.load(f)
    assert log["num_images"] == n and log["image_ids"] == [d["image_id"] for d in kept]
    assert log["seed"] == 1234 and log["key"] == "FEWSHOT_LEARNING.LABEL_PERCENTAGE"
