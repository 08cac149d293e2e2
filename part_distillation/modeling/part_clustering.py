"""Per-object-class clustering of part-query features and the cluster classifier of part ranking
(PartDistillation stage 5, Cho et al., CVPR 2023, Sec. 3.3; official ``PartRankingModel`` keys
``PART_RANKING.NUM_CLUSTERS`` and ``PART_RANKING.CLASSIFIER_METRIC``).

For every object class the (L2-normalised, 256-d) ``decoder_output`` features of the part
segments kept in pass 1 are clustered with k-means into K = NUM_CLUSTERS clusters; the K centroids
are the rows of a bias-free linear classifier that labels that class's segments in pass 2.

Class batching: instead of one scikit-learn ``KMeans`` per class (the official loop), classes are
sorted by feature count and packed into batches of similar size, zero-padded to ``(B, N_max, D)``
with a validity mask, and each batch is one :func:`part_distillation.modeling.kmeans.batched_kmeans`
call (on the device the features are moved to: GPU when present). A batch holds as many classes as
fit ``max_batch_bytes`` (an estimate of the call's peak working memory, see
:func:`kmeans_batch_bytes`), so memory is bounded by that value, not by the number of classes; a
single class larger than the budget runs alone. Each class's random seed is derived from its
class code (:func:`class_seed`), so its centroids do not depend on which classes share its batch,
on the batch budget or on the partitioning of classes into jobs.

k-means objective: the official ``ClusteringModule`` runs scikit-learn ``KMeans`` (the official
environment's 1.1.x: ``n_init=10`` k-means++ seedings, Lloyd). Here each class gets
``PART_RANKING.KMEANS_RESTARTS`` greedy k-means++ seedings and Lloyd steps, then (stage default,
``PART_RANKING.KMEANS_HARTIGAN``) Hartigan single-point moves
(:mod:`part_distillation.modeling.kmeans`), which only lower the sum of squared distances; the
centroids are the means of the resulting clusters, so they can differ from a plain Lloyd result
where the partition is ambiguous, and equal it where the clusters are clear.

Small classes (the official code falls back to random centroids): a class with N <= K features
cannot give K distinct clusters. Here such a class gets ``K' = number of distinct features``
clusters whose centroids are those distinct features (the exact k-means optimum for K' = that
number: every point is its own centre, inertia 0), so its labels are 0..K'-1 and never point to a
meaningless random centre. A class with no feature gets no classifier (``None``); its objects
cannot be labelled and are skipped, counted, by pass 2.

Cluster logits (:func:`cluster_logits`):

* ``"l2"`` (official default, kept as our default so that official configs reproduce):
  ``x.c - |x|^2 - |c|^2``. This is not ``-|x - c|^2 = 2 x.c - |x|^2 - |c|^2``: the dot product
  has weight 1 instead of 2. For one query the official formula ranks clusters by
  ``x.c - |c|^2``, the true distance by ``x.c - |c|^2 / 2``: the official one penalises
  centroids of large norm (tight clusters of unit features) twice as much, and its softmax (hence
  the pair scores) has another scale. It stays the default because the published numbers used it.
* ``"dot"``: ``x.c``.
* ``"neg_sq_l2"``: the true ``-|x - c|^2`` (ours, for comparison).
"""
import math
import zlib
from typing import Dict, List, Optional, Tuple

import torch

from .kmeans import batched_kmeans, pack_rows

CLASSIFIER_METRICS = ("l2", "dot", "neg_sq_l2")


def class_seed(class_code: str, seed: int = 0) -> int:
    """Deterministic 31-bit k-means seed of a class (CRC32 of its code, mixed with ``seed``), the
    same in every process and job (Python's ``hash`` is salted per process)."""
    return (zlib.crc32(class_code.encode("utf-8")) ^ (int(seed) * 0x9E3779B1)) & 0x7FFFFFFF


def kmeans_batch_bytes(rows: int, n: int, d: int, k: int, restarts: int) -> int:
    """Estimated peak working memory in bytes of ``batched_kmeans`` on a ``(rows, n, d)`` float32
    batch, an upper bound: the padded features, room for one more copy of them per restart, the
    (n, k) distance and one-hot tensors of every restart and the k-means++ candidate distances
    (``2 + ln k`` candidates)."""
    trials = 2 + int(math.log(k)) if k > 1 else 2
    per_row = n * d + restarts * n * (d + 3 * k + trials + 2)
    return 4 * rows * per_row


def _small_class_centroids(x: torch.Tensor, k: int) -> torch.Tensor:
    """Centroids of a class with ``n <= k`` features ``x (n, D)``: its distinct rows, in order of
    first appearance ((K', D), K' <= n)."""
    uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((uniq.shape[0],), x.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse.cpu(), torch.arange(x.shape[0]), reduce="amin")
    return x[first.sort().values]


