#!/usr/bin/env python
"""Stage 3: dense-CRF refinement of stage-2 segments -> ``dcrf`` pseudo-labels.

    .venv/bin/python tools/dense_crf.py --input-dir pseudo_labels/proposal_generation \
        --output-dir pseudo_labels/dcrf DENSE_CRF.NUM_WORKERS 16
"""
import sys

from part_distillation.stages.cli import main

if __name__ == "__main__":
    sys.exit(main("dcrf", description=__doc__.splitlines()[0]))
