#!/bin/bash
# Stage 4 on one node x 8 GPUs (official train_single.sh: batch 8, 80k iterations); see
# train_multi.sh for what it writes. Same variables.
#SBATCH --job-name=pd_proposal_learning_single
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
CONFIG=${CONFIG:-configs/proposal_learning/swinL_train_single.yaml}
source "$REPO/sh_files/proposal_learning/train_multi.sh"
