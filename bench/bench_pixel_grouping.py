"""Throughput of stage 2 (pixel grouping) and stage 3 (dense-CRF); prints figures, tests nothing.

Part 1: k-means on real features. Each image of the dataset goes through the stage-2 feature
extractor (``configs/proposal_generation/effnet_lite0_cpu.yaml``: EfficientNet-Lite0 res3+res4,
stride 8, L2-normalised), timed on its own (images/s) because it dominates on CPU. Each object's
feature points are the grid cells its mask covers >= 50% (``grid_cell_masks``); objects with
<= K (4) points take stage 2's small-object fallback (no k-means) and are not timed here. On exactly the same points two k-means are run and timed:

* ours: ``batched_kmeans`` (objects grouped by ``size_batches`` into padded batches of at most
  ``--objects-per-batch``, as stage 2 batches them within an image), once with
  ``restarts=1`` and once with ``restarts=3`` (the default, ``KMEANS_RESTARTS``); assignment by the config's
  ``DISTANCE_METRIC`` (score on the stride-8 grid, bilinear upsampling, argmax inside the mask,
  as ``PixelGrouper`` does);
* reference (the official PartDistillation per-object path): scikit-learn
  ``KMeans(n_clusters=4, random_state=0).fit`` per object, assignment ``dot`` (argmax x.c);
* anchor, when ``faiss-cpu`` is installed (a printed line says when it is missing):
  ``faiss.Kmeans(d, 4, nredo=3, seed=<object seed>)`` per object (the field's fast k-means, its
  defaults otherwise: 25 Lloyd steps per seeding, random initial centres, at most 256 points per
  centre; ``min_points_per_centroid=1`` only silences its small-input warning), the same number
  of seedings as ours r=3 and the same thread count (``faiss.omp_set_num_threads`` = torch's);
  assignment by the config's ``DISTANCE_METRIC``, as ours.

Reported: objects/s for k-means alone and k-means + assignment (median over ``--repeats``
timed rounds, each one pass of every method in turn, after one untimed warm-up pass; wall-clock, or CPU seconds of the process with
``--cpu-time``), mean inertia of both (sum of squared distances of
an object's points to their k-means centre: sklearn ``inertia_``, ours ``KMeansResult.inertia``),
their ratio and the fraction of objects where ours <= sklearn * (1 + 1e-6). The same fraction
with both inertias recomputed in float64 from the centres is printed too, since float32 rounding
alone is about that tolerance.

Part 2: stage 3 images/s. Stage-1 and stage-2 pseudo-labels are written to a temporary folder
(stage-2 images/s is printed as well), then ``DenseCRFStage`` runs into a fresh folder once per
worker count. ``workers > 1`` uses a spawn pool, so its time includes starting the workers.

Timings are wall-clock on whatever machine runs this; on a shared machine they are noisy (the
load average is printed).

Usage::

    nice .venv/bin/python bench/bench_pixel_grouping.py [--dataset pascal_part_examples]
        [--max-images N] [--device cpu|cuda] [--objects-per-batch 16] [--repeats 3]
        [--crf-workers 1 2] [--no-crf] [--no-sklearn] [--cpu-time]
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_pixel_grouping.py --no-crf  # one thread
"""
import argparse
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # stage runners show progress bars; keep output a table
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation (library)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:
    import faiss  # noqa: E402
except ImportError:  # optional anchor
    faiss = None

import part_distillation.modeling  # noqa: E402,F401  (registers backbones)
from part_distillation.config import setup_cfg  # noqa: E402
from part_distillation.data import resolve_dataset  # noqa: E402
from part_distillation.data.images import read_image_rgb  # noqa: E402
from part_distillation.data.pseudo_labels import decode_mask  # noqa: E402
from part_distillation.modeling.feature_extractor import BackboneFeatures  # noqa: E402
from part_distillation.modeling.kmeans import batched_kmeans, pack_rows, size_batches  # noqa: E402
from part_distillation.stages.dense_crf import DenseCRFStage  # noqa: E402
from part_distillation.stages.object_masks import ObjectMasksStage  # noqa: E402
from part_distillation.stages.proposal_generation import (ProposalGenerationStage, assign_segments,  # noqa: E402
                                                     build_segmenter, grid_cell_masks, object_seed)

