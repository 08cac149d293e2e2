"""Tests of the Hungarian matcher and the Mask2Former set criterion."""
import pytest
import torch
import torch.nn.functional as F

from part_distillation.modeling.criterion import SetCriterion
from part_distillation.modeling.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_bce

K = 4  # foreground classes


def region_masks(size=16):
    """Three disjoint (3, size, size) bool masks: left third, middle third, right third."""
    masks = torch.zeros(3, size, size, dtype=torch.bool)
    third = size // 3
    masks[0, :, :third] = True
    masks[1, :, third:2 * third] = True
    masks[2, :, 2 * third:] = True
    return masks


def confident_logits(labels, num_queries):
    """(Q, K+1) logits: query q confidently predicts labels[q] (no object past the list)."""
    logits = torch.full((num_queries, K + 1), -10.0)
    for q in range(num_queries):
        logits[q, labels[q] if q < len(labels) else K] = 10.0
    return logits


def make_criterion(num_points=64):
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    return SetCriterion(K, matcher, weights, eos_coef=0.1, losses=["labels", "masks"],
                        num_points=num_points, oversample_ratio=3.0, importance_sample_ratio=0.75)


def test_pairwise_costs_match_per_pair_losses():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 20), (torch.rand(4, 20) > 0.5).float()
    bce, dice = pairwise_sigmoid_bce(logits, targets), pairwise_dice(logits, targets)
    assert bce.shape == dice.shape == (3, 4)
    for n in range(3):
        for m in range(4):
            ref = F.binary_cross_entropy_with_logits(logits[n], targets[m])
            assert torch.allclose(bce[n, m], ref, atol=1e-5)
            s = logits[n].sigmoid()
            ref = 1 - (2 * (s * targets[m]).sum() + 1) / (s.sum() + targets[m].sum() + 1)
            assert torch.allclose(dice[n, m], ref, atol=1e-5)


def test_matcher_recovers_permutation():
    torch.manual_seed(0)
    tgt_masks = region_masks(32)  # targets at a higher resolution than the predictions
    tgt_labels = torch.tensor([0, 1, 2])
    perm = [2, 0, 1]  # prediction q is a copy of target perm[q]
    q = 5
    pred_masks = torch.full((1, q, 16, 16), -10.0)
    small = F.interpolate(tgt_masks[None].float(), size=(16, 16), mode="nearest")[0]
    for i, t in enumerate(perm):
        pred_masks[0, i] = small[t] * 20 - 10
    logits = confident_logits([int(tgt_labels[t]) for t in perm], q)[None]
    matcher = HungarianMatcher(num_points=256)
    (pred_idx, tgt_idx), = matcher({"pred_logits": logits, "pred_masks": pred_masks},
                                   [{"labels": tgt_labels, "masks": tgt_masks}])
    assert pred_idx.dtype == torch.int64 and tgt_idx.dtype == torch.int64
    assert pred_idx.tolist() == [0, 1, 2]
    assert tgt_idx.tolist() == perm


def test_matcher_class_cost_decides_between_equal_masks():
    torch.manual_seed(0)
    mask = region_masks(16)[1]
    tgt = {"labels": torch.tensor([3, 1]), "masks": torch.stack([mask, mask])}
    pred_masks = (mask.float() * 20 - 10).expand(1, 2, 16, 16).contiguous()
    logits = confident_logits([1, 3], 2)[None]  # query 0 says class 1, query 1 says class 3
    (pred_idx, tgt_idx), = HungarianMatcher(num_points=64)(
        {"pred_logits": logits, "pred_masks": pred_masks}, [tgt])
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {0: 1, 1: 0}


def test_matcher_zero_targets_and_more_targets_than_queries():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 2, K + 1), "pred_masks": torch.randn(2, 2, 8, 8)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)},
        {"labels": torch.tensor([0, 1, 2]), "masks": region_masks(8)},
    ]
    (p0, t0), (p1, t1) = HungarianMatcher(num_points=32)(outputs, targets)
    assert p0.numel() == 0 and t0.numel() == 0
    assert p0.dtype == torch.int64 and t0.dtype == torch.int64
    assert len(p1) == 2 and len(set(t1.tolist())) == 2


