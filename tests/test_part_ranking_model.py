import torch
from detectron2.modeling import build_model

from part_distillation.config import setup_cfg
from part_distillation.modeling.meta_arch.part_ranking_model import (
    PartRankingModel, clustering_segments, labelling_segments, per_pixel_segments)
from part_distillation.modeling.postprocess import area_then_score_keep

TINY = "configs/proposal_learning/tiny_cpu.yaml"


def halves(h=8, w=8):
    """Logits of 3 queries on an (h, w) image: q0 left half, q1 right half, q2 a 1-pixel blob."""
    logits = torch.full((3, h, w), -5.0)
    logits[0, :, : w // 2] = 5.0
    logits[1, :, w // 2:] = 5.0
    logits[2, 0, 0] = 10.0
    return logits


def test_area_then_score_filter_applies_only_if_something_survives():
    areas, scores = torch.tensor([2, 6]), torch.tensor([0.9, 0.2])
    assert area_then_score_keep(areas, scores, 8, 0.5, -1).tolist() == [1]
    assert area_then_score_keep(areas, scores, 8, 0.9, -1).tolist() == [0, 1]
    assert area_then_score_keep(areas, scores, 8, 0.0, 0.5).tolist() == [0]
    assert area_then_score_keep(areas, scores, 8, 0.5, 0.5).tolist() == [1]  # score filter skipped


def test_per_pixel_winner_and_region():
    logits = halves()
    masks, index, region = per_pixel_segments(logits, torch.tensor([0.9, 0.8, 0.95]))
    assert region.all()
    assert index.tolist() == [0, 1, 2]
    assert masks.sum((1, 2)).tolist() == [31, 32, 1]  # q2 wins its pixel


def test_pass1_filters_and_object_mask():
    logits = halves()
    prob = torch.tensor([0.9, 0.8, 0.95])
    obj = torch.zeros(8, 8, dtype=torch.bool)
    obj[:, :6] = True  # left half + 2 columns of the right half
    masks, scores, queries = clustering_segments(prob, logits, obj, min_area_ratio=0.05)
    # q2 (1/64 of the region) is dropped by MIN_AREA_RATIO_1; masks clipped to the object
    assert queries.tolist() == [0, 1]
    # q2's pixel is not re-assigned after q2 is dropped (official: no re-assignment)
    assert masks.sum((1, 2)).tolist() == [31, 16]
    assert torch.allclose(scores, torch.tensor([0.9, 0.8]))
    # a filter that would drop everything does not apply
    _, _, q = clustering_segments(prob, logits, obj, min_score=0.99)
    assert sorted(q.tolist()) == [0, 1, 2]
    # segments outside the object (IoU <= 0.001) go
    obj2 = torch.zeros(8, 8, dtype=torch.bool)
    obj2[:, :4] = True
    _, _, q = clustering_segments(prob, logits, obj2)
    assert sorted(q.tolist()) == [0, 2]


def test_pass2_labels_merge_same_cluster():
    logits = torch.full((3, 8, 8), -5.0)
    logits[0, :4] = 5.0  # top half
    logits[1, 4:, :4] = 5.0  # bottom-left
    logits[2, 4:, 4:] = 5.0  # bottom-right
    prob = torch.tensor([0.9, 0.8, 0.7])
    # q0 -> cluster 1, q1 and q2 -> cluster 0 (bottom merged)
    logits_k = torch.tensor([[0.0, 9.0], [9.0, 0.0], [9.0, 0.0]])
    obj = torch.ones(8, 8, dtype=torch.bool)
    masks, scores, labels = labelling_segments(prob, logits, logits_k, obj)
    assert labels.tolist() == [0, 1]
    assert masks.sum((1, 2)).tolist() == [32, 32]
    assert not (masks[0] & masks[1]).any()
    assert torch.allclose(scores, torch.tensor([0.8, 0.9]), atol=1e-3)  # max of the merged


def tiny_model(**overrides):
    opts = ["MODEL.META_ARCHITECTURE", "PartRankingModel", "MODEL.EFFICIENTNET.PRETRAINED", "False"]
    for k, v in overrides.items():
        opts += [k, v]
    torch.manual_seed(0)
    return build_model(setup_cfg(TINY, opts)).eval()


def test_model_two_passes_random_init():
    model = tiny_model()
    assert isinstance(model, PartRankingModel)
    obj = torch.zeros(2, 64, 96, dtype=torch.bool)
    obj[0, 10:50, 10:60] = True
    obj[1, 5:30, 50:90] = True
    x = {"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "object_masks": obj,
         "height": 128, "width": 192}
    feats = model([x])[0]["features"]
    assert len(feats) == 2 and feats[0].shape[1] == 128  # HIDDEN_DIM
    assert torch.allclose(feats[0].norm(dim=1), torch.ones(len(feats[0])), atol=1e-5)
    cents = [feats[0][:3], None]
    parts = model([dict(x, centroids=cents)])[0]["parts"]
    assert parts[1] is None
    p = parts[0]
    assert p["masks"].shape[1:] == (128, 192) and p["masks"].dtype == torch.bool
    assert set(p["labels"].tolist()) <= {0, 1, 2}
    assert len(set(p["labels"].tolist())) == len(p["labels"])
    assert p["masks"].flatten(1).sum(1).min() > 0


def test_labelling_an_object_no_mask_covers_returns_no_segment():
    # every mask logit negative (a barely trained stage-4 model): no segment, not a crash
    obj = torch.zeros(8, 8, dtype=torch.bool)
    obj[2:6, 2:6] = True
    masks, scores, labels = labelling_segments(torch.full((3,), 0.5), torch.full((3, 8, 8), -1.0),
                                               torch.randn(3, 4), obj)
    assert masks.shape == (0, 8, 8) and masks.dtype == torch.bool and len(scores) == len(labels) == 0
