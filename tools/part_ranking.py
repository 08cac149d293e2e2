#!/usr/bin/env python
"""Stage 5: part ranking of object masks with the stage-4 model -> ``part_ranking`` pseudo-labels.

    .venv/bin/python tools/part_ranking.py --config-file configs/part_ranking/swin_L.yaml \
        --input-dir pseudo_labels/object_masks --output-dir pseudo_labels/part_ranking \
        MODEL.WEIGHTS output/part_proposal/swin_L/model_final.pth \
        PART_RANKING.TOTAL_PARTITIONS 8 PART_RANKING.PARTITION_INDEX 0
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from part_distillation.stages.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("part_ranking", description=__doc__.splitlines()[0]))
