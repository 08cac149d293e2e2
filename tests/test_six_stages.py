"""The main job with all six stages (``run_pipeline(..., learned_cfgs=...)``, ``tools/run_part_pipeline.py
--stages 1-6``), the label-consistency measure and the per-class label collages."""
import json
import os
import random

import numpy as np
import torch
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.ground_truth import gt_objects
from part_distillation.data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel, save_pseudo_label
from part_distillation.stages.evaluate import label_agreement, label_consistency
from part_distillation.stages.learned_stages import STAGE4, STAGE5, STAGE6
from part_distillation.stages.pipeline import run_pipeline
from part_distillation.visualization import FONT_SIZE, object_collage

from .helpers import EFFNET_CFG, REPO, needs_shared

_TRAIN = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "1",
          "INPUT.IMAGE_SIZE", "128", "INPUT.IMAGE_SIZE_BASE", "128", "INPUT.MIN_SIZE_TEST", "128",
          "INPUT.MAX_SIZE_TEST", "192", "DATALOADER.NUM_WORKERS", "0"]


def _learned_cfgs():
    cfg = lambda f, o: setup_cfg(os.path.join(REPO, "configs", f), o)  # noqa: E731
    return {STAGE4: cfg("proposal_learning/tiny_cpu.yaml", _TRAIN + ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256"]),
            # no score / area filters: a 2-iteration model still labels every object
            STAGE5: cfg("part_ranking/tiny_cpu.yaml", ["PART_RANKING.NUM_CLUSTERS", "4",
                                                       "PART_RANKING.MIN_SCORE_1", "0.0", "PART_RANKING.MIN_SCORE_2", "0.0",
                                                       "PART_RANKING.MIN_AREA_RATIO_1", "0.0",
                                                       "PART_RANKING.MIN_AREA_RATIO_2", "0.0"]),
            STAGE6: cfg("part_distillation/tiny_cpu.yaml",
                        _TRAIN + ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS_MATCH", "256",
                                  "MODEL.MASK_FORMER.TRAIN_NUM_POINTS_LOSS", "256"])}


@needs_shared
def test_six_stage_main_job_writes_every_stage_and_a_rerun_redoes_nothing(tmp_path):
    cfg = setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
                                 "DENSE_CRF.NUM_WORKERS", "1"])
    out = str(tmp_path / "run")
    learned = _learned_cfgs()
    metrics = run_pipeline(cfg, "pascal_part_examples", out, {"pretrained": ([], False)}, num_collages=2,
                           max_images=3, learned_cfgs=learned)
    assert list(metrics["stages"]) == ["2 proposal generation", "3 dense-CRF", "4 proposal learning (per-pixel)",
                                       "5 part ranking", "6 PartDistillation"]
    for name, row in metrics["stages"].items():
        assert row["num_images"] == 3 and {"best_match_mIoU", "hungarian_mIoU", "AR@10"} <= set(row["segments"])
    for stage in (STAGE5, STAGE6):  # labelled stages: both protocols and the consistency measure
        row = metrics["results"][stage]
        assert "label_consistency" in row["label_consistency"]
        if stage == STAGE5:  # stage 6 after 2 iterations may label nothing
            assert set(row["unsupervised"]) == {"official", "clean"}
            assert {"C-mIoU", "A-mIoU"} <= set(row["unsupervised"]["clean"])
    assert "unsupervised" not in metrics["results"][STAGE4]
    for folder in (STAGE4, STAGE6):
        assert os.path.isfile(os.path.join(out, folder, "model_final.pth"))
        assert len([f for d, _, fs in os.walk(os.path.join(out, folder, "predictions")) if "logs" not in d
                    for f in fs if f.endswith(".json")]) == 3
        assert f"{folder}/eval_only" in metrics["run_summaries"]
    assert metrics["run_summaries"][STAGE5]["processed"] == 3
    assert "unsupervised_clean" in metrics["run_summaries"][f"{STAGE6}/eval_only"]
    assert "pixel_agreement" in metrics["results"][STAGE6]["agreement_with_stage5"]
    assert metrics["run_summaries"][f"{STAGE4}/proposals"]["processed"] == 3  # the stage-4 predictor
    assert set(metrics["run_summaries"]["timings"]) == {f"{STAGE4}/train", f"{STAGE4}/predict", f"{STAGE4}/proposals",
                                                        STAGE5, f"{STAGE6}/train", f"{STAGE6}/predict"}
    table = open(os.path.join(out, "metrics.md")).read()
    assert "| 5 part ranking |" in table and "| 6 PartDistillation |" in table
    pngs = os.listdir(os.path.join(out, "collages", "labels"))
    assert pngs and all(p.endswith(".png") for p in pngs)
    # rerun: nothing is trained, ranked or predicted again; same numbers
    watched = [os.path.join(out, STAGE4, "model_final.pth"), os.path.join(out, STAGE6, "model_final.pth"),
               os.path.join(out, STAGE4, "predictions", "logs", "predict.json"),
               os.path.join(out, STAGE6, "predictions", "logs", "predict.json")]
    before = [os.stat(p).st_mtime_ns for p in watched]
    again = run_pipeline(cfg, "pascal_part_examples", out, {"pretrained": ([], False)}, num_collages=0,
                         max_images=3, learned_cfgs=learned)
    assert [os.stat(p).st_mtime_ns for p in watched] == before
    for step in (f"{STAGE4}/proposals", STAGE5):
        assert again["run_summaries"][step]["resumed"] == 3 and again["run_summaries"][step]["processed"] == 0
    assert json.dumps(again["stages"], sort_keys=True) == json.dumps(metrics["stages"], sort_keys=True)  # NaN-safe


