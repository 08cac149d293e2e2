"""Batched k-means in torch: many objects clustered in one call, on GPU when the tensors are.

Used by pixel grouping (PartDistillation Sec. 3.1: k-means on backbone features inside each
object mask). Each object is one row of a padded batch ``X (B, N, D)`` with a validity mask
``valid (B, N)``. Initialisation is greedy k-means++ (each new centre is the best of
``2 + floor(ln K)`` D²-sampled candidates, the scheme scikit-learn uses), followed by Lloyd
iterations (an object that has converged leaves the batch); an empty cluster keeps its previous
centre. The random numbers of each row come from its own seed, so a row's result does not
depend on which other rows share its batch (sharding and batch size never change the output
beyond float rounding).

Seedings (``restarts``) run side by side: all R seedings of an object share one copy of its
points (centres stacked ``(B, R*K, D)``) for k-means++ and the first ``SELECT_AFTER_STEPS`` Lloyd
steps; then only the object's lowest-inertia seeding goes on (the others are dropped early instead
of being run to convergence).

Optional final refinement (``hartigan=True``): Hartigan's single-point moves on the converged
Lloyd partition (Hartigan & Wong 1979, "Algorithm AS 136: A K-Means Clustering Algorithm",
Applied Statistics 28(1); Telgarsky & Vattani 2010, "Hartigan's Method: k-means Clustering
without Voronoi", AISTATS). Moving point x from cluster a (n_a points, mean c_a) to cluster b
changes the sum of squared errors by exactly ``n_b/(n_b+1) |x-c_b|^2 - n_a/(n_a-1) |x-c_a|^2``.
Moves between pairwise disjoint pairs of clusters do not change each other's gains, so each step
applies, per row, up to ``K // 2`` of them at once: the best move of every (source, destination)
pair, taken greedily by gain while their clusters are still unused, each lowering the objective by
more than a relative epsilon; the means of the changed clusters are updated exactly. It stops when
no move improves or at ``max_moves`` moves per row (default 128: on unstructured data Hartigan
finds thousands of moves of tiny gain, on clustered data few). Every move lowers the k-means
objective, so the refinement, stopped anywhere, ends at equal or lower inertia than the Lloyd
result it starts from; a partition no move improves is also a Lloyd fixed point (the converse does
not hold). It is a best-improvement variant, all rows of a batch side by side, not AS 136's
optimal-transfer / quick-transfer stages.

How the work is laid out (on CPU a step is bound by reading ``X``, so the passes over it are
what is counted and shared):

* one matrix product per pass for all seedings: the assignment is ``C @ X^T`` with the centres
  of all R seedings stacked ``(B, R*K, D)`` (``||c||^2 - 2 x.c``; ``||x||^2`` is computed once
  per row), the M-step is a one-hot ``(B, R*K, N)`` matrix times ``X`` (cluster sums and sizes
  of all seedings in one product, padding has a zero column);
* nothing is assigned twice: k-means++ keeps the nearest seed of every point, which is the first
  Lloyd step's assignment; the assignment that picks the best seeding is the chosen seeding's
  next one; the assignment after the last step gives labels and inertia and, when the partition
  did not change, the Hartigan refinement's start; the sum of the points (for the tolerance)
  comes from the first M-step's cluster sums;
* a row stops when its centres move by at most the tolerance or when its assignment is the
  partition its centres are the means of (the next step could not move them); stopped rows are
  dropped from the batch in a few compactions, not every step;
* CPU: the rows of a batch are clustered in groups of at most ``CHUNK_BYTES`` of points (cut
  to the group's own padded length), so that a group's points stay in cache across the passes
  of a step; :func:`size_batches` groups objects of similar size so padding stays bounded.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

# Lloyd steps every seeding of an object runs before only its lowest-inertia seeding goes on.
# 0 (pick by seeding inertia), 1, 2 and full restarts were compared on the shared datasets'
# features: 2 keeps the mean inertia below scikit-learn's on both (docs/BENCHMARKS.md) at ~R=1 cost.
SELECT_AFTER_STEPS = 2

# CPU: the rows of a batch are clustered a group at a time, each group at most this many bytes of
# padded points (at least one row), so that a group's points stay in cache across the GEMMs of a
# step; on GPU the whole batch is one group.
CHUNK_BYTES = 4 << 20


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


def pack_rows(rows: Sequence[torch.Tensor], out: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Point sets (n_i, D) -> zero-padded ``x`` (B, max n_i, D) and ``valid`` (B, max n_i) bool.

    ``out``: optional flat buffer (at least B x max n_i x D elements) reused across calls; ``x``
    is then a view of its leading part, on its device and dtype (the rows are copied into it,
    only the padding is zeroed), and ``valid`` is on the same device. A buffer too small raises
    RuntimeError (the view)."""
    n, d = max(len(r) for r in rows), rows[0].shape[1]
    x = rows[0].new_zeros(len(rows), n, d) if out is None else out[: len(rows) * n * d].view(len(rows), n, d)
    valid = torch.zeros(len(rows), n, dtype=torch.bool, device=x.device)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        if out is not None:
            x[i, len(r):] = 0
        valid[i, : len(r)] = True
    return x, valid


