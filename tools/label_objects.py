#!/usr/bin/env python
"""Stage 1: object masks per image -> ``object_masks`` pseudo-labels (sharded, resumable).

    .venv/bin/python tools/label_objects.py --dataset pascal_part --output-dir pseudo_labels/object_masks \
        PROPOSAL_GENERATION.OBJECT_MASK_TYPE given PROPOSAL_GENERATION.TOTAL_PARTITIONS 8
    # Detic (optional extra, INSTALL.md), classes prompted with CLIP embeddings
    .venv/bin/python tools/label_objects.py --dataset imagenet_1k --output-dir pseudo_labels/object_masks \
        --labeler-config configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml \
        PROPOSAL_GENERATION.OBJECT_MASK_TYPE detic PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH weights/detic/clip_a+cname.npz
"""
import sys

from part_distillation.stages.cli import main

if __name__ == "__main__":
    sys.exit(main("object_masks", description=__doc__.splitlines()[0]))