def test_criterion_empty_targets():
    torch.manual_seed(0)
    criterion = make_criterion()
    logits = torch.randn(2, 3, K + 1, requires_grad=True)
    masks = torch.randn(2, 3, 8, 8, requires_grad=True)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)}] * 2
    losses = criterion({"pred_logits": logits, "pred_masks": masks}, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    # every prediction is "no object": weighted mean CE equals the plain mean CE
    expected = F.cross_entropy(logits.detach().reshape(-1, K + 1), torch.full((6,), K))
    assert torch.allclose(losses["loss_ce"], expected, atol=1e-6)
    sum(losses.values()).backward()
    assert logits.grad is not None and masks.grad is not None
    assert torch.count_nonzero(masks.grad) == 0


def test_criterion_mixed_batch_and_buffer():
    torch.manual_seed(0)
    criterion = make_criterion()
    assert "empty_weight" in criterion.state_dict()
    assert torch.allclose(criterion.empty_weight, torch.tensor([1.0] * K + [0.1]))
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)},
        {"labels": torch.tensor([0, 2, 1]), "masks": region_masks(16)},
    ]
    masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    losses = criterion({"pred_logits": torch.randn(2, 4, K + 1), "pred_masks": masks}, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0 and losses["loss_dice"] > 0
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    assert torch.count_nonzero(masks.grad[0]) == 0  # the empty image gets no mask gradient
    assert torch.count_nonzero(masks.grad[1]) > 0


def test_criterion_aux_keys():
    torch.manual_seed(0)
    criterion = make_criterion()

    def pred():
        return {"pred_logits": torch.randn(1, 4, K + 1), "pred_masks": torch.randn(1, 4, 8, 8)}

    outputs = dict(pred(), aux_outputs=[pred(), pred()], decoder_output=torch.randn(1, 4, 16))
    targets = [{"labels": torch.tensor([1, 3]), "masks": region_masks(16)[:2]}]
    losses = criterion(outputs, targets)
    base = ["loss_ce", "loss_mask", "loss_dice"]
    assert set(losses) == set(base + [f"{k}_{i}" for i in range(2) for k in base])


def test_criterion_decreases_under_optimisation():
    torch.manual_seed(0)
    criterion = make_criterion(num_points=128)
    targets = [{"labels": torch.tensor([0, 2, 3]), "masks": region_masks(16)}]
    logits = torch.zeros(1, 5, K + 1, requires_grad=True)
    masks = (0.1 * torch.randn(1, 5, 16, 16)).requires_grad_()
    opt = torch.optim.Adam([logits, masks], lr=0.3)

    def total():
        losses = criterion({"pred_logits": logits, "pred_masks": masks}, targets)
        return sum(criterion.weight_dict[k] * v for k, v in losses.items())

    start = total().item()
    for _ in range(30):
        opt.zero_grad()
        loss = total()
        loss.backward()
        opt.step()
    # the mask BCE plateaus (~0.2): importance sampling keeps picking the boundary points,
    # where the bilinearly interpolated logit of a perfect mask is ~0
    assert total().item() < 0.3 * start


def test_point_sampling_ratios_read_the_official_swapped_pair_and_refuse_other_invalid_ones(caplog):
    """configs/PartProposalLearning.yaml / PartDistillation.yaml publish OVERSAMPLE_RATIO 0.0 /
    IMPORTANCE_SAMPLE_RATIO 3.0, which detectron2's point sampler asserts against: the criterion
    takes them as the official sh files pass them (3.0 / 0.0), with a warning; any other invalid pair
    is refused naming the keys."""
    from part_distillation.config import setup_cfg
    from part_distillation.modeling.meta_arch.maskformer_model import build_criterion, point_sampling_ratios

    def cfg(k, beta):
        return setup_cfg("", ["MODEL.MASK_FORMER.OVERSAMPLE_RATIO", k,
                              "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", beta])

    assert point_sampling_ratios(cfg(3.0, 0.75)) == (3.0, 0.75)
    with caplog.at_level("WARNING"):
        crit = build_criterion(cfg(0.0, 3.0), 1)
    assert (crit.oversample_ratio, crit.importance_sample_ratio) == (3.0, 0.0)
    assert "swapped pair" in caplog.text
    for bad in ((0.5, 0.5), (3.0, 1.5)):
        with pytest.raises(ValueError, match="OVERSAMPLE_RATIO .* IMPORTANCE_SAMPLE_RATIO"):
            point_sampling_ratios(cfg(*bad))
    # the swapped reading trains: finite mask losses with uniformly random points
    masks = torch.randn(1, 3, 8, 8)
    targets = [{"labels": torch.zeros(1, dtype=torch.long), "masks": (torch.rand(1, 16, 16) > 0.5).float()}]
    crit.num_points = 32
    losses = crit({"pred_logits": torch.randn(1, 3, 2), "pred_masks": masks}, targets)
    assert all(torch.isfinite(v) for v in losses.values())
