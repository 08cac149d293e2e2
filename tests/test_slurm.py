"""The sh_files and the submitit launcher against a real single-node SLURM (not a mock).

The session fixture starts SLURM with ``../shared/slurm/start_slurm.sh`` (idempotent, ~25 s the
first time; needs root and apt). Select with ``-m slurm``; ``.ci/run`` runs them with the rest.
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from part_distillation.data.pseudo_labels import load_pseudo_label
from tests.helpers import PASCAL_EXAMPLES, REPO, needs_shared
from tests.test_distributed import tiny_train_opts
from tests.test_train_net import _synthetic_labels

pytestmark = pytest.mark.slurm

SLURM_DIR = os.environ.get("PD_SHARED_SLURM", os.path.join(os.path.dirname(REPO), "shared", "slurm"))
PY = sys.executable
STAGE2_SH = "sh_files/proposal_generation/run.sh"
CPU_CFG = "configs/proposal_generation/effnet_lite0_cpu.yaml"
# sbatch command-line values that replace the GPU cluster's #SBATCH headers on the local node
LOCAL_SBATCH = ["--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1"]


@pytest.fixture(scope="session")
def slurm():
    """A running local SLURM; yields the environment for its clients."""
    script = os.path.join(SLURM_DIR, "start_slurm.sh")
    if not os.path.isfile(script):
        pytest.skip(f"no SLURM start script at {script} (set PD_SHARED_SLURM)")
    if os.geteuid() != 0:
        pytest.skip("starting SLURM needs root")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    out = subprocess.run(["bash", script], capture_output=True, text=True)
    assert out.returncode == 0, f"start_slurm.sh failed:\n{out.stdout}\n{out.stderr}"
    env = dict(os.environ, SLURM_CONF=os.path.join(os.environ.get("SLURM_LOCAL_DIR", "/tmp/slurm-local"),
                                                   "etc", "slurm.conf"))
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # for submitit's own sbatch / sacct calls
    return env


def _sbatch(env, *args, **variables) -> str:
    """Submit from the repository root with ``variables`` in the job's environment; job id."""
    out = subprocess.run(["sbatch", "--parsable", *args], cwd=REPO, capture_output=True, text=True,
                         env={**env, "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in variables.items()}})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _states(env, job_id: str) -> dict:
    """``{job id or array task id: state}`` from sacct (allocations only)."""
    out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return dict(line.split("|")[:2] for line in out.split() if "|" in line)


def _wait(env, job_id: str, timeout: float = 600) -> dict:
    """Wait until no task of ``job_id`` is queued or running; returns :func:`_states`."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, env=env).stdout.strip():
            for _ in range(20):  # accounting lags squeue by a moment
                states = _states(env, job_id)
                if states and not any(s in ("PENDING", "RUNNING", "REQUEUED") for s in states.values()):
                    return states
                time.sleep(0.5)
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still queued after {timeout} s")


def _json_files(folder: str) -> list:
    """Relative paths of the pseudo-label files under ``folder`` (logs/ and temp files excluded)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "logs"]
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files
                  if f.endswith(".json") and not f.startswith(".")]
    return sorted(found)


