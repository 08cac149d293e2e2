#!/usr/bin/env python
"""Stage 1: object masks per image -> ``object_masks`` pseudo-labels (sharded, resumable).

    .venv/bin/python tools/label_objects.py --dataset pascal_part --output-dir pseudo_labels/object_masks \
        PROPOSAL_GENERATION.OBJECT_MASK_TYPE given PROPOSAL_GENERATION.TOTAL_PARTITIONS 8
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.stages.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("object_masks", description=__doc__.splitlines()[0]))
