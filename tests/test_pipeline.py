import pytest
import json
import os

import numpy as np
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, decode_mask,
                                                  encode_mask, save_pseudo_label)
from part_distillation.stages.evaluate import evaluate_pseudo_labels
from part_distillation.stages.pipeline import BASELINE_VARIANTS, run_pipeline

from .helpers import EFFNET_CFG, needs_shared


@needs_shared
def test_ground_truth_as_prediction_scores_100_and_a_dropped_object_costs(tmp_path):
    recs = resolve_dataset("pascal_part_examples")[:4]
    for rec in recs:
        objs = [ObjectLabel(o["class_name"], decode_mask(o["mask"]),
                            parts=[PartLabel(decode_mask(p["mask"])) for p in o["parts"]])
                for o in rec["objects"]]
        save_pseudo_label(str(tmp_path / "gt"), ImagePseudoLabel(rec["file_name"], rec["image_id"], rec["height"],
                                                                 rec["width"], "dcrf", objs))
        save_pseudo_label(str(tmp_path / "drop"), ImagePseudoLabel(rec["file_name"], rec["image_id"], rec["height"],
                                                                   rec["width"], "dcrf", objs[1:]))
    res = evaluate_pseudo_labels(str(tmp_path / "gt"), recs)["segments"]
    # Pascal-Part parts overlap (eyes inside the head), so one label map cannot reproduce all of them
    assert res["best_match_mIoU"] > 85
    dropped = evaluate_pseudo_labels(str(tmp_path / "drop"), recs)
    assert dropped["unmatched_gt_objects"] >= 1 and dropped["segments"]["best_match_mIoU"] < res["best_match_mIoU"]


@needs_shared
def test_main_job_on_real_images_writes_metrics_and_collages(tmp_path):
    vis = str(tmp_path / "vis")
    cfg = setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "192", "INPUT.MAX_SIZE_TEST", "320",
                                 "DENSE_CRF.NUM_WORKERS", "1", "VIS_OUTPUT_DIR", vis])
    variants = {"pretrained": ([], True), "grid_2x2": BASELINE_VARIANTS["grid_2x2"]}
    out = str(tmp_path / "run")
    metrics = run_pipeline(cfg, "pascal_part_examples", out, variants, num_collages=2, max_images=3,
                           config_file=EFFNET_CFG)
    assert set(metrics["results"]) == {"pretrained/proposal_generation", "pretrained/dcrf",
                                       "pretrained/dcrf_official", "grid_2x2/proposal_generation",
                                       "grid_2x2/dcrf"}
    for r in metrics["results"].values():
        seg = r["segments"]
        assert r["num_images"] == 3 and 5 < seg["best_match_mIoU"] < 90
        assert seg["hungarian_mIoU"] <= seg["best_match_mIoU"] + 1e-9
    recorded = json.load(open(os.path.join(out, "metrics.json")))
    assert recorded["num_images"] == 3 and recorded["config"]["file"] == EFFNET_CFG
    assert recorded["config"]["PROPOSAL_GENERATION"]["DATASET_NAME"] == "pascal_part_examples"
    md = open(os.path.join(out, "metrics.md")).read()
    assert "| pretrained/dcrf |" in md
    seg = metrics["results"]["pretrained/dcrf"]["segments"]
    scored = seg["num_objects"] - seg["num_objects_without_parts"]
    assert f"{scored} ground-truth objects scored" in md and f"{seg['num_gt_parts']} ground-truth parts" in md
    assert "averaged over objects" in md and "pooled over all ground-truth parts" in md
    by_size = metrics["results"]["pretrained/dcrf"]["by_size"]
    assert sum(b["num_objects"] for b in by_size.values()) == seg["num_objects"]
    pngs = sorted(os.listdir(vis))  # collages go to VIS_OUTPUT_DIR
    assert len(pngs) == 2 and not os.path.exists(os.path.join(out, "collages"))
    w, h = Image.open(os.path.join(vis, pngs[0])).size
    assert w > 7 * h / 3  # image | object | 5 variant/stage columns | GT | legend per row
    # rerun: everything resumes, same numbers
    again = run_pipeline(cfg, "pascal_part_examples", out, variants, num_collages=0, max_images=3)
    assert again["results"] == metrics["results"]
    assert again["run_summaries"]["pretrained/proposal_generation"]["resumed"] == 3


