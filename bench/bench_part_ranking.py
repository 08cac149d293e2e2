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

* anchors on the same classes and thread count: the official environment's setting
  ``KMeans(8, n_init=10)`` (scikit-learn 1.1.x, the official environment) and, when ``faiss-cpu``
  is installed, ``faiss.Kmeans(nredo=--restarts)`` (the field's fast k-means; a printed line says
  when it is missing).

Ours runs with the Hartigan refinement, the stage default (``PART_RANKING.KMEANS_HARTIGAN``);
``--lloyd-only`` turns it off (plain Lloyd k-means, the stage before the refinement).

``--fixture DIR``: instead, the parity fixture's ``clustering.pt`` (official runs with
scikit-learn 1.1.3 and 1.9.1): per class, the inertia of ours (3 and 10 seedings, without and
with the Hartigan refinement; over ``--fixture-seeds`` global seeds: the largest ratio) divided by
the official 1.1.3 inertia, whether the partition equals the official one (up to relabelling), and
the wall time of one ``cluster_classes`` call over all classes.

``--gaussian ROWS``: instead, Hartigan on unstructured data: ROWS rows of ``--features`` x ``--dim``
i.i.d. Gaussian points, ``batched_kmeans`` K 8 with ``--restarts`` seedings, Lloyd only and with
the refinement at the default move bound and at ``--max-moves`` values (interleaved rounds,
median); prints seconds, moves per row and inertia relative to Lloyd's.

Reported: seconds (ours measured, sklearn extrapolated), speed-up, peak memory (CUDA: the
allocator's peak; CPU: the peak RSS growth, ``ru_maxrss``, of a fresh process per class count, which
includes one group of generated features, ``--classes-per-call`` x features x D x 4 bytes), and the inertia ratio ours / sklearn on the classes both ran (mean, max, and the
fraction within 1%). Timings are wall-clock (on a shared machine they are noisy) or, with
``--cpu-time``, CPU seconds of the process.

Usage::

    nice .venv/bin/python bench/bench_part_ranking.py --classes 100 1000 [--features 2000]
        [--dim 256] [--device cpu|cuda] [--sklearn-classes 20] [--max-batch-mb 1024] [--lloyd-only]
        [--cpu-time]
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_part_ranking.py \
        --fixture ../shared/fixtures/part_distillation_parity [--fixture-seeds 10]
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

try:
    import faiss
except ImportError:  # optional anchor
    faiss = None