def cluster_classes(
    features: Dict[str, torch.Tensor],
    k: int,
    seed: int = 0,
    iters: int = 50,
    tol: float = 1e-4,
    restarts: int = 3,
    device: Optional[torch.device] = None,
    max_batch_bytes: int = 64 << 20,
    hartigan: bool = False,
) -> Dict[str, Optional[torch.Tensor]]:
    """k-means with ``k`` clusters per class, many classes per batched call.

    Args:
        features: ``{class_code: (N_c, D) float tensor}`` (any device; N_c may be 0). All D equal.
        k: clusters per class (PART_RANKING.NUM_CLUSTERS), >= 1.
        seed: global seed, mixed with each class code (:func:`class_seed`).
        iters, tol, restarts: as :func:`~part_distillation.modeling.kmeans.batched_kmeans`
            (PART_RANKING.KMEANS_RESTARTS: 3 seedings; with 1, k-means++ merges two of 8 planted
            clusters in 3 of 6 synthetic classes, as scikit-learn's single init does in 2).
        device: where k-means runs (default: the first feature's device).
        max_batch_bytes: bound on one call's estimated working memory (:func:`kmeans_batch_bytes`).
        hartigan: refine each class's Lloyd result with Hartigan single-point moves
            (PART_RANKING.KMEANS_HARTIGAN; :mod:`part_distillation.modeling.kmeans`): lower or
            equal inertia, centroids still the means of their clusters.

    Returns:
        ``{class_code: (K_c, D) float32 centroids on the CPU}`` with ``K_c = k`` when ``N_c > k``,
        ``K_c = number of distinct features`` when ``1 <= N_c <= k``, ``None`` when ``N_c = 0``.

    Raises:
        ValueError: ``k < 1``, a feature tensor not 2-D, or feature dimensions that differ.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dims = {int(v.shape[1]) for v in features.values() if v.dim() == 2}
    if any(v.dim() != 2 for v in features.values()) or len(dims) > 1:
        raise ValueError("features must be (N, D) tensors with one common D, got shapes "
                         f"{sorted({tuple(v.shape) for v in features.values()})}")
    out: Dict[str, Optional[torch.Tensor]] = {}
    big: List[Tuple[str, torch.Tensor]] = []
    for code, x in features.items():
        if x.shape[0] == 0:
            out[code] = None
        elif x.shape[0] <= k:
            out[code] = _small_class_centroids(x.detach().float().cpu(), k)
        else:
            big.append((code, x))
    if not big:
        return out
    d = dims.pop()
    device = torch.device(device) if device is not None else big[0][1].device
    big.sort(key=lambda item: (item[1].shape[0], item[0]))
    spans, start = [], 0
    while start < len(big):
        # largest class of a batch is its last one (sorted); grow while the padded batch fits
        end = start + 1
        while end < len(big) and kmeans_batch_bytes(end + 1 - start, big[end][1].shape[0], d, k,
                                                    restarts) <= max_batch_bytes:
            end += 1
        spans.append((start, end))
        start = end
    # one buffer for the padded features of every batch: no fresh pages to fault in per batch,
    # and only the padding is zeroed
    buf = torch.empty(max((e - s) * big[e - 1][1].shape[0] for s, e in spans) * d, device=device)
    for start, end in spans:
        chunk = big[start:end]
        x, valid = pack_rows([f.detach() for _, f in chunk], out=buf)
        result = batched_kmeans(x, valid, k, seeds=[class_seed(c, seed) for c, _ in chunk],
                                iters=iters, tol=tol, restarts=restarts, hartigan=hartigan)
        centers = result.centers.cpu()
        for i, (code, _) in enumerate(chunk):
            out[code] = centers[i].clone()
    return out


def cluster_logits(x: torch.Tensor, centroids: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Logits of features ``x`` (Q, D) for clusters ``centroids`` (K, D) -> (Q, K) float32.

    ``metric`` (PART_RANKING.CLASSIFIER_METRIC): ``"l2"`` official ``x.c - |x|^2 - |c|^2``;
    ``"dot"`` ``x.c``; ``"neg_sq_l2"`` ``-|x - c|^2`` (see the module docstring).

    Raises:
        ValueError: unknown metric or mismatched feature dimensions.
    """
    if metric not in CLASSIFIER_METRICS:
        raise ValueError(f"PART_RANKING.CLASSIFIER_METRIC must be one of {CLASSIFIER_METRICS}, "
                         f"got {metric!r}")
    if x.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"feature dim {x.shape[-1]} != centroid dim {centroids.shape[-1]}")
    x = x.float()
    c = centroids.to(x)
    dot = torch.nn.functional.linear(x, c)  # the bias-free linear classifier, weight = centroids
    if metric == "dot":
        return dot
    xx = (x * x).sum(-1, keepdim=True)
    cc = (c * c).sum(-1)[None, :]
    if metric == "l2":
        return dot - xx - cc
    return 2 * dot - xx - cc


def assign_clusters(x: torch.Tensor, centroids: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Cluster id (Q,) int64 of each feature: argmax of :func:`cluster_logits`."""
    return cluster_logits(x, centroids, metric).argmax(-1)


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum over features ``x`` (N, D) of the squared distance to the nearest centroid (K, D),
    in float64."""
    d = torch.cdist(x.double(), centroids.double()) ** 2
    return float(d.min(1).values.sum()) if len(x) else 0.0

