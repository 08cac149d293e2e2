#!/bin/bash
# Stage 3 (CPU): dense-CRF refinement of the stage-2 segments, a worker pool of
# SLURM_CPUS_PER_TASK processes per array task.
# One array task per partition: TOTAL_PARTITIONS = the array size, PARTITION_INDEX = the task id.
# Writes OUTPUT_DIR/<...>/<image_id>.json and OUTPUT_DIR/logs/summary_<i>of<n>.json; resumable.
#   sbatch sh_files/dcrf/run.sh                       # from the repository root
#SBATCH --job-name=pd_dcrf
#SBATCH --array=0-7
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --partition=cpu
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
DATASET=${DATASET:-imagenet_1k}
CONFIG=${CONFIG:-configs/proposal_generation/swin_L.yaml}
INPUT_DIR=${INPUT_DIR:-pseudo_labels/${DATASET}/proposal_generation}    # stage-2 output
OUTPUT_DIR=${OUTPUT_DIR:-pseudo_labels/${DATASET}/dcrf}
PARTITION_NAMESPACE=${PARTITION_NAMESPACE:-DENSE_CRF}    # stage 3 shards by DENSE_CRF.TOTAL_PARTITIONS / PARTITION_INDEX
NUM_WORKERS=${NUM_WORKERS:-${SLURM_CPUS_PER_TASK:-4}}
CLASS_LIST=${CLASS_LIST:-}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
partition_opts "$PARTITION_NAMESPACE"
run_requeueable "$PY" tools/dense_crf.py --config-file "$CONFIG" --input-dir "$INPUT_DIR" \
  --output-dir "$OUTPUT_DIR" DENSE_CRF.NUM_WORKERS "$NUM_WORKERS" "${PARTITION_OPTS[@]}" "${EXTRA[@]}"
