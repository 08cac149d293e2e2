# Sourced by sh_files/{supervised,fewshot}_learning/{prop,semseg}/*.sh (not submitted by itself):
# the supervised baseline (SupervisedModel) on a ground-truth part dataset, the official recipe of
# those sh files (Swin-L from the COCO Mask2Former, LR 1e-4, 20k iterations, steps '(40000, 45000)',
# batch 32, merged GT), one node x the GPUs of the job; requeued before the time limit, the rerun
# resumes. Writes OUTPUT_DIR/ (checkpoints, metrics.json, inference/<dataset>/results.json).
# Variables (environment, with these defaults set by each file):
#   DATASET   pascal_part | part_imagenet | cityscapes_part: trains on <DATASET>_train, tests on TEST
#   TASK      semseg (per-class, NUM_CLASSES of the dataset) | prop (class-agnostic proposals)
#   LABEL_PERCENTAGE  100 (supervised) or the few-shot percentage (FEWSHOT_LEARNING.LABEL_PERCENTAGE)
#   WEIGHTS   initialisation (default the COCO Mask2Former; few-shot: a PartDistillation checkpoint)
#   CONFIG, TEST, OUTPUT_DIR, EXTRA_OPTS (more KEY VALUE overrides, shell-quoted)
DATASET=${DATASET:-pascal_part}
TASK=${TASK:-semseg}
LABEL_PERCENTAGE=${LABEL_PERCENTAGE:-100}
CONFIG=${CONFIG:-configs/supervised_learning/swinL_IN21K_384_mask2former.yaml}
WEIGHTS=${WEIGHTS:-weights/mask2former/instance/swinL_i21k_q200_e100.pkl}
TEST=${TEST:-${DATASET}_val}
KIND=$([ "$LABEL_PERCENTAGE" = 100 ] && echo supervised_learning || echo fewshot_learning)
OUTPUT_DIR=${OUTPUT_DIR:-output/${KIND}/${TASK}/${DATASET}_${LABEL_PERCENTAGE}pct}
RECIPE_OPTS="SOLVER.MAX_ITER 20000 SOLVER.BASE_LR 0.0001 SOLVER.STEPS '(40000, 45000)' SOLVER.IMS_PER_BATCH 32"
EXTRA_OPTS=${EXTRA_OPTS:-$RECIPE_OPTS}  # (a quoted default goes through a variable to keep its quotes)
source "$REPO/sh_files/common.sh"
case "$DATASET" in
  pascal_part) NUM_PARTS=50 ;; part_imagenet) NUM_PARTS=40 ;; cityscapes_part) NUM_PARTS=23 ;;
  *) echo "DATASET must be pascal_part, part_imagenet or cityscapes_part, got '$DATASET'" >&2; exit 2 ;;
esac
case "$TASK" in
  semseg) TASK_OPTS=(MODEL.SEM_SEG_HEAD.NUM_CLASSES "$NUM_PARTS" SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING False
                     SUPERVISED_MODEL.USE_PER_PIXEL_LABEL True) ;;
  prop) TASK_OPTS=(MODEL.SEM_SEG_HEAD.NUM_CLASSES 1 SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING True
                   SUPERVISED_MODEL.USE_PER_PIXEL_LABEL True) ;;
  *) echo "TASK must be semseg or prop, got '$TASK'" >&2; exit 2 ;;
esac
train_on_nodes --config-file "$CONFIG" MODEL.WEIGHTS "$WEIGHTS" \
  DATASETS.TRAIN "('${DATASET}_train',)" DATASETS.TEST "('${TEST}',)" "${TASK_OPTS[@]}" \
  FEWSHOT_LEARNING.LABEL_PERCENTAGE "$LABEL_PERCENTAGE" OUTPUT_DIR "$OUTPUT_DIR" \
  VIS_OUTPUT_DIR "${VIS_OUTPUT_DIR:-$OUTPUT_DIR/vis}" "${EXTRA[@]}"
