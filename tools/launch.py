#!/usr/bin/env python
"""Submit a ``tools/train_net.py`` run to SLURM with submitit: N nodes x G GPUs, one task per GPU,
torch.distributed set up from the first node, requeued with ``--resume`` on preemption / time-out.

Everything after ``--`` is passed to ``train_net.py`` unchanged::

    # stage 4 on 2 nodes x 8 GPUs, 48 h, requeued when preempted
    .venv/bin/python tools/launch.py --nodes 2 --gpus-per-node 8 --partition learnfair --time 2880 \\
        --job-dir output/jobs/proposal_learning -- --config-file configs/proposal_learning/swin_L.yaml \\
        PROPOSAL_LEARNING.DATASET_PATH pseudo_labels/dcrf OUTPUT_DIR output/proposal_learning
    # print the sbatch file it would submit, submit nothing
    .venv/bin/python tools/launch.py --dry-run --nodes 2 --gpus-per-node 8 -- --config-file ...
    # the same job on this machine (submitit's local executor), 2 CPU processes with gloo
    .venv/bin/python tools/launch.py --local --gpus-per-node 0 --cpu-processes 2 -- --config-file ...

Logs and submitit's pickles go to ``--job-dir`` (``%j`` = job id); training outputs and
checkpoints to the config's OUTPUT_DIR. The job id is printed; watch it with ``squeue``,
``tail -f <job-dir>/<id>_0_log.out`` and ``OUTPUT_DIR/metrics.json``.
"""
import argparse
import os


import submitit

from part_distillation.engine.launch import TrainJob


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8, help="0: CPU processes with gloo")
    p.add_argument("--cpu-processes", type=int, default=1,
                   help="processes per node when --gpus-per-node 0 (gloo)")
    p.add_argument("--cpus-per-task", type=int, default=10)
    p.add_argument("--mem-gb", type=int, default=0, help="memory per node (0: the partition's default)")
    p.add_argument("--time", type=int, default=72 * 60, help="time limit in minutes")
    p.add_argument("--partition", default=os.environ.get("SLURM_PARTITION", ""))
    p.add_argument("--name", default="part_distillation")
    p.add_argument("--job-dir", default="output/jobs/%j", help="submitit folder (logs, pickles)")
    p.add_argument("--signal-delay-s", type=int, default=120,
                   help="USR2 this many seconds before the time limit: checkpoint() requeues")
    p.add_argument("--max-requeues", type=int, default=20, help="time-outs before giving up")
    p.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra #SBATCH parameter, e.g. --sbatch constraint=volta32gb")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run on this machine (submitit LocalExecutor)")
    mode.add_argument("--dry-run", action="store_true", help="print the sbatch file, submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    p.add_argument("train_argv", nargs=argparse.REMAINDER, help="-- then the train_net.py arguments")
    args = p.parse_args(argv)
    if args.train_argv[:1] == ["--"]:
        args.train_argv = args.train_argv[1:]
    if not args.train_argv:
        p.error("give the train_net.py arguments after --")
    return args


def build_executor(args) -> submitit.AutoExecutor:
    """submitit executor for ``args`` (``cluster`` = local / slurm); one task per process."""
    executor = submitit.AutoExecutor(folder=args.job_dir, cluster="local" if args.local else "slurm",
                                     slurm_max_num_timeout=args.max_requeues)
    per_node = args.gpus_per_node if args.gpus_per_node > 0 else args.cpu_processes
    params = dict(name=args.name, nodes=args.nodes, tasks_per_node=per_node, timeout_min=args.time,
                  cpus_per_task=args.cpus_per_task)
    if args.gpus_per_node > 0:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb > 0:
        params["mem_gb"] = args.mem_gb
    if not args.local:
        extra = dict(kv.split("=", 1) for kv in args.sbatch)
        params.update(slurm_signal_delay_s=args.signal_delay_s, slurm_additional_parameters=extra)
        if args.partition:
            params["slurm_partition"] = args.partition
    executor.update_parameters(**params)
    return executor


def sbatch_text(executor: submitit.AutoExecutor) -> str:
    """The sbatch file submitit would write for ``executor`` (a SLURM executor)."""
    inner = executor._executor  # submitit has no public accessor for the generated file
    return inner._make_submission_file_text(inner._submitit_command_str, "dry-run")


def main(argv=None):
    args = parse_args(argv)
    executor = build_executor(args)
    if args.dry_run:
        print(sbatch_text(executor))
        return None
    job = executor.submit(TrainJob(args.train_argv))
    print(f"submitted job {job.job_id}; logs in {job.paths.stdout}")
    if args.wait:
        print(job.results()[0])  # task 0 returns the evaluation results
    return job


if __name__ == "__main__":
    main()
