#!/bin/bash
# Stage 1 on a SLURM cluster: one array task per partition (SLURM_ARRAY_TASK_ID = partition index).
#SBATCH --job-name=pd_stage1
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x_%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=${DATASET:-pascal_part}
OUT=${OUT:-pseudo_labels/${DATASET}/object_masks}
.venv/bin/python tools/label_objects.py --config-file configs/pixel_grouping/swin_L.yaml \
  --dataset "$DATASET" --output-dir "$OUT" \
  PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX -1
