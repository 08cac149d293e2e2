"""Peak memory and time of one stage-3 (dense-CRF) worker on one large image; prints figures, tests nothing.

A synthetic stage-2 pseudo-label is written to a temporary folder: an RGB image of
``--megapixels`` (4:3, smooth random colours, JPEG quality 90 or PNG), ``--objects`` elliptic
objects (the first covers about a third of the image, the others are smaller) each split into
``--parts`` angular sectors, and ``config["INPUT_SIZE"]`` = ``--input-size`` (stage 2's network
input size, which stage 3 resizes to). Masks are drawn on a grid 8x coarser than the image and
upsampled, so their RLEs stay short.

A fresh Python process (``OMP_NUM_THREADS=1``) then does what one ``DenseCRFStage`` worker does
for that image: ``CRFImageWorker(path)`` with the default ``DENSE_CRF`` parameters and
``--mode``, then writing its output (``ImagePseudoLabel.to_dict`` + JSON). It prints:

* ``rss_before``: MiB resident before the call (Python, numpy, torch, detectron2 imported);
* ``peak_extra``: MiB of peak resident memory during the call above ``rss_before``;
* ``crf_s`` / ``write_s``: wall-clock seconds of the worker call and of the write.

The peak is ``VmHWM`` of ``/proc/self/status`` after resetting it through
``/proc/self/clear_refs`` just before the call (Linux only). ``ru_maxrss`` is not used: a child
process inherits its parent's high-water mark across ``exec``, which would hide any peak lower
than this script's own (about 1 GB at 80 MP while it builds the image).

Usage::

    nice .venv/bin/python bench/bench_crf_memory.py [--megapixels 80] [--objects 3] [--parts 4]
        [--mode keep_parts|official] [--format jpg|png] [--input-size 384 640]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_mib(key: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    raise KeyError(key)


def reset_peak() -> None:
    """Reset this process's ``VmHWM`` to its current resident size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def synthetic_stage2(folder: str, megapixels: float, n_objects: int, n_parts: int, fmt: str,
                     input_size) -> str:
    """Write the image and its stage-2 pseudo-label under ``folder``; returns the label's path."""
    import numpy as np
    from PIL import Image

    from part_distillation.data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel, save_pseudo_label

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8))
    image_path = os.path.join(folder, f"big.{fmt}")
    coarse.resize((width, height), Image.BILINEAR).save(image_path, **({"quality": 90} if fmt == "jpg" else {}))
    # masks on a grid 8x coarser than the image, upsampled by repeating rows and columns
    gh, gw = -(-height // 8), -(-width // 8)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    rows, cols = np.arange(height) // 8, np.arange(width) // 8
    objects = []
    for k in range(n_objects):
        if k == 0:  # about a third of the image
            cy, cx, ry, rx = gh * 0.5, gw * 0.45, gh * 0.36, gw * 0.33
        else:
            cy, cx = gh * rng.uniform(0.15, 0.85), gw * rng.uniform(0.1, 0.9)
            ry, rx = gh * rng.uniform(0.06, 0.12), gw * rng.uniform(0.06, 0.12)
        angle = np.arctan2(yy - cy, xx - cx)
        ragged = 1 + 0.05 * np.sin(7 * angle + k)
        obj = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= ragged ** 2
        sector = ((angle + np.pi) / (2 * np.pi) * n_parts).astype(int) % n_parts
        full = obj[rows][:, cols]
        parts = [PartLabel((obj & (sector == j))[rows][:, cols]) for j in range(n_parts)]
        objects.append(ObjectLabel("thing", full, "n00000001", parts=parts))
        del full, parts
    label = ImagePseudoLabel(image_path, "big", height, width, "pixel_grouping", objects,
                             config={"INPUT_SIZE": list(input_size)})
    return save_pseudo_label(os.path.join(folder, "s2"), label)


def child(path: str, out_dir: str, mode: str) -> None:
    """Run one worker call on ``path`` and write its output; print the figures as JSON."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from part_distillation.config import get_part_distillation_cfg
    from part_distillation.stages.dense_crf import PARAM_KEYS, CRFImageWorker
    from part_distillation.utils.io import atomic_write_json

    c = get_part_distillation_cfg().DENSE_CRF
    worker = CRFImageWorker({k: c[k] for k in PARAM_KEYS}, mode)
    reset_peak()
    before = status_mib("VmRSS")
    t0 = time.perf_counter()
    label, counters = worker(path)
    t1 = time.perf_counter()
    atomic_write_json(os.path.join(out_dir, "out.json"), label.to_dict())
    t2 = time.perf_counter()
    print(json.dumps({"rss_before": before, "peak_extra": status_mib("VmHWM") - before,
                      "crf_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2),
                      "parts": [len(o.parts) for o in label.objects]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--megapixels", type=float, default=80)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--mode", default="keep_parts", choices=["keep_parts", "official"])
    ap.add_argument("--format", default="jpg", choices=["jpg", "png"])
    ap.add_argument("--input-size", type=int, nargs=2, default=[384, 640], metavar=("MIN", "MAX"))
    ap.add_argument("--child", nargs=3, metavar=("LABEL", "OUT_DIR", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = synthetic_stage2(tmp, args.megapixels, args.objects, args.parts, args.format, args.input_size)
        print(f"synthetic stage-2 input ({args.megapixels:g} MP {args.format}, {args.objects} objects x "
              f"{args.parts} parts, INPUT_SIZE {args.input_size}) written in {time.perf_counter() - t0:.1f} s")
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, tmp, args.mode],
                             capture_output=True, text=True, cwd=ROOT, env=env)
        if out.returncode:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"mode {args.mode}: rss_before {r['rss_before']} MiB, peak_extra {r['peak_extra']} MiB, "
              f"crf_s {r['crf_s']}, write_s {r['write_s']}, parts per object {r['parts']}")


if __name__ == "__main__":
    main()