CONFIG = "configs/proposal_generation/effnet_lite0_cpu.yaml"
CLOCK = [time.perf_counter]  # the k-means timer; --cpu-time: time.process_time
NOISE_NOTE = ("NOTE: timings are wall-clock on a shared machine (other jobs running); "
              "treat them as rough, compare only within one run.")


class Obj:
    """One object: its feature points (n, C), full-resolution mask, image features and seed."""

    def __init__(self, image_id, index, pts, mask, feats, resized, seed):
        self.image_id, self.index, self.pts, self.mask = image_id, index, pts, mask
        self.feats, self.resized, self.seed = feats, resized, seed


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def collect_objects(cfg, fe, recs, device):
    """Extract features per image (timed) and the feature points of every object.

    Returns ``(objects, feature_seconds (list, one per image), skipped_small, grids)``."""
    k = cfg.PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS
    stride = cfg.PROPOSAL_GENERATION.FEATURE_STRIDE
    seed = cfg.PROPOSAL_GENERATION.SEED
    objs, secs, small, grids = [], [], 0, []
    warm = read_image_rgb(recs[0]["file_name"])
    fe(warm)  # untimed warm-up (first-call allocations)
    sync(device)
    for rec in recs:
        image = read_image_rgb(rec["file_name"])
        sync(device)
        t0 = time.perf_counter()
        feats, resized = fe(image)
        sync(device)
        secs.append(time.perf_counter() - t0)
        c, h, w = feats.shape
        grids.append((h, w))
        flat = feats.view(c, -1).T
        for i, o in enumerate(rec.get("objects", [])):
            mask = torch.from_numpy(decode_mask(o["mask"])).to(device)
            if not bool(mask.any()):
                continue
            cells = grid_cell_masks(mask[None], resized, (h, w), stride)[0].view(-1)
            pts = flat[cells].contiguous()
            if len(pts) <= k:
                small += 1
                continue
            objs.append(Obj(str(rec["image_id"]), i, pts, mask, feats, resized,
                            object_seed(seed, str(rec["image_id"]), i)))
    return objs, secs, small, grids


def assign(o, centers, metric, stride):
    """Full-resolution segment map of one object, as stage 2 computes it."""
    return assign_segments(o.feats, centers, o.mask, o.resized, metric, stride)


def run_ours(objs, k, batch, restarts, metric, stride, device):
    """One pass of batched k-means (+ assignment). Returns (kmeans_s, assign_s, inertia, centers, iters)."""
    t_km = t_as = 0.0
    inertia, centers, iters = np.zeros(len(objs)), [None] * len(objs), np.zeros(len(objs), np.int64)
    for idx in size_batches([len(o.pts) for o in objs], batch):  # as stage 2 batches them
        chunk = [objs[i] for i in idx]
        sync(device)
        t0 = CLOCK[0]()
        x, valid = pack_rows([o.pts for o in chunk])
        res = batched_kmeans(x, valid, k, [o.seed for o in chunk], iters=50, tol=1e-4, restarts=restarts)
        sync(device)
        t1 = CLOCK[0]()
        for row, o in enumerate(chunk):
            assign(o, res.centers[row], metric, stride)
        sync(device)
        t_as += CLOCK[0]() - t1
        t_km += t1 - t0
        inertia[idx] = res.inertia.cpu().numpy()
        iters[idx] = res.iterations.cpu().numpy()
        for row, i in enumerate(idx):
            centers[i] = res.centers[row].cpu()
    return t_km, t_as, inertia, centers, iters


def run_sklearn(objs, k, stride, device):
    """One pass of the reference: sklearn KMeans per object + dot assignment."""
    from sklearn.cluster import KMeans

    t_km = t_as = 0.0
    inertia, centers, iters = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on objects with < k distinct points
        for o in objs:
            sync(device)
            t0 = CLOCK[0]()
            km = KMeans(n_clusters=k, random_state=0).fit(o.pts.cpu().numpy())
            c = torch.from_numpy(km.cluster_centers_).to(device=device, dtype=torch.float32)
            sync(device)
            t1 = CLOCK[0]()
            assign(o, c, "dot", stride)
            sync(device)
            t_as += CLOCK[0]() - t1
            t_km += t1 - t0
            inertia.append(float(km.inertia_))
            centers.append(c.cpu())
            iters.append(km.n_iter_)
    return t_km, t_as, np.array(inertia), centers, np.array(iters)


