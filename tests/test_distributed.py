"""Multi-process training without SLURM: 2 CPU processes (gloo) through
``part_distillation.engine.launch`` keep their parameters equal, and a resumed run with
SEED_EACH_ITERATION ends with the same weights as an uninterrupted one."""
import os

import pytest
import torch
from detectron2.engine import default_argument_parser
from detectron2.utils import comm

from part_distillation.engine.launch import launch
from part_distillation.engine.trainer import Trainer, setup
from tests.test_train_net import _Record, _synthetic_labels

TINY = "configs/proposal_learning/tiny_cpu.yaml"


def tiny_train_opts(labels: str, output_dir: str, max_iter: int, *extra) -> list:
    """``KEY VALUE`` overrides of the tiny CPU config: 64 px, 2 decoder layers, no evaluation,
    no data-loader workers, SEED 0."""
    return ["MODEL.EFFICIENTNET.PRETRAINED", "False", "PROPOSAL_LEARNING.DATASET_PATH", labels,
            "INPUT.IMAGE_SIZE", "64", "INPUT.IMAGE_SIZE_BASE", "64", "INPUT.MIN_SCALE", "1.0",
            "INPUT.MAX_SCALE", "1.0", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
            "TEST.EVAL_PERIOD", "0", "MODEL.MASK_FORMER.DEC_LAYERS", "2", "SOLVER.MAX_ITER", str(max_iter),
            "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.001", "SEED", "0", "OUTPUT_DIR", output_dir,
            *[str(x) for x in extra]]


def _train_and_dump(opts, dump_dir):
    """One process of the 2-process run: train, then save this rank's weights."""
    torch.set_num_threads(1)
    args = default_argument_parser().parse_args(["--config-file", TINY, *opts])
    trainer = Trainer(setup(args))
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model
    torch.save({"ddp": isinstance(model, torch.nn.parallel.DistributedDataParallel),
                "world_size": comm.get_world_size(), "local_rank": comm.get_local_rank(),
                "state": {k: v.clone() for k, v in getattr(model, "module", model).state_dict().items()}},
               os.path.join(dump_dir, f"rank{comm.get_rank()}.pth"))


def test_two_gloo_processes_keep_parameters_equal(tmp_path):
    labels = _synthetic_labels(str(tmp_path / "labels"), n=4)
    opts = tiny_train_opts(labels, str(tmp_path / "out"), 3, "SOLVER.IMS_PER_BATCH", 2)
    launch(_train_and_dump, 2, dist_url="auto", args=(opts, str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth") for r in (0, 1))
    assert r0["ddp"] and r1["ddp"] and r0["world_size"] == r1["world_size"] == 2
    assert (r0["local_rank"], r1["local_rank"]) == (0, 1)
    # the ranks saw different images (their logged losses are the all-reduced mean, so compare
    # the trained weights instead): equal parameters, every one of them
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # and training changed the head (a run that did nothing would also keep them equal)
    init = Trainer.build_model(setup(default_argument_parser().parse_args(
        ["--config-file", TINY, *tiny_train_opts(labels, str(tmp_path / "init"), 3)])))
    changed = [k for k, v in init.state_dict().items() if not torch.equal(v, r0["state"][k])]
    assert any(k.startswith("sem_seg_head.predictor") for k in changed), changed


def test_resume_with_seed_each_iteration_gives_same_weights(tmp_path):
    """One image: the data stream does not depend on the sampler position, so with the per-step
    reseeding a run killed after its checkpoint and resumed ends bitwise equal to an
    uninterrupted one."""
    labels = _synthetic_labels(str(tmp_path / "labels"), n=1)

    def run(out, resume, kill_at=None):
        args = default_argument_parser().parse_args(
            ["--config-file", TINY] + (["--resume"] if resume else []) + [*tiny_train_opts(labels, str(out), 6, "SOLVER.IMS_PER_BATCH", 1,
                                                     "SOLVER.CHECKPOINT_PERIOD", 3, "SEED_EACH_ITERATION", True)])
        trainer = Trainer(setup(args))
        trainer.register_hooks([_Record(kill_at=kill_at)])
        trainer.resume_or_load(resume=resume)
        if kill_at is None:
            trainer.train()
        else:
            with pytest.raises(KeyboardInterrupt):
                trainer.train()
        return trainer

    full = run(tmp_path / "full", False)
    run(tmp_path / "cut", False, kill_at=4)  # dies after iteration 4; last checkpoint: model_0000002
    resumed = run(tmp_path / "cut", True)
    assert resumed.start_iter == 3
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="SEED >= 0"):
        from part_distillation.engine.hooks import IterationSeedHook
        IterationSeedHook(-1)


def test_sigkill_inside_a_periodic_checkpoint_write_resumes_to_the_same_final_weights(tmp_path):
    """A real SIGKILL while model_0000003.pth is written (half of it on disk as the temp file):
    --resume in a new process removes the stale temp file, continues from model_0000001.pth and
    ends with the uninterrupted run's final weights, bitwise (one image, SEED_EACH_ITERATION)."""
    import signal
    import subprocess
    import sys

    labels = _synthetic_labels(str(tmp_path / "labels"), n=1)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full, cut = tmp_path / "full", tmp_path / "cut"

    def argv(out, resume=False):
        return (["--config-file", TINY] + (["--resume"] if resume else [])
                + tiny_train_opts(labels, str(out), 4, "SOLVER.IMS_PER_BATCH", 1, "SOLVER.CHECKPOINT_PERIOD", 2,
                                  "SEED_EACH_ITERATION", True))

    def python(code):
        return subprocess.run([sys.executable, "-c", "import os, signal, sys, torch\n"
                               "from detectron2.engine import default_argument_parser\n"
                               "from part_distillation.engine.trainer import Trainer, main, setup\n" + code],
                              cwd=repo, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"})

    killed = python("real = torch.save\n"
                    "def dying(obj, f, *a, **k):\n"
                    "    path = os.readlink(f'/proc/self/fd/{f.fileno()}') if hasattr(f, 'fileno') else ''\n"
                    "    if path.endswith('.tmp') and '.model_0000003.pth.' in path:\n"
                    "        real(obj, f, *a, **k); f.flush(); f.truncate(f.tell() // 2); f.flush()\n"
                    "        os.kill(os.getpid(), signal.SIGKILL)\n"
                    "    return real(obj, f, *a, **k)\n"
                    "torch.save = dying\n"
                    f"main(default_argument_parser().parse_args({argv(cut)!r}))\n")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = sorted(os.listdir(cut))
    assert any(n.startswith(".model_0000003.pth.") and n.endswith(".tmp") for n in left), left
    assert "model_0000003.pth" not in left and "model_0000001.pth" in left
    for n in left:  # the cleanup compares whole seconds: date the temp file back as a requeue would find it
        if n.endswith(".tmp"):
            os.utime(cut / n, (os.path.getmtime(cut / n) - 2,) * 2)
    # a new process: the uninterrupted run, then the resume of the killed one
    rerun = python(f"main(default_argument_parser().parse_args({argv(full)!r}))\n"
                   f"t = Trainer(setup(default_argument_parser().parse_args({argv(cut, True)!r})))\n"
                   "t.resume_or_load(resume=True)\nprint('START', t.start_iter)\nt.train()\n")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "START 2" in rerun.stdout
    assert not [n for n in os.listdir(cut) if n.endswith(".tmp")]
    a, b = (torch.load(os.path.join(d, "model_final.pth"), map_location="cpu", weights_only=False)
            for d in (full, cut))
    assert a["iteration"] == b["iteration"] == 3
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
