"""Batched k-means in torch: many objects clustered in one call, on GPU when the tensors are.

Used by pixel grouping (PartDistillation Sec. 3.1: k-means on backbone features inside each
object mask). Each object is one row of a padded batch ``X (B, N, D)`` with a validity mask
``valid (B, N)``. Initialisation is greedy k-means++ (each new centre is the best of
``2 + floor(ln K)`` D²-sampled candidates, the scheme scikit-learn uses), followed by Lloyd
iterations (an object that has converged leaves the batch); an empty cluster keeps its previous
centre. The random numbers of each row
come from its own seed, so a row's result does not depend on which other rows share its batch
(sharding and batch size never change the output).

Seedings (``restarts``) run side by side: all R seedings of an object share one copy of its
points (centres stacked ``(B, R*K, D)``) for k-means++ and the first ``SELECT_AFTER_STEPS`` Lloyd
steps; then only the object's lowest-inertia seeding goes on (the others are dropped early instead
of being run to convergence).

Optional final refinement (``hartigan=True``): Hartigan's single-point moves on the converged
Lloyd partition (Hartigan & Wong 1979, "Algorithm AS 136: A K-Means Clustering Algorithm",
Applied Statistics 28(1); Telgarsky & Vattani 2010, "Hartigan's Method: k-means Clustering
without Voronoi", AISTATS). Moving point x from cluster a (n_a points, mean c_a) to cluster b
changes the sum of squared errors by exactly ``n_b/(n_b+1) |x-c_b|^2 - n_a/(n_a-1) |x-c_a|^2``;
each step applies, per row, the move that lowers it most and updates the two means exactly,
until no move lowers it by more than a relative epsilon. Every move lowers the k-means objective,
and a partition no move improves is also a Lloyd fixed point (the converse does not hold), so the
refinement can only end at equal or lower inertia than the Lloyd result it starts from. It is a
best-improvement variant (one move per row and step, all rows of a batch side by side), not AS
136's optimal-transfer / quick-transfer stages.

Where the time went on CPU (profiled on the shared ADE20K / Pascal-Part features, D = 152, K = 4,
objects of 5 to 2,044 points): the two passes over ``X`` per Lloyd step, repeated for each seeding
(``X`` was copied R times), and padding every object of a batch to its largest one. Now: the
seedings share ``X`` and are cut to one after 2 steps; the M-step is a scatter-add
(``index_add_``, not a one-hot matrix product); converged objects are dropped from the batch in a
few compactions, not every step; :func:`size_batches` groups objects of similar size so padding
stays bounded.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

# Lloyd steps every seeding of an object runs before only its lowest-inertia seeding goes on.
# 0 (pick by seeding inertia), 1, 2 and full restarts were compared on the shared datasets'
# features: 2 keeps the mean inertia below scikit-learn's on both (docs/BENCHMARKS.md) at ~R=1 cost.
SELECT_AFTER_STEPS = 2


@dataclass
class KMeansResult:
    """``centers`` (B, K, D) float32; ``labels`` (B, N) int64 in [0, K), -1 on padding;
    ``inertia`` (B,) float32: sum of squared distances of valid points to their centre;
    ``iterations`` (B,) int64: Lloyd iterations run by the kept restart; ``moves`` (B,) int64:
    Hartigan single-point moves applied (0 without the refinement)."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: torch.Tensor
    iterations: torch.Tensor
    moves: torch.Tensor


def size_batches(sizes: Sequence[int], max_rows: int, max_ratio: float = 1.5) -> List[List[int]]:
    """Split row indices into batches for :func:`batched_kmeans`: sorted by size, at most
    ``max_rows`` per batch, and a new batch starts when a row is more than ``max_ratio`` times the
    smallest row of the current one, so padding stays below ``1 - 1/max_ratio`` of each batch."""
    batches: List[List[int]] = []
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i]):
        if not batches or len(batches[-1]) >= max_rows or sizes[i] > max_ratio * sizes[batches[-1][0]]:
            batches.append([])
        batches[-1].append(i)
    return batches