def run_faiss(objs, k, restarts, metric, stride, device):
    """One pass of the faiss anchor: ``faiss.Kmeans(nredo=restarts)`` per object + the config's
    assignment. Returns (kmeans_s, assign_s, inertia, centers, iters per seeding)."""
    t_km = t_as = 0.0
    inertia, centers, iters = [], [], []
    for o in objs:
        pts = o.pts.cpu().numpy()
        sync(device)
        t0 = CLOCK[0]()
        fk = faiss.Kmeans(pts.shape[1], k, nredo=restarts, seed=int(o.seed) % (2 ** 31),
                          min_points_per_centroid=1)
        fk.train(np.ascontiguousarray(pts, dtype=np.float32))
        c = torch.from_numpy(fk.centroids).to(device=device, dtype=torch.float32)
        sync(device)
        t1 = CLOCK[0]()
        assign(o, c, metric, stride)
        sync(device)
        t_as += CLOCK[0]() - t1
        t_km += t1 - t0
        c = c.cpu()
        inertia.append(float(torch.cdist(o.pts.cpu(), c).pow(2).min(1).values.sum()))
        centers.append(c)
        iters.append(len(fk.iteration_stats) / restarts)
    return t_km, t_as, np.array(inertia), centers, np.array(iters)


def gemm_flops(n, d, k, restarts, iters):
    """Matrix-product flops of ``batched_kmeans`` on one object of ``n`` points (no padding):
    k-means++ (the first centre and the 2 + ln K candidates of each later one, per seeding, against
    all points), then per Lloyd step an M-step (one-hot product) and an assignment, 2 n K d each,
    for all seedings during the first SELECT_AFTER_STEPS steps (k-means++ gives the first
    assignment, one more picks the best seeding), for the kept one after them."""
    import math

    from part_distillation.modeling.kmeans import SELECT_AFTER_STEPS

    unit = 2.0 * n * k * d
    trials = 2 + int(math.log(k))
    seeding = 2.0 * n * d * restarts * (1 + (k - 1) * trials)
    first = min(SELECT_AFTER_STEPS, iters) if restarts > 1 else 0
    lloyd = restarts * unit * (2 * first) + unit * 2 * max(iters - first, 0)
    return seeding + lloyd + (0 if restarts > 1 else unit)


def peak_gflops(size=4096, repeats=5):
    """Float32 matmul GFLOP/s of this process's torch threads: median of ``repeats`` timed
    ``size`` x ``size`` products after one warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        secs.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / statistics.median(secs) / 1e9


def inertia64(objs, centers):
    """Float64 sum of squared distances of each object's points to their nearest centre."""
    return np.array([float(torch.cdist(o.pts.double().cpu(), c.double()).pow(2).min(1).values.sum())
                     for o, c in zip(objs, centers)])


def timed_passes(fns, repeats):
    """One untimed warm-up pass of every method (its outputs kept), then ``repeats`` rounds that
    time one pass of every method in turn, so that a change in the machine's load between rounds
    hits all methods alike. ``fns``: {name: pass function}. Returns {name: (outputs of the warm-up
    pass, list of kmeans seconds, list of kmeans+assign seconds)}."""
    out = {name: (fn(), [], []) for name, fn in fns.items()}
    for _ in range(repeats):
        for name, fn in fns.items():
            t_km, t_as = fn()[:2]
            out[name][1].append(t_km)
            out[name][2].append(t_km + t_as)
    return out