def test_evaluation_on_hand_built_parts_is_exact(tmp_path):
    obj = np.zeros((20, 30), bool)
    obj[2:18, 2:28] = True
    left, right = obj.copy(), obj.copy()
    left[:, 15:] = False
    right[:, :15] = False
    rec = {"file_name": "x.jpg", "image_id": "x", "height": 20, "width": 30,
           "objects": [{"class_name": "thing", "class_code": "thing", "class_id": 0,
                        "mask": encode_mask(obj),
                        "parts": [{"name": "l", "mask": encode_mask(left)}, {"name": "r", "mask": encode_mask(right)}]}]}
    exact = ImagePseudoLabel("x.jpg", "x", 20, 30, "dcrf",
                             [ObjectLabel("thing", obj, parts=[PartLabel(right), PartLabel(left)])])
    save_pseudo_label(str(tmp_path / "a"), exact)
    full = evaluate_pseudo_labels(str(tmp_path / "a"), [rec])
    res = full["segments"]
    assert res["best_match_mIoU"] == res["hungarian_mIoU"] == 100.0 and res["AR@1"] == 50.0
    assert full["segments_per_object"] == 2 and full["largest_segment_share"] == 50.0
    assert full["object_coverage"] == 100.0
    one = ImagePseudoLabel("x.jpg", "x", 20, 30, "dcrf", [ObjectLabel("thing", obj, parts=[PartLabel(obj)])])
    save_pseudo_label(str(tmp_path / "b"), one)
    rows = []
    full = evaluate_pseudo_labels(str(tmp_path / "b"), [rec], per_object=rows)
    res = full["segments"]
    assert full["largest_segment_share"] == 100.0  # collapsed
    assert len(rows) == 1 and rows[0][:2] == ("x", 0) and rows[0][2:] == pytest.approx((0.5, 0.25))
    # one segment = whole object: IoU 0.5 with each half; Hungarian can use it only once
    assert abs(res["best_match_mIoU"] - 50.0) < 1e-9 and abs(res["hungarian_mIoU"] - 25.0) < 1e-9
    # the left half only (the right half went to background): half the object is covered
    half = ImagePseudoLabel("x.jpg", "x", 20, 30, "dcrf", [ObjectLabel("thing", obj, parts=[PartLabel(left)])])
    save_pseudo_label(str(tmp_path / "c"), half)
    full = evaluate_pseudo_labels(str(tmp_path / "c"), [rec])
    assert full["object_coverage"] == 50.0 and full["segments"]["best_match_mIoU"] == 50.0


def test_dataset_load_skips_stop_the_run_or_reach_every_summary(tmp_path, monkeypatch):
    """A folder whose load skips 1 of 4 images: the main job and the stage-1 tool stop before
    computing anything (naming the reason and --accept-skips); accepted, the skips are in the
    stage-1 summary, metrics.json and the first lines of metrics.md."""
    import pytest

    from part_distillation.data.datasets import TooManySkippedError
    from part_distillation.stages.cli import main as stage_main

    from .test_datasets import _own_folder

    folder = _own_folder(tmp_path / "mine", lambda i: [("person", 15, ["head", "tentacle" if i == 0 else "hair"])], 4)
    cfg = setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
                                 "DENSE_CRF.NUM_WORKERS", "1", "MODEL.EFFICIENTNET.PRETRAINED", "False"])
    out = str(tmp_path / "run")
    with pytest.raises(TooManySkippedError, match=r"1 of 4 images skipped.*bad_annotation: 1.*--accept-skips"):
        run_pipeline(cfg, folder, out, {"pretrained": ([], False)}, num_collages=0)
    assert not os.path.exists(os.path.join(out, "object_masks"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tool's setup would raise torch's thread count
    with pytest.raises(TooManySkippedError, match="--accept-skips"):
        stage_main("object_masks", ["--config-file", EFFNET_CFG, "--dataset", folder, "--output-dir", out])
    metrics = run_pipeline(cfg, folder, out, {"pretrained": ([], False)}, num_collages=0, accept_skips=True)
    assert metrics["num_images"] == 3 and metrics["dataset_load"]["skipped"] == {"bad_annotation": 1}
    s1 = metrics["run_summaries"]["object_masks"]
    assert s1["skipped"] == {"load bad_annotation": 1} and s1["dataset_load"]["num_loaded"] == 3
    assert json.load(open(os.path.join(out, "metrics.json")))["dataset_load"]["skipped"] == {"bad_annotation": 1}
    head = open(os.path.join(out, "metrics.md")).read().splitlines()[:4]
    assert "Dataset load: 3 images loaded, 1 skipped (bad_annotation: 1); vocabulary pascal." in head
