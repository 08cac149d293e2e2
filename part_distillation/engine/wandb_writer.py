"""Optional Weights & Biases logging beside TensorBoard (official PartDistillation ``WANDB.*`` keys).

:class:`WandbWriter` is a detectron2 ``EventWriter``: at every write it sends the scalars the
``EventStorage`` gained since the previous write (losses, LR, evaluation metrics) and the images put
there (``put_image``, e.g. the prediction panels of
:meth:`part_distillation.modeling.meta_arch.maskformer_model.MaskFormer.visualize`) to one W&B run.

Config: WANDB.DISABLE_WANDB (True here by default; the official default is False), WANDB.PROJECT
("" -> "part_distillation"), WANDB.GROUP, WANDB.RUN_NAME. The run's files go to
``<OUTPUT_DIR>/wandb``; its id is kept in ``<OUTPUT_DIR>/wandb_run_id`` so that ``--resume``
continues the same run. Offline (no network, e.g. on a cluster node): set the environment
variable ``WANDB_MODE=offline`` and upload later with ``wandb sync <OUTPUT_DIR>/wandb/offline-run-*``.
"""
import os
import secrets

import numpy as np
from detectron2.utils.events import EventWriter, get_event_storage

from ..config import plain_config
from ..utils.io import atomic_write

RUN_ID_FILE = "wandb_run_id"
DEFAULT_PROJECT = "part_distillation"


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise ImportError("WANDB.DISABLE_WANDB is False but the 'wandb' package is not installed: "
                          "pip install wandb==0.31.0 (or set WANDB.DISABLE_WANDB True)") from e
    return wandb


class WandbWriter(EventWriter):
    """Write ``EventStorage`` scalars and images to a W&B run (see module docstring).

    Args:
        cfg: the run's config (WANDB.*, OUTPUT_DIR); logged as the run's config.
        window_size: median window of scalars with a smoothing hint (as detectron2's writers).

    Raises:
        ImportError: ``wandb`` is not installed (the message says how to install or disable it).
    """

    def __init__(self, cfg, window_size: int = 20):
        wandb = _import_wandb()
        self._window_size = window_size
        self._last_write = -1
        out = cfg.OUTPUT_DIR
        # wandb's own WANDB_DIR (where its files go) is honoured; default OUTPUT_DIR
        wandb_dir = os.environ.get("WANDB_DIR") or out
        os.makedirs(os.path.join(wandb_dir, "wandb"), exist_ok=True)
        id_file = os.path.join(out, RUN_ID_FILE)
        if os.path.isfile(id_file):
            with open(id_file) as f:
                run_id = f.read().strip()
        else:
            run_id = secrets.token_hex(4)  # W&B run ids: short alphanumeric strings
            atomic_write(id_file, lambda f: f.write(run_id))
        self.run = wandb.init(
            project=cfg.WANDB.PROJECT or DEFAULT_PROJECT, group=cfg.WANDB.GROUP, name=cfg.WANDB.RUN_NAME,
            dir=wandb_dir, id=run_id, resume="allow", config=plain_config(cfg), reinit="create_new")
        self._wandb = wandb

    def write(self) -> None:
        """Log new scalars (smoothed like the JSON writer) and the pending images (a list per name,
        captioned with their iteration) at the storage's iteration. Images are left in the storage
        for the TensorBoard writer, which clears them."""
        storage = get_event_storage()
        data = {}
        for name, (value, iteration) in storage.latest_with_smoothing_hint(self._window_size).items():
            if iteration > self._last_write:
                data[name] = value
        images = {}
        for name, image, iteration in storage._vis_data:  # detectron2's (name, CHW array, iteration)
            images.setdefault(name, []).append(self._wandb.Image(
                np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0)), caption=f"iteration {iteration}"))
        data.update(images)
        if data:
            self.run.log(data, step=storage.iter)
        self._last_write = storage.iter

    def close(self) -> None:
        """Finish the run (flushes it to disk / the server)."""
        self.run.finish()