def fmt_rate(n, secs):
    """'median (min-max)' of n / s over the timed passes."""
    rates = sorted(n / s for s in secs)
    return f"{statistics.median(rates):8.1f} ({rates[0]:.1f}-{rates[-1]:.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pascal_part_examples",
                        help="registered dataset name or folder (e.g. ade20k_part_subset)")
    parser.add_argument("--max-images", type=int, default=None, help="first N images only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--objects-per-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed k-means passes (after a warm-up)")
    parser.add_argument("--crf-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-crf", action="store_true", help="skip part 2 (stages 1-3 on disk)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the k-means passes in CPU seconds of this process (time.process_time), "
                             "not wall-clock: less sensitive to other jobs on a shared machine")
    parser.add_argument("--no-sklearn", action="store_true",
                        help="skip the sklearn reference (ratios are then against ours r=3)")
    args = parser.parse_args()

    t_start = time.perf_counter()
    if args.cpu_time:
        CLOCK[0] = time.process_time
    device = torch.device(args.device)
    cfg = setup_cfg(CONFIG, ["MODEL.DEVICE", args.device])
    pg = cfg.PROPOSAL_GENERATION
    k, stride, metric = pg.NUM_SUPERPIXEL_CLUSTERS, pg.FEATURE_STRIDE, pg.DISTANCE_METRIC
    recs = resolve_dataset(args.dataset)
    if args.max_images:
        recs = recs[: args.max_images]
    print(f"bench_pixel_grouping: dataset {args.dataset} ({len(recs)} images), device {device}, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(NOISE_NOTE)
    if args.cpu_time:
        print("k-means timed in CPU seconds of this process (--cpu-time), not wall-clock")
    if faiss is None:
        print("faiss-cpu not installed: faiss anchor skipped")
    else:
        faiss.omp_set_num_threads(torch.get_num_threads())

    # ---- part 1: features, then k-means on identical points ----
    fe = BackboneFeatures(cfg, args.device)
    objs, fsecs, small, grids = collect_objects(cfg, fe, recs, device)
    if not objs:
        raise SystemExit("no object with more than K feature points")
    dim = objs[0].pts.shape[1]
    npts = np.array([len(o.pts) for o in objs])
    feat_rate = len(fsecs) / sum(fsecs)
    print(f"features: {len(fsecs)} images, {feat_rate:.2f} images/s ({1000 * sum(fsecs) / len(fsecs):.0f} "
          f"ms/image), dim {dim}, mean grid {np.mean([g[0] for g in grids]):.0f}x"
          f"{np.mean([g[1] for g in grids]):.0f}")
    print(f"objects: {len(objs)} clustered (K={k}), {small} small (<= K points: fallback, not timed); points per "
          f"object min/median/max {npts.min()}/{int(np.median(npts))}/{npts.max()}")

    fns = {f"ours r={r}": (lambda r=r: run_ours(objs, k, args.objects_per_batch, r, metric, stride, device))
           for r in (1, 3)}
    if faiss is not None:
        fns["faiss r=3"] = lambda: run_faiss(objs, k, 3, metric, stride, device)
    ref = "ours r=3" if args.no_sklearn else "sklearn"
    if not args.no_sklearn:
        fns["sklearn"] = lambda: run_sklearn(objs, k, stride, device)
    runs = timed_passes(fns, args.repeats)

    sk_in, sk_c = runs[ref][0][2], runs[ref][0][3]
    sk_in64 = inertia64(objs, sk_c)
    n = len(objs)
    rows = []
    for name, (first, km, tot) in runs.items():
        inertia, centers, iters = first[2], first[3], first[4]
        in64 = inertia64(objs, centers)
        row = {"name": name, "km": fmt_rate(n, km), "tot": fmt_rate(n, tot), "inertia": inertia.mean(),
               "iters": iters.mean()}
        if name != ref:
            row["ratio"] = inertia.mean() / sk_in.mean()
            row["le"] = float(np.mean(inertia <= sk_in * (1 + 1e-6)))
            row["le64"] = float(np.mean(in64 <= sk_in64 * (1 + 1e-6)))
        rows.append(row)

    # ---- part 2: stage 2 end-to-end and dense-CRF with N workers ----
    crf_rows = []
    if not args.no_crf:
        with tempfile.TemporaryDirectory(prefix="bench_pg_") as tmp:
            d1, d2 = os.path.join(tmp, "object_masks"), os.path.join(tmp, "pixel_grouping")
            ObjectMasksStage(cfg, d1).run(recs)
            seg = build_segmenter(cfg, args.device)
            t0 = time.perf_counter()
            s2 = ProposalGenerationStage(cfg, d2, seg).run(d1).as_dict()
            wall = time.perf_counter() - t0
            crf_rows.append(("stage 2 (features+k-means+save)", s2, wall))
            for w in args.crf_workers:
                t0 = time.perf_counter()
                s3 = DenseCRFStage(cfg, os.path.join(tmp, f"dense_crf_w{w}")).run(d2, workers=w).as_dict()
                crf_rows.append((f"dense CRF workers={w}", s3, time.perf_counter() - t0))

    # ---- table ----
    print()
    print(f"== summary: {args.dataset}, {len(recs)} images, {n} objects, feature dim {dim}, device {device}, "
          f"objects/batch {args.objects_per_batch}, {args.repeats} timed passes ==")
    print(NOISE_NOTE)
    print(f"feature extraction: {feat_rate:.2f} images/s")
    print(f"{'k-means':<12} {'obj/s k-means (min-max)':>26} {'obj/s +assign (min-max)':>26} "
          f"{'mean inertia':>13} {'iters':>6} {'/' + ref:>9} {'<=ref':>6} {'<=ref f64':>9}")
    for r in rows:
        extra = (f"{r['ratio']:9.4f} {r['le']:6.2f} {r['le64']:9.2f}" if "ratio" in r
                 else f"{'1':>9} {'-':>6} {'-':>9}")
        print(f"{r['name']:<12} {r['km']:>26} {r['tot']:>26} {r['inertia']:13.3f} {r['iters']:6.1f} {extra}")
    print(f"(ours and faiss assign with '{metric}', sklearn with 'dot'; '<=ref': fraction of objects with "
          f"inertia <= {ref}*(1+1e-6), 'f64': both recomputed in float64)")
    if device.type == "cpu":  # how much of the core the k-means uses
        first, km, _ = runs["ours r=3"]
        fl = np.array([gemm_flops(len(o.pts), dim, k, 3, int(it)) for o, it in zip(objs, first[4])])
        rate = fl.sum() / statistics.median(km) / 1e9
        peak = peak_gflops()
        print(f"ours r=3 matrix-product flops per object: mean {fl.mean() / 1e6:.1f} MFLOP (median "
              f"{np.median(fl) / 1e6:.1f}, max {fl.max() / 1e6:.1f}); at the median pass that is {rate:.1f} "
              f"GFLOP/s = {100 * rate / peak:.1f}% of the float32 peak {peak:.1f} GFLOP/s (4096^2 torch matmul, "
              f"torch threads {torch.get_num_threads()})")
    if "faiss r=3" in runs:  # same seedings, same threads
        (fo, fkm, _), (oo, okm, _) = runs["faiss r=3"], runs["ours r=3"]
        fi, oi = inertia64(objs, fo[3]), inertia64(objs, oo[3])
        print(f"ours r=3 / faiss r=3 (nredo=3), torch threads {torch.get_num_threads()}: k-means speed "
              f"{statistics.median(fkm) / statistics.median(okm):.2f}x (median pass; per round "
              f"{', '.join(f'{f / o:.2f}' for f, o in zip(fkm, okm))}), mean inertia "
              f"{oi.mean() / fi.mean():.4f} (float64), objects with ours <= faiss*(1+1e-6): "
              f"{np.mean(oi <= fi * (1 + 1e-6)):.2f}")
    for name, s, wall in crf_rows:
        rate = s["processed"] / s["seconds"] if s.get("seconds") else float("nan")
        bad = f", failed {s['failed']}, skipped {s['skipped']}" if s["failed"] or s["skipped"] else ""
        print(f"{name:<34} {rate:6.2f} images/s  ({s['processed']} images, {s['seconds']} s in "
              f"Stage.run, {wall:.1f} s wall{bad})")
    if any(w > 1 for w in args.crf_workers) and not args.no_crf:
        print("(workers>1: time includes spawning the worker processes)")
    print(f"total bench time {time.perf_counter() - t_start:.0f} s, load avg {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
