#!/bin/bash
# Few-shot part semantic segmentation on Pascal-Part: supervised fine-tuning with only
# LABEL_PERCENTAGE % of the training labels (FEWSHOT_LEARNING.LABEL_PERCENTAGE). One node x 8 GPUs;
# requeued before the time limit, the rerun resumes. Writes OUTPUT_DIR/ (checkpoints, metrics.json).
#   LABEL_PERCENTAGE=1 sbatch sh_files/fewshot_learning/semseg/pascal.sh   # from the repository root
#SBATCH --job-name=pd_fewshot_pascal
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}}
LABEL_PERCENTAGE=${LABEL_PERCENTAGE:-10}
CONFIG=${CONFIG:-configs/fewshot_learning/pascal_part_semseg_10pct.yaml}
WEIGHTS=${WEIGHTS:-output/part_distillation/imagenet_1k/model_final.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/fewshot_learning/semseg/pascal_part_${LABEL_PERCENTAGE}pct}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
train_on_nodes --config-file "$CONFIG" MODEL.WEIGHTS "$WEIGHTS" \
  FEWSHOT_LEARNING.LABEL_PERCENTAGE "$LABEL_PERCENTAGE" OUTPUT_DIR "$OUTPUT_DIR" "${EXTRA[@]}"
