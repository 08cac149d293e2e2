"""Multi-process / multi-node start-up of ``tools/train_net.py`` with detectron2's ``launch``
semantics, on GPU (NCCL) and on CPU (gloo).

detectron2 0.6's ``launch`` requires CUDA; this one picks the backend from the machine: NCCL with
one process per GPU when CUDA is available, gloo with CPU processes otherwise (used by the tests
and for debugging multi-process code without a GPU). Rank layout is detectron2's:
``global_rank = machine_rank * num_processes_per_machine + local_rank``, and every machine must be
given the same ``dist_url`` (``tcp://<first node>:<port>``; on SLURM the first host of
``scontrol show hostnames $SLURM_JOB_NODELIST``). :class:`TrainJob` is the submitit job of
``tools/launch.py``: one SLURM task per process, requeued with ``--resume`` when preempted.
"""
import logging
import os
from datetime import timedelta

import submitit
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def backend_for_machine() -> str:
    """``"nccl"`` when CUDA is available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(main_func, num_processes_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), timeout: timedelta = DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in ``num_processes_per_machine`` processes on this machine, part of
    a ``num_machines x num_processes_per_machine`` process group (detectron2 ``launch`` arguments).

    With one process in total ``main_func`` runs in the calling process. ``dist_url="auto"``
    picks a free local port (one machine only).

    Raises:
        ValueError: ``dist_url`` missing or ``"auto"`` for a multi-machine job; on CUDA, more
            processes than visible GPUs.
    """
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("a multi-machine job needs dist_url=tcp://<first node>:<port> on every machine")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if torch.cuda.is_available() and num_processes_per_machine > torch.cuda.device_count():
        raise ValueError(f"{num_processes_per_machine} processes per machine but only "
                         f"{torch.cuda.device_count()} visible GPUs")
    mp.start_processes(distributed_worker, nprocs=num_processes_per_machine, start_method="spawn",
                       args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url,
                             args, timeout))


def init_distributed(global_rank: int, world_size: int, num_processes_per_machine: int, dist_url: str,
                     timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Join the process group (NCCL/gloo, see :func:`backend_for_machine`), create detectron2's
    per-machine process group (``comm.get_local_rank()``), pin the GPU ``local_rank`` when on CUDA,
    and synchronise. Used by :func:`launch` and by one-process-per-task SLURM runs."""
    backend = backend_for_machine()
    try:
        dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size,
                                rank=global_rank, timeout=timeout)
    except Exception:
        logger.error("process group %s (%s) failed for rank %d/%d", dist_url, backend, global_rank, world_size)
        raise
    if comm._LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("the local process group already exists (init_distributed called twice?)")
    machine_rank, local_rank = divmod(global_rank, num_processes_per_machine)
    for i in range(world_size // num_processes_per_machine):
        group = dist.new_group(list(range(i * num_processes_per_machine, (i + 1) * num_processes_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()


def distributed_worker(local_rank, main_func, world_size, num_processes_per_machine, machine_rank,
                       dist_url, args, timeout=DEFAULT_TIMEOUT):
    """Body of one spawned process of :func:`launch`."""
    init_distributed(machine_rank * num_processes_per_machine + local_rank, world_size,
                     num_processes_per_machine, dist_url, timeout)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _port_for_job(job_id: str) -> int:
    """A TCP port in [20000, 40000) derived from the job id (the same after a requeue)."""
    digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
    return 20000 + int(digits) % 20000


class TrainJob(submitit.helpers.Checkpointable):
    """One process of a ``tools/train_net.py`` run under submitit (one SLURM task per GPU, or per
    CPU process for gloo runs), requeued with ``--resume`` on preemption or time-out.

    Called in every task: joins the process group of ``SLURM_NTASKS`` processes through
    ``tcp://<first node of the job>:<port from the job id>`` (detectron2 ``launch`` semantics:
    rank = task rank, local rank = rank on the node), then runs
    :func:`part_distillation.engine.trainer.main` with ``train_argv`` parsed by detectron2's
    ``default_argument_parser``. :meth:`checkpoint` (submitit's ``Checkpointable`` hook, called in
    task 0 when SLURM signals preemption or the time limit) returns the same job with ``--resume``,
    so the requeued run continues from ``OUTPUT_DIR/last_checkpoint``: iteration, LR scheduler,
    optimizer state (and, with ``SEED_EACH_ITERATION``, the same random draws). Progress since the
    last periodic checkpoint (SOLVER.CHECKPOINT_PERIOD) is redone.
    """

    def __init__(self, train_argv):
        self.train_argv = list(train_argv)

    def __call__(self):
        from detectron2.engine import default_argument_parser

        from .trainer import main

        env = submitit.JobEnvironment()
        args = default_argument_parser().parse_args(self.train_argv)
        per_node = env.num_tasks // env.num_nodes
        args.num_gpus, args.num_machines, args.machine_rank = per_node, env.num_nodes, env.node
        if not torch.cuda.is_available():
            torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", 1)))
        if env.num_tasks == 1:
            return main(args)
        args.dist_url = f"tcp://{env.hostnames[0]}:{_port_for_job(env.job_id)}"
        init_distributed(env.global_rank, env.num_tasks, per_node, args.dist_url)
        try:
            result = main(args)
        finally:
            dist.destroy_process_group()
        return result if env.global_rank == 0 else None

    def checkpoint(self, *args, **kwargs):
        """The requeued submission: this job with ``--resume``."""
        argv = self.train_argv if "--resume" in self.train_argv else ["--resume", *self.train_argv]
        return submitit.helpers.DelayedSubmission(TrainJob(argv))
