#!/bin/bash
# Stage 4 (GPU): part-proposal learning on the stage-3 pseudo-labels, multi-node with
# detectron2's launcher (one task per node, 8 GPUs each). Resubmitting resumes from
# OUTPUT_DIR/last_checkpoint with the same iteration and LR schedule.
#SBATCH --job-name=pd_stage4
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=48:00:00
#SBATCH --output=logs/%x_%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=${DATASET:-pascal_part}
ROOT=${ROOT:-pseudo_labels/${DATASET}}
CONFIG=${CONFIG:-configs/part_proposal/swin_L.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-output/part_proposal/${DATASET}}
MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-$((20000 + SLURM_JOB_ID % 10000))}
export CONFIG ROOT OUTPUT_DIR DIST_URL="tcp://${MASTER}:${PORT}"
# SLURM_NODEID differs per node, so it is expanded inside each task
srun bash -c '.venv/bin/python tools/train_net.py --config-file "$CONFIG" --resume \
  --num-gpus 8 --num-machines "$SLURM_NNODES" --machine-rank "$SLURM_NODEID" --dist-url "$DIST_URL" \
  PROPOSAL_LEARNING.DATASET_PATH "$ROOT/dense_crf" OUTPUT_DIR "$OUTPUT_DIR"'
