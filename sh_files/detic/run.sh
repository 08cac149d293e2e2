#!/bin/bash
# Stage 1 (GPU): object masks for every image with an open-vocabulary labeler (Detic by default;
# LABELER=detectron2 LABELER_CONFIG=<model config> for a detectron2 instance-segmentation model
# such as the COCO Mask2Former, LABELER=given LABELER_CONFIG= for the dataset's own masks).
# One array task per partition: TOTAL_PARTITIONS = the array size, PARTITION_INDEX = the task id.
# Writes OUTPUT_DIR/<class_code>/<image_id>.json and OUTPUT_DIR/logs/summary_<i>of<n>.json;
# resubmitting the same array resumes (finished images are skipped).
#   sbatch sh_files/detic/run.sh                      # from the repository root
#   DATASET=imagenet_21k CLASS_LIST=lists/part_1.txt sbatch --array=0-31 sh_files/detic/run.sh
#SBATCH --job-name=pd_detic
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
DATASET=${DATASET:-imagenet_1k}                   # registered dataset name or image folder
LABELER=${LABELER:-detic}                         # PROPOSAL_GENERATION.OBJECT_MASK_TYPE
LABELER_CONFIG=${LABELER_CONFIG:-configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml}
CLIP_EMBEDDINGS=${CLIP_EMBEDDINGS:-weights/detic/clip_a+cname.npz}  # Detic vocabulary (INSTALL.md)
CONFIG=${CONFIG:-configs/proposal_generation/swin_L.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-pseudo_labels/${DATASET}/object_masks}
CLASS_LIST=${CLASS_LIST:-}                        # optional file of class codes to label
EXTRA_OPTS=${EXTRA_OPTS:-}                        # more KEY VALUE overrides
source "$REPO/sh_files/common.sh"
partition_opts PROPOSAL_GENERATION
run_requeueable "$PY" tools/label_objects.py --config-file "$CONFIG" --dataset "$DATASET" \
  --output-dir "$OUTPUT_DIR" ${LABELER_CONFIG:+--labeler-config "$LABELER_CONFIG"} \
  PROPOSAL_GENERATION.OBJECT_MASK_TYPE "$LABELER" PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH "$CLIP_EMBEDDINGS" \
  "${PARTITION_OPTS[@]}" "${EXTRA[@]}"
