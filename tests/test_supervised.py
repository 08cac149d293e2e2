"""Supervised / few-shot baselines: few-shot subset, train/val split, ground-truth mapper, the
supervised mIoU evaluator (known answers), SupervisedModel inference, a tiny training run on real
Pascal-Part images with evaluation, and --eval-only for every supervised / few-shot config."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from part_distillation.data.ground_truth import GTObject

from part_distillation.config import setup_cfg
from part_distillation.data.supervised_dataset import (
    SupervisedDatasetMapper,
    load_supervised_train_dicts,
    part_class_names,
    split_dicts,
)
from part_distillation.engine.trainer import Trainer, main, train_mapper_name, training_task
from part_distillation.evaluation.supervised import SupervisedPartEvaluator

from .helpers import REPO, needs_shared

TINY = os.path.join(REPO, "configs/supervised_learning/tiny_cpu_pascal_semseg.yaml")
TRAIN3, VAL2 = "pascal_part_examples_train_first3", "pascal_part_examples_val_first2"
for _name, _parent, _n in ((TRAIN3, "pascal_part_examples_train", 3), (VAL2, "pascal_part_examples_val", 2)):
    if _name not in DatasetCatalog.list():
        DatasetCatalog.register(_name, lambda p=_parent, n=_n: DatasetCatalog.get(p)[:n])
        MetadataCatalog.get(_name).set(evaluator_type="part", has_parts=True,
                                       taxonomy_from="pascal_part_examples")


def _tiny(tmp_path, *opts, config=TINY):
    return setup_cfg(config, [
        "MODEL.EFFICIENTNET.PRETRAINED", False, "DATASETS.TRAIN", f"('{TRAIN3}',)",
        "DATASETS.TEST", f"('{VAL2}',)", "INPUT.IMAGE_SIZE", 96, "INPUT.IMAGE_SIZE_BASE", 96,
        "INPUT.MIN_SCALE", 1.0, "INPUT.MAX_SCALE", 1.0, "INPUT.MIN_SIZE_TEST", 96,
        "DATALOADER.NUM_WORKERS", 0, "TEST.EVAL_PERIOD", 0, "OUTPUT_DIR", str(tmp_path / "out"),
        "SEED", 0, *opts])


@needs_shared
def test_split_rule_and_shared_taxonomy():
    full = DatasetCatalog.get("pascal_part_examples")
    train, val = DatasetCatalog.get("pascal_part_examples_train"), DatasetCatalog.get("pascal_part_examples_val")
    ids = sorted(r["image_id"] for r in full)
    assert [r["image_id"] for r in val] == ids[::5] and len(train) == 14 and len(val) == 4
    assert sorted(r["image_id"] for r in train + val) == ids
    assert split_dicts(list(reversed(full)), "val") == val
    classes = part_class_names("pascal_part_examples_val")
    # the official 50-part Pascal-Part vocabulary (dataset metadata), shared by both splits
    assert classes == part_class_names("pascal_part_examples_train") == MetadataCatalog.get("pascal_part_examples").part_classes
    assert len(classes) == len(set(classes)) == 50 and {"head", "wheel", "torso"} <= set(classes)


@needs_shared
def test_fewshot_ids_are_written(tmp_path):
    cfg = _tiny(tmp_path, "DATASETS.TRAIN", "('pascal_part_examples_train',)",
                "FEWSHOT_LEARNING.LABEL_PERCENTAGE", 50)
    kept = load_supervised_train_dicts(cfg)
    with open(os.path.join(cfg.OUTPUT_DIR, "fewshot_image_ids.json")) as f:
        log = json.load(f)
    # 14 train images, one of which (a chair, no parts) is dropped: 13 -> int(6.5) = 6 (official rule)
    assert log["num_images"] == 13 and len(kept) == 6 == len(log["image_ids"])
    assert log["image_ids"] == [r["image_id"] for r in kept] and log["label_percentage"] == 50
    assert all(any(o["parts"] for o in r["objects"]) for r in kept)


@needs_shared
def test_mapper_labels_parts_with_taxonomy_ids(tmp_path):
    cfg = _tiny(tmp_path)
    classes = part_class_names(TRAIN3)
    record = DatasetCatalog.get(TRAIN3)[0]
    names = [p["name"] for o in record["objects"] for p in o["parts"]]
    sample = SupervisedDatasetMapper(cfg, is_train=True)(record)
    assert sample["image"].shape == (3, 96, 96) and sample["object_masks"].shape[1:] == (96, 96)
    got = sorted(classes[i] for i in sample["instances"].gt_classes.tolist())
    assert set(got) <= set(names) and len(got) >= len(names) - 2  # tiny parts may vanish at 96 px
    assert sample["instances"].gt_masks.tensor.flatten(1).any(1).all()
    agnostic = _tiny(tmp_path, "SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING", True)
    sample = SupervisedDatasetMapper(agnostic, is_train=True)(record)
    assert sample["instances"].gt_classes.eq(0).all() and len(sample["instances"]) > 0


def _objects(gt_parts, names, object_mask):
    parts = np.stack(gt_parts) if gt_parts else np.zeros((0,) + object_mask.shape, bool)
    return {"objects": [GTObject("thing", "thing", 0, object_mask, parts, names, [-1] * len(names))]}


def test_evaluator_known_mIoU():
    """Object = 4x4 square of a 4x6 image; GT: 'a' = left two columns, 'b' = third column, fourth
    column inside the object unlabelled (ignored). Prediction: 'a' on column 0, 'b' on columns
    1-2, 'c' on column 3 (ignored pixels), -1 (no part) on one pixel of column 2, junk outside.
    a: tp 4, gt 8, pred 4 -> 4/8; b: tp 3, gt 4, pred 7 -> 3/8; c never counted -> mIoU 50+37.5 / 2."""
    obj = np.zeros((4, 6), bool)
    obj[:, :4] = True
    a, b = np.zeros_like(obj), np.zeros_like(obj)
    a[:, :2], b[:, 2] = True, True
    pred = np.full((4, 6), 2, np.int64)
    pred[:, 0], pred[:, 1:3], pred[0, 2] = 0, 1, -1
    evaluator = SupervisedPartEvaluator(["a", "b", "c"], distributed=False)
    evaluator.reset()
    evaluator.process([_objects([a, b], ["a", "b"], obj)], [{"part_sem_seg": [torch.from_numpy(pred)]}])
    # a second object without parts is skipped and counted
    evaluator.process([_objects([], [], obj)], [{"part_sem_seg": [pred]}])
    r = evaluator.evaluate()["supervised_part_seg"]
    assert r["IoU-a"] == pytest.approx(50.0) and r["IoU-b"] == pytest.approx(37.5)
    assert "IoU-c" not in r and r["num_classes_evaluated"] == 2
    assert r["mIoU"] == pytest.approx(43.75)
    assert r["pACC"] == pytest.approx(100 * 7 / 12) and r["mACC"] == pytest.approx(100 * (0.5 + 0.75) / 2)
    assert r["ignored_pixels"] == 4 and r["num_objects"] == 1 and r["num_objects_without_parts"] == 1
    # 'c' predicted on a counted pixel of 'a' (was 'b') enters the mean with IoU 0; b: tp 3 / (4 + 6 - 3)
    pred[1, 1] = 2
    evaluator.reset()
    evaluator.process([_objects([a, b], ["a", "b"], obj)], [{"part_sem_seg": [pred]}])
    r = evaluator.evaluate()["supervised_part_seg"]
    assert r["IoU-c"] == 0.0 and r["mIoU"] == pytest.approx(100 * (4 / 8 + 3 / 7 + 0) / 3)
    with pytest.raises(ValueError, match="objects in the input"):
        evaluator.process([_objects([a], ["a"], obj)], [{"part_sem_seg": []}])


def test_semantic_inference_known_answer(tmp_path):
    """Two queries: query 0 is class 2 with a mask on the left half, query 1 class 0 on the right
    half; the object covers the top half. Expected map: 2 | 0 on the top half, -1 below."""
    cfg = _tiny(tmp_path, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3)
    model = build_model(cfg).eval()
    logits = torch.full((1, 2, 4), -10.0)
    logits[0, 0, 2], logits[0, 1, 0] = 10.0, 10.0
    masks = torch.full((1, 2, 8, 8), -10.0)
    masks[0, 0, :, :4], masks[0, 1, :, 4:] = 10.0, 10.0
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    obj = torch.zeros(1, 32, 32, dtype=torch.bool)
    obj[0, :16] = True
    out = model.inference([{"object_masks": obj, "height": 16, "width": 16}], images,
                          {"pred_logits": logits, "pred_masks": masks})
    seg = out[0]["part_sem_seg"][0]
    assert seg.shape == (16, 16) and seg.dtype == torch.int64
    assert (seg[:8, :8] == 2).all() and (seg[:8, 8:] == 0).all() and (seg[8:] == -1).all()


@needs_shared
def test_mask2former_weights_with_other_class_count_load(tmp_path):
    """A 1-class checkpoint (ProposalModel / Mask2Former layout) loads into a 5-class
    SupervisedModel: everything but class_embed is copied, class_embed keeps its initialisation."""
    source = build_model(setup_cfg("configs/proposal_learning/tiny_cpu.yaml", [  # at the supervised width
        "MODEL.EFFICIENTNET.PRETRAINED", False, "MODEL.MASK_FORMER.HIDDEN_DIM", 64,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, "MODEL.SEM_SEG_HEAD.MASK_DIM", 64]))
    path = str(tmp_path / "proposal.pth")
    torch.save({"model": source.state_dict()}, path)
    model = build_model(_tiny(tmp_path, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5))
    before = model.sem_seg_head.predictor.class_embed.weight.detach().clone()
    DetectionCheckpointer(model).load(path)
    assert model.sem_seg_head.predictor.class_embed.weight.shape == (6, 64)
    assert torch.equal(model.sem_seg_head.predictor.class_embed.weight, before)
    for name in ("sem_seg_head.predictor.query_feat.weight", "sem_seg_head.pixel_decoder.mask_features.weight"):
        assert torch.equal(model.state_dict()[name], source.state_dict()[name]), name


@needs_shared
def test_tiny_supervised_training_on_real_images_then_evaluation(tmp_path):
    cfg = _tiny(tmp_path, "SOLVER.MAX_ITER", 12, "SOLVER.BASE_LR", 1e-3, "SOLVER.WARMUP_ITERS", 0,
                "SOLVER.CHECKPOINT_PERIOD", 100)
    assert training_task(cfg) == "supervised_learning"
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    results = Trainer.test(cfg, trainer.model)["supervised_part_seg"]
    assert results["num_objects"] > 0 and 0.0 <= results["mIoU"] <= 100.0
    assert all(k[4:] in part_class_names(VAL2) for k in results if k.startswith("IoU-"))


CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs/supervised_learning/*.yaml"))
                 + glob.glob(os.path.join(REPO, "configs/fewshot_learning/*.yaml")))


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_configs_merge(config):
    cfg = setup_cfg(config)
    assert cfg.MODEL.META_ARCHITECTURE == "SupervisedModel"
    assert train_mapper_name(cfg) == "supervised_learning"  # official YAMLs keep Mask2Former's mapper name
    agnostic = cfg.SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING
    assert training_task(cfg) == ("supervised_learning_agnostic" if agnostic else "supervised_learning")
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1) == agnostic
    if "fewshot" in config:
        assert cfg.FEWSHOT_LEARNING.LABEL_PERCENTAGE < 100


# the ADE20K configs evaluate the same way; their data takes ~40 s to parse, so they run in the README
@needs_shared
@pytest.mark.parametrize("config", [c for c in CONFIGS if "tiny_cpu_pascal" in c], ids=os.path.basename)
def test_tiny_configs_eval_only(config, tmp_path):
    """--eval-only through tools/train_net.py's main on two validation images (random weights)."""
    args = default_argument_parser().parse_args([
        "--config-file", config, "--eval-only", "MODEL.EFFICIENTNET.PRETRAINED", "False",
        "DATASETS.TEST", f"('{VAL2}',)", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "eval")])
    results = main(args)
    if "proposals" in config:
        assert results["part_proposals"]["num_objects"] > 0
    else:
        assert results["supervised_part_seg"]["num_objects"] > 0


def test_train_and_test_taxonomies_must_agree(tmp_path):
    for name, classes in (("toy_parts_ab", ["a", "b"]), ("toy_parts_ba", ["b", "a"])):
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda: [])
            MetadataCatalog.get(name).set(evaluator_type="part", part_classes=classes)
    assert part_class_names("toy_parts_ba") == ["b", "a"]  # metadata order is kept
    cfg = _tiny(tmp_path, "DATASETS.TRAIN", "('toy_parts_ab',)")
    with pytest.raises(ValueError, match="taxonomy"):
        Trainer.build_evaluator(cfg, "toy_parts_ba")
    assert isinstance(Trainer.build_evaluator(cfg, "toy_parts_ab"), SupervisedPartEvaluator)
    with pytest.raises(ValueError, match="NUM_CLASSES = 1 < 2"):
        Trainer.build_evaluator(_tiny(tmp_path, "DATASETS.TRAIN", "('toy_parts_ab',)",
                                      "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1), "toy_parts_ab")
