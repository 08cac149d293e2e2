#!/bin/bash
# The pixel-grouping evaluation baseline (official configs/pixel_grouping/, PixelGroupingModel):
# stages 1-3 on a ground-truth dataset's own object masks (k-means of backbone features inside
# each object, then dense-CRF) and their evaluation (best-match / Hungarian mIoU, AR@K), one GPU.
# Writes OUTPUT_DIR/{object_masks,proposal_generation,dcrf}/, metrics.json, metrics.md, collages.
#   sbatch sh_files/pixel_grouping/run.sh                          # from the repository root
#   DATASET=pascal_part_val CONFIG=configs/proposal_generation/R50.yaml sbatch sh_files/pixel_grouping/run.sh
#SBATCH --job-name=pd_pixel_grouping
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --output=logs/%x_%j.out
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
DATASET=${DATASET:-part_imagenet_valtest}   # registered name (official: part_imagenet_valtest) or folder
CONFIG=${CONFIG:-configs/proposal_generation/swin_L.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-output/pixel_grouping/${DATASET//\//_}}
EXTRA_OPTS=${EXTRA_OPTS:-}
source "$REPO/sh_files/common.sh"
"$PY" tools/run_part_pipeline.py --config-file "$CONFIG" --dataset "$DATASET" --output-dir "$OUTPUT_DIR" \
  "${EXTRA[@]}"
