#!/usr/bin/env python
"""Main job of stages 1-3 on real input: object masks -> pixel grouping -> dense-CRF -> evaluation,
metrics and collages. Example (18 real Pascal-Part images, a few minutes on 2 CPU cores)::

    .venv/bin/python tools/run_part_pipeline.py --dataset pascal_part_examples \
        --output-dir output/pascal_part_examples --baselines

``--dataset`` takes a registered name (pascal_part, pascal_part_examples, ade20k_part_subset, ...)
or a folder (Pascal-Part layout, or any folder of images).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.stages.cli import setup, stage_parser  # noqa: E402
from part_distillation.stages.pipeline import (BASELINE_VARIANTS, DEFAULT_VARIANT,  # noqa: E402
                                               OFFICIAL_VARIANTS, run_pipeline)


def main():
    p = stage_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="pascal_part_examples", help="registered dataset name or folder")
    p.add_argument("--baselines", action="store_true", help="also run random-init, RGB+XY k-means and 2x2 grid")
    p.add_argument("--official-variants", action="store_true",
                   help="also run the official dot-metric / un-normalised feature settings")
    p.add_argument("--num-collages", type=int, default=8)
    p.add_argument("--max-images", type=int, default=None)
    args = p.parse_args()
    cfg = setup(args)
    variants = dict(DEFAULT_VARIANT)
    if args.official_variants:
        variants.update(OFFICIAL_VARIANTS)
    if args.baselines:
        variants.update(BASELINE_VARIANTS)
    metrics = run_pipeline(cfg, args.dataset, args.output_dir, variants, args.num_collages, args.max_images,
                           config_file=args.config_file)
    print(json.dumps({k: v["segments"] for k, v in metrics["results"].items()}, indent=1))
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')} and collages/")


if __name__ == "__main__":
    main()
