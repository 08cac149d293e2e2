"""Training hooks of our own (detectron2 ``HookBase``) and the seeding of a training run."""
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng


def seed_training(seed: int) -> int:
    """Seed torch / numpy / random for a training run as detectron2's ``default_setup`` does for
    ``tools/train_net.py``: with ``seed + rank`` when config ``SEED >= 0``, else with a fresh
    random seed (logged by detectron2). Call it before the trainer is built: model initialisation
    and the data sampler's order (``comm.shared_random_seed``) draw from these generators.

    Returns:
        the seed used (``seed + rank``), or -1 when it was drawn at random.
    """
    if seed < 0:
        seed_all_rng(None)
        return -1
    seed_all_rng(seed + comm.get_rank())
    return seed + comm.get_rank()


class IterationSeedHook(HookBase):
    """Before every step, seed torch / numpy / random with ``seed + 1_000_003 * iter + rank``
    (config ``SEED_EACH_ITERATION`` with ``SEED >= 0``).

    The random draws of a step (augmentations in the main process, Mask2Former's point sampling,
    dropout) then depend only on (SEED, iteration, rank), so a run resumed from a checkpoint
    (``--resume``, or a SLURM requeue through ``tools/launch.py``) makes the same draws as an
    uninterrupted one. The data order is the sampler's and restarts on resume (detectron2
    behaviour): bitwise-equal resumes also need a data stream that does not depend on the
    position in the sampler (e.g. one image per process), and ``DATALOADER.NUM_WORKERS 0``.
    """

    def __init__(self, seed: int):
        if seed < 0:
            raise ValueError(f"SEED_EACH_ITERATION needs SEED >= 0, got {seed}")
        self.seed = seed

    def before_step(self):
        seed_all_rng((self.seed + 1_000_003 * self.trainer.iter + comm.get_rank()) % 2**32)
