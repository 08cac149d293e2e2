#!/bin/bash
#SBATCH --job-name=pd_fewshot_semseg_part_imagenet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
# Few-shot part semantic segmentation on part_imagenet: LABEL_PERCENTAGE % of its training labels.
# Official path (PartDistillation sh_files, commit a0bb459); variables and outputs: sh_files/supervised_learning/train.sh.
#   sbatch sh_files/fewshot_learning/semseg/part_imagenet.sh   # from the repository root; e.g. EXTRA_OPTS="SOLVER.MAX_ITER 100" or trailing KEY VALUE pairs
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}}
DATASET=${DATASET:-part_imagenet}
TASK=${TASK:-semseg}
LABEL_PERCENTAGE=${LABEL_PERCENTAGE:-10}
TEST=${TEST:-part_imagenet_valtest}
WEIGHTS=${WEIGHTS:-weights/PartDistillation/IN1K+Human/part_distillation_model.pth}  # the model fine-tuned
source "$REPO/sh_files/supervised_learning/train.sh"
