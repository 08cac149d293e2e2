"""Tests of part_distillation.evaluation.part_metrics / evaluators on hand-built masks.

Most masks are single-row images so that every IoU is a ratio of pixel counts computed by hand in
the comments.
"""
import math

import numpy as np
import pytest
import torch

from part_distillation.data.ground_truth import GTObject
from part_distillation.evaluation.evaluators import PartProposalEvaluator, PartSegmentEvaluator
from part_distillation.evaluation.part_metrics import (
    ProposalARAccumulator,
    SegmentMetricsAccumulator,
    best_match_miou,
    hungarian_miou,
    label_map_to_masks,
    mask_iou,
    proposal_recall,
)


def row(*pixels, width=10):
    """(1, width) bool mask with the given columns set."""
    mask = np.zeros((1, width), dtype=bool)
    mask[0, list(pixels)] = True
    return mask


def stack(*masks):
    """(N, 1, W) bool stack of single-row masks."""
    return np.stack(masks) if masks else np.zeros((0, 1, 10), dtype=bool)


# ---------------------------------------------------------------- mask_iou / label maps


def test_mask_iou_hand_values_and_empty_sets():
    a = stack(row(0, 1, width=4), row(width=4))  # {0,1}, {}
    b = stack(row(0, width=4), row(1, 2, width=4))  # {0}, {1,2}
    ious = mask_iou(a, b)
    # {0,1} vs {0}: 1/2; {0,1} vs {1,2}: inter {1}, union {0,1,2} -> 1/3; empty vs anything -> 0
    np.testing.assert_allclose(ious, [[1 / 2, 1 / 3], [0.0, 0.0]])
    assert ious.dtype == np.float64
    # both empty: union empty -> IoU 0, not NaN
    assert mask_iou(stack(row(width=4)), stack(row(width=4)))[0, 0] == 0.0
    assert mask_iou(np.zeros((0, 1, 4), bool), b).shape == (0, 2)
    assert mask_iou(a, np.zeros((0, 1, 4), bool)).shape == (2, 0)
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((1, 1, 5), bool))


def test_label_map_to_masks():
    seg = np.array([[0, 2], [2, 5]])
    masks, ids = label_map_to_masks(seg)
    np.testing.assert_array_equal(ids, [2, 5])
    np.testing.assert_array_equal(masks[0], [[False, True], [True, False]])
    np.testing.assert_array_equal(masks[1], [[False, False], [False, True]])
    masks, ids = label_map_to_masks(np.zeros((2, 3), dtype=np.int64))
    assert masks.shape == (0, 2, 3) and ids.shape == (0,)
    with pytest.raises(ValueError):
        label_map_to_masks(np.array([[-1, 0]]))
    with pytest.raises(ValueError):
        label_map_to_masks(np.array([[0.0, 1.0]]))


# ---------------------------------------------------------------- proposal AR


def test_perfect_proposal_first_gives_full_recall():
    gt = stack(row(0, 1, 2, 3, 4))
    acc = ProposalARAccumulator()
    acc.add(stack(row(0, 1, 2, 3, 4), row(7, 8)), np.array([0.9, 0.1]), gt)
    summary = acc.summarize()
    assert summary["AR@1"] == 100.0
    assert summary["AR@200"] == 100.0
    assert summary["num_gt_parts"] == 1


def test_iou_point_six_passes_three_of_ten_thresholds():
    # GT {0..4} (5 px), proposal {0,1,2} (3 px): IoU = 3/5 = 0.6 -> passes 0.5, 0.55, 0.6 -> 30 %
    acc = ProposalARAccumulator(ks=(1,))
    acc.add(stack(row(0, 1, 2)), np.array([1.0]), stack(row(0, 1, 2, 3, 4)))
    assert acc.summarize()["AR@1"] == pytest.approx(30.0)
    # same answer with thresholds built by np.arange (0.6000000000000001 must still accept 0.6)
    recalled, num_gt = proposal_recall(
        stack(row(0, 1, 2)), np.array([1.0]), stack(row(0, 1, 2, 3, 4)),
        ks=(1,), iou_thresholds=np.arange(0.5, 0.951, 0.05),
    )
    assert num_gt == 1 and recalled.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]]


