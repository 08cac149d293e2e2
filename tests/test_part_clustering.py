import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from part_distillation.modeling.part_clustering import (
    assign_clusters, class_seed, cluster_classes, cluster_logits, kmeans_batch_bytes)


def planted(num_classes, k=8, per_cluster=40, d=256, noise=0.05, seed=0):
    """Per class: k random unit directions, points = direction + noise, L2-normalised."""
    g = torch.Generator().manual_seed(seed)
    feats, truth = {}, {}
    for c in range(num_classes):
        centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
        lab = torch.arange(k).repeat_interleave(per_cluster + c)  # classes of different sizes
        x = centers[lab] + noise * torch.randn(len(lab), d, generator=g)
        feats[f"n{c:04d}"] = torch.nn.functional.normalize(x, dim=1)
        truth[f"n{c:04d}"] = lab.numpy()
    return feats, truth


@pytest.mark.parametrize("metric", ["l2", "dot", "neg_sq_l2"])
def test_planted_clusters_recovered(metric):
    feats, truth = planted(6)
    # small budget: several batched calls of similar-size classes
    cents = cluster_classes(feats, 8, max_batch_bytes=kmeans_batch_bytes(2, 400, 256, 8, 3))
    for code, x in feats.items():
        assert cents[code].shape == (8, 256)
        pred = assign_clusters(x, cents[code], metric).numpy()
        assert adjusted_rand_score(truth[code], pred) >= 0.95, (code, metric)


def test_centroids_do_not_depend_on_batching():
    feats, _ = planted(5, per_cluster=20, d=32)
    one = cluster_classes(feats, 8)
    alone = cluster_classes(feats, 8, max_batch_bytes=1)  # every class in its own call
    subset = cluster_classes({"n0003": feats["n0003"]}, 8)
    for code in feats:
        assert torch.allclose(one[code], alone[code], atol=1e-5)
    assert torch.allclose(one["n0003"], subset["n0003"], atol=1e-5)
    assert class_seed("n0003") == class_seed("n0003") != class_seed("n0004")


def test_small_class_fallback_fewer_clusters():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # 3 features, 2 distinct, K = 8
    cents = cluster_classes({"few": x, "none": torch.zeros(0, 2), "exact": torch.eye(2)}, 8)
    assert cents["none"] is None
    assert torch.equal(cents["few"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # first appearance
    assert assign_clusters(x, cents["few"], "dot").tolist() == [0, 1, 0]
    assert torch.equal(cents["exact"], torch.eye(2))


def test_cluster_logits_official_l2_formula():
    x = torch.tensor([[3.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    # official "l2": x.c - |x|^2 - |c|^2 (dot weighted 1, not 2)
    assert torch.allclose(cluster_logits(x, c, "l2"), torch.tensor([[3 - 9 - 1, 0 - 9 - 0.25]]))
    assert torch.allclose(cluster_logits(x, c, "neg_sq_l2"), -torch.cdist(x, c) ** 2)
    assert torch.allclose(cluster_logits(x, c, "dot"), torch.tensor([[3.0, 0.0]]))
    with pytest.raises(ValueError, match="CLASSIFIER_METRIC"):
        cluster_logits(x, c, "cosine")


def test_bad_inputs():
    with pytest.raises(ValueError):
        cluster_classes({"a": torch.zeros(10, 3), "b": torch.zeros(10, 4)}, 2)
    with pytest.raises(ValueError):
        cluster_classes({"a": torch.zeros(10, 3)}, 0)
