#!/usr/bin/env python
"""Run any registered stage, sharded and resumable (the one entry point of the stage tools).

    .venv/bin/python tools/run_stage.py --stage proposal_generation --input-dir pseudo_labels/object_masks \
        --output-dir pseudo_labels/proposal_generation PROPOSAL_GENERATION.TOTAL_PARTITIONS 8
"""
import sys

from part_distillation.stages.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__.splitlines()[0]))