def test_top_k_cutoff():
    # perfect proposal ranked 3rd behind two proposals that miss the GT entirely
    gt = stack(row(0, 1, 2))
    preds = stack(row(0, 1, 2), row(6), row(8))
    acc = ProposalARAccumulator(ks=(1, 2, 3, 10))
    acc.add(preds, np.array([0.1, 0.9, 0.8]), gt)
    summary = acc.summarize()
    assert summary["AR@1"] == 0.0 and summary["AR@2"] == 0.0
    assert summary["AR@3"] == 100.0 and summary["AR@10"] == 100.0


def test_greedy_one_to_one_matching():
    # GT A = {0,1}, B = {2,3}; the single proposal {0,1,2,3} has IoU 2/4 = 0.5 with both. With
    # one-to-one matching it recalls only one of them, and only at t = 0.5: 1 of 2 GT x 1 of 10
    # thresholds = 5 % (max-IoU recall would give 10 %).
    acc = ProposalARAccumulator(ks=(1,))
    acc.add(stack(row(0, 1, 2, 3)), np.array([1.0]), stack(row(0, 1), row(2, 3)))
    assert acc.summarize()["AR@1"] == pytest.approx(5.0)
    # a matched GT is not matched again: p1 = A exactly, p2 = {0,1,2,3} (0.5 with A and B) then
    # takes B at t = 0.5 -> A 10/10 + B 1/10 over 2 GT parts = 55 %
    acc = ProposalARAccumulator(ks=(2,))
    acc.add(stack(row(0, 1), row(0, 1, 2, 3)), np.array([1.0, 0.5]), stack(row(0, 1), row(2, 3)))
    assert acc.summarize()["AR@2"] == pytest.approx(55.0)


def test_ar_averages_over_all_gt_parts_not_objects():
    acc = ProposalARAccumulator(ks=(10,))
    # object 1: 1 GT part, recalled perfectly
    acc.add(stack(row(0, 1)), np.array([1.0]), stack(row(0, 1)))
    # object 2: 3 GT parts, no proposals at all
    acc.add(stack(), np.zeros(0), stack(row(0), row(1), row(2)))
    # over GT parts: 1 recalled of 4 -> 25 % (a per-object mean would give 50 %)
    assert acc.summarize()["AR@10"] == pytest.approx(25.0)


def test_object_mask_clipping_and_objects_without_parts():
    # proposal {0..5} spills over the object {0..3}; inside the object it equals GT {0..3}: IoU 1
    obj = row(0, 1, 2, 3)
    acc = ProposalARAccumulator(ks=(1,))
    acc.add(stack(row(0, 1, 2, 3, 4, 5)), np.array([1.0]), stack(row(0, 1, 2, 3)), obj)
    assert acc.summarize()["AR@1"] == 100.0
    # a GT part entirely outside the object is dropped -> this object has no parts
    acc.add(stack(row(7)), np.array([1.0]), stack(row(7, 8)), obj)
    # an object with zero GT parts
    acc.add(stack(row(1)), np.array([1.0]), stack(), obj)
    summary = acc.summarize()
    assert summary["num_objects_without_parts"] == 2
    assert summary["num_objects"] == 3 and summary["AR@1"] == 100.0
    assert math.isnan(ProposalARAccumulator().summarize()["AR@1"])
    with pytest.raises(ValueError):
        acc.add(stack(row(1)), np.array([1.0, 2.0]), stack(row(1)))


# ---------------------------------------------------------------- per-object segment metrics


def test_best_match_vs_hungarian_when_one_segment_covers_two_parts():
    # GT head {0,1}, body {2,3}; one segment {0..3}: IoU 2/4 = 0.5 with each part.
    gt = stack(row(0, 1, width=4), row(2, 3, width=4))
    pred = stack(row(0, 1, 2, 3, width=4))
    # best match: both parts use the segment -> (0.5 + 0.5) / 2 = 0.5
    assert best_match_miou(pred, gt) == pytest.approx(0.5)
    # Hungarian: the segment serves one part (0.5), the other gets 0 -> 0.25
    assert hungarian_miou(pred, gt) == pytest.approx(0.25)
    # no predictions -> 0; no GT parts -> NaN
    assert best_match_miou(stack(), stack(row(1))) == 0.0
    assert hungarian_miou(stack(), stack(row(1))) == 0.0
    assert math.isnan(hungarian_miou(pred, np.zeros((0, 1, 4), bool)))


