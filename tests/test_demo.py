"""``demo/demo.py`` and :class:`part_distillation.engine.predictor.PartPredictor` end to end: a
stage-4 and a stage-6 checkpoint trained here for 2 iterations (the tiny CPU configs) on
ground-truth-derived pseudo-labels of two real Pascal-Part images, then the demo on those images:
one overlay and one pseudo-label per image, parts inside their objects, and the same parts as the
Python predictor gives."""
import os
import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.ground_truth import gt_objects
from part_distillation.data.proposal_dataset import read_image
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, list_pseudo_labels,
                                                  load_pseudo_label, save_pseudo_label)
from part_distillation.engine.predictor import PartPredictor
from part_distillation.stages.learned_stages import train

from .helpers import REPO, needs_shared

pytestmark = needs_shared

DEMO = os.path.join(REPO, "demo", "demo.py")
_SMALL = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192"]
_TRAIN = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "1",
          "INPUT.IMAGE_SIZE", "128", "INPUT.IMAGE_SIZE_BASE", "128", "DATALOADER.NUM_WORKERS", "0", *_SMALL]
CONFIGS = {"proposal_learning": ("configs/proposal_learning/tiny_cpu.yaml", "PROPOSAL_LEARNING.DATASET_PATH",
                                 ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256"]),
           "part_distillation": ("configs/part_distillation/tiny_cpu.yaml", "PART_DISTILLATION.DATASET_PATH",
                                 ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS_MATCH", "256",
                                  "MODEL.MASK_FORMER.TRAIN_NUM_POINTS_LOSS", "256"])}