def _assert_same_outputs(folder: str, reference: str):
    names = _json_files(reference)
    assert _json_files(folder) == names
    _, mismatch, errors = filecmp.cmpfiles(folder, reference, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for n in names:  # complete, valid files (a truncated one would not load)
        load_pseudo_label(os.path.join(folder, n))


@pytest.fixture(scope="module")
def stage2_reference(tmp_path_factory, slurm):
    """Stage 1 (given masks) on the Pascal-Part examples, then stage 2 in one process through the
    sh_file run without SLURM (one partition)."""
    if not os.path.isdir(PASCAL_EXAMPLES):
        pytest.skip("../shared/data (real annotated images) not present")
    root = tmp_path_factory.mktemp("stage2")
    s1 = str(root / "object_masks")
    subprocess.run([PY, "tools/label_objects.py", "--config-file", CPU_CFG, "--dataset", "pascal_part_examples",
                    "--output-dir", s1], cwd=REPO, check=True, capture_output=True)
    ref = str(root / "reference")
    env = {k: v for k, v in slurm.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    subprocess.run(["bash", STAGE2_SH], cwd=REPO, check=True, capture_output=True,
                   env={**env, "CONFIG": CPU_CFG, "INPUT_DIR": s1, "OUTPUT_DIR": ref, "OMP_NUM_THREADS": "1"})
    assert len(_json_files(ref)) == 18
    with open(os.path.join(ref, "logs", "summary_0of1.json")) as f:
        assert json.load(f)["processed"] == 18
    return root, s1, ref


@needs_shared
def test_stage2_array_of_two_equals_single_process(slurm, stage2_reference):
    root, s1, ref = stage2_reference
    out = str(root / "array")
    job = _sbatch(slurm, *LOCAL_SBATCH, "--array=0-1", f"--output={root}/array_%A_%a.out", STAGE2_SH,
                  CONFIG=CPU_CFG, INPUT_DIR=s1, OUTPUT_DIR=out)
    states = _wait(slurm, job)
    assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}, states
    _assert_same_outputs(out, ref)
    summaries = []
    for i in range(2):
        with open(os.path.join(out, "logs", f"summary_{i}of2.json")) as f:
            summaries.append(json.load(f))
    # 18 images processed once in all: with the union equal to the reference, no image was in two shards
    assert [s["partition"] for s in summaries] == [[0, 2], [1, 2]]
    assert sum(s["processed"] for s in summaries) == 18 and all(s["resumed"] == 0 for s in summaries)
    assert all(s["processed"] == 9 for s in summaries)


@needs_shared
def test_stage2_array_task_cancelled_mid_run_then_resubmitted(slurm, stage2_reference):
    root, s1, ref = stage2_reference
    out = str(root / "cancelled")
    shard0 = _json_files(ref)[0::2]  # partition 0 of 2 (sorted keys, strided)
    job = _sbatch(slurm, *LOCAL_SBATCH, "--array=0-1", f"--output={root}/cancel_%A_%a.out", STAGE2_SH,
                  CONFIG=CPU_CFG, INPUT_DIR=s1, OUTPUT_DIR=out)
    t0 = time.time()
    while not any(os.path.exists(os.path.join(out, n)) for n in shard0):
        assert time.time() - t0 < 300, "task 0 wrote nothing"
        time.sleep(0.02)
    subprocess.run(["scancel", f"{job}_0"], check=True, env=slurm)
    states = _wait(slurm, job)
    assert states == {f"{job}_0": "CANCELLED", f"{job}_1": "COMPLETED"}, states
    done = [n for n in shard0 if os.path.exists(os.path.join(out, n))]
    assert 0 < len(done) < len(shard0), f"task 0 was not cancelled mid-run ({len(done)} of {len(shard0)})"
    for n in done:  # what the cancelled task left is complete (atomic writes)
        load_pseudo_label(os.path.join(out, n))

    # resubmit only task 0 of the 2-way split: TOTAL_PARTITIONS overrides the 1-task array's size
    job2 = _sbatch(slurm, *LOCAL_SBATCH, "--array=0", f"--output={root}/resubmit_%A_%a.out", STAGE2_SH,
                   CONFIG=CPU_CFG, INPUT_DIR=s1, OUTPUT_DIR=out, TOTAL_PARTITIONS=2)
    assert _wait(slurm, job2) == {f"{job2}_0": "COMPLETED"}
    _assert_same_outputs(out, ref)
    with open(os.path.join(out, "logs", "summary_0of2.json")) as f:
        summary = json.load(f)
    assert summary["resumed"] >= len(done) and summary["resumed"] + summary["processed"] == len(shard0)


def _final_weights(output_dir: str) -> dict:
    return torch.load(os.path.join(output_dir, "model_final.pth"), map_location="cpu", weights_only=False)["model"]


def test_submitit_launcher_preempted_job_resumes_to_same_weights(slurm, tmp_path):
    """tools/launch.py: 2 CPU processes (gloo), uninterrupted in local mode vs on SLURM with a
    preemption (SIGTERM + USR2, submitit's ``_interrupt``) after the first checkpoint."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import launch as launcher

    labels = _synthetic_labels(str(tmp_path / "labels"), n=1)

    def argv(mode, out):
        return [*mode, "--gpus-per-node", "0", "--cpu-processes", "2", "--cpus-per-task", "1", "--time", "10",
                "--job-dir", str(tmp_path / "jobs" / "%j"), "--", "--config-file", "configs/proposal_learning/tiny_cpu.yaml",
                *tiny_train_opts(labels, str(out), 40, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 10,
                                 "SEED_EACH_ITERATION", True)]

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        local = launcher.main(argv(["--local"], tmp_path / "uninterrupted"))
        job = launcher.main(argv(["--partition", "debug"], tmp_path / "preempted"))
        last = tmp_path / "preempted" / "last_checkpoint"
        t0 = time.time()
        while not last.exists():  # the first checkpoint (iteration 10 of 40) is written
            assert time.time() - t0 < 300 and not job.done(), "no checkpoint before the end"
            time.sleep(0.2)
        job._interrupt()  # preemption: SIGTERM, then USR2 -> TrainJob.checkpoint -> requeue
        job.results()
        local.results()
    finally:
        os.chdir(cwd)
    log = (tmp_path / "preempted" / "log.txt").read_text()
    starts = [line.rsplit(" ", 1)[-1] for line in log.splitlines() if "Starting training from iteration" in line]
    assert starts[0] == "0" and len(starts) == 2 and int(starts[1]) >= 10, starts  # resumed mid-run
    a, b = _final_weights(tmp_path / "uninterrupted"), _final_weights(tmp_path / "preempted")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


def test_train_multi_sh_runs_two_gloo_processes_through_srun(slurm, tmp_path):
    """sh_files/proposal_learning/train_multi.sh on 1 node: srun starts train_net.py with 2 CPU
    processes (gloo) whose dist_url is the job's first node; the run completes."""
    labels = _synthetic_labels(str(tmp_path / "labels"), n=2)
    out = tmp_path / "out"
    opts = tiny_train_opts(labels, str(out), 4, "SOLVER.IMS_PER_BATCH", 2)
    job = _sbatch(slurm, "--partition=debug", "--gpus-per-node=0", "--nodes=1", "--cpus-per-task=2",
                  f"--output={tmp_path}/train_%j.out", "sh_files/proposal_learning/train_multi.sh",
                  CONFIG="configs/proposal_learning/tiny_cpu.yaml", DATASET_PATH=labels, OUTPUT_DIR=str(out),
                  PROCS_PER_NODE=2, EXTRA_OPTS=" ".join(opts))
    assert _wait(slurm, job) == {job: "COMPLETED"}, (tmp_path / f"train_{job}.out").read_text()[-3000:]
    assert (out / "model_final.pth").is_file() and (out / "log.txt.rank1").is_file()  # two ranks ran
    log = (out / "log.txt").read_text()
    assert "dist_url='tcp://" in log and "num_gpus=2" in log
