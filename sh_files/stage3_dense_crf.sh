#!/bin/bash
# Stage 3 (CPU): dense-CRF with a worker pool per array task.
#SBATCH --job-name=pd_stage3
#SBATCH --array=0-7
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x_%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=${DATASET:-pascal_part}
ROOT=${ROOT:-pseudo_labels/${DATASET}}
.venv/bin/python tools/dense_crf.py --config-file configs/pixel_grouping/swin_L.yaml \
  --input-dir "$ROOT/pixel_grouping" --output-dir "$ROOT/dense_crf" \
  DENSE_CRF.NUM_WORKERS "${SLURM_CPUS_PER_TASK:-16}" \
  PROPOSAL_GENERATION.TOTAL_PARTITIONS 8 PROPOSAL_GENERATION.PARTITION_INDEX -1
