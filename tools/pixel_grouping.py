#!/usr/bin/env python
"""Stage 2: pixel grouping of stage-1 object masks -> ``pixel_grouping`` pseudo-labels.

    .venv/bin/python tools/pixel_grouping.py --config-file configs/pixel_grouping/swin_L.yaml \
        --input-dir pseudo_labels/object_masks --output-dir pseudo_labels/pixel_grouping \
        PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX 0
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.data.pseudo_labels import list_pseudo_labels  # noqa: E402
from part_distillation.stages.cli import setup, stage_parser  # noqa: E402
from part_distillation.stages.pixel_grouping import build_segmenter, run_pixel_grouping  # noqa: E402

if __name__ == "__main__":
    p = stage_parser(__doc__.splitlines()[0])
    p.add_argument("--input-dir", required=True, help="stage-1 pseudo-label folder")
    args = p.parse_args()
    cfg = setup(args)
    summary = run_pixel_grouping(cfg, list_pseudo_labels(args.input_dir), args.output_dir, build_segmenter(cfg))
    sys.exit(1 if summary.failed else 0)
