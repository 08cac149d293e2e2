"""part-distillation: learning object parts from instance segmentation without part labels.

Importing the package registers the built-in datasets (:mod:`part_distillation.data`, official
names, once); importing :mod:`part_distillation.modeling` registers the backbones, heads and
meta-architectures with detectron2's registries.
"""
import warnings

# fvcore (a detectron2 dependency) applies torch.jit.script at import time, which torch 2.14
# deprecates with a FutureWarning in every process (each worker too); it is not ours to act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import data  # noqa: E402,F401  (registers the built-in datasets, detectron2 builtin.py style)
