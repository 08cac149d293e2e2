#!/usr/bin/env python
"""Evaluate a pseudo-label folder (any stage) against a dataset's ground-truth parts.

    .venv/bin/python tools/evaluate_parts.py --dataset pascal_part_examples \
        --pseudo-labels output/pascal_part_examples/pretrained/dcrf
"""
import argparse
import json
import os


from part_distillation.data import resolve_dataset
from part_distillation.stages.evaluate import evaluate_pseudo_labels
from part_distillation.utils.io import atomic_write_json

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="registered dataset name or Pascal-Part-layout folder")
    p.add_argument("--pseudo-labels", required=True, help="pseudo-label folder to evaluate")
    p.add_argument("--stage", default=None,
                   help="stage the files must come from (object_masks, proposal_generation, dcrf, ...); "
                        "default: any, but one stage for the whole folder")
    p.add_argument("--output", default="", help="metrics JSON path (default: <pseudo-labels>/logs/metrics.json)")
    args = p.parse_args()
    metrics = evaluate_pseudo_labels(args.pseudo_labels, resolve_dataset(args.dataset), args.stage)
    out = args.output or os.path.join(args.pseudo_labels, "logs", "metrics.json")
    atomic_write_json(out, metrics, indent=1)
    print(json.dumps(metrics["segments"], indent=1))
    for protocol, res in metrics.get("unsupervised", {}).items():  # labelled parts (stage 5 on)
        print(protocol, json.dumps({k: v for k, v in res.items() if k != "per_class"}))
    print(f"wrote {out}")
