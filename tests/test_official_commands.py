"""The released-model evaluation commands of docs/MODEL_ZOO.md, typed as a user types them
(``tools/train_net.py --config-file configs/<official top-level config>.yaml --eval-only``, the
official dataset names), on a ``$DETECTRON2_DATASETS`` built from two real Pascal-Part images:
the official Pascal-Part layout (VOC split list + ``.mat`` annotations) and a PartImageNet-layout
copy (COCO JSON of their merged GT parts, images under ``imagenet_1k/train/<wnid>/``). Random
weights (``MODEL.WEIGHTS ""``) and a small test size stand in for the released checkpoints; the
training pseudo-labels the official configs name are absent, as for a user who only downloaded
the model."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest

from part_distillation.data import resolve_dataset
from part_distillation.data.ground_truth import gt_objects

from .helpers import PASCAL_EXAMPLES, REPO, needs_shared

pytestmark = needs_shared

SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192", "INPUT.IMAGE_SIZE", "128",
         "DATALOADER.NUM_WORKERS", "0"]
WNIDS = ("n01440764", "n02085620")  # one PartImageNet class per image


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    recs = [r for r in resolve_dataset("pascal_part_examples") if any(o["parts"] for o in r["objects"])][:2]
    voc = root / "pascal_parts"
    for sub in ("images/JPEGImages", "images/ImageSets/Main", "annotations"):
        (voc / sub).mkdir(parents=True)
    ids = [str(r["image_id"]) for r in recs]
    for i in ids:
        os.symlink(os.path.join(PASCAL_EXAMPLES, "JPEGImages", f"{i}.jpg"), voc / "images/JPEGImages" / f"{i}.jpg")
        os.symlink(os.path.join(PASCAL_EXAMPLES, "Annotations_Part", f"{i}.mat"), voc / "annotations" / f"{i}.mat")
    (voc / "images/ImageSets/Main/val.txt").write_text("\n".join(ids) + "\n")
    # PartImageNet layout: image k is class WNIDS[k], its largest object's merged parts the annotations
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
            annos.append({"id": len(annos) + 1, "image_id": 1, "category_id": names.index(n), "iscrowd": 0,
                          "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
        (root / "part_imagenet" / f"{split}.json").write_text(json.dumps(
            {"images": [{"id": 1, "file_name": f"{wnid}_1.JPEG", "height": rec["height"], "width": rec["width"]}],
             "annotations": annos, "categories": cats}))
    return root


def _eval_only(datasets_root, out, config, *opts):
    out.mkdir(exist_ok=True)
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                           os.path.join(REPO, "configs", config), "--eval-only", "MODEL.WEIGHTS", "", *SMALL,
                           "OUTPUT_DIR", str(out), *opts], env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(out))  # the configs' relative VIS_OUTPUT_DIR lands under out
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, json.load(open(out / "inference" / "results.json"))


@pytest.mark.parametrize("pair", [None, ("pascal_part_match_val", "pascal_part_evaluate_val")])
def test_part_distillation_eval_only_with_the_official_config(datasets_root, tmp_path, pair):
    """configs/PartDistillation.yaml: its own PartImageNet match/evaluate pair, and the Pascal-Part
    pair of MODEL_ZOO.md; without the training pseudo-labels the object classes come from the
    ground truth (logged), and every official metric is written per dataset."""
    opts = [] if pair is None else ["DATASETS.TEST", repr(pair)]
    log, results = _eval_only(datasets_root, tmp_path, "PartDistillation.yaml", *opts)
    match, evaluate = pair or ("part_imagenet_match_val", "part_imagenet_evaluate_val")
    assert set(results) == {match, evaluate}
    assert "not found: object classes from the ground truth" in log
    for name in (match, evaluate):
        assert os.path.isfile(tmp_path / "inference" / name / "results.json")
    metrics = results[evaluate]["unsupervised_official"]
    for key in ("C-mIoU", "A-mIoU", "C-mACC", "A-mACC"):
        assert 0.0 <= metrics[key] <= 100.0, key
    for key in ("C-mIoPred", "A-mIoPred"):  # NaN where a random model predicts no part at all
        assert math.isnan(metrics[key]) or 0.0 <= metrics[key] <= 100.0, key
    assert results[evaluate]["part_proposals"]["num_objects"] >= 1


def test_part_proposal_eval_only_with_the_official_config(datasets_root, tmp_path):
    """configs/PartProposalLearning.yaml with its four official test sets (Pascal-Part val and
    PartImageNet valtest, each as "prop" and "semseg"): AR@K per set."""
    log, results = _eval_only(datasets_root, tmp_path, "PartProposalLearning.yaml")
    assert len(results) == 4 and all("part_proposals" in r for r in results.values()), sorted(results)
    vis = tmp_path / "vis_logs" / "PartProposalLearning" / "IN1K+Human"  # the config's VIS_OUTPUT_DIR
    assert sorted(os.listdir(vis)) == ["part_imagenet_valtest", "pascal_part_val"]
    assert all(len(os.listdir(vis / d)) == 2 for d in os.listdir(vis))  # one overlay per image
    for r in results.values():
        assert r["part_proposals"]["num_gt_parts"] > 0 and 0.0 <= r["part_proposals"]["AR@200"] <= 100.0
