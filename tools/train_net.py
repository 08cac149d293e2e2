#!/usr/bin/env python
"""Train or evaluate with detectron2: the task follows MODEL.META_ARCHITECTURE (official names):
``ProposalModel`` (stage 4), ``PartDistillationModel`` (stage 6), ``SupervisedModel`` (supervised /
few-shot baselines); ``PartRankingModel`` and ``ProposalGenerationModel`` (the official stage
scripts) run their stage tool with the same config, writing to OUTPUT_DIR; a ``LabelingDetic``
config (configs/DeticLabeling.yaml) runs stage 1 with the Detic labeler
(:func:`part_distillation.stages.cli.detic_labeling_argv`).
``--eval-only`` writes OUTPUT_DIR/inference/<dataset>/results.json; VIS_OUTPUT_DIR gets a few
prediction overlays per evaluated dataset.

Examples::

    # train the CPU slice on stage-3 pseudo-labels
    .venv/bin/python tools/train_net.py --config-file configs/proposal_learning/tiny_cpu.yaml \
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
import sys

from detectron2.engine import default_argument_parser

from part_distillation.config import setup_cfg
from part_distillation.engine.launch import launch
from part_distillation.engine.trainer import STAGE_META_ARCHITECTURES, main
from part_distillation.stages import cli


def stage_of(args):
    """The stage (STAGE_REGISTRY name) that runs the config of ``args`` when its
    MODEL.META_ARCHITECTURE is an official stage script's (``PartRankingModel``,
    ``ProposalGenerationModel``, ``LabelingDetic``), else ``None``."""
    cfg = setup_cfg(args.config_file, args.opts)
    return STAGE_META_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE, ("",))[0] or None, cfg


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    detic = cli.detic_labeling_argv(args.config_file, args.opts)
    if detic:  # official detic_labeling_net.py: stage 1 with the Detic labeler (Detic keys, own config)
        sys.exit(cli.main("object_masks", detic))
    stage, cfg = stage_of(args)
    if stage:
        # official part_ranking_train_net.py / proposal_generation_net.py / detic_labeling_net.py:
        # the stage tool with this config, writing to OUTPUT_DIR
        sys.exit(cli.main(stage, ["--config-file", args.config_file, "--output-dir", cfg.OUTPUT_DIR, *args.opts]))
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