CLOCK = [time.perf_counter]  # timer of ours / sklearn / faiss; --cpu-time: time.process_time


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
        t0 = CLOCK[0]()
        cents = cluster_classes(feats, 8, device=device, max_batch_bytes=args.max_batch_mb << 20,
                                restarts=args.restarts, hartigan=args.hartigan)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += CLOCK[0]() - t0
        for i in group:
            if i < args.sklearn_classes:
                ours[i] = cents[f"c{i:06d}"]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else rss_mb() - rss0)
    n_sk = min(args.sklearn_classes, num_classes)
    t_sk, t_fa, ratios, r10, rfa = 0.0, 0.0, [], [], []
    if faiss is not None:
        faiss.omp_set_num_threads(torch.get_num_threads())
    for i in range(n_sk):
        x = class_features(i, args.features, args.dim).numpy()
        xt = torch.from_numpy(x)
        t0 = CLOCK[0]()
        km = KMeans(8, random_state=0).fit(x)
        t_sk += CLOCK[0]() - t0
        ours_i = inertia(xt, ours[i])
        ratios.append(ours_i / max(float(km.inertia_), 1e-12))
        r10.append(ours_i / max(float(KMeans(8, n_init=10, random_state=0).fit(x).inertia_), 1e-12))
        if faiss is not None:
            fk = faiss.Kmeans(x.shape[1], 8, nredo=args.restarts, seed=i + 1)
            t0 = CLOCK[0]()
            fk.train(np.ascontiguousarray(x))
            t_fa += CLOCK[0]() - t0
            rfa.append(ours_i / max(inertia(xt, torch.from_numpy(fk.centroids)), 1e-12))
    sk_total = t_sk / n_sk * num_classes
    ratios, r10 = np.array(ratios), np.array(r10)
    fa = (f"{t_fa / n_sk * num_classes:.2f} / {np.mean(rfa):.4f} / {np.max(rfa):.4f}" if rfa else "not installed")
    print(f"| {num_classes} | {args.features} | {args.dim} | {args.device} | {total:.2f} | "
          f"{sk_total:.2f} (from {n_sk} classes) | {sk_total / total:.1f}x | {peak:.0f} | "
          f"{ratios.mean():.4f} / {ratios.max():.4f} / {100 * (ratios <= 1.01).mean():.0f}% | "
          f"{r10.mean():.4f} / {r10.max():.4f} | {fa} |", flush=True)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two label vectors (N,) define the same partition (up to relabelling)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def fixture(args) -> None:
    """The ``--fixture`` report (module docstring)."""
    fx = torch.load(os.path.join(args.fixture, "clustering.pt"))
    feats, k = fx["data"]["features"], fx["data"]["K"]
    official = {v: fx["official"][v] for v in ("1.1.3", "1.9.1")}

    def official_inertia(version, name):
        run = official[version]["kmeans"][name]  # None for N <= K: the official random centroids
        return run["inertia"] if run else inertia(feats[name], official[version]["centroids"][name])

    print(f"torch threads {torch.get_num_threads()}; fixture {args.fixture}; ratio = ours inertia / "
          f"official scikit-learn 1.1.3 KMeans(n_init=10) inertia; max over global seeds "
          f"0..{args.fixture_seeds - 1}; 'same' = partition equal to the official one (seed 0)")
    settings = [(3, False), (3, True), (10, False), (10, True)]
    cols = " | ".join(f"{r} seedings{' + Hartigan' if h else ''}: ratio seed 0 / max, seeds above, same"
                      for r, h in settings)
    print(f"| class | N | 1.1.3 inertia | 1.9.1 / 1.1.3 | {cols} |")
    print("|---|---|---|---|" + "---|" * len(settings))
    results, times = {}, {}
    for r, h in settings:
        runs = []
        for seed in range(args.fixture_seeds):
            t0 = time.perf_counter()
            runs.append(cluster_classes(feats, k, seed=seed, restarts=r, hartigan=h))
            times.setdefault((r, h), []).append(time.perf_counter() - t0)
        results[(r, h)] = runs
    for name, x in feats.items():
        ref = official_inertia("1.1.3", name)
        cells = []
        for key in settings:
            ratios = [inertia(x, run[name]) / max(ref, 1e-12) for run in results[key]]
            run0 = results[key][0][name]
            off = official["1.1.3"]["kmeans"][name]
            same = (same_partition(torch.cdist(x.double(), run0.double()).argmin(1), torch.as_tensor(off["labels"]))
                    if off else "n/a (N <= K)")
            above = sum(q > 1 + 1e-9 for q in ratios)
            cells.append(f"{ratios[0]:.5f} / {max(ratios):.5f}, {above}/{len(ratios)}, {same}")
        print(f"| {name} | {len(x)} | {ref:.5f} | {official_inertia('1.9.1', name) / max(ref, 1e-12):.5f} | "
              + " | ".join(cells) + " |")
    print("wall time of one call over all 8 classes (median over seeds): "
          + ", ".join(f"{r} seedings{' + Hartigan' if h else ''} {1000 * float(np.median(times[(r, h)])):.1f} ms"
                      for r, h in settings))
    import sklearn

    for n_init in (3, 10):  # the installed scikit-learn over the same number of seeds
        line = []
        for name, x in feats.items():
            if len(x) <= k:
                continue
            ref = official_inertia("1.1.3", name)
            ratios = [KMeans(k, n_init=n_init, random_state=s).fit(x.double().numpy()).inertia_ / ref
                      for s in range(args.fixture_seeds)]
            line.append(f"{name} {max(ratios):.5f} ({sum(q > 1 + 1e-9 for q in ratios)}/{len(ratios)} above)")
        print(f"scikit-learn {sklearn.__version__} KMeans(n_init={n_init}, random_state=0..{args.fixture_seeds - 1}) "
              "/ official 1.1.3, max: " + ", ".join(line))
    if faiss is None:
        print("faiss-cpu not installed: faiss anchor skipped")
        return
    faiss.omp_set_num_threads(torch.get_num_threads())
    line = []
    for name, x in feats.items():
        if len(x) <= k:
            continue
        fk = faiss.Kmeans(x.shape[1], k, nredo=3, seed=1)
        fk.train(np.ascontiguousarray(x.numpy()))
        line.append(f"{name} {inertia(x, torch.from_numpy(fk.centroids)) / official_inertia('1.1.3', name):.5f}")
    print(f"faiss {faiss.__version__} Kmeans(nredo=3) / official 1.1.3: " + ", ".join(line))


