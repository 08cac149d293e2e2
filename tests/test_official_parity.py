"""Parity with the official PartDistillation code on ../shared/fixtures/part_distillation_parity
(outputs of facebookresearch/PartDistillation @ a0bb459; tolerances from the fixture README):
the unsupervised evaluation (every metric of every scenario, mappings and confusion matrices,
exact to 1e-9) through the stage-6 post-processing and the evaluation metric, and the
post-processing edge cases E1 / E2."""
import math
import os

import numpy as np
import pytest
import torch

from part_distillation.evaluation.unsupervised import UnsupervisedPartMetric
from part_distillation.modeling.postprocess import (assign_part_segments, gt_iou_filter,
                                                    part_distillation_segments)

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures",
                       "part_distillation_parity")
pytestmark = pytest.mark.skipif(not os.path.isdir(FIXTURE), reason="parity fixture not present")

Q, TOPK = 16, 40
SCENARIOS = {"official_pipeline": ("after_mapping", ""),
             "metrics_only_no_filter": ("none", "_no_filter"),
             "per_cluster_filter_then_map": ("per_cluster", "_per_cluster_filter")}


@pytest.fixture(scope="module")
def unsup():
    return torch.load(os.path.join(FIXTURE, "unsupervised_eval.pt"))


def synthetic_outputs(label_map: torch.Tensor, k: int):
    """The fixture README's synthetic model outputs encoding ``label_map`` (-1 = none)."""
    mask_cls = torch.zeros(Q, k + 1)
    mask_cls[:, k] = 10.0  # unused queries: no object
    mask_pred = torch.full((Q,) + tuple(label_map.shape), -8.0)
    for s, cluster in enumerate(torch.unique(label_map[label_map >= 0]).tolist()):
        mask_cls[s, k] = 0.0
        mask_cls[s, cluster] = 8 + 0.01 * s
        mask_pred[s][label_map == cluster] = 8.0
    return mask_cls, mask_pred


def stage6_label_map(record, k, mapping=None, gt_filter=False):
    """The project's stage-6 post-processing of a record's synthetic outputs: (H, W) int64 label
    map (0 = none, l + 1 = label l), plus labels and areas of the segments."""
    mask_cls, mask_pred = synthetic_outputs(record["pred_label_map"], k)
    probs = mask_cls.double().softmax(-1)[:, :-1].float()
    masks, labels, scores = part_distillation_segments(
        probs, mask_pred, record["object_mask"], tuple(record["object_mask"].shape), topk=TOPK,
        label_mapping=mapping)
    if gt_filter:
        keep, _ = gt_iou_filter(masks, record["gt_parts"])
        masks, labels = masks[keep], labels[keep]
    seg = torch.zeros(record["object_mask"].shape, dtype=torch.int64)
    for m, lab in zip(masks, labels):
        seg[m] = lab + 1
    return seg, labels, masks.flatten(1).sum(1)


def evaluate(unsup, scenario, gt_filter):
    """Match and evaluate passes through the project's metric (official protocol)."""
    data = unsup["data"]
    by_id = {r["image_id"]: r for r in data["records"]}

    def metric(split):
        m = UnsupervisedPartMetric(data["part_classes"], len(data["thing_classes"]), "official",
                                   gt_filter=gt_filter, num_labels=data["K"])
        for image_id in data["splits"][split]:
            r = by_id[image_id]
            seg, _, _ = stage6_label_map(r, data["K"])
            m.add_label_map(r["class_name"], seg.numpy(), r["gt_parts"].numpy(), r["gt_part_names"])
        return m

    match = metric(f"{scenario}_match")
    matching = match.matching()
    ev = metric(f"{scenario}_evaluate")
    return matching, ev.confusion_matrices(matching), ev.summarize(matching)


