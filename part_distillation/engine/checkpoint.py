"""Crash-safe training checkpoints (detectron2 ``DetectionCheckpointer`` with atomic writes and a
resume that survives truncated files).

* :meth:`AtomicCheckpointer.save` writes ``<name>.pth`` and the ``last_checkpoint`` tag through
  :func:`part_distillation.utils.io.atomic_write` (temp file in the same folder, fsync, rename), so a
  kill while ``model_final.pth`` is written leaves the previous state, never a truncated file.
* A file that cannot be read (truncated or corrupt, e.g. written by an older version or damaged on
  disk) raises :class:`CorruptCheckpointError` naming the file, instead of a bare ``EOFError``.
* ``resume_or_load(..., resume=True)`` tries the tagged checkpoint, then the other
  ``model_*.pth`` of the folder, newest iteration first; each unreadable one is renamed to
  ``<file>.corrupt`` (kept for inspection, and so that training writes it again) with a warning.
  When none is readable, training starts from MODEL.WEIGHTS at iteration 0.
* :meth:`AtomicCheckpointer.remove_stale_temp_files` deletes the temp files of checkpoint writes
  killed before this process started (``.model_*.pth.*.tmp``, ``.last_checkpoint.*.tmp``).
* ``loaded`` holds ``(file, fvcore incompatible-keys report)`` of the last file loaded into the
  model, for :func:`~part_distillation.modeling.weights.check_complete_weights`.
"""
import glob
import logging
import os
import re
from typing import Any, Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.io import atomic_write
from ..utils.process import remove_stale_temp_files

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated or corrupt); the message names it."""


def _iteration_key(path: str) -> int:
    """Sort key: ``model_final`` after every numbered checkpoint, then by iteration number."""
    name = os.path.basename(path)
    if name == "model_final.pth":
        return 1 << 62
    m = re.fullmatch(r"model_(\d+)\.pth", name)
    return int(m.group(1)) if m else -1


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose saves are atomic and whose resume skips unreadable files
    (see module docstring). Same constructor and file layout (``model_XXXXXXX.pth``,
    ``model_final.pth``, ``last_checkpoint`` in ``save_dir``)."""

    loaded = None  # (path, _IncompatibleKeys) of the last file loaded into the model

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """detectron2's ``load``, recording ``loaded`` (``None`` when ``path`` is empty)."""
        self._loading, self.loaded = path, None
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint: Dict[str, Any]):
        incompatible = super()._load_model(checkpoint)
        self.loaded = (getattr(self, "_loading", ""), incompatible)
        return incompatible

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``{"model": state_dict, <checkpointables>..., **kwargs}`` to ``<save_dir>/<name>.pth``
        atomically, then tag it in ``last_checkpoint`` (also atomically). No-op without
        ``save_dir`` or on non-saving ranks."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f), mode="wb")
        self.tag_last_checkpoint(basename)

    def remove_stale_temp_files(self) -> int:
        """Delete the temp files that killed saves of this checkpointer's files left in
        ``save_dir`` (``.model_*.pth.<random>.tmp``, ``.last_checkpoint.<random>.tmp``), only those
        older than this process (:func:`part_distillation.utils.process.remove_stale_temp_files`).
        No-op without ``save_dir`` or on non-saving ranks. Returns the count."""
        if not self.save_dir or not self.save_to_disk:
            return 0
        return remove_stale_temp_files(self.save_dir, ["model_*.pth", LAST_CHECKPOINT])

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` in ``<save_dir>/last_checkpoint``."""
        if self.save_to_disk:
            atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT),
                         lambda f: f.write(last_filename_basename))

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """detectron2's reader, with unreadable files reported as :class:`CorruptCheckpointError`.

        Raises:
            CorruptCheckpointError: the file is empty, truncated or not a checkpoint.
        """
        if os.path.isfile(filename) and os.path.getsize(filename) == 0:
            raise CorruptCheckpointError(f"checkpoint {filename} is empty (0 bytes): truncated write?")
        try:
            return super()._load_file(filename)
        except Exception as e:  # EOFError, UnpicklingError, zip RuntimeError, ...: all mean unreadable
            raise CorruptCheckpointError(f"checkpoint {filename} is truncated or corrupt "
                                         f"({type(e).__name__}: {e})") from e

    def resume_candidates(self) -> List[str]:
        """Checkpoint files to resume from, in order: the tagged one, then the other
        ``model_*.pth`` of ``save_dir`` (newest iteration first)."""
        tagged = self.get_checkpoint_file() if self.has_checkpoint() else ""
        others = sorted(glob.glob(os.path.join(self.save_dir, "model_*.pth")), key=_iteration_key, reverse=True)
        return ([tagged] if tagged and os.path.isfile(tagged) else []) + [p for p in others if p != tagged]

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume from the newest readable checkpoint of ``save_dir`` (``resume``), else load the
        model weights of ``path`` (MODEL.WEIGHTS) only.

        Unreadable checkpoints met while resuming are renamed to ``<file>.corrupt`` and logged;
        ``last_checkpoint`` is re-tagged to the file actually used, or removed when none was
        readable, so that the trainer starts at the right iteration.

        Raises:
            CorruptCheckpointError: ``path`` itself is unreadable (e.g. ``--eval-only`` on a
                damaged file); the message names it.
        """
        if resume:
            for candidate in self.resume_candidates():
                try:
                    checkpoint = self._load_file(candidate)
                except CorruptCheckpointError as e:
                    moved = candidate + ".corrupt"
                    logger.warning("%s; moved to %s, trying an older checkpoint", e, moved)
                    if self.save_to_disk:
                        os.replace(candidate, moved)
                    continue
                if self.save_to_disk and self.get_checkpoint_file() != candidate:
                    self.tag_last_checkpoint(os.path.basename(candidate))
                return self._restore(candidate, checkpoint)
            tag = os.path.join(self.save_dir, LAST_CHECKPOINT) if self.save_dir else ""
            if tag and os.path.isfile(tag) and self.save_to_disk:
                logger.warning("no readable checkpoint in %s: starting from MODEL.WEIGHTS at iteration 0",
                               self.save_dir)
                os.remove(tag)
        return self.load(path, checkpointables=[])

    def _restore(self, path: str, checkpoint: Dict[str, Any]) -> Dict[str, Any]:
        """fvcore ``load`` for an already-read checkpoint: model, then every checkpointable."""
        self.logger.info("[Checkpointer] Resuming from %s ...", path)
        self._loading = path
        incompatible = self._load_model(checkpoint)
        if incompatible is not None:
            self._log_incompatible_keys(incompatible)
        for key, obj in self.checkpointables.items():
            if key in checkpoint:
                obj.load_state_dict(checkpoint.pop(key))
        return checkpoint
