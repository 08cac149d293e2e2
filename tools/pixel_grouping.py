#!/usr/bin/env python
"""Stage 2, proposal generation: pixel grouping of stage-1 object masks -> ``proposal_generation`` pseudo-labels.

    .venv/bin/python tools/pixel_grouping.py --config-file configs/proposal_generation/swin_L.yaml \
        --input-dir pseudo_labels/object_masks --output-dir pseudo_labels/proposal_generation \
        PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX 0
"""
import sys

from part_distillation.stages.cli import main

if __name__ == "__main__":
    sys.exit(main("proposal_generation", description=__doc__.splitlines()[0]))
