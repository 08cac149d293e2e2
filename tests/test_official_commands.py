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

import pytest

from ._official_data import SMALL, build_official_datasets, config as official_config, run_tool
from .helpers import needs_shared

pytestmark = needs_shared


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    build_official_datasets(root)
    return root


def _eval_only(datasets_root, out, config, *opts):
    out.mkdir(exist_ok=True)
    # run in out: the configs' relative VIS_OUTPUT_DIR lands under it
    log = run_tool(datasets_root, out, "train_net.py", "--config-file", official_config(config), "--eval-only",
                   "MODEL.WEIGHTS", "", *SMALL, "OUTPUT_DIR", out, *opts)
    return log, json.load(open(out / "inference" / "results.json"))


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
