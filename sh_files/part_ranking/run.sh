#!/bin/bash
# Stage 5 (GPU): part ranking. The stage-4 model proposes parts inside every object; their query
# features are clustered per object class (PART_RANKING.NUM_CLUSTERS) and every part gets its
# cluster id as label. Partitioned by class: one array task owns all images of its classes.
# Writes OUTPUT_DIR/<class_code>/<image_id>.json, the per-class centroids and
# OUTPUT_DIR/logs/summary_<i>of<n>.json; resumable.
# With PROPOSALS_DIR set, the stage-4 predictor (stage proposal_learning) first writes each object's
# segments and query features there, and ranking clusters those (one network pass less per image).
#   sbatch sh_files/part_ranking/run.sh               # from the repository root
#   PROPOSALS_DIR=pseudo_labels/imagenet_1k/proposal_learning sbatch sh_files/part_ranking/run.sh
#SBATCH --job-name=pd_part_ranking
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
CONFIG=${CONFIG:-configs/part_ranking/swin_L.yaml}
WEIGHTS=${WEIGHTS:-output/proposal_learning/${DATASET}/model_final.pth}  # stage-4 checkpoint
INPUT_DIR=${INPUT_DIR:-pseudo_labels/${DATASET}/object_masks}            # stage-1 objects
OUTPUT_DIR=${OUTPUT_DIR:-pseudo_labels/${DATASET}/part_ranking}
PROPOSALS_DIR=${PROPOSALS_DIR:-}
CLASS_LIST=${CLASS_LIST:-}
# official run.sh filters (area ratio / score before clustering and before labelling)
EXTRA_OPTS=${EXTRA_OPTS:-PART_RANKING.MIN_AREA_RATIO_1 0.05 PART_RANKING.MIN_SCORE_1 0.3 PART_RANKING.MIN_AREA_RATIO_2 0.05 PART_RANKING.MIN_SCORE_2 0.1}
source "$REPO/sh_files/common.sh"
partition_opts PART_RANKING
PROPOSALS=()  # the stage-4 predictor first, with stage 5's pass-1 settings and partitions
if [ -n "$PROPOSALS_DIR" ]; then PROPOSALS=(--proposals-dir "$PROPOSALS_DIR"); fi
run_requeueable "$PY" tools/part_ranking.py --config-file "$CONFIG" --output-dir "$OUTPUT_DIR" "${PROPOSALS[@]}" \
  MODEL.WEIGHTS "$WEIGHTS" PART_RANKING.DATASET_PATH "$INPUT_DIR" "${PARTITION_OPTS[@]}" "${EXTRA[@]}"
