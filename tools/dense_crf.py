#!/usr/bin/env python
"""Stage 3: dense-CRF refinement of stage-2 segments -> ``dense_crf`` pseudo-labels.

    .venv/bin/python tools/dense_crf.py --input-dir pseudo_labels/pixel_grouping \
        --output-dir pseudo_labels/dense_crf DENSE_CRF.NUM_WORKERS 16
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.data.pseudo_labels import list_pseudo_labels  # noqa: E402
from part_distillation.stages.cli import setup, stage_parser  # noqa: E402
from part_distillation.stages.dense_crf import run_dense_crf  # noqa: E402

if __name__ == "__main__":
    p = stage_parser(__doc__.splitlines()[0])
    p.add_argument("--input-dir", required=True, help="stage-2 pseudo-label folder")
    args = p.parse_args()
    cfg = setup(args)
    summary = run_dense_crf(cfg, list_pseudo_labels(args.input_dir), args.output_dir)
    sys.exit(1 if summary.failed else 0)