def pack_rows(rows: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Point sets (n_i, D) -> zero-padded ``x`` (B, max n_i, D) and ``valid`` (B, max n_i) bool."""
    n = max(len(r) for r in rows)
    x = rows[0].new_zeros(len(rows), n, rows[0].shape[1])
    valid = torch.zeros(len(rows), n, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        valid[i, : len(r)] = True
    return x, valid


def _sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. ``weights`` (M, N) >= 0 (rows with zero mass are never passed),
    ``u`` (M, T) uniform in [0, 1) -> indices (M, T)."""
    cdf = weights.cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=weights.shape[1] - 1)


def _sq_dist(x, xx, pts):
    """(B, N, D), ||x||^2 (B, N), (B, M, D) -> (B, M, N) squared distances (>= 0)."""
    return (xx[:, None, :] - 2 * torch.bmm(pts, x.transpose(1, 2)) + (pts * pts).sum(-1)[..., None]).clamp_min_(0)


def _kmeans_pp(x, xx, valid_f, k, u):
    """Greedy k-means++ seeding of R seedings per row, all from one copy of ``x``.
    ``x`` (B, N, D), ``xx`` (B, N), ``valid_f`` (B, N) float, ``u`` (B, R, K, T) uniforms
    -> centres (B, R, K, D)."""
    b, n, d = x.shape
    r, t = u.shape[1], u.shape[3]
    rows = torch.arange(b, device=x.device)[:, None, None]
    vr = valid_f[:, None, :].expand(b, r, n)
    first = _sample(vr.reshape(b * r, n), u[:, :, 0, :1].reshape(b * r, 1)).view(b, r, 1)
    first_pts = x[rows, first][:, :, 0]  # (B, R, D)
    closest = _sq_dist(x, xx, first_pts) * valid_f[:, None, :]  # (B, R, N)
    centers = [first_pts]
    for j in range(1, k):
        mass = closest.sum(-1, keepdim=True)
        probs = torch.where(mass > 0, closest, vr)  # all points identical: uniform
        cand = _sample(probs.reshape(b * r, n), u[:, :, j].reshape(b * r, t)).view(b, r * t)
        cand_pts = x[rows[:, :, 0], cand]  # (B, R*T, D)
        d_cand = _sq_dist(x, xx, cand_pts).view(b, r, t, n)
        new_closest = torch.minimum(closest[:, :, None], d_cand) * valid_f[:, None, None, :]
        best = new_closest.sum(-1).argmin(-1)  # (B, R)
        pick = best[..., None, None].expand(b, r, 1, n)
        closest = new_closest.gather(2, pick)[:, :, 0]
        centers.append(cand_pts.view(b, r, t, d).gather(2, best[..., None, None].expand(b, r, 1, d))[:, :, 0])
    return torch.stack(centers, 2)


def _assign(x, centers):
    """Nearest centre per point and seeding. ``x`` (B, N, D), ``centers`` (B, R, K, D) ->
    (B, N, R) indices in [0, K) (argmin of ||c||^2 - 2 x.c; ||x||^2 does not change it) and the
    (B, N, R, K) values minimised."""
    b, r, k, d = centers.shape
    flat = centers.reshape(b, r * k, d)
    part = ((flat * flat).sum(-1)[:, None, :] - 2 * torch.bmm(x, flat.transpose(1, 2))).view(b, -1, r, k)
    return part.argmin(-1), part


def _update(x, valid, labels, centers):
    """Lloyd M-step: ``x`` (A, N, D), ``valid`` (A, N) bool, ``labels`` (A, N, R) from
    :func:`_assign`, ``centers`` (A, R, K, D) -> new centres (A, R, K, D), the means of the
    clusters (an empty cluster keeps its centre), and the cluster sizes (A, R, K) float. The centre sums are a scatter-add of the points (``index_add_``), ~2K times fewer
    operations than a one-hot matrix product."""
    a, r, k, d = centers.shape
    # bin of each (point, seeding): (row * R + seeding) * K + label; padding goes to a spare bin
    base = (torch.arange(a, device=x.device)[:, None] * r + torch.arange(r, device=x.device)) * k
    bins = torch.where(valid[..., None], labels + base[:, None, :], a * r * k)
    sums = x.new_zeros(a * r * k + 1, d)
    flat = x.reshape(-1, d)
    for j in range(r):
        sums.index_add_(0, bins[..., j].reshape(-1), flat)
    size = torch.bincount(bins.reshape(-1), minlength=a * r * k + 1)[:-1].view(a, r, k, 1)
    sums = sums[:-1].view(a, r, k, d)
    return torch.where(size > 0, sums / size.clamp_min(1), centers), size[..., 0].to(x.dtype)


