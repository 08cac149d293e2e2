#!/bin/bash
# Stage 2 (GPU): pixel grouping. Backbone features (res3+res4) of the instance-segmentation model,
# k-means inside every stage-1 object -> K part segments per object.
# One array task per partition: TOTAL_PARTITIONS = the array size, PARTITION_INDEX = the task id.
# Writes OUTPUT_DIR/<...>/<image_id>.json and OUTPUT_DIR/logs/summary_<i>of<n>.json; resubmitting
# the same array (or a requeue) resumes: finished images are skipped.
#   sbatch sh_files/proposal_generation/run.sh        # from the repository root
#SBATCH --job-name=pd_proposal_generation
#SBATCH --array=0-7
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
DATASET=${DATASET:-imagenet_1k}
CONFIG=${CONFIG:-configs/proposal_generation/swin_L.yaml}
INPUT_DIR=${INPUT_DIR:-pseudo_labels/${DATASET}/object_masks}      # stage-1 output
OUTPUT_DIR=${OUTPUT_DIR:-pseudo_labels/${DATASET}/proposal_generation}
CLASS_LIST=${CLASS_LIST:-}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
partition_opts PROPOSAL_GENERATION
run_requeueable "$PY" tools/pixel_grouping.py --config-file "$CONFIG" --input-dir "$INPUT_DIR" \
  --output-dir "$OUTPUT_DIR" "${PARTITION_OPTS[@]}" "${EXTRA[@]}"
