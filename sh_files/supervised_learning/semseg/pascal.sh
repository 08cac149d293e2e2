#!/bin/bash
# Supervised part semantic segmentation on Pascal-Part (fine-tuning evaluation of the learned
# parts): tools/train_net.py with a configs/supervised_learning/ config, one node x 8 GPUs; requeued
# before the time limit, the rerun resumes. Writes OUTPUT_DIR/ (checkpoints, metrics.json, mIoU).
#   sbatch sh_files/supervised_learning/semseg/pascal.sh   # from the repository root
#SBATCH --job-name=pd_supervised_pascal
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
CONFIG=${CONFIG:-configs/supervised_learning/pascal_part_semseg.yaml}
WEIGHTS=${WEIGHTS:-output/part_distillation/imagenet_1k/model_final.pth}  # initialisation
OUTPUT_DIR=${OUTPUT_DIR:-output/supervised_learning/semseg/pascal_part}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
train_on_nodes --config-file "$CONFIG" MODEL.WEIGHTS "$WEIGHTS" OUTPUT_DIR "$OUTPUT_DIR" "${EXTRA[@]}"
