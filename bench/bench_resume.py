#!/usr/bin/env python
"""Time the stage runner's resume check over N finished items (default 100K, synthetic).

Builds ``N`` finished pseudo-label files laid out ``<out>/<class_dir>/<image_id>.json`` over
``--classes`` classes plus the done-manifest the runner writes (one line per file, written here in
bulk), then times a full ``Stage.run`` in which every item is already done (listing, partitioning,
stale-temp clean-up, manifest read, one ``stat`` per item, summary), and, for comparison, the
previous check (decode and validate every file, :func:`is_complete`) on a sample, extrapolated.

    .venv/bin/python bench/bench_resume.py               # 100K files, 1000 classes
    .venv/bin/python bench/bench_resume.py --items 20000 --keep   # keep the folder for inspection
"""
import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np


from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel,
                                                  is_complete, pseudo_label_path)
from part_distillation.stages.partition import WorkItem
from part_distillation.stages.stage import Stage
from part_distillation.stages.store import DoneManifest


class FinishedStage(Stage):
    """A stage whose every item is done: ``process`` must never run."""

    NAME = "bench_resume"
    CONFIG_NAMESPACE = "PROPOSAL_GENERATION"

    def list_items(self, records):
        return [WorkItem(r[1], r[0], None) for r in records]

    def process(self, item):
        raise AssertionError(f"{item.key} was not recognised as done")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--sample", type=int, default=500, help="files decoded to time the old check")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    out = tempfile.mkdtemp(prefix="bench_resume_")
    try:
        # one realistic file (a 256x256 image, one object, 4 parts), copied under every name
        mask = np.zeros((256, 256), bool)
        mask[40:220, 30:230] = True
        parts = [PartLabel(mask & (np.arange(256)[None, :] // 64 == k)) for k in range(4)]
        records = [(f"n{c:08d}", f"img_{i:07d}") for i, c in
                   ((i, i % args.classes) for i in range(args.items))]
        t0 = time.perf_counter()
        manifest = DoneManifest(out, "0of1")
        os.makedirs(manifest.folder)
        lines = []
        d = ImagePseudoLabel("", "", 256, 256, FinishedStage.NAME, [ObjectLabel("thing", mask, parts=parts)]).to_dict()
        for code, image_id in records:
            d["image"].update(file_name=f"/data/{image_id}.jpg", image_id=image_id, class_code=code)
            d["objects"][0]["class_code"] = code
            path = pseudo_label_path(out, image_id, code)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(d, f)
            lines.append(f"{code}/{image_id}\t{os.path.getsize(path)}\n")
        with open(manifest.path, "w") as f:
            f.writelines(lines)
        build = time.perf_counter() - t0
        print(f"built {args.items} finished files in {args.classes} class folders ({build:.0f} s)")

        cfg = setup_cfg("", [])
        stage = FinishedStage(cfg, out)
        t0 = time.perf_counter()
        summary = stage.run(records)
        run_s = time.perf_counter() - t0
        assert summary.resumed == args.items and summary.processed == 0
        t0 = time.perf_counter()
        done = manifest.done_keys()
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sample = records[: args.sample]
        assert all(is_complete(pseudo_label_path(out, i, c), FinishedStage.NAME) for c, i in sample)
        old_s = (time.perf_counter() - t0) / len(sample) * args.items
        print(f"resume check, {args.items} finished items: Stage.run {run_s:.2f} s in all "
              f"(manifest read {read_s:.2f} s, {len(done)} keys); "
              f"decoding every file (previous check) ~{old_s:.0f} s, extrapolated from {len(sample)}")
    finally:
        if args.keep:
            print(f"kept {out}")
        else:
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
