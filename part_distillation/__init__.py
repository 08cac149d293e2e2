"""part-distillation: learning object parts from instance segmentation without part labels.

Importing the package registers its backbones, meta-architectures and datasets with detectron2.
"""
