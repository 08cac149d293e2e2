"""Stage-1 labeler from any detectron2 instance-segmentation model (``OBJECT_MASK_TYPE:
detectron2``): the COCO Mask2Former (project ``MaskFormer`` meta-architecture, official weights
``weights/mask2former/instance/swinL_i21k_q200_e100.pkl``) or a model-zoo Mask R-CNN. The
official ImageNet-1K pseudo-labels were made this way ("m2f COCO, score_based").

The model comes from its own detectron2 config (``PROPOSAL_GENERATION.LABELER_CONFIG``, merged
into the project's config tree so project meta-architectures build too); its
``DATASETS.TEST[0]`` metadata names the classes (``thing_classes``).
"""
import logging
from typing import List

import numpy as np
import torch
from detectron2.config import configurable

from ..data.pseudo_labels import ObjectLabel
from .build import OBJECT_LABELER_REGISTRY
from .common import BatchedModelLabeler, check_weights, objects_from_instances

logger = logging.getLogger(__name__)

WEIGHTS_HELP = ("Download the COCO instance-segmentation checkpoint of the model (Mask2Former model "
                "zoo: Swin-L IN-21k, 200 queries, model_final_e5f453.pkl) to that path, see weights/README.md.")


def load_labeler_config(path: str, opts=()):
    """The labeler's detectron2 config: project keys + the YAML at ``path`` (``_BASE_`` allowed).

    Raises:
        ValueError: ``path`` empty. FileNotFoundError: no such file.
    """
    from ..config import setup_cfg

    if not path:
        raise ValueError("the detectron2 labeler needs PROPOSAL_GENERATION.LABELER_CONFIG (--labeler-config): "
                         "a detectron2 instance-segmentation config")
    return setup_cfg(path, list(opts))


@OBJECT_LABELER_REGISTRY.register()
class Detectron2ModelLabeler(BatchedModelLabeler):
    """Objects = the model's instances: top PROPOSAL_GENERATION.OBJECT_TOP_K by score after
    OBJECT_CLASS_FILTER (see :func:`select_predictions`), masks at image resolution.

    Input: the image resized by the model config's ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST,
    INPUT.MAX_SIZE_TEST)`` (in DataLoader workers), CHW float tensor in ``INPUT.FORMAT``; the
    model's ``detector_postprocess`` maps masks back to (height, width).
    """

    NAME = "detectron2"

    @configurable
    def __init__(self, *, model_cfg, top_k: int, class_filter: str, batch_size: int, num_workers: int):
        """
        Args:
            model_cfg: the model's own detectron2 config (:func:`load_labeler_config`).
            top_k: objects kept per image (``PROPOSAL_GENERATION.OBJECT_TOP_K``).
            class_filter: ``PROPOSAL_GENERATION.OBJECT_CLASS_FILTER`` (:func:`select_predictions`).
            batch_size: images per forward (``PROPOSAL_GENERATION.LABELER_BATCH_SIZE``).
            num_workers: image-decoding processes (``DATALOADER.NUM_WORKERS``).

        Raises:
            ValueError: ``model_cfg`` has no ``DATASETS.TEST``. FileNotFoundError: its MODEL.WEIGHTS
                names a missing file.
        """
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.data import MetadataCatalog
        from detectron2.modeling import build_model

        import part_distillation.modeling  # noqa: F401  (project meta-architectures)

        self.model_cfg = mc = model_cfg
        self.top_k, self.class_filter = top_k, class_filter
        self.batch_size, self.num_workers = batch_size, num_workers
        if not mc.DATASETS.TEST:
            raise ValueError("the labeler config needs DATASETS.TEST[0] whose metadata has thing_classes")
        self.class_names = list(MetadataCatalog.get(mc.DATASETS.TEST[0]).thing_classes)
        self.model = build_model(mc).eval()
        weights = check_weights(mc.MODEL.WEIGHTS, "detectron2 labeler", WEIGHTS_HELP)
        if weights:
            DetectionCheckpointer(self.model).load(weights)
        self.min_size, self.max_size, self.format = mc.INPUT.MIN_SIZE_TEST, mc.INPUT.MAX_SIZE_TEST, mc.INPUT.FORMAT

    @classmethod
    def from_config(cls, cfg, model_cfg=None) -> dict:
        """``model_cfg`` (default: :func:`load_labeler_config` of PROPOSAL_GENERATION.LABELER_CONFIG on
        the project's MODEL.DEVICE), PROPOSAL_GENERATION.{OBJECT_TOP_K, OBJECT_CLASS_FILTER,
        LABELER_BATCH_SIZE}, DATALOADER.NUM_WORKERS."""
        pg = cfg.PROPOSAL_GENERATION
        if model_cfg is None:
            model_cfg = load_labeler_config(pg.LABELER_CONFIG, ["MODEL.DEVICE", cfg.MODEL.DEVICE])
        return dict(model_cfg=model_cfg, top_k=pg.OBJECT_TOP_K, class_filter=pg.OBJECT_CLASS_FILTER,
                    batch_size=pg.LABELER_BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS)

    def transform(self, image: np.ndarray):
        """uint8 RGB (H, W, 3) -> ``(CHW float32 tensor resized, H, W)``."""
        from detectron2.data import transforms as T

        h, w = image.shape[:2]
        if self.format == "BGR":
            image = image[:, :, ::-1]
        resized = T.ResizeShortestEdge(self.min_size, self.max_size).get_transform(image).apply_image(image)
        return torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32")), h, w

    @torch.no_grad()
    def predict(self, inputs: list, records: List[dict]) -> List[List[ObjectLabel]]:
        outputs = self.model([{"image": x, "height": h, "width": w} for x, h, w in inputs])
        return [objects_from_instances(out["instances"].to("cpu"), self.class_names, rec, self.class_filter,
                                       self.top_k) for out, rec in zip(outputs, records)]