def _inertia(xx, valid_f, labels, part):
    """(B, R) inertia from :func:`_assign`'s outputs; ``xx`` = ||x||^2 (B, N), ``valid_f`` (B, N)."""
    min_d = (part.gather(-1, labels[..., None])[..., 0] + xx[..., None]).clamp_min(0)
    return (min_d * valid_f[..., None]).sum(1)


def _step(x, valid, centers, moving, thresh):
    """Lloyd step of the seedings still ``moving`` (A, R) bool; a seeding stops when its squared
    centre shift is <= ``thresh`` (A,). Returns new centres and the new ``moving``."""
    new = _update(x, valid, _assign(x, centers)[0], centers)[0]
    new = torch.where(moving[..., None, None], new, centers)
    return new, moving & (((new - centers) ** 2).sum((-1, -2)) > thresh[:, None])


def batched_kmeans(
    x: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    seeds: Sequence[int],
    iters: int = 50,
    tol: float = 1e-4,
    restarts: int = 1,
    sample_points: int = 0,
    hartigan: bool = False,
    max_moves: int = 10000,
) -> KMeansResult:
    """Cluster each row of ``x`` into ``k`` clusters.

    Args:
        x: (B, N, D) float features; padded rows are ignored via ``valid``.
        valid: (B, N) bool; each row needs at least ``k`` valid points.
        k: number of clusters.
        seeds: B ints, one random seed per row (results are reproducible per row).
        iters: maximum Lloyd iterations.
        tol: a seeding stops when its squared centre shift is <= ``tol`` x the mean per-dimension
            variance of the row (scikit-learn's relative tolerance).
        restarts: independent k-means++ seedings per row; after ``SELECT_AFTER_STEPS`` Lloyd
            steps only the lowest-inertia one is run on (ties: the first).
        sample_points: when > 0, rows with more valid points are first clustered (seedings,
            selection, Lloyd to convergence) on ``sample_points`` of their points drawn uniformly
            from the row's seed, and those centres start the Lloyd steps on all points (which
            then converge in a few steps). 0: every step on all points.
        hartigan: after Lloyd, refine each row with Hartigan single-point moves (module
            docstring): the inertia can only go down, the centres stay the means of their
            clusters; the result then differs from plain Lloyd k-means wherever a move applies.
        max_moves: bound on the Hartigan moves per row (each move lowers the objective, so the
            refinement also ends without it; the bound caps the time).

    Returns:
        :class:`KMeansResult`; ``iterations`` counts the Lloyd steps on all points, ``moves`` the
        Hartigan moves.

    Raises:
        ValueError: a row has fewer than ``k`` valid points, or ``len(seeds) != B``.
    """
    b, n, d = x.shape
    if len(seeds) != b:
        raise ValueError(f"need one seed per row: {len(seeds)} seeds for {b} rows")
    counts = valid.sum(-1)
    if b and int(counts.min()) < k:
        raise ValueError(f"every row needs >= {k} valid points; smallest has {int(counts.min())}")
    if b == 0:
        empty = x.new_zeros(0, n, dtype=torch.long)
        return KMeansResult(x.new_zeros(0, k, d), empty, x.new_zeros(0), empty[:, 0], empty[:, 0])
    x = x.float().contiguous()
    if sample_points > 0 and int(counts.max()) > sample_points:
        idx = _subsample(valid, sample_points, seeds)
        rows = torch.arange(b, device=x.device)[:, None]
        sub = batched_kmeans(x[rows, idx.clamp_min(0)], idx >= 0, k, seeds, iters, tol, restarts)  # Lloyd only
        centers = sub.centers[:, None].clone()
        # a row whose sample is all its points is done: same points, same order, same result
        moving = (counts > sample_points)[:, None]
        n_iter = torch.where(moving, 0, sub.iterations[:, None])
    else:
        centers = None
    xx = (x * x).sum(-1)
    valid_f = valid.float()
    # mean per-dimension variance of the valid points, (E||x||^2 - ||E x||^2) / D, without a
    # (B, N, D) temporary
    cnt = counts.clamp_min(1).to(x.dtype)
    mean = torch.bmm(valid_f[:, None, :], x)[:, 0] / cnt[:, None]
    var = ((xx * valid_f).sum(1) / cnt - (mean * mean).sum(1)).clamp_min(0) / d
    thresh = tol * var  # (B,)
    if centers is not None:  # seeded by the subsample's centres
        centers, n_iter = _lloyd(x, valid, thresh, centers, moving, n_iter, iters)
        return _result(x, xx, valid, valid_f, centers, n_iter, hartigan, max_moves)
    rr, trials = restarts, 2 + int(math.log(k))
    u = torch.stack([
        torch.rand(k, trials, generator=torch.Generator().manual_seed(int(s) * 1009 + r))
        for s in seeds for r in range(rr)
    ]).view(b, rr, k, trials).to(x.device)
    centers = _kmeans_pp(x, xx, valid_f, k, u)  # (B, R, K, D)
    rows = torch.arange(b, device=x.device)
    moving = torch.ones(b, rr, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(b, rr, dtype=torch.long, device=x.device)
    # phase 1: every seeding runs its first SELECT_AFTER_STEPS Lloyd steps, sharing one pass over x
    phase1 = min(SELECT_AFTER_STEPS, iters) if rr > 1 else 0
    for _ in range(phase1):
        n_iter += moving.long()
        centers, moving = _step(x, valid, centers, moving, thresh)
    if rr > 1:  # only each object's lowest-inertia seeding goes on (first wins ties)
        best = _inertia(xx, valid_f, *_assign(x, centers)).argmin(1)
        centers, moving, n_iter = (t[rows, best][:, None] for t in (centers, moving, n_iter))
    centers, n_iter = _lloyd(x, valid, thresh, centers, moving, n_iter, iters - phase1)
    return _result(x, xx, valid, valid_f, centers, n_iter, hartigan, max_moves)


def _lloyd(x, valid, thresh, centers, moving, n_iter, steps):
    """Up to ``steps`` Lloyd steps of one seeding per row (``centers`` (B, 1, K, D), ``moving``
    and ``n_iter`` (B, 1)) -> final centres and iteration counts. Converged rows are dropped from
    the batch (one copy of their rows) once they are a quarter of it; until then they are masked."""
    active = moving[:, 0].nonzero()[:, 0]
    xa, va, ta, ca, mv, ia = (t[active] for t in (x, valid, thresh, centers, moving, n_iter))
    for _ in range(steps):
        if not len(active):
            break
        ia += mv.long()
        ca, mv = _step(xa, va, ca, mv, ta)
        going = mv[:, 0]
        if int(going.sum()) * 4 <= 3 * len(active):
            centers[active], n_iter[active] = ca, ia
            active, xa, va, ta, ca, mv, ia = (t[going] for t in (active, xa, va, ta, ca, mv, ia))
    centers[active], n_iter[active] = ca, ia
    return centers, n_iter


def _result(x, xx, valid, valid_f, centers, n_iter, hartigan=False, max_moves=0) -> KMeansResult:
    moves = torch.zeros_like(n_iter[:, 0])
    if hartigan:
        refined, moves = _hartigan(x, xx, valid, _assign(x, centers)[0][..., 0], centers[:, 0], max_moves)
        centers = refined[:, None]
    labels, part = _assign(x, centers)
    inertia = _inertia(xx, valid_f, labels, part)[:, 0]
    labels = torch.where(valid, labels[..., 0], torch.full_like(labels[..., 0], -1))
    return KMeansResult(centers[:, 0], labels, inertia, n_iter[:, 0], moves)


def _hartigan(x, xx, valid, labels, centers, max_moves, rel_eps=1e-6):
    """Hartigan single-point-move refinement (module docstring) of the partitions ``labels``
    (B, N) of the rows of ``x`` (B, N, D) (``xx`` = ||x||^2 (B, N), ``valid`` (B, N) bool), whose
    centres ``centers`` (B, K, D) only fill empty clusters. Per step and row the best move is
    applied if it lowers the sum of squared errors by more than ``rel_eps`` x the row's mean
    ||x||^2. Returns the means of the final partitions (B, K, D) and the moves per row (B,)."""
    b, n, d = x.shape
    k = centers.shape[1]
    centers, size = (t[:, 0] for t in _update(x, valid, labels[..., None], centers[:, None]))
    moves = torch.zeros(b, dtype=torch.long, device=x.device)
    eps = rel_eps * (xx * valid).sum(1) / valid.sum(1).clamp_min(1)  # (B,)
    rows = torch.arange(b, device=x.device)
    # state of the rows still moving (compacted when a quarter of them has stopped)
    act, xa, xxa, va, la, ca, na, ea = rows, x, xx, valid, labels.clone(), centers.clone(), size.clone(), eps
    dist = (xxa[..., None] - 2 * torch.bmm(xa, ca.transpose(1, 2)) + (ca * ca).sum(-1)[:, None]).clamp_min_(0)
    going = torch.ones(b, dtype=torch.bool, device=x.device)
    for _ in range(max_moves):
        n_own = na.gather(1, la)  # (A, N)
        d_own = dist.gather(2, la[..., None])[..., 0]
        # cost of taking the point out of its cluster (impossible from a singleton) ...
        remove = torch.where((n_own > 1) & va, n_own / (n_own - 1).clamp_min(1) * d_own, -math.inf)
        # ... and of adding it to another one (its own excluded)
        add = (na / (na + 1))[:, None, :] * dist
        add.scatter_(2, la[..., None], math.inf)
        best_add, dest = add.min(-1)
        gain, i = (remove - best_add).max(1)  # (A,)
        going = going & (gain > ea)
        if not bool(going.any()):
            break
        g = going.nonzero()[:, 0]
        gi = i[g]
        src, dst = la[g, gi], dest[g, gi]
        pt = xa[g, gi]  # (G, D)
        ns, nd = na[g, src], na[g, dst]
        ca[g, src] = (ca[g, src] * ns[:, None] - pt) / (ns - 1)[:, None]
        ca[g, dst] = (ca[g, dst] * nd[:, None] + pt) / (nd + 1)[:, None]
        na[g, src] -= 1
        na[g, dst] += 1
        la[g, gi] = dst
        moves[act[g]] += 1
        two = torch.stack([src, dst], 1)  # (G, 2): the two changed clusters' distances
        c2 = ca[g[:, None], two]  # (G, 2, D)
        d2 = (xxa[g][..., None] - 2 * torch.bmm(xa[g], c2.transpose(1, 2))
              + (c2 * c2).sum(-1)[:, None]).clamp_min_(0)  # (G, N, 2)
        dist[g[:, None], :, two] = d2.transpose(1, 2)
        if int(going.sum()) * 4 <= 3 * len(act):  # compact: write the stopped rows back
            labels[act], centers[act], size[act] = la, ca, na
            keep = going.nonzero()[:, 0]
            act, xa, xxa, va, la, ca, na, ea, dist, going = (
                t[keep] for t in (act, xa, xxa, va, la, ca, na, ea, dist, going))
    labels[act], centers[act] = la, ca
    # exact means of the final partitions (the incremental updates accumulate rounding)
    return _update(x, valid, labels[..., None], centers[:, None])[0][:, 0], moves


def _subsample(valid: torch.Tensor, size: int, seeds: Sequence[int]) -> torch.Tensor:
    """(B, size) indices of ``min(n_i, size)`` distinct valid points per row, drawn uniformly from
    the row's own seed (-1 pads rows with fewer valid points)."""
    out = torch.full((valid.shape[0], size), -1, dtype=torch.long)
    for i, s in enumerate(seeds):
        idx = valid[i].nonzero()[:, 0].cpu()
        if len(idx) > size:
            idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(int(s) * 1009 + 7))[:size]]
        out[i, : len(idx)] = idx.sort().values
    return out.to(valid.device)