def _write_labels(folder, recs, label_of):
    """Stage-5-like files whose parts are the GT parts, labelled ``label_of(image index, part name)``."""
    for i, rec in enumerate(recs):
        objs = [ObjectLabel(g.class_name, g.mask, g.class_code,
                            parts=[PartLabel(m, label_of(i, n)) for m, n in zip(g.parts, g.part_names)])
                for g in gt_objects(rec)]
        save_pseudo_label(folder, ImagePseudoLabel(rec["file_name"], str(rec["image_id"]), rec["height"],
                                                   rec["width"], "part_ranking", objs))


@needs_shared
def test_label_consistency_separates_one_label_part_labels_and_shuffled_labels(tmp_path):
    recs = [r for r in resolve_dataset("pascal_part_examples")
            if any(o["class_name"] == "person" and o["parts"] for o in r["objects"])][:4]
    names = sorted({p["name"] for r in recs for o in r["objects"] for p in o["parts"]})
    assert len(recs) >= 3 and len(names) >= 4
    _write_labels(str(tmp_path / "one"), recs, lambda i, n: 0)
    _write_labels(str(tmp_path / "parts"), recs, lambda i, n: names.index(n))
    _write_labels(str(tmp_path / "shuffled"), recs, lambda i, n: (names.index(n) + i) % len(names))
    one = label_consistency(str(tmp_path / "one"), recs)
    assert one["label_consistency"] == one["dominant_label_share"] == one["image_consistency"] == 100.0
    assert one["labels_per_class"] == 1.0 and one["num_pairs"] > 0
    parts = label_consistency(str(tmp_path / "parts"), recs)
    # overlapping GT parts (eyes in the head) keep it below 100, but far above the one-label baseline
    assert parts["label_consistency"] > 85 and parts["dominant_label_share"] < 50
    shuffled = label_consistency(str(tmp_path / "shuffled"), recs)
    assert shuffled["image_consistency"] < 60 < parts["image_consistency"]
    assert shuffled["label_consistency"] < parts["label_consistency"] - 20
    # agreement between two labellings (stage 6 against the stage-5 labels it trained on)
    same = label_agreement(str(tmp_path / "parts"), str(tmp_path / "parts"))
    assert same["pixel_agreement"] == same["label_mIoU"] == same["predicted_coverage"] == 100.0
    other = label_agreement(str(tmp_path / "parts"), str(tmp_path / "shuffled"))
    assert other["predicted_coverage"] == 100.0 and other["pixel_agreement"] < 50
    assert other["label_mIoU"] < same["label_mIoU"]
    # stages 2-4 (no labels): nothing to measure
    _write_labels(str(tmp_path / "unlabelled"), recs, lambda i, n: None)
    none = label_consistency(str(tmp_path / "unlabelled"), recs)
    assert none["num_pairs"] == 0 and np.isnan(none["label_consistency"])


def test_collage_rows_from_several_images_with_a_legend():
    a, b = np.zeros((40, 30, 3), np.uint8), np.full((50, 60, 3), 200, np.uint8)
    ma, mb = np.zeros((40, 30), bool), np.zeros((50, 60), bool)
    ma[5:30, 5:25] = mb[10:40, 10:50] = True
    la, lb = ma.astype(np.int32) * 3, mb.astype(np.int32) * 3
    rows = [("a", ma, [("labels", la)]), ("b", mb, [("labels", lb)])]
    plain = object_collage([a, b], rows, height=32)
    legend = object_collage([a, b], rows, height=32, legend=[("label 2", 3)])
    band = 2 * (FONT_SIZE + 2) + 2  # the title band above each panel
    assert legend.height > plain.height == 2 * (32 + band) + 4
    # the legend swatch of value 3 has the colour the panels paint value 3 with (PALETTE[2])
    strip = np.asarray(legend)[: legend.height - plain.height]
    assert (strip.reshape(-1, 3) == [255, 225, 25]).all(axis=1).any()
    try:
        object_collage([a], rows)
    except ValueError as e:
        assert "2 rows" in str(e)
    else:
        raise AssertionError("one image for two rows must be refused")
    Image.fromarray(np.asarray(legend))  # a valid picture


def _weights(path):
    return torch.load(path, map_location="cpu")["model"]


@needs_shared
def test_six_stage_runs_into_fresh_folders_give_bitwise_equal_checkpoints(tmp_path):
    """Every training of the main job is seeded from SEED (as ``train_net.py``'s ``default_setup``),
    so two runs of the same command, whatever the process's random state before, end with the same
    stage-4 and stage-6 weights."""
    cfg = setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
                                 "DENSE_CRF.NUM_WORKERS", "1"])
    learned = _learned_cfgs()
    runs = []
    for i in range(2):
        torch.manual_seed(i)  # a different global random state before each run
        np.random.seed(100 + i)
        random.seed(100 + i)
        out = str(tmp_path / f"run{i}")
        run_pipeline(cfg, "pascal_part_examples", out, {"pretrained": ([], False)}, num_collages=0,
                     max_images=3, learned_cfgs=learned)
        runs.append({s: _weights(os.path.join(out, s, "model_final.pth")) for s in (STAGE4, STAGE6)})
    for stage in (STAGE4, STAGE6):
        a, b = runs[0][stage], runs[1][stage]
        assert list(a) == list(b)
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{stage}: {len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"
