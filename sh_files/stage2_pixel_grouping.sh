#!/bin/bash
# Stage 2 (GPU): pixel grouping with the Swin-L Mask2Former backbone, 8 array tasks.
# Resubmitting the same array resumes: finished images are skipped.
#SBATCH --job-name=pd_stage2
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x_%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=${DATASET:-pascal_part}
ROOT=${ROOT:-pseudo_labels/${DATASET}}
.venv/bin/python tools/pixel_grouping.py --config-file configs/pixel_grouping/swin_L.yaml \
  --input-dir "$ROOT/object_masks" --output-dir "$ROOT/pixel_grouping" \
  PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX -1
