import numpy as np
import pytest
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, list_pseudo_labels,
                                                  load_pseudo_label, save_pseudo_label)
from part_distillation.stages.dense_crf import DenseCRFStage, crf_refine

from .helpers import EFFNET_CFG

PARAMS = {"GT_PROB": 0.7, "GAUSSIAN_SXY": 3, "GAUSSIAN_COMPAT": 3, "BILATERAL_SXY": 20,
          "BILATERAL_SRGB": 13, "BILATERAL_COMPAT": 10, "NUM_ITERS": 10}


def _scene():
    """Grey background; object = red left half + blue right half; noisy segments."""
    h, w = 48, 64
    img = np.full((h, w, 3), 128, np.uint8)
    obj = np.zeros((h, w), bool)
    obj[8:40, 8:56] = True
    img[8:40, 8:32] = (230, 30, 30)
    img[8:40, 32:56] = (30, 30, 230)
    truth = np.zeros((h, w), np.int32)
    truth[8:40, 8:32], truth[8:40, 32:56] = 1, 2
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    flip = obj & (rng.random((h, w)) < 0.2)
    noisy[flip] = 3 - noisy[flip]
    return img, obj, truth, noisy


def test_crf_cleans_noisy_segments_along_colour_edges():
    img, obj, truth, noisy = _scene()
    out, _ = crf_refine(img, noisy, obj, 3, PARAMS, "keep_parts")
    before = (noisy[obj] == truth[obj]).mean()
    after = (out[obj] == truth[obj]).mean()
    assert before < 0.85 and after > 0.97


def test_keep_parts_keeps_object_pixels_on_parts_official_may_not():
    img, obj, truth, _ = _scene()
    seg = truth.copy()
    img = img.copy()
    img[8:40, 8:14] = 128  # a strip of the object that looks like the background
    keep, moved = crf_refine(img, seg, obj, 3, PARAMS, "keep_parts")
    off, moved_off = crf_refine(img, seg, obj, 3, PARAMS, "official")
    assert (keep[obj] > 0).all() and (keep[~obj] == 0).all()
    assert moved == moved_off > 0 and (off[obj] == 0).sum() == moved_off
    with pytest.raises(ValueError, match="OBJECT_PIXELS"):
        crf_refine(img, seg, obj, 3, PARAMS, "other")


def test_stage_with_two_workers_equals_one(tmp_path):
    img, obj, truth, noisy = _scene()
    s2 = tmp_path / "s2"
    for i in range(3):
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        parts = [PartLabel(noisy == j) for j in (1, 2)]
        save_pseudo_label(str(s2), ImagePseudoLabel(str(tmp_path / f"im{i}.png"), f"im{i}", 48, 64,
                                                    "pixel_grouping", [ObjectLabel("thing", obj, parts=parts)],
                                                    config={"INPUT_SIZE": [48, 64]}))
    cfg = setup_cfg(EFFNET_CFG)  # its INPUT size is not used: stage 3 takes stage 2's from the files
    one = DenseCRFStage(cfg, str(tmp_path / "w1")).run(str(s2), workers=1).as_dict()
    two = DenseCRFStage(cfg, str(tmp_path / "w2")).run(str(s2), workers=2).as_dict()
    assert one["processed"] == two["processed"] == 3 and not one["failed"] and not two["failed"]
    for f1, f2 in zip(list_pseudo_labels(str(tmp_path / "w1")), list_pseudo_labels(str(tmp_path / "w2"))):
        a, b = load_pseudo_label(f1), load_pseudo_label(f2)
        assert a.stage == "dense_crf"
        lm = a.objects[0].part_label_map()
        assert np.array_equal(lm, b.objects[0].part_label_map())
        assert (lm[obj] == truth[obj]).mean() > 0.97


def test_keep_parts_partitions_the_full_resolution_object_when_the_crf_runs_smaller(tmp_path):
    # a thin, ragged object: at a third of the size nearest-neighbour sampling misses many of its
    # pixels, which must still get a part, while no pixel outside the object may get one
    img, _, _, _ = _scene()
    obj = np.zeros((48, 64), bool)
    for y in range(48):
        obj[y, max(0, y - 2): y + 1] = True
        obj[y, 40 + y % 5] = True
    seg = np.where(obj, 1 + (np.arange(64)[None, :] >= 32), 0).astype(np.int32)
    Image.fromarray(img).save(tmp_path / "im.png")
    parts = [PartLabel(seg == j) for j in (1, 2)]
    save_pseudo_label(str(tmp_path / "s2"), ImagePseudoLabel(str(tmp_path / "im.png"), "im", 48, 64,
                                                             "pixel_grouping", [ObjectLabel("thing", obj, parts=parts)],
                                                             config={"INPUT_SIZE": [16, 22]}))
    cfg = setup_cfg(EFFNET_CFG)
    out = str(tmp_path / "s3")
    assert DenseCRFStage(cfg, out).run(str(tmp_path / "s2")).processed == 1
    lm = load_pseudo_label(list_pseudo_labels(out)[0]).objects[0].part_label_map()
    assert (lm[obj] > 0).all() and (lm[~obj] == 0).all()
    assert set(np.unique(lm[obj])) == {1, 2}
