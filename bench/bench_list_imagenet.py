"""Listing time of an ImageNet-style tree (``<wnid>/*.JPEG``) through the streaming index
(:func:`part_distillation.data.imagenet.iter_imagenet`); prints figures, tests nothing.

Builds a synthetic tree of ``--classes`` x ``--per-class`` empty files in a temporary folder (the
index reads no image headers, so empty files list exactly like JPEGs), then times, over
``--repeats`` passes (median; the first pass after creation has a warm page cache, as a rerun
would):

* time to the first record (how soon a stage can start working),
* time for all records (``list(iter_imagenet(...))``),
* records/s, and the extrapolation to ImageNet-21K's 14.2M images.

Usage::

    nice .venv/bin/python bench/bench_list_imagenet.py [--classes 1000] [--per-class 100] [--repeats 3]
"""
import argparse
import os
import statistics
import tempfile
import time


from part_distillation.data.imagenet import imagenet_class_list, iter_imagenet


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        for c in range(args.classes):
            folder = os.path.join(root, f"n{c:08d}")
            os.mkdir(folder)
            for k in range(args.per_class):
                open(os.path.join(folder, f"n{c:08d}_{k}.JPEG"), "wb").close()
        n = args.classes * args.per_class
        print(f"built {n} files in {args.classes} class folders in {time.perf_counter() - t0:.1f} s")
        first, full = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            codes = imagenet_class_list(root)
            it = iter_imagenet(root, codes, codes)
            next(it)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            codes = imagenet_class_list(root)
            count = sum(1 for _ in iter_imagenet(root, codes, codes))
            full.append(time.perf_counter() - t0)
            assert count == n
        f, a = statistics.median(first), statistics.median(full)
        print(f"first record after {f * 1e3:.1f} ms; all {n} records in {a:.2f} s "
              f"({n / a:,.0f} records/s; 14.2M images -> about {14.2e6 / (n / a) / 60:.1f} min of listing, "
              f"streamed while work proceeds); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
