#!/bin/bash
# Stage 1 on the first images of one partition only (PROPOSAL_GENERATION.DEBUG True), one GPU,
# into OUTPUT_DIR (default pseudo_labels/<DATASET>/object_masks_debug): a quick check of the
# labeler set-up before the array job run.sh. Variables as run.sh.
#   sbatch sh_files/detic/debug.sh   # from the repository root
#SBATCH --job-name=pd_detic_debug
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=1:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
DATASET=${DATASET:-imagenet_1k}
OUTPUT_DIR=${OUTPUT_DIR:-pseudo_labels/${DATASET}/object_masks_debug}
TOTAL_PARTITIONS=${TOTAL_PARTITIONS:-1}
PARTITION_INDEX=${PARTITION_INDEX:-0}
EXTRA_OPTS=${EXTRA_OPTS:-PROPOSAL_GENERATION.DEBUG True}
source "$REPO/sh_files/detic/run.sh"
