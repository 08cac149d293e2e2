"""tools/launch.py without a cluster: --dry-run prints the sbatch file submitit would submit, and
the requeued submission of a preempted job carries --resume."""
import os
import sys

import pytest

from part_distillation.engine.launch import TrainJob, _port_for_job
from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import launch as launcher  # noqa: E402


def test_dry_run_prints_the_sbatch_file(tmp_path, capsys):
    launcher.main(["--dry-run", "--nodes", "2", "--gpus-per-node", "8", "--partition", "learnfair", "--time", "120",
                   "--cpus-per-task", "10", "--sbatch", "constraint=volta32gb", "--job-dir", str(tmp_path / "%j"),
                   "--", "--config-file", "configs/proposal_learning/swin_L.yaml", "OUTPUT_DIR", "out"])
    text = capsys.readouterr().out
    for line in ["#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --partition=learnfair", "#SBATCH --time=120", "#SBATCH --cpus-per-task=10",
                 "#SBATCH --signal=USR2@120", "#SBATCH --constraint=volta32gb"]:
        assert line in text, line
    assert "srun" in text and "submitit.core._submit" in text
    assert not list(tmp_path.rglob("*.pkl"))  # nothing was submitted


def test_cpu_processes_and_argument_errors(capsys):
    args = launcher.parse_args(["--gpus-per-node", "0", "--cpu-processes", "2", "--", "--config-file", "x.yaml"])
    assert args.train_argv == ["--config-file", "x.yaml"]
    with pytest.raises(SystemExit):
        launcher.parse_args(["--nodes", "2"])  # no train_net.py arguments


def test_checkpoint_resubmits_with_resume():
    job = TrainJob(["--config-file", "x.yaml", "OUTPUT_DIR", "o"])
    again = job.checkpoint()
    assert again.function.train_argv == ["--resume", "--config-file", "x.yaml", "OUTPUT_DIR", "o"]
    assert again.function.checkpoint().function.train_argv == again.function.train_argv  # once only
    assert _port_for_job("12345") == _port_for_job("12345") and 20000 <= _port_for_job("123_4") < 40000
