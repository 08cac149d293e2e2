"""Clustering speed of part ranking (stage 5); prints figures, tests nothing.

Synthetic features: per class, 8 random unit directions in D dimensions, points = direction +
Gaussian noise, L2-normalised (as ``decoder_output`` with PROPOSAL_FEATURE_NORM), generated per
class from its own seed so that the 12K-class case never holds all features at once.

* ours: :func:`part_distillation.modeling.part_clustering.cluster_classes` over all classes
  (class-batched ``batched_kmeans``; batches bounded by ``--max-batch-mb``), fed in groups of
  ``--classes-per-call`` classes (the stage feeds classes from disk the same way);
* reference (the official approach): a loop of scikit-learn ``KMeans(8, random_state=0).fit`` per
  class, timed on the first ``--sklearn-classes`` classes and extrapolated linearly to all classes
  (printed as such).

Reported: seconds (ours measured, sklearn extrapolated), speed-up, peak memory (CUDA: the
allocator's peak; CPU: the peak RSS growth, ``ru_maxrss``, of a fresh process per class count, which
includes one group of generated features, ``--classes-per-call`` x features x D x 4 bytes), and the inertia ratio ours / sklearn on the classes both ran (mean, max, and the
fraction within 1%). Timings are wall-clock; on a shared machine they are noisy.

Usage::

    nice .venv/bin/python bench/bench_part_ranking.py --classes 100 1000 [--features 2000]
        [--dim 256] [--device cpu|cuda] [--sklearn-classes 20] [--max-batch-mb 1024]
"""
import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.cluster import KMeans

from part_distillation.modeling.part_clustering import cluster_classes, inertia


def class_features(index: int, n: int, d: int, k: int = 8, noise: float = 0.05) -> torch.Tensor:
    """(n, d) float32 synthetic features of class ``index`` (seeded by the index)."""
    g = torch.Generator().manual_seed(index)
    centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    lab = torch.randint(0, k, (n,), generator=g)
    x = centers[lab] + noise * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(num_classes: int, args) -> None:
    device = torch.device(args.device)
    rss0 = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    total, ours = 0.0, {}
    for start in range(0, num_classes, args.classes_per_call):
        group = range(start, min(num_classes, start + args.classes_per_call))
        feats = {f"c{i:06d}": class_features(i, args.features, args.dim).to(device) for i in group}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        cents = cluster_classes(feats, 8, device=device, max_batch_bytes=args.max_batch_mb << 20,
                                restarts=args.restarts)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
        for i in group:
            if i < args.sklearn_classes:
                ours[i] = cents[f"c{i:06d}"]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else rss_mb() - rss0)
    n_sk = min(args.sklearn_classes, num_classes)
    t_sk, ratios = 0.0, []
    for i in range(n_sk):
        x = class_features(i, args.features, args.dim).numpy()
        t0 = time.perf_counter()
        km = KMeans(8, random_state=0).fit(x)
        t_sk += time.perf_counter() - t0
        ratios.append(inertia(torch.from_numpy(x), ours[i]) / max(float(km.inertia_), 1e-12))
    sk_total = t_sk / n_sk * num_classes
    ratios = np.array(ratios)
    print(f"| {num_classes} | {args.features} | {args.dim} | {args.device} | {total:.2f} | "
          f"{sk_total:.2f} (from {n_sk} classes) | {sk_total / total:.1f}x | {peak:.0f} | "
          f"{ratios.mean():.4f} / {ratios.max():.4f} / {100 * (ratios <= 1.01).mean():.0f}% |",
          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, nargs="+", default=[100, 1000, 12000])
    p.add_argument("--features", type=int, default=2000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sklearn-classes", type=int, default=20)
    p.add_argument("--classes-per-call", type=int, default=512)
    p.add_argument("--max-batch-mb", type=int, default=64)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.no_header:
        run(args.classes[0], args)
        return
    print(f"torch threads {torch.get_num_threads()}; ours restarts={args.restarts}; sklearn "
          f"KMeans(8, random_state=0) (n_init auto)")
    print("| classes | features/class | D | device | ours s | sklearn loop s | speed-up | "
          "peak MB | inertia ours/sklearn mean / max / within 1% |")
    print("|---|---|---|---|---|---|---|---|---|")
    if len(args.classes) == 1:
        run(args.classes[0], args)
        return
    rest, skip = [], False  # the command line without its --classes values
    for a in sys.argv[1:]:
        skip = a == "--classes" or (skip and not a.startswith("--"))
        if not skip:
            rest.append(a)
    for n in args.classes:  # one fresh process per size, so that each peak RSS is its own
        argv = rest + ["--classes", str(n), "--no-header"]
        subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, check=True)


if __name__ == "__main__":
    main()
