#!/bin/bash
# Stage 6 on one node x 8 GPUs; see train.sh for what it writes. Same variables.
#SBATCH --job-name=pd_part_distillation_single
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=72:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
CONFIG=${CONFIG:-configs/PartDistillation.yaml}
source "$REPO/sh_files/part_distillation_training/train.sh"