def _sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. ``weights`` (M, N) >= 0 (rows with zero mass are never passed),
    ``u`` (M, T) uniform in [0, 1) -> indices (M, T)."""
    cdf = weights.cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=weights.shape[1] - 1)


def _sq_dist(x, xx, pts):
    """``x`` (B, N, D), ``xx`` = ||x||^2 (B, N), ``pts`` (B, M, D) -> (B, M, N) squared distances
    (>= 0), one ``baddbmm`` (``pts @ x^T``: the layout MKL runs fastest for a few rows)."""
    d = torch.baddbmm(xx[:, None, :], pts, x.transpose(1, 2), alpha=-2)
    return d.add_((pts * pts).sum(-1)[..., None]).clamp_min_(0)


def _kmeans_pp(x, xx, valid_f, k, u):
    """Greedy k-means++ seeding of R seedings per row, all from one copy of the points.
    ``x`` (B, N, D), ``xx`` (B, N), ``valid_f`` (B, N) float, ``u`` (B, R, K, T) uniforms ->
    centres (B, R, K, D) and the nearest centre of every point (B, R, N) int64 (the assignment
    the first Lloyd step starts from)."""
    b, n, d = x.shape
    r, t = u.shape[1], u.shape[3]
    rows = torch.arange(b, device=x.device)[:, None, None]
    vr = valid_f[:, None, :].expand(b, r, n)
    first = _sample(vr.reshape(b * r, n), u[:, :, 0, :1].reshape(b * r, 1)).view(b, r, 1)
    first_pts = x[rows, first][:, :, 0]  # (B, R, D)
    closest = _sq_dist(x, xx, first_pts).mul_(valid_f[:, None, :])  # (B, R, N)
    labels = torch.zeros(b, r, n, dtype=torch.long, device=x.device)
    centers = [first_pts]
    for j in range(1, k):
        mass = closest.sum(-1, keepdim=True)
        probs = torch.where(mass > 0, closest, vr)  # all points identical: uniform
        cand = _sample(probs.reshape(b * r, n), u[:, :, j].reshape(b * r, t)).view(b, r * t)
        cand_pts = x[rows[:, :, 0], cand]  # (B, R*T, D)
        d_cand = _sq_dist(x, xx, cand_pts).view(b, r, t, n)
        new_closest = torch.minimum(closest[:, :, None], d_cand).mul_(valid_f[:, None, None, :])
        best = new_closest.sum(-1).argmin(-1)  # (B, R)
        d_best = d_cand.gather(2, best[..., None, None].expand(b, r, 1, n))[:, :, 0]
        labels.masked_fill_(d_best < closest, j)
        closest = new_closest.gather(2, best[..., None, None].expand(b, r, 1, n))[:, :, 0]
        centers.append(cand_pts.view(b, r, t, d).gather(2, best[..., None, None].expand(b, r, 1, d))[:, :, 0])
    return torch.stack(centers, 2), labels


def _assign(x, centers):
    """Distances up to ||x||^2 of every point to every centre of every seeding, one GEMM for all
    seedings: ``x`` (B, N, D), ``centers`` (B, R, K, D) -> (B, R, K, N) ``||c||^2 - 2 x.c``
    (its argmin over K is the nearest centre; adding ||x||^2 gives the squared distance)."""
    b, r, k, d = centers.shape
    flat = centers.reshape(b, r * k, d)
    return torch.baddbmm((flat * flat).sum(-1)[..., None], flat, x.transpose(1, 2), alpha=-2).view(b, r, k, -1)


def _update(x, valid_f, labels, centers):
    """Lloyd M-step: ``x`` (A, N, D) (finite on padding), ``valid_f`` (A, N) float, ``labels``
    (A, R, N) in [0, K), ``centers`` (A, R, K, D) -> new centres (A, R, K, D), the means of the
    clusters (an empty cluster keeps its centre), and the cluster sizes (A, R, K) float. The
    centre sums of all seedings are one matrix product of a (A, R*K, N) one-hot matrix (zero on
    padding) with ``x``."""
    a, r, k, d = centers.shape
    n = labels.shape[-1]
    idx = labels + (torch.arange(r, device=x.device) * k)[None, :, None]
    onehot = x.new_zeros(a, r * k, n).scatter_(1, idx, valid_f[:, None, :].expand(a, r, n))
    size = onehot.sum(-1).view(a, r, k, 1)
    sums = torch.bmm(onehot, x).view(a, r, k, d)
    return torch.where(size > 0, sums / size.clamp_min(1), centers), size[..., 0]


def _nearest(part):
    """``part`` (B, R, K, N) -> its minimum over K (B, R, N) and the first index reaching it
    (B, R, N) int64, as ``part.min(2)`` (the first index is the number of leading entries above
    the minimum; amin plus this count is faster on CPU than an indexed min over a strided dim)."""
    mins = part.amin(2)
    return mins, (part > mins[:, :, None]).cumprod(2).sum(2)


def _inertia(xx, valid_f, part):
    """(B, R) inertia and (B, R, N) labels from :func:`_assign`'s ``part`` (B, R, K, N);
    ``xx`` = ||x||^2 (B, N), ``valid_f`` (B, N)."""
    mins, labels = _nearest(part)
    return ((mins + xx[:, None]).clamp_min_(0) * valid_f[:, None]).sum(-1), labels


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
    max_moves: int = 128,
) -> KMeansResult:
    """Cluster each row of ``x`` into ``k`` clusters.

    Args:
        x: (B, N, D) float features; padded rows are ignored via ``valid`` (their values must
            be finite: they meet zero weights in the matrix products).
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
        max_moves: bound on the Hartigan moves per row (module docstring; each move lowers the
            objective, so the refinement also ends without it; the bound caps the time on
            unstructured data, where the moves are many and their gains tiny).

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
    x = x.float()
    if sample_points > 0 and int(counts.max()) > sample_points:
        idx = _subsample(valid, sample_points, seeds)
        rows = torch.arange(b, device=x.device)[:, None]
        sub = batched_kmeans(x[rows, idx.clamp_min(0)], idx >= 0, k, seeds, iters, tol, restarts)  # Lloyd only
        init = sub.centers[:, None].clone()
        # a row whose sample is all its points is done: same points, same order, same result
        moving = (counts > sample_points)[:, None]
        n_iter = torch.where(moving, 0, sub.iterations[:, None])
        u = None
    else:
        init = moving = n_iter = None
        trials = 2 + int(math.log(k))
        u = torch.stack([
            torch.rand(k, trials, generator=torch.Generator().manual_seed(int(s) * 1009 + r))
            for s in seeds for r in range(restarts)
        ]).view(b, restarts, k, trials).to(x.device)
    # last valid index + 1 per row: each group is cut to its own padded length
    ends = (torch.arange(1, n + 1, device=x.device) * valid).amax(1).tolist()
    if x.device.type == "cpu":  # sorted by length so that a group's rows need similar padding
        order = sorted(range(b), key=lambda i: ends[i])
    else:
        order = list(range(b))
    out = KMeansResult(x.new_zeros(b, k, d), torch.full((b, n), -1, dtype=torch.long, device=x.device),
                       x.new_zeros(b), torch.zeros(b, dtype=torch.long, device=x.device),
                       torch.zeros(b, dtype=torch.long, device=x.device))
    start = 0
    while start < b:
        stop = start + 1
        if x.device.type != "cpu":
            stop = b
        else:  # grow the group while its padded points fit CHUNK_BYTES
            while stop < b and (stop + 1 - start) * ends[order[stop]] * d * 4 <= CHUNK_BYTES:
                stop += 1
        group = order[start:stop]
        if group == list(range(group[0], group[0] + len(group))):  # consecutive rows: a view
            g = slice(group[0], group[0] + len(group))
        else:
            g = torch.tensor(group, device=x.device)
        m = ends[order[stop - 1]]

        def pick(t):
            return None if t is None else t[g]

        res = _cluster(x[g][:, :m], valid[g][:, :m], k, pick(u), pick(init), pick(moving),
                       pick(n_iter), iters, tol, hartigan, max_moves)
        out.centers[g] = res[0]
        out.labels[g, :m] = res[1]
        out.inertia[g], out.iterations[g], out.moves[g] = res[2], res[3], res[4]
        start = stop
    return out


