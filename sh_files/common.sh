# Sourced by every sh_file (not run by itself). Expects REPO (the repository root) to be set.
#
#  - cd to REPO, PY = the project's python, logs/ for the #SBATCH --output files;
#  - partitions: TOTAL_PARTITIONS = the array size (SLURM_ARRAY_TASK_COUNT), PARTITION_INDEX =
#    SLURM_ARRAY_TASK_ID; outside an array both default to one partition (0 of 1). Setting
#    TOTAL_PARTITIONS in the environment overrides the array size, e.g. to rerun one task of an
#    8-way job: TOTAL_PARTITIONS=8 sbatch --array=3 <file>;
#  - run_requeueable CMD...: runs CMD in the background and requeues this job (array task) when
#    SLURM sends USR1 (#SBATCH --signal=B:USR1@<s> before the time limit); the rerun resumes;
#  - DIST_ARGS: detectron2 launch arguments for one task per node (first node = dist_url);
#  - EXTRA: a bash array of KEY VALUE overrides from the string EXTRA_OPTS, split with shell
#    quoting (EXTRA_OPTS="SOLVER.STEPS '(40000, 45000)'" gives two words: SOLVER.STEPS and
#    "(40000, 45000)", as the official sh files pass it), followed by the arguments given to the
#    sh file itself (sbatch <file> SOLVER.MAX_ITER 100 ...).
# Cluster-specific #SBATCH values (--partition, --account, --mem, --time, --cpus-per-task,
# --gpus-per-node) are this cluster's guesses: change them in the file or override them on the
# command line (sbatch flags win over #SBATCH lines), e.g. sbatch --partition=a100 --time=8:00:00 <file>.
set -euo pipefail
cd "$REPO"
[ -f tools/train_net.py ] || { echo "REPO=$REPO is not the repository root: sbatch from the root or set REPO" >&2; exit 2; }
PY=${PY:-$REPO/.venv/bin/python}
mkdir -p logs
# split with shell-style quoting (xargs: quotes group words; parentheses, $ and ; stay plain characters)
EXTRA=()
[ -z "${EXTRA_OPTS:-}" ] || mapfile -d '' EXTRA < <(printf '%s' "$EXTRA_OPTS" | xargs -r printf '%s\0')
EXTRA+=("$@")

TOTAL_PARTITIONS=${TOTAL_PARTITIONS:-${SLURM_ARRAY_TASK_COUNT:-1}}
PARTITION_INDEX=${PARTITION_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}
# partition_opts NAMESPACE -> PARTITION_OPTS array of KEY VALUE overrides
partition_opts() {
  PARTITION_OPTS=("$1.TOTAL_PARTITIONS" "$TOTAL_PARTITIONS" "$1.PARTITION_INDEX" "$PARTITION_INDEX")
  if [ -n "${CLASS_LIST:-}" ]; then  # file of class codes (one per line) this run is restricted to
    PARTITION_OPTS+=("$1.FILTERED_CODE_PATH_LIST" "['$CLASS_LIST']")
  fi
}

_requeue() {
  local id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
  id=${id:-${SLURM_JOB_ID:-}}
  echo "[$(date +%T)] signal before the time limit: requeueing $id (the rerun resumes)"
  [ -n "$id" ] && scontrol requeue "$id"
}
run_requeueable() {
  trap _requeue USR1
  "$@" &
  local pid=$!
  # `wait` returns early when the trap fires; keep waiting for the command itself
  while true; do
    set +e; wait "$pid"; local rc=$?; set -e
    kill -0 "$pid" 2>/dev/null || return "$rc"
  done
}

if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
  MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
else
  MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
  MASTER_PORT=${MASTER_PORT:-29500}
fi
NUM_MACHINES=${SLURM_NNODES:-1}
# processes per node: the GPUs SLURM gave this node (#SBATCH --gpus-per-node), else 1 CPU process
PROCS_PER_NODE=${PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
DIST_ARGS=(--num-machines "$NUM_MACHINES" --dist-url "tcp://${MASTER_ADDR}:${MASTER_PORT}")

# train_on_nodes TRAIN_NET_ARGS...: tools/train_net.py on every node of the job (one srun task
# per node, PROCS_PER_NODE processes each: GPUs with NCCL, else CPU with gloo), requeued before
# the time limit; --resume continues from OUTPUT_DIR/last_checkpoint (iteration, LR, optimizer).
train_on_nodes() {
  local procs=$PROCS_PER_NODE
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    run_requeueable srun --ntasks="$NUM_MACHINES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
      bash -c 'exec "$0" tools/train_net.py --machine-rank "$SLURM_NODEID" "$@"' \
      "$PY" --num-gpus "$procs" "${DIST_ARGS[@]}" --resume "$@"
  else
    "$PY" tools/train_net.py --num-gpus "$procs" --resume "$@"
  fi
}
