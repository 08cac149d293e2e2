import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

import part_distillation.modeling  # noqa: F401
from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.images import read_image_rgb
from part_distillation.data.pseudo_labels import decode_mask
from part_distillation.modeling.feature_extractor import BackboneFeatures
from part_distillation.modeling.kmeans import batched_kmeans
from part_distillation.stages.proposal_generation import grid_cell_masks

from .helpers import EFFNET_CFG, needs_shared


@pytest.fixture(scope="module")
def real_object_features():
    """In-mask EfficientNet-Lite0 res3+res4 features (stride 8) of real Pascal-Part objects."""
    cfg = setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "256"])
    fe = BackboneFeatures(cfg)
    objs = []
    for rec in resolve_dataset("pascal_part_examples")[:6]:
        feats, resized = fe(read_image_rgb(rec["file_name"]))
        c, h, w = feats.shape
        masks = torch.from_numpy(np.stack([decode_mask(o["mask"]) for o in rec["objects"]]))
        cells = grid_cell_masks(masks, resized, (h, w), 8).view(len(masks), -1)
        for m in cells:
            if int(m.sum()) > 8:
                objs.append(feats.view(c, -1).T[m])
    return objs


def _pad(objs):
    n = max(len(o) for o in objs)
    x = torch.zeros(len(objs), n, objs[0].shape[1])
    valid = torch.zeros(len(objs), n, dtype=torch.bool)
    for i, o in enumerate(objs):
        x[i, : len(o)] = o
        valid[i, : len(o)] = True
    return x, valid


@needs_shared
def test_inertia_matches_or_beats_sklearn_on_real_features(real_object_features):
    objs = real_object_features
    assert len(objs) >= 8
    x, valid = _pad(objs)
    ours = batched_kmeans(x, valid, 4, seeds=list(range(len(objs))), restarts=3).inertia.numpy()
    ref = np.array([KMeans(n_clusters=4, random_state=0, n_init=1).fit(o.numpy().astype(np.float64)).inertia_
                    for o in objs])
    assert ours.sum() <= ref.sum() * (1 + 1e-4), (ours.sum(), ref.sum())
    assert (ours <= ref * 1.02).mean() >= 0.9  # per object: at most rare, small losses


def test_recovers_separated_clusters_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centers])
    x = torch.full((2, 120, 2), 1e6)  # padding far away must not matter
    x[0, :90] = pts
    x[1, :90] = pts[torch.randperm(90, generator=g)]
    valid = torch.zeros(2, 120, dtype=torch.bool)
    valid[:, :90] = True
    res = batched_kmeans(x, valid, 3, seeds=[1, 2])
    for b in range(2):
        found = res.centers[b][res.centers[b][:, 0].argsort()]
        assert torch.allclose(torch.sort(found, 0).values, torch.sort(centers, 0).values, atol=0.1)
        assert (res.labels[b, 90:] == -1).all()
        assert res.inertia[b] < 90 * 3 * 0.1 ** 2 * 2


def test_result_does_not_depend_on_batch_composition():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, 8, generator=g), torch.randn(70, 8, generator=g)
    xa, va = _pad([a])
    alone = batched_kmeans(xa, va, 4, seeds=[11])
    xab, vab = _pad([b, a])
    both = batched_kmeans(xab, vab, 4, seeds=[5, 11])
    assert torch.allclose(alone.centers[0], both.centers[1], atol=1e-5)
    assert torch.equal(alone.labels[0, :50], both.labels[1, :50])
    again = batched_kmeans(xa, va, 4, seeds=[11])
    assert torch.equal(alone.labels, again.labels)  # deterministic for a seed


def test_too_few_points_raises():
    x, valid = _pad([torch.randn(3, 2)])
    with pytest.raises(ValueError, match=">= 4 valid points"):
        batched_kmeans(x, valid, 4, seeds=[0])


def test_size_batches_bound_padding_and_rows():
    from part_distillation.modeling.kmeans import pack_rows, size_batches

    sizes = [1834, 19, 20, 400, 30, 21, 450, 1000]
    batches = size_batches(sizes, max_rows=3, max_ratio=1.5)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for b in batches:
        assert len(b) <= 3 and max(sizes[i] for i in b) <= 1.5 * min(sizes[i] for i in b)
    assert [1, 2, 5] in batches  # 19, 20, 21 share a batch; 1834 is alone
    x, valid = pack_rows([torch.ones(2, 3), torch.ones(5, 3)])
    assert x.shape == (2, 5, 3) and valid.sum(1).tolist() == [2, 5] and x[0, 2:].abs().sum() == 0
    # into a reused buffer holding stale values: same rows, padding zeroed, a view of the buffer
    buf = torch.full((40,), 7.0)
    xb, vb = pack_rows([torch.ones(2, 3, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)], out=buf)
    assert torch.equal(xb, x) and torch.equal(vb, valid) and xb.dtype == torch.float32
    assert xb.data_ptr() == buf.data_ptr() and buf[30:].eq(7).all()
    with pytest.raises(RuntimeError):
        pack_rows([torch.ones(5, 3), torch.ones(5, 3)], out=torch.empty(20))


def _sse_and_best_move(x, labels, k):
    """Float64 sum of squared errors of the partition ``labels`` of ``x`` (N, D) and the largest
    decrease one Hartigan single-point move could still give (<= 0: no move improves)."""
    x = x.double()
    n = torch.bincount(labels, minlength=k).double()
    c = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x) / n.clamp_min(1)[:, None]
    d = torch.cdist(x, c) ** 2
    own = d.gather(1, labels[:, None])[:, 0]
    n_own = n[labels]
    remove = torch.where(n_own > 1, n_own / (n_own - 1).clamp_min(1) * own, torch.tensor(-float("inf"), dtype=torch.float64))
    add = (n / (n + 1))[None] * d
    add.scatter_(1, labels[:, None], float("inf"))
    return float(own.sum()), float((remove - add.min(1).values).max())


def test_hartigan_refinement_only_lowers_inertia_and_ends_stable():
    g = torch.Generator().manual_seed(7)
    objs = [torch.rand(n, 5, generator=g) for n in (40, 90, 150, 60)]  # no cluster structure
    x, valid = _pad(objs)
    lloyd = batched_kmeans(x, valid, 6, seeds=[1, 2, 3, 4], restarts=1)
    refined = batched_kmeans(x, valid, 6, seeds=[1, 2, 3, 4], restarts=1, hartigan=True)
    assert (lloyd.moves == 0).all() and int(refined.moves.sum()) > 0
    assert (refined.inertia <= lloyd.inertia * (1 + 1e-6)).all()
    assert (refined.inertia < lloyd.inertia * (1 - 1e-3)).any()
    for i, o in enumerate(objs):
        labels = refined.labels[i, : len(o)]
        assert (refined.labels[i, len(o):] == -1).all()
        sse, best_gain = _sse_and_best_move(o, labels, 6)
        assert abs(sse - float(refined.inertia[i])) <= 1e-4 * sse
        assert best_gain <= 1e-5 * float((o.double() ** 2).sum(1).mean())  # no improving move left
        means = torch.stack([o[labels == j].mean(0) for j in range(6)])
        torch.testing.assert_close(refined.centers[i], means, rtol=0, atol=1e-5)
    alone = batched_kmeans(*_pad([objs[2]]), 6, seeds=[3], restarts=1, hartigan=True)
    assert torch.equal(alone.labels[0], refined.labels[2, :150])  # independent of the batch
