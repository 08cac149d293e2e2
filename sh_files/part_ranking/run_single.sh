#!/bin/bash
# Stage 5 in one job on one GPU (no array: one partition of everything); variables and outputs as run.sh.
#   sbatch sh_files/part_ranking/run_single.sh   # from the repository root
#SBATCH --job-name=pd_part_ranking_single
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=72:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
TOTAL_PARTITIONS=${TOTAL_PARTITIONS:-1}
PARTITION_INDEX=${PARTITION_INDEX:-0}
source "$REPO/sh_files/part_ranking/run.sh"