def close(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@pytest.mark.parametrize("scenario", ["S1", "S2"])
@pytest.mark.parametrize("run", list(SCENARIOS))
def test_every_official_metric(unsup, scenario, run):
    gt_filter, mapping_suffix = SCENARIOS[run]
    data, official = unsup["data"], unsup["official"]
    matching, confusions, summary = evaluate(unsup, scenario, gt_filter)
    expected = official["results"][f"{scenario}_{run}"]
    for key, value in expected.items():
        assert close(summary[key], value), (key, summary[key], value)
    names = data["thing_classes"]
    expected_map = official["mappings"][scenario + mapping_suffix]
    assert {names.index(n): m.tolist() for n, m in matching.items()} == \
        {c: m.tolist() for c, m in expected_map.items()}
    if run == "official_pipeline":
        expected_conf = official[f"{scenario}_conf_matrices"]
        assert sorted(names.index(n) for n in confusions) == sorted(expected_conf)
        for name, conf in confusions.items():
            np.testing.assert_array_equal(conf, expected_conf[names.index(name)].numpy())
        if math.isnan(expected["C-mIoPred"]):
            assert summary["nan_classes"]["C-mIoPred"]  # the classes that make it NaN are named


@pytest.mark.parametrize("scenario", ["S1", "S2"])
def test_official_model_outputs_per_object(unsup, scenario):
    """The mapping-then-merge-then-filter inside the post-processing gives the official model's
    per-object output in both passes (labels, areas, label map; empty = official fallback)."""
    data, official = unsup["data"], unsup["official"]
    by_id = {r["image_id"]: r for r in data["records"]}
    mapping = official["mappings"][scenario]
    for mode in ("match", "eval"):
        for image_id, out in official["model_outputs"][scenario][mode].items():
            r = by_id[image_id]
            seg, labels, areas = stage6_label_map(
                r, data["K"], mapping[r["class_id"]] if mode == "eval" else None, gt_filter=True)
            if len(labels) == 0:  # official fallback: one empty mask labelled K
                assert out["labels"].tolist() == [data["K"]] and out["areas"].tolist() == [0]
            else:
                assert labels.tolist() == out["labels"].tolist(), (mode, image_id)
                assert areas.tolist() == out["areas"].tolist(), (mode, image_id)
            assert torch.equal(seg, out["label_map"].long()), (mode, image_id)


def test_more_object_classes_than_parts(unsup):
    m = UnsupervisedPartMetric(["head", "body", "leg"], 4, "official")
    m.add_label_map("cat", np.array([[1, 2]]), np.array([[[True, False]]]), ["head"])
    with pytest.raises(ValueError, match="more object classes than parts"):
        m.summarize()
    assert "IndexError" in unsup["official"]["thing_gt_more_than_parts"]
    clean = UnsupervisedPartMetric(["head", "body", "leg"], 4, "clean")
    clean.add_label_map("cat", np.array([[1, 2]]), np.array([[[True, False]]]), ["head"])
    assert clean.summarize()["C-mIoU"] == pytest.approx(100.0)  # label 2 lies on no GT part


@pytest.mark.parametrize("case", ["E1_top_pair_wins_no_object_pixel", "E2_top_label_only_outside"])
def test_postprocess_edge_cases(unsup, case):
    """Merged-label score over all winning pairs, empty segments kept with MIN_AREA_RATIO -1."""
    e = unsup["official"]["edge_cases"][case]
    k = e["mask_cls"].shape[1] - 1
    probs = e["mask_cls"].softmax(-1)[:, :-1]
    masks, labels, scores = part_distillation_segments(
        probs, e["mask_pred"], e["object_mask"], tuple(e["object_mask"].shape), topk=TOPK)
    pre = e["official_pre_filter"]
    assert labels.tolist() == pre["labels"].tolist()
    assert masks.flatten(1).sum(1).tolist() == pre["areas"].tolist()
    torch.testing.assert_close(scores, pre["scores"], rtol=0, atol=1e-6)
    keep, _ = gt_iou_filter(masks, e["gt_parts"])
    final = e["official_final"]
    assert labels[keep].tolist() == final["labels"].tolist()
    assert masks[keep].flatten(1).sum(1).tolist() == final["areas"].tolist()
    torch.testing.assert_close(scores[keep], final["scores"], rtol=0, atol=1e-6)
    assert k == 8 and assign_part_segments(scores[:0], labels[:0], masks[:0].float(), None)[0].shape[0] == 0


# ---------------------------------------------------------------- stage 6 model (stage6.pt)

def _stage6_cfg(fx, **extra):
    """The project config of the fixture's official stage-6 model (``fx["config"]``, plus ``extra``
    top-level keys)."""
    from part_distillation.config import get_part_distillation_cfg

    cfg = get_part_distillation_cfg()
    for key, value in fx["config"].items():
        node, *path, leaf = key.split(".")
        target = cfg[node]
        for p in path:
            target = target[p]
        target[leaf] = tuple(value) if isinstance(value, list) and leaf == "TRAIN" else value
    for key, value in extra.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def stage6():
    from detectron2.modeling import build_model

    fx = torch.load(os.path.join(FIXTURE, "stage6.pt"))
    torch.manual_seed(0)
    model = build_model(_stage6_cfg(fx))
    sd = {k: v.to(getattr(torch, fx["state_dict_dtypes"][k])) for k, v in fx["state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    model.eval()
    return fx, model


def _stage6_inputs(fx, sizes, with_gt=False):
    from part_distillation.data.ground_truth import GTObject

    inp = fx["inputs"]
    batch = []
    for i, image in enumerate(inp["images"]):
        x = {"image": image, "object_masks": inp["object_masks"][i][None],
             "object_classes": torch.tensor([inp["object_classes"][i]]),
             "height": sizes[i][0], "width": sizes[i][1]}
        if with_gt:
            gt = inp["gt_parts"][i].numpy()
            ids = inp["gt_part_ids"][i].tolist()
            x["objects"] = [GTObject("obj", "obj", 0, inp["object_masks"][i].numpy(), gt,
                                     [f"p{j}" for j in ids], ids)]
        batch.append(x)
    return batch


def test_stage6_head_outputs_within_tolerance(stage6):
    fx, model = stage6
    from detectron2.structures import ImageList

    batch = _stage6_inputs(fx, fx["inputs"]["out_sizes_same"])
    with torch.no_grad():
        images = ImageList.from_tensors([(x["image"].float() - model.pixel_mean) / model.pixel_std
                                         for x in batch], model.size_divisibility)
        classes = torch.tensor(fx["inputs"]["object_classes"])
        out = model.sem_seg_head(model.backbone(images.tensor), classes)
    ref = fx["outputs"]
    # README tolerances: float32 reduction order gives ~1e-6 .. 5e-6 absolute
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], rtol=0, atol=5e-6)
    torch.testing.assert_close(out["pred_masks"], ref["pred_masks"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["decoder_output"], ref["decoder_output"], rtol=0, atol=5e-6)
    for mine, theirs in zip(out["aux_outputs"], ref["aux_outputs"]):
        torch.testing.assert_close(mine["pred_logits"], theirs["pred_logits"], rtol=0, atol=5e-6)
        torch.testing.assert_close(mine["pred_masks"], theirs["pred_masks"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("run", ["same_size", "resized", "filters", "eval_mode_mapped"])
def test_stage6_segmentations_identical(stage6, run):
    fx, model = stage6
    inp = fx["inputs"]
    sizes = inp["out_sizes_resized"] if run == "resized" else inp["out_sizes_same"]
    saved = (model.min_area_ratio, model.min_score)
    if run == "filters":
        model.min_area_ratio, model.min_score = 0.05, 0.02  # the fixture's filters pass
    if run == "eval_mode_mapped":
        model.update_majority_vote_mapping({c: torch.tensor(m) for c, m in
                                            {3: [2, 2, 5, 7, 7, 5, 2, 0], 1: [1, 4, 4, 6, 1, 6, 4, 1]}.items()})
    try:
        with torch.no_grad():
            results = model(_stage6_inputs(fx, sizes, with_gt=run == "eval_mode_mapped"))
    finally:
        model.min_area_ratio, model.min_score = saved
        model.update_majority_vote_mapping({})
    for res, ref in zip(results, fx["inference"][run]):
        expected = ref["final" if run == "eval_mode_mapped" else "pre_filter"]
        seg_ref = ref["final_part_seg" if run == "eval_mode_mapped" else "pre_filter_part_seg"]
        assert torch.equal(res["part_seg"][0], seg_ref.long())  # 0 pixels differ
        props = res["proposals"][0]
        order = props["labels"].argsort()
        assert props["labels"][order].tolist() == expected["labels"].tolist()
        assert props["pred_masks"][order].flatten(1).sum(1).tolist() == expected["areas"].tolist()
        torch.testing.assert_close(props["scores"][order], expected["scores"].float(), rtol=0, atol=1e-6)
    if run == "same_size":  # the official GT filter then drops image 0's 30-pixel label-6 segment
        ref = fx["inference"][run][0]["final"]
        masks = results[0]["proposals"][0]["pred_masks"]
        keep, _ = gt_iou_filter(masks, inp["gt_parts"][0])
        assert sorted(results[0]["proposals"][0]["labels"][keep].tolist()) == ref["labels"].tolist()


def test_object_area_ratio_rule_is_one_strict_rule():
    """Stages 4, 5 and 6 use one object-area-ratio rule, the official strict ``>`` (stages 4-5 through
    the stage-4 network base of stages/proposal_learning.py)."""
    from part_distillation.data import part_distillation_dataset, proposal_dataset
    from part_distillation.stages import proposal_learning
    from part_distillation.utils.object_filter import object_area_ratio_keep

    for module in (proposal_dataset, part_distillation_dataset, proposal_learning):
        assert module.object_area_ratio_keep is object_area_ratio_keep
    assert not object_area_ratio_keep(10, 1000, 0.01)  # equal: dropped (official >)
    assert object_area_ratio_keep(11, 1000, 0.01)


def test_official_checkpoint_loads_through_model_weights(stage6, tmp_path):
    """The official state dict saved as a checkpoint file and loaded the ``--eval-only`` way
    (MODEL.WEIGHTS through the project's checkpointer): 0 missing, unexpected or mis-shaped keys,
    every tensor and dtype as saved, and the official head outputs."""
    from detectron2.modeling import build_model
    from detectron2.structures import ImageList

    from part_distillation.engine.checkpoint import AtomicCheckpointer
    from part_distillation.engine.trainer import load_eval_weights

    fx, _ = stage6
    path = str(tmp_path / "part_distillation_model.pth")
    torch.save({"model": {k: v.to(getattr(torch, fx["state_dict_dtypes"][k])) for k, v in fx["state_dict"].items()}},
               path)
    torch.manual_seed(1)  # another initialisation than the reference model's
    model = build_model(_stage6_cfg(fx, OUTPUT_DIR=str(tmp_path)))
    checkpointer = AtomicCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.resume_or_load(path, resume=False)
    loaded_path, incompatible = checkpointer.loaded
    assert loaded_path == path
    assert not incompatible.missing_keys and not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    state = model.state_dict()
    assert len(fx["state_dict"]) == 254 and set(state) >= set(fx["state_dict"])
    for k, v in fx["state_dict"].items():
        assert str(state[k].dtype).replace("torch.", "") == fx["state_dict_dtypes"][k], k
        assert torch.equal(state[k], v.to(state[k].dtype)), k
    # the --eval-only loader accepts it (it raises on a checkpoint that leaves keys missing)
    torch.manual_seed(2)
    model = build_model(_stage6_cfg(fx, OUTPUT_DIR=str(tmp_path)))
    load_eval_weights(_stage6_cfg(fx, OUTPUT_DIR=str(tmp_path)), model, path)
    model.eval()
    batch = _stage6_inputs(fx, fx["inputs"]["out_sizes_same"])
    with torch.no_grad():
        images = ImageList.from_tensors([(x["image"].float() - model.pixel_mean) / model.pixel_std
                                         for x in batch], model.size_divisibility)
        out = model.sem_seg_head(model.backbone(images.tensor), torch.tensor(fx["inputs"]["object_classes"]))
    torch.testing.assert_close(out["pred_logits"], fx["outputs"]["pred_logits"], rtol=0, atol=5e-6)
    torch.testing.assert_close(out["pred_masks"], fx["outputs"]["pred_masks"], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- stage-5 clustering (clustering.pt)

# classes with one clear optimum: the official 1.1.3 and 1.9.1 runs agree on them
SEPARATED = ("planted_separated", "planted_uneven", "duplicates_10x4", "N9_eq_K_plus_1")


def test_stage5_clustering_reaches_the_official_inertia():
    """Stage-5 k-means with the stage defaults (PART_RANKING.KMEANS_RESTARTS, KMEANS_HARTIGAN):
    inertia <= the official scikit-learn 1.1.3 KMeans(n_init=10) inertia on every fixture class
    (for N <= K: that of the official random centroids) and the official partition, up to
    relabelling, on the separated classes."""
    from part_distillation.config import get_part_distillation_cfg
    from part_distillation.modeling.part_clustering import cluster_classes, inertia

    fx = torch.load(os.path.join(FIXTURE, "clustering.pt"))
    feats, k = fx["data"]["features"], fx["data"]["K"]
    official = fx["official"]["1.1.3"]
    pr = get_part_distillation_cfg().PART_RANKING
    ours = cluster_classes(feats, k, restarts=pr.KMEANS_RESTARTS, hartigan=pr.KMEANS_HARTIGAN)
    assert len(feats) == 8
    for name, x in feats.items():
        run = official["kmeans"][name]
        ref = run["inertia"] if run is not None else inertia(x, official["centroids"][name])
        assert inertia(x, ours[name]) <= ref * (1 + 1e-6), name
        if name in SEPARATED:
            labels = torch.cdist(x.double(), ours[name].double()).argmin(1)
            pairs = set(zip(labels.tolist(), torch.as_tensor(run["labels"]).tolist()))
            assert len(pairs) == len(set(labels.tolist())) == len(set(torch.as_tensor(run["labels"]).tolist())), name
    # the two ambiguous classes: plain Lloyd k-means with the same seedings ends above the official
    plain = cluster_classes(feats, k, restarts=pr.KMEANS_RESTARTS, hartigan=False)
    for name in ("overlapping_4_true", "uniform_120"):
        assert inertia(feats[name], plain[name]) > official["kmeans"][name]["inertia"], name
