"""The object-area-ratio filter shared by stages 4, 5 and 6 (one rule; see
:mod:`part_distillation.modeling.postprocess` for the other post-processing rules).

Source: facebookresearch/PartDistillation @ a0bb459: ``register_imagenet_with_proposals.py``
(stages 4 and 5) and ``proposal_dataset_mapper.py`` / ``part_distillation_dataset_mapper.py``
(path-only loading, stages 4 and 6) all keep an object when ``object_ratio > min_object_area_ratio``.
"""


def object_area_ratio_keep(object_area, image_area, min_ratio: float):
    """Whether an object is used: ``object_area / image_area > min_ratio`` (official, strict).

    Args:
        object_area: pixels of the object (number, numpy array or tensor; elementwise).
        image_area: pixels of the image (> 0).
        min_ratio: the stage's MIN_OBJECT_AREA_RATIO (PROPOSAL_LEARNING, PART_RANKING or
            PART_DISTILLATION).

    Returns:
        bool (or a bool array / tensor of the inputs' shape).
    """
    return object_area / image_area > min_ratio