def test_segment_accumulator_averages_per_object():
    acc = SegmentMetricsAccumulator(ks=(1, 10))
    head_body = stack(row(0, 1, width=4), row(2, 3, width=4))
    # object 1: one segment over both parts -> best 0.5, Hungarian 0.25 (see test above)
    acc.add(np.array([[1, 1, 1, 1]]), head_body)
    # object 2: perfect segmentation with ids permuted -> 1.0 and 1.0
    acc.add(np.array([[7, 7, 3, 3]]), head_body)
    # object 3: no GT parts -> skipped
    acc.add(np.array([[1, 1, 1, 1]]), np.zeros((0, 1, 4), bool))
    summary = acc.summarize()
    assert summary["best_match_mIoU"] == pytest.approx(100 * (0.5 + 1.0) / 2)  # 75
    assert summary["hungarian_mIoU"] == pytest.approx(100 * (0.25 + 1.0) / 2)  # 62.5
    # AR@10 over 4 GT parts: object 1 recalls one part at t=0.5 only (1/10), object 2 recalls both
    # at every threshold (20/10) -> (1 + 20) / (4 * 10) = 52.5 %
    assert summary["AR@10"] == pytest.approx(52.5)
    # AR@1: object 2's segments tie on area (score 0.5) so id order decides -> id 3 (body) kept:
    # (1 + 10) / 40 = 27.5 %
    assert summary["AR@1"] == pytest.approx(27.5)
    assert summary["num_objects_without_parts"] == 1


# ---------------------------------------------------------------- evaluators


def _fake_batch():
    """One image with two GT objects and its outputs (torch and numpy predictions)."""
    head_body = torch.from_numpy(stack(row(0, 1, width=4), row(2, 3, width=4)))
    objects = [
        GTObject("cat", "cat", 0, np.ones((1, 4), bool), head_body.numpy(), ["head", "body"], [0, 1]),
        GTObject("cat", "cat", 0, np.ones((1, 4), bool), np.zeros((0, 1, 4), bool)),
    ]
    proposals = [
        {"pred_masks": head_body.flip(0), "scores": torch.tensor([0.9, 0.8])},
        {"pred_masks": torch.zeros(0, 1, 4, dtype=torch.bool), "scores": torch.zeros(0)},
    ]
    part_seg = [torch.tensor([[5, 5, 1, 1]]), np.array([[1, 1, 1, 1]])]
    return [{"objects": objects}], [{"proposals": proposals, "part_seg": part_seg}]


def test_proposal_evaluator_round_trip():
    evaluator = PartProposalEvaluator(ks=(1, 10))
    evaluator.reset()
    inputs, outputs = _fake_batch()
    evaluator.process(inputs, outputs)
    results = evaluator.evaluate()["part_proposals"]
    # top-1 is body (perfect) -> 1 of 2 parts; top-10 recalls both
    assert results["AR@1"] == pytest.approx(50.0) and results["AR@10"] == pytest.approx(100.0)
    assert results["num_objects_without_parts"] == 1
    assert all(isinstance(v, (int, float)) for v in results.values())
    evaluator.reset()
    assert math.isnan(evaluator.evaluate()["part_proposals"]["AR@1"])
    outputs[0]["proposals"][0]["pred_masks"] = torch.rand(2, 1, 4)
    with pytest.raises(ValueError):
        evaluator.process(inputs, outputs)


def test_segment_evaluator_round_trip():
    evaluator = PartSegmentEvaluator()
    inputs, outputs = _fake_batch()
    evaluator.process(inputs, outputs)
    results = evaluator.evaluate()["part_segments"]
    assert results["best_match_mIoU"] == pytest.approx(100.0)
    assert results["hungarian_mIoU"] == pytest.approx(100.0)
    outputs[0]["part_seg"].pop()
    with pytest.raises(ValueError):
        evaluator.process(inputs, outputs)


def test_ar_merge_matches_single_accumulator():
    # worker 1: perfect object (1 part, 10/10); worker 2: IoU 0.6 object (1 part, 3/10)
    first, second = ProposalARAccumulator(ks=(1,)), ProposalARAccumulator(ks=(1,))
    first.add(stack(row(0, 1)), np.array([1.0]), stack(row(0, 1)))
    second.add(stack(row(0, 1, 2)), np.array([1.0]), stack(row(0, 1, 2, 3, 4)))
    first.merge(second)
    assert first.summarize()["AR@1"] == pytest.approx(100 * 13 / 20)
    assert first.summarize()["num_objects"] == 2
    with pytest.raises(ValueError):
        first.merge(ProposalARAccumulator(ks=(2,)))