def _seed(x, xx, valid_f, k, u, threshold, steps):
    """k-means++ seedings from the uniforms ``u`` (B, R, K, T) on the points ``x`` (B, N, D)
    (``xx`` = ||x||^2 (B, N), ``valid_f`` (B, N) float), each followed by ``steps`` Lloyd steps
    (all seedings in one GEMM per step; the first on k-means++'s own assignment), then each row's
    lowest-inertia seeding (first wins ties). ``threshold`` maps the sum of the valid points
    (B, D) to the stopping threshold (B,) of the squared centre shift; the sum is taken from the
    first M-step (the clusters' sums), so it costs no pass over the points.
    Returns its centres (B, 1, K, D), whether it is still moving and its steps (B, 1), the
    :func:`_assign` of its centres to ``x`` (B, 1, K, N), the labels (B, 1, N) whose means its
    centres are (None without a step) and the threshold (B,)."""
    b, rr = u.shape[:2]
    centers, labels = _kmeans_pp(x, xx, valid_f, k, u)  # (B, R, K, D), (B, R, N)
    moving = torch.ones(b, rr, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(b, rr, dtype=torch.long, device=x.device)
    prev = thresh = None
    for step in range(steps):
        n_iter += moving.long()
        if step:
            labels = _nearest(_assign(x, centers))[1]
        new, size = _update(x, valid_f, labels, centers)
        if thresh is None:  # the first seeding's cluster sums add up to all valid points
            thresh = threshold((new[:, 0] * size[:, 0, :, None]).sum(1))
        new = torch.where(moving[..., None, None], new, centers)
        prev = labels if prev is None else torch.where(moving[..., None], labels, prev)
        moving = moving & (((new - centers) ** 2).sum((-1, -2)) > thresh[:, None])
        centers = new
    if thresh is None:
        thresh = threshold(torch.bmm(valid_f[:, None, :], x)[:, 0])
    part = _assign(x, centers)
    if rr == 1:
        return centers, moving, n_iter, part, prev, thresh
    best = _inertia(xx, valid_f, part)[0].argmin(1)
    rows = torch.arange(b, device=x.device)
    prev = None if prev is None else prev[rows, best][:, None]
    return tuple(t[rows, best][:, None] for t in (centers, moving, n_iter, part)) + (prev, thresh)


def _cluster(x, valid, k, u, centers, moving, n_iter, iters, tol, hartigan, max_moves):
    """:func:`batched_kmeans` on one group of rows (``x`` (B, N, D), ``valid`` (B, N)): k-means++
    from the uniforms ``u`` (B, R, K, T), or, when ``centers`` (B, 1, K, D) is given, Lloyd steps
    from them (``moving`` / ``n_iter`` (B, 1)). Returns centres (B, K, D), labels (B, N) (-1 on
    padding), inertia (B,), iterations (B,) and Hartigan moves (B,)."""
    b, n, d = x.shape
    xx = torch.linalg.vector_norm(x, dim=-1).square_()  # one pass, no (B, N, D) temporary
    valid_f = valid.float()
    cnt = valid_f.sum(1).clamp_min(1)
    sq_mean = (xx * valid_f).sum(1) / cnt

    def threshold(total):
        """(B,) stopping threshold from the sum of the valid points (B, D): ``tol`` x their mean
        per-dimension variance, (E||x||^2 - ||E x||^2) / D."""
        mean = total / cnt[:, None]
        return tol * (sq_mean - (mean * mean).sum(1)).clamp_min(0) / d

    phase1 = 0
    if centers is None:
        phase1 = min(SELECT_AFTER_STEPS, iters) if u.shape[1] > 1 else 0
        centers, moving, n_iter, part, prev, thresh = _seed(x, xx, valid_f, k, u, threshold, phase1)
    else:
        thresh = threshold(torch.bmm(valid_f[:, None, :], x)[:, 0])
        part, prev = _assign(x, centers), None
    centers, n_iter, part, prev = _lloyd(x, valid_f, thresh, centers, moving, n_iter, part, prev, iters - phase1)
    centers, n_iter = centers[:, 0], n_iter[:, 0]
    moves = torch.zeros_like(n_iter)
    if hartigan:
        labels = _nearest(part)[1][:, 0]
        # rows whose last assignment kept the partition their centres are the means of
        stable = None if prev is None else ((prev[:, 0] == labels) | ~valid).all(1)
        centers, moves, part = _hartigan(x, xx, valid_f, labels, centers, max_moves, part, stable)
    inertia, labels = _inertia(xx, valid_f, part)
    labels = torch.where(valid, labels[:, 0], -1)
    return centers, labels, inertia[:, 0], n_iter, moves


def _lloyd(x, valid_f, thresh, centers, moving, n_iter, part, prev, steps):
    """Up to ``steps`` Lloyd steps of one seeding per row (``centers`` (B, 1, K, D), ``moving``
    and ``n_iter`` (B, 1), ``part`` (B, 1, K, N) :func:`_assign` of ``centers``, ``prev``
    (B, 1, N) the labels whose means the centres are, or None) -> final centres, iteration
    counts, the :func:`_assign` of the final centres and the labels whose means they are (-1:
    none). A step is the M-step on the last assignment, then the assignment to the new centres;
    a row stops when its squared centre shift is <= ``thresh`` (B,) or when the assignment is the
    partition its centres are the means of (the next step would not move them). Converged rows are dropped from the batch (one copy of their rows) once they are a quarter of
    it; until then they are masked."""
    if prev is None:
        prev = torch.full_like(part[:, :, 0], -1, dtype=torch.long)
    pad = valid_f[:, None] == 0  # (B, 1, N)
    # a row whose assignment is the partition its centres are the means of is converged
    nearest = _nearest(part)[1]
    moving = moving & ~((nearest == prev) | pad).all(-1)
    active = moving[:, 0].nonzero()[:, 0]
    if not len(active):
        return centers, n_iter, part, prev
    xa, va, ta, ca, mv, ia, pa, la, qa, lab = (
        t[active] for t in (x, valid_f, thresh, centers, moving, n_iter, part, prev, pad, nearest))
    for _ in range(steps):
        if not len(active):
            break
        ia += mv.long()
        new = _update(xa, va, lab, ca)[0]
        new = torch.where(mv[..., None, None], new, ca)
        la = torch.where(mv[..., None], lab, la)
        mv = mv & (((new - ca) ** 2).sum((-1, -2)) > ta[:, None])
        ca = new
        pa = _assign(xa, ca)
        lab = _nearest(pa)[1]  # the next step's assignment
        mv = mv & ~((lab == la) | qa).all(-1)
        going = mv[:, 0]
        if int(going.sum()) * 4 <= 3 * len(active):
            centers[active], n_iter[active], part[active], prev[active] = ca, ia, pa, la
            active, xa, va, ta, ca, mv, ia, pa, la, qa, lab = (
                t[going] for t in (active, xa, va, ta, ca, mv, ia, pa, la, qa, lab))
    centers[active], n_iter[active], part[active], prev[active] = ca, ia, pa, la
    return centers, n_iter, part, prev


def _hartigan(x, xx, valid_f, labels, centers, max_moves, part=None, stable=None, rel_eps=1e-6):
    """Hartigan-move refinement (module docstring) of the partitions ``labels`` (B, N) of the
    rows of ``x`` (B, N, D) (finite on padding; ``xx`` = ||x||^2 (B, N), ``valid_f`` (B, N)
    float), whose centres ``centers`` (B, K, D) only fill empty clusters. ``stable`` (B,) bool
    marks rows whose ``centers`` already are the means of ``labels`` (the Lloyd step that made
    them kept the partition) and ``part`` (B, 1, K, N) is their :func:`_assign`; the others get
    the means and their assignment computed. Per step and row, up to ``K // 2`` single-point
    moves whose source and destination clusters are pairwise disjoint are applied together
    (greedily by gain; each lowers the sum of squared errors by more than ``rel_eps`` x the row's
    mean ||x||^2), at most ``max_moves`` per row in all. Returns the means of the final
    partitions (B, K, D), the moves per row (B,) int64 and the :func:`_assign` of the final
    centres (B, 1, K, N)."""
    b, n, d = x.shape
    k = centers.shape[1]
    valid = valid_f > 0
    size = x.new_zeros(b, k).scatter_add_(1, labels, valid_f)
    if stable is None or not bool(stable.any()):
        means = _update(x, valid_f, labels[:, None], centers[:, None])[0][:, 0]
        part = _assign(x, means[:, None])
    else:
        means, part = centers.clone(), part.clone()
        if not bool(stable.all()):
            m = (~stable).nonzero()[:, 0]
            means[m] = _update(x[m], valid_f[m], labels[m][:, None], centers[m][:, None])[0][:, 0]
            part[m] = _assign(x[m], means[m][:, None])
    moves = torch.zeros(b, dtype=torch.long, device=x.device)
    if k < 2 or max_moves <= 0:
        return means, moves, part
    dist = (part[:, 0] + xx[:, None]).clamp_min_(0).transpose(1, 2).contiguous()  # (B, N, K)
    eps = rel_eps * (xx * valid_f).sum(1) / valid_f.sum(1).clamp_min(1)  # (B,)
    labels = labels.clone()
    centers = means.clone()
    kk = torch.arange(k, device=x.device)
    point = torch.arange(n, device=x.device)[None, :, None].expand(1, n, k).reshape(1, n * k)
    # state of the rows still moving (compacted when a quarter of them has stopped)
    act = torch.arange(b, device=x.device)
    xa, xxa, va, la, ca, na, ea, done = x, xx, valid, labels.clone(), centers.clone(), size.clone(), eps, moves.clone()
    while len(act):
        a = len(act)
        n_own = na.gather(1, la)  # (A, N)
        d_own = dist.gather(2, la[..., None])[..., 0]
        # cost of taking the point out of its cluster (impossible from a singleton) ...
        remove = torch.where((n_own > 1) & va, n_own / (n_own - 1).clamp_min(1) * d_own, -math.inf)
        # ... minus the cost of adding it to each other cluster (its own excluded): the gain
        gain = remove[..., None] - (na / (na + 1))[:, None, :] * dist  # (A, N, K)
        gain.scatter_(2, la[..., None], -math.inf)
        gain = gain.view(a, n * k)
        going = (gain.amax(1) > ea) & (done < max_moves)  # (A,) rows that move this step
        if not bool(going.any()):
            break
        pair = (la[..., None] * k + kk).view(a, n * k)  # source * K + destination
        pbest = gain.new_full((a, k * k), -math.inf).scatter_reduce_(1, pair, gain, "amax")
        # greedy choice of moves with disjoint clusters, best gain first
        left = max_moves - done  # (A,) moves the bound still allows
        pb = pbest.view(a, k, k)
        chosen = []
        for t in range(k // 2):
            g, idx = pb.reshape(a, k * k).max(1)
            ok = (g > ea) & (left > t)  # at t = 0 this is ``going``
            if not bool(ok.any()):
                break
            chosen.append((ok, idx))
            if t + 1 < k // 2:
                used = torch.zeros(a, k, dtype=torch.bool, device=x.device)
                used.scatter_(1, torch.stack([idx // k, idx % k], 1), ok[:, None].expand(a, 2))
                pb = pb.masked_fill(used[:, :, None] | used[:, None, :], -math.inf)
        # the first point (lowest index) that reaches its pair's best gain
        first = torch.where(gain == pbest.gather(1, pair), point, n)
        pidx = torch.full((a, k * k), n, dtype=torch.long, device=x.device).scatter_reduce_(
            1, pair, first, "amin")
        ok = torch.stack([c[0] for c in chosen], 1)  # (A, M)
        idx = torch.stack([c[1] for c in chosen], 1)
        r, m = ok.nonzero(as_tuple=True)
        pid = idx[r, m]
        src, dst = pid // k, pid % k
        gi = pidx[r, pid]
        pt = xa[r, gi]  # (G, D)
        ns, nd = na[r, src], na[r, dst]
        ca[r, src] = (ca[r, src] * ns[:, None] - pt) / (ns - 1)[:, None]
        ca[r, dst] = (ca[r, dst] * nd[:, None] + pt) / (nd + 1)[:, None]
        na[r, src] = ns - 1
        na[r, dst] = nd + 1
        la[r, gi] = dst
        done += ok.sum(1)
        g = going.nonzero()[:, 0]  # the moved rows' distances to all their (changed) centres
        cg = ca[g]
        dist[g] = torch.baddbmm(xxa[g][..., None], xa[g], cg.transpose(1, 2), alpha=-2).add_(
            (cg * cg).sum(-1)[:, None]).clamp_min_(0)
        if int(going.sum()) * 4 <= 3 * a:  # compact: write the stopped rows back
            labels[act], centers[act], moves[act] = la, ca, done
            act, xa, xxa, va, la, ca, na, ea, done, dist = (
                t[g] for t in (act, xa, xxa, va, la, ca, na, ea, done, dist))
    labels[act], centers[act], moves[act] = la, ca, done
    moved = moves > 0
    if not bool(moved.any()):
        return means, moves, part
    # exact means of the final partitions (the incremental updates accumulate rounding)
    m = moved.nonzero()[:, 0]
    means[m] = _update(x[m], valid_f[m], labels[m][:, None], centers[m][:, None])[0][:, 0]
    part[m] = _assign(x[m], means[m][:, None])
    return means, moves, part


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
