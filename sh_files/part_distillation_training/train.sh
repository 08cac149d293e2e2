#!/bin/bash
# Stage 6 (GPU, multi-node): PartDistillation self-training on the stage-5 part labels (official:
# 8 nodes x 8 GPUs). One srun task per node, one process per GPU; requeued before the time limit,
# the rerun continues from OUTPUT_DIR/last_checkpoint.
# Writes OUTPUT_DIR/{model_*.pth,last_checkpoint,metrics.json,log.txt,events.out.tfevents.*}.
#   sbatch sh_files/part_distillation_training/train.sh   # from the repository root
#SBATCH --job-name=pd_part_distillation
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=72:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
DATASET=${DATASET:-imagenet_1k}
CONFIG=${CONFIG:-configs/part_distillation/official/swinL_IN21K.yaml}
DATASET_PATH=${DATASET_PATH:-pseudo_labels/${DATASET}/part_ranking}  # stage-5 output
OUTPUT_DIR=${OUTPUT_DIR:-output/part_distillation/${DATASET}}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
train_on_nodes --config-file "$CONFIG" PART_DISTILLATION.DATASET_PATH "$DATASET_PATH" \
  OUTPUT_DIR "$OUTPUT_DIR" "${EXTRA[@]}"
