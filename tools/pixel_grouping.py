#!/usr/bin/env python
"""Stage 2: pixel grouping of stage-1 object masks -> ``pixel_grouping`` pseudo-labels.

    .venv/bin/python tools/pixel_grouping.py --config-file configs/proposal_generation/swin_L.yaml \
        --input-dir pseudo_labels/object_masks --output-dir pseudo_labels/pixel_grouping \
        PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX 0
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.stages.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pixel_grouping", description=__doc__.splitlines()[0]))
