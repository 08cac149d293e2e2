#!/usr/bin/env python
"""Train or evaluate the part-proposal model (PartDistillation stage 4) or the PartDistillation
self-training model (stage 6, configs/part_distillation/*, chosen by INPUT.DATASET_MAPPER_NAME
"part_distillation") with detectron2.

Examples::

    # train the CPU slice on stage-3 pseudo-labels
    .venv/bin/python tools/train_net.py --config-file configs/part_proposal/tiny_cpu.yaml \
        PROPOSAL_LEARNING.DATASET_PATH /tmp/pd/s3_keep_parts OUTPUT_DIR output/tiny
    # continue a killed run from OUTPUT_DIR/last_checkpoint (same iteration, LR, optimizer state)
    .venv/bin/python tools/train_net.py --config-file ... --resume OUTPUT_DIR output/tiny ...
    # evaluate a checkpoint on DATASETS.TEST (AR@K of part proposals); entries are registered
    # names or folders in a known layout, e.g. "('../shared/data/ade20k_part_subset',)"
    .venv/bin/python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/tiny/model_final.pth
    # stage 6 on stage-5 labels; --eval-only then also reports the label-matched C-mIoU / A-mIoU
    .venv/bin/python tools/train_net.py --config-file configs/part_distillation/tiny_cpu.yaml \
        PART_DISTILLATION.DATASET_PATH /tmp/pd/s5 OUTPUT_DIR output/part_distillation/tiny

Checkpoints are written atomically; ``--resume`` skips (and moves aside as ``*.corrupt``)
truncated or corrupt checkpoints and continues from the newest readable one.

Options: ``--num-gpus --num-machines --machine-rank --dist-url`` (detectron2 ``launch``
semantics; without CUDA ``--num-gpus N`` starts N CPU processes with gloo), trailing ``KEY VALUE``
pairs override the config. ``tools/launch.py`` submits such a run to SLURM.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.engine import default_argument_parser  # noqa: E402

from part_distillation.engine.launch import launch  # noqa: E402
from part_distillation.engine.trainer import main  # noqa: E402

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
