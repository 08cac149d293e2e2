#!/bin/bash
# Stage 4 (GPU, multi-node): part-proposal learning, a class-agnostic Mask2Former trained on the
# stage-3 segments. Official run: 8 nodes x 8 GPUs. One srun task per node starts one process per
# GPU (detectron2 launch, NCCL; the first node is the dist_url). Before the time limit the job
# requeues itself and the rerun continues from OUTPUT_DIR/last_checkpoint.
# Writes OUTPUT_DIR/{model_*.pth,last_checkpoint,metrics.json,log.txt,events.out.tfevents.*}.
#   sbatch sh_files/proposal_learning/train_multi.sh  # from the repository root
#   (or: tools/launch.py --nodes 8 --gpus-per-node 8 -- --config-file ... for submitit)
#SBATCH --job-name=pd_proposal_learning
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
CONFIG=${CONFIG:-configs/proposal_learning/swin_L.yaml}
DATASET_PATH=${DATASET_PATH:-pseudo_labels/${DATASET}/dcrf}  # stage-3 output
OUTPUT_DIR=${OUTPUT_DIR:-output/proposal_learning/${DATASET}}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
train_on_nodes --config-file "$CONFIG" PROPOSAL_LEARNING.DATASET_PATH "$DATASET_PATH" \
  OUTPUT_DIR "$OUTPUT_DIR" "${EXTRA[@]}"
