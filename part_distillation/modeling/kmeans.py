"""Batched k-means in torch: many objects clustered in one call, on GPU when the tensors are.

Used by pixel grouping (PartDistillation Sec. 3.1: k-means on backbone features inside each
object mask). Each object is one row of a padded batch ``X (B, N, D)`` with a validity mask
``valid (B, N)``. Initialisation is greedy k-means++ (each new centre is the best of
``2 + floor(ln K)`` D²-sampled candidates, the scheme scikit-learn uses), followed by Lloyd
iterations (a row that has converged leaves the batch); an empty cluster keeps its previous centre.
Restarts are extra rows of the same batch (one Lloyd loop for all), and each object keeps its
lowest-inertia restart. The random numbers of each row come from its own seed, so a row's result
does not depend on which other rows share its batch (sharding and batch size never change the
output).
"""
import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class KMeansResult:
    """``centers`` (B, K, D) float32; ``labels`` (B, N) int64 in [0, K), -1 on padding;
    ``inertia`` (B,) float32: sum of squared distances of valid points to their centre;
    ``iterations`` (B,) int64: Lloyd iterations run by the kept restart."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: torch.Tensor
    iterations: torch.Tensor


def _sq_dist(x: torch.Tensor, c: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, K, D), ``xx`` = ||x||^2 (B, N, 1) -> (B, N, K) squared distances (>= 0)."""
    return (xx - 2 * x @ c.transpose(1, 2) + (c * c).sum(-1)[:, None, :]).clamp_min_(0)


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (B, N): argmin of ||c||^2 - 2 x.c (||x||^2 does not matter)."""
    return ((c * c).sum(-1)[:, None, :] - 2 * x @ c.transpose(1, 2)).argmin(-1)


def _sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. ``weights`` (B, N) >= 0 (rows with zero mass are never passed),
    ``u`` (B, T) uniform in [0, 1) -> indices (B, T)."""
    cdf = weights.cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=weights.shape[1] - 1)


def _kmeans_pp(x, xx, valid_f, k, u):
    """Greedy k-means++ seeding. ``u`` (B, K, T) uniforms -> centres (B, K, D)."""
    b, n, d = x.shape
    bidx = torch.arange(b, device=x.device)
    first = _sample(valid_f, u[:, 0, :1])[:, 0]
    centers = [x[bidx, first]]
    closest = _sq_dist(x, centers[0][:, None], xx)[..., 0] * valid_f
    for j in range(1, k):
        mass = closest.sum(-1, keepdim=True)
        probs = torch.where(mass > 0, closest, valid_f)  # all points identical: uniform
        cand = _sample(probs, u[:, j])  # (B, T)
        cand_pts = x[bidx[:, None], cand]  # (B, T, D)
        d_cand = _sq_dist(x, cand_pts, xx).transpose(1, 2)  # (B, T, N)
        new_closest = torch.minimum(closest[:, None, :], d_cand) * valid_f[:, None, :]
        best = new_closest.sum(-1).argmin(-1)  # (B,)
        centers.append(cand_pts[bidx, best])
        closest = new_closest[bidx, best]
    return torch.stack(centers, 1)


def batched_kmeans(
    x: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    seeds: Sequence[int],
    iters: int = 50,
    tol: float = 1e-4,
    restarts: int = 1,
) -> KMeansResult:
    """Cluster each row of ``x`` into ``k`` clusters.

    Args:
        x: (B, N, D) float features; padded rows are ignored via ``valid``.
        valid: (B, N) bool; each row needs at least ``k`` valid points.
        k: number of clusters.
        seeds: B ints, one random seed per row (results are reproducible per row).
        iters: maximum Lloyd iterations.
        tol: stop when the squared centre shift is <= ``tol`` x the mean per-dimension variance
            of the row (scikit-learn's relative tolerance).
        restarts: independent seedings per row; the lowest-inertia run is kept.

    Raises:
        ValueError: a row has fewer than ``k`` valid points, or ``len(seeds) != B``.
    """
    b, n, d = x.shape
    if len(seeds) != b:
        raise ValueError(f"need one seed per row: {len(seeds)} seeds for {b} rows")
    counts = valid.sum(-1)
    if b and int(counts.min()) < k:
        raise ValueError(f"every row needs >= {k} valid points; smallest has {int(counts.min())}")
    x = x.float()
    xx = (x * x).sum(-1, keepdim=True)
    valid_f = valid.float()
    mean = (x * valid_f[..., None]).sum(1) / counts[:, None].clamp_min(1)
    var = (((x - mean[:, None]) ** 2) * valid_f[..., None]).sum(1) / counts[:, None].clamp_min(1)
    thresh = tol * var.mean(-1)  # (B,)
    trials = 2 + int(math.log(k))
    if b == 0:
        empty = x.new_zeros(0, n, dtype=torch.long)
        return KMeansResult(x.new_zeros(0, k, d), empty, x.new_zeros(0), empty[:, 0])
    # the restarts run side by side as extra rows (row i * restarts + r), in one Lloyd loop
    rr = restarts
    u = torch.stack([
        torch.rand(k, trials, generator=torch.Generator().manual_seed(int(s) * 1009 + r))
        for s in seeds for r in range(rr)
    ]).to(x.device)
    x, xx, valid_f, thresh = (t.repeat_interleave(rr, 0) for t in (x, xx, valid_f, thresh))
    centers = _kmeans_pp(x, xx, valid_f, k, u)
    n_iter = torch.zeros(b * rr, dtype=torch.long, device=x.device)
    # Lloyd iterations on the rows still moving: a converged row leaves the batch, so one slow
    # row no longer makes every other row iterate with it
    active = torch.arange(b * rr, device=x.device)
    xa, va, ca, ta = x, valid_f, centers, thresh
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(_nearest(xa, ca), k).float() * va[..., None]
        size = onehot.sum(1)  # (rows, K)
        sums = onehot.transpose(1, 2) @ xa
        new = torch.where(size[..., None] > 0, sums / size[..., None].clamp_min(1), ca)
        moving = ((new - ca) ** 2).sum((-1, -2)) > ta
        centers[active] = new
        n_iter[active] += 1
        if not bool(moving.any()):
            break
        if not bool(moving.all()):
            active, xa, va, ta = active[moving], xa[moving], va[moving], ta[moving]
            new = new[moving]
        ca = new
    min_d, labels = _sq_dist(x, centers, xx).min(-1)
    inertia = (min_d * valid_f).sum(-1).view(b, rr)
    keep = inertia.argmin(1) + torch.arange(b, device=x.device) * rr  # first restart wins ties
    labels = torch.where(valid, labels[keep], torch.full_like(labels[keep], -1))
    return KMeansResult(centers[keep], labels, inertia.view(-1)[keep], n_iter[keep])
