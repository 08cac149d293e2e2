#!/bin/bash
#SBATCH --job-name=pd_supervised_semseg_pascal_single
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
# Supervised part semantic segmentation on Pascal-Part, one GPU (official pascal_single.sh).
# Official path (PartDistillation sh_files, commit a0bb459); variables and outputs: sh_files/supervised_learning/train.sh.
#   sbatch sh_files/supervised_learning/semseg/pascal_single.sh   # from the repository root; e.g. EXTRA_OPTS="SOLVER.MAX_ITER 100" or trailing KEY VALUE pairs
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}}
DATASET=${DATASET:-pascal_part}
TASK=${TASK:-semseg}
LABEL_PERCENTAGE=${LABEL_PERCENTAGE:-100}
source "$REPO/sh_files/supervised_learning/train.sh"