def gaussian(args) -> None:
    """The ``--gaussian`` report (module docstring)."""
    from part_distillation.modeling.kmeans import batched_kmeans

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.gaussian, args.features, args.dim, generator=g)
    valid = torch.ones(x.shape[:2], dtype=torch.bool)
    seeds = list(range(args.gaussian))
    settings = [("Lloyd only", dict(hartigan=False)), ("Hartigan, default bound", dict(hartigan=True))]
    settings += [(f"Hartigan, max_moves {m}", dict(hartigan=True, max_moves=m)) for m in args.max_moves]
    times = {name: [] for name, _ in settings}
    res = {}
    for _ in range(args.rounds):
        for name, kw in settings:
            t0 = CLOCK[0]()
            res[name] = batched_kmeans(x, valid, 8, seeds, restarts=args.restarts, **kw)
            times[name].append(CLOCK[0]() - t0)
    base = res["Lloyd only"].inertia
    print(f"torch threads {torch.get_num_threads()}; {args.gaussian} rows x {args.features} x {args.dim} "
          f"i.i.d. Gaussian, K 8, {args.restarts} seedings; median of {args.rounds} rounds")
    print("| setting | s | moves per row | inertia / Lloyd (max) |")
    print("|---|---|---|---|")
    for name, _ in settings:
        r = res[name]
        print(f"| {name} | {float(np.median(times[name])):.3f} | {r.moves.min()}-{r.moves.max()} | "
              f"{float((r.inertia / base).max()):.5f} |")


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
    p.add_argument("--lloyd-only", action="store_true", help="ours without the Hartigan refinement")
    p.add_argument("--cpu-time", action="store_true",
                   help="time in CPU seconds of this process (time.process_time), not wall-clock")
    p.add_argument("--fixture", default="", help="folder of the parity fixture's clustering.pt")
    p.add_argument("--fixture-seeds", type=int, default=10)
    p.add_argument("--gaussian", type=int, default=0, help="Hartigan on this many i.i.d. Gaussian rows")
    p.add_argument("--max-moves", type=int, nargs="*", default=[100000], help="with --gaussian")
    p.add_argument("--rounds", type=int, default=3, help="with --gaussian")
    p.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.hartigan = not args.lloyd_only
    if args.cpu_time:
        CLOCK[0] = time.process_time
    if args.gaussian:
        gaussian(args)
        return
    if args.fixture:
        fixture(args)
        return
    if args.no_header:
        run(args.classes[0], args)
        return
    print(f"torch threads {torch.get_num_threads()}; ours restarts={args.restarts}"
          f"{' + Hartigan' if args.hartigan else ''}; sklearn KMeans(8, random_state=0) (n_init auto)"
          f"{'' if faiss else '; faiss-cpu not installed: faiss anchor skipped'}"
          f"{'; times in CPU seconds of the process' if args.cpu_time else '; wall-clock times'}")
    print("| classes | features/class | D | device | ours s | sklearn loop s | speed-up | "
          "peak MB | inertia ours/sklearn mean / max / within 1% | ours / sklearn n_init=10 mean / max | "
          "faiss s (extrapolated) / inertia ours/faiss mean / max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
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
