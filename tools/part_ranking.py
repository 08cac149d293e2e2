#!/usr/bin/env python
"""Stage 5: part ranking of object masks with the stage-4 model -> ``part_ranking`` pseudo-labels.

    .venv/bin/python tools/part_ranking.py --config-file configs/part_ranking/swin_L.yaml \
        --input-dir pseudo_labels/object_masks --output-dir pseudo_labels/part_ranking \
        MODEL.WEIGHTS output/proposal_learning/swin_L/model_final.pth \
        PART_RANKING.TOTAL_PARTITIONS 8 PART_RANKING.PARTITION_INDEX 0
"""
import sys

from part_distillation.stages.cli import main

if __name__ == "__main__":
    sys.exit(main("part_ranking", description=__doc__.splitlines()[0]))