def _write(folder, recs, stage, label_of):
    """One pseudo-label per record: its GT objects, with GT parts labelled ``label_of(j)`` (or no
    parts when ``label_of`` is None)."""
    for rec in recs:
        objs = [ObjectLabel(g.class_name, g.mask, g.class_code, class_id=g.class_id,
                            parts=[] if label_of is None else [PartLabel(m, label_of(j)) for j, m in enumerate(g.parts)])
                for g in gt_objects(rec)]
        save_pseudo_label(folder, ImagePseudoLabel(rec["file_name"], str(rec["image_id"]), rec["height"],
                                                   rec["width"], stage, objs))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two images, their stage-1 object files, and a 2-iteration checkpoint of each model."""
    root = tmp_path_factory.mktemp("demo")
    recs = [r for r in resolve_dataset("pascal_part_examples") if any(o["parts"] for o in r["objects"])][:2]
    _write(str(root / "object_masks"), recs, "object_masks", None)
    _write(str(root / "dcrf"), recs, "dcrf", lambda j: None)
    _write(str(root / "part_ranking"), recs, "part_ranking", lambda j: j % 4)
    weights = {}
    for stage, (config, key, extra) in CONFIGS.items():
        data = str(root / ("dcrf" if stage == "proposal_learning" else "part_ranking"))
        cfg = setup_cfg(os.path.join(REPO, config), _TRAIN + extra + [key, data, "OUTPUT_DIR", str(root / stage)])
        weights[stage] = train(cfg)
    return root, recs, weights


def _demo(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", [DEMO, *argv])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(DEMO, run_name="__main__")
    assert e.value.code == 0


def _check_outputs(out, recs, stage):
    """One overlay (image + legend band) and one loadable pseudo-label per image; parts inside
    their object, disjoint. Returns the loaded labels by image id."""
    files = list_pseudo_labels(str(out))
    assert len(files) == len(recs)
    labels = {}
    for path in files:
        label = load_pseudo_label(path, stage=stage)
        labels[label.image_id] = label
        for obj in label.objects:
            covered = np.zeros(obj.mask.shape, bool)
            for p in obj.parts:
                assert p.mask.any() and not (p.mask & ~obj.mask).any(), path  # inside the object
                assert not (covered & p.mask).any()  # disjoint
                covered |= p.mask
    for rec in recs:
        overlay = Image.open(os.path.join(out, f"{rec['image_id']}.jpg"))
        assert overlay.width == rec["width"] and overlay.height > rec["height"]  # the legend band
    assert set(labels) == {str(r["image_id"]) for r in recs}
    return labels


def test_demo_stage6_with_a_masks_folder_matches_the_python_predictor(trained, tmp_path, monkeypatch):
    root, recs, weights = trained
    out = tmp_path / "out"
    _demo(monkeypatch, "--config-file", os.path.join(REPO, CONFIGS["part_distillation"][0]),
          "--input", *[r["file_name"] for r in recs], "--output", str(out), "--masks", str(root / "object_masks"),
          "--opts", "MODEL.WEIGHTS", weights["part_distillation"], *_SMALL)
    labels = _check_outputs(out, recs, "part_distillation")
    parts = [p for lab in labels.values() for o in lab.objects for p in o.parts]
    assert parts and all(0 <= p.label < 8 for p in parts)
    # the README's three lines give the same parts
    predictor = PartPredictor(setup_cfg(os.path.join(REPO, CONFIGS["part_distillation"][0]),
                                        ["MODEL.WEIGHTS", weights["part_distillation"], *_SMALL]))
    rec = recs[0]
    objects = gt_objects(rec)
    result = predictor(read_image(rec["file_name"], "BGR"), [g.mask for g in objects], [g.class_id for g in objects])
    assert len(result["part_seg"]) == len(objects)
    for seg, obj in zip(result["part_seg"], labels[str(rec["image_id"])].objects):
        expected = np.zeros(seg.shape, np.int64)
        for p in obj.parts:
            expected[p.mask] = p.label + 1
        assert torch.equal(seg, torch.from_numpy(expected))


def test_demo_stage4_on_a_folder_with_mask_files_beside_the_images(trained, tmp_path, monkeypatch):
    """Folder input; each image's objects from ``<stem>.json`` beside it, a third image without one
    is a whole-image object."""
    root, recs, weights = trained
    images = tmp_path / "images"
    images.mkdir()
    for rec in recs:
        os.symlink(rec["file_name"], images / os.path.basename(rec["file_name"]))
        src = [f for f in list_pseudo_labels(str(root / "object_masks")) if f.endswith(f"/{rec['image_id']}.json")]
        (images / f"{rec['image_id']}.json").write_text(open(src[0]).read())
    other = [r for r in resolve_dataset("pascal_part_examples") if r not in recs][0]
    os.symlink(other["file_name"], images / os.path.basename(other["file_name"]))
    out = tmp_path / "out"
    _demo(monkeypatch, "--config-file", os.path.join(REPO, CONFIGS["proposal_learning"][0]), "--input", str(images),
          "--output", str(out), "--opts", "MODEL.WEIGHTS", weights["proposal_learning"], *_SMALL)
    labels = _check_outputs(out, recs + [other], "proposal_learning")
    for rec in recs:
        label = labels[str(rec["image_id"])]
        assert [o.class_name for o in label.objects] == [g.class_name for g in gt_objects(rec)]
        assert all(p.label is None and 0 <= p.score <= 1 for o in label.objects for p in o.parts)
    whole = labels[str(other["image_id"])].objects
    assert len(whole) == 1 and whole[0].class_name == "object" and whole[0].mask.all()
    assert sum(len(o.parts) for lab in labels.values() for o in lab.objects) > 0


def test_part_predictor_refuses_other_models_and_missing_classes(trained):
    _, recs, weights = trained
    with pytest.raises(ValueError, match="PartPredictor runs"):
        PartPredictor(setup_cfg(os.path.join(REPO, "configs/supervised_learning/tiny_cpu_pascal_semseg.yaml"),
                                ["MODEL.EFFICIENTNET.PRETRAINED", "False"]))
    predictor = PartPredictor(setup_cfg(os.path.join(REPO, CONFIGS["part_distillation"][0]),
                                        ["MODEL.WEIGHTS", weights["part_distillation"], *_SMALL]))
    image = read_image(recs[0]["file_name"], "BGR")
    with pytest.raises(ValueError, match="one object class per mask"):
        predictor(image, [np.ones(image.shape[:2], bool)])
    with pytest.raises(ValueError, match="object mask 0"):
        predictor(image, [np.ones((4, 4), bool)], [0])


def test_demo_with_a_detectron2_labeler(trained, tmp_path, monkeypatch):
    """``--labeler detectron2``: the objects of a (random-init) Mask R-CNN; a labeler's objects
    carry no class-head index (class_id -1), so ``--object-class`` gives it."""
    from detectron2 import model_zoo

    _, recs, weights = trained
    labeler_cfg = tmp_path / "mask_rcnn.yaml"
    labeler_cfg.write_text(f"_BASE_: {model_zoo.get_config_file('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml')}\n"
                           "MODEL:\n  WEIGHTS: ''\n  ROI_HEADS:\n    SCORE_THRESH_TEST: 0.0\n"
                           "INPUT:\n  MIN_SIZE_TEST: 96\n  MAX_SIZE_TEST: 160\n")
    out = tmp_path / "out"
    torch.manual_seed(0)
    _demo(monkeypatch, "--config-file", os.path.join(REPO, CONFIGS["part_distillation"][0]),
          "--input", recs[0]["file_name"], "--output", str(out), "--labeler", "detectron2",
          "--labeler-config", str(labeler_cfg), "--object-class", "3", "--opts", "MODEL.WEIGHTS", weights["part_distillation"],
          "PROPOSAL_GENERATION.OBJECT_TOP_K", "2", *_SMALL)
    label = _check_outputs(out, recs[:1], "part_distillation")[str(recs[0]["image_id"])]
    assert 1 <= len(label.objects) <= 2
    assert label.config["object_classes"] == [3] * len(label.objects)
