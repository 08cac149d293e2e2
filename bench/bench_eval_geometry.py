"""How much the evaluation's ground-truth geometry moves the unsupervised metrics; prints figures,
tests nothing.

A stage-6 checkpoint of a main-job run with ``--stages 1-6`` (``<run>/part_distillation/
model_final.pth``, its stage-5 labels ``<run>/part_ranking/`` for the class vocabulary) is
evaluated the ``tools/train_net.py --eval-only`` way (the trainer's test loader and evaluators,
match and evaluate on the same images, the official usage) once per
CUSTOM_DATASETS.EVAL_GEOMETRY value:

* ``original``: the masks as annotated, at the original size;
* ``upsampled``: the official Pascal-Part / Cityscapes-Part path (masks at the network input
  size, bilinear > 0 back to the original size);
* ``input``: the official PartImageNet path (everything at the network input size).

Printed: C-/A-mIoU of both protocols (``official``, ``clean``), the number of classes whose
official C-mIoU is 0/0 (NaN; the C-mIoU without them is printed in brackets), and each
figure's change against ``original``.

Usage::

    .venv/bin/python tools/run_part_pipeline.py --dataset pascal_part_examples \\
        --output-dir output/six_stages/pascal_part_examples --stages 1-6 ...
    .venv/bin/python bench/bench_eval_geometry.py --dataset pascal_part_examples \\
        --run output/six_stages/pascal_part_examples
"""
import argparse
import math
import os
import tempfile

import numpy as np

GEOMETRIES = ("original", "upsampled", "input")


def evaluate(config: str, run: str, dataset: str, geometry: str, num_clusters: int, opts) -> dict:
    """Unsupervised results (``{"unsupervised_official": {...}, "unsupervised_clean": {...}}``)
    of the run's stage-6 checkpoint on ``dataset`` with ground-truth ``geometry``."""
    from detectron2.checkpoint import DetectionCheckpointer

    from part_distillation.config import setup_cfg
    from part_distillation.engine.trainer import Trainer

    weights = os.path.join(run, "part_distillation", "model_final.pth")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: run tools/run_part_pipeline.py --stages 1-6 into {run} first")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = setup_cfg(config, ["OUTPUT_DIR", tmp, "MODEL.WEIGHTS", weights,
                                 "PART_DISTILLATION.DATASET_PATH", os.path.join(run, "part_ranking"),
                                 "PART_DISTILLATION.NUM_PART_CLASSES", num_clusters,
                                 "DATASETS.TEST", (dataset,), "VIS_OUTPUT_DIR", "",
                                 "CUSTOM_DATASETS.EVAL_GEOMETRY", geometry, *opts])
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(weights)
        model.eval()
        results = Trainer.test(cfg, model)
    return results.get(dataset, results)


def nan_free_mean(summary: dict) -> float:
    """Mean of the per-class C-mIoU entries that are numbers (``mIoU-<class>`` keys), else NaN."""
    values = [v for k, v in summary.items() if k.startswith("mIoU-") and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="registered dataset name of the run's images")
    p.add_argument("--run", required=True, help="output folder of a main-job run with --stages 1-6")
    p.add_argument("--config-file", default="configs/part_distillation/tiny_cpu.yaml",
                   help="the run's stage-6 config (--distillation-config)")
    p.add_argument("--num-clusters", type=int, default=8, help="the run's PART_RANKING.NUM_CLUSTERS")
    p.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=GEOMETRIES)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="more KEY VALUE overrides")
    args = p.parse_args()
    rows = {g: evaluate(args.config_file, args.run, args.dataset, g, args.num_clusters, args.opts)
            for g in args.geometries}
    keys = [("unsupervised_official", "C-mIoU"), ("unsupervised_official", "A-mIoU"),
            ("unsupervised_clean", "C-mIoU"), ("unsupervised_clean", "A-mIoU")]
    print(f"\n{args.dataset}, stage-6 checkpoint of {args.run} (percent; change against original)\n")
    print("| geometry | C-mIoU official [without NaN classes] (NaN classes) | A-mIoU official | "
          "C-mIoU clean | A-mIoU clean |")
    print("|---|---|---|---|---|")
    base = rows.get("original")
    for g, res in rows.items():
        cells = []
        for protocol, metric in keys:
            summary = res[protocol]
            value = summary[metric]
            if metric == "C-mIoU" and protocol == "unsupervised_official":
                clean_mean = nan_free_mean(summary)
                cell = f"{value:.1f} [{clean_mean:.1f}] ({summary.get('C-mIoU_nan_classes', 0)})"
                ref = nan_free_mean(base[protocol]) if base else None
                value = clean_mean
            else:
                cell = f"{value:.1f}"
                ref = base[protocol][metric] if base else None
            if base is not None and g != "original" and not math.isnan(value):
                cell += f" ({value - ref:+.1f})"
            cells.append(cell)
        print(f"| {g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
