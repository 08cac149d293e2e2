"""Mask2Former meta-architecture (Cheng et al., CVPR 2022) registered under the official name
``MaskFormer`` in detectron2's ``META_ARCH_REGISTRY``, so that official Mask2Former COCO
instance-segmentation YAMLs (``configs/mask2former/``) build as they are, and the official model-zoo
checkpoints (``weights/mask2former/instance/swinL_i21k_q200_e100.pkl``) load key for key
(``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
``criterion.empty_weight``).

Used by the stage-1 Mask2Former labeler (instance predictions), stage 2 (its backbone features) and,
through :class:`~part_distillation.modeling.meta_arch.proposal_model.ProposalModel` (a subclass),
by stage 4.

Inputs (one dict per image, detectron2 convention): ``image`` (3, h, w) uint8/float tensor in
``INPUT.FORMAT`` channel order at the network input size; training: ``instances`` with
``gt_masks`` ((T, h, w) ``BitMasks`` or bool tensor) and ``gt_classes`` (T,) int64; inference:
optional ``height`` / ``width`` of the original image that predictions are returned at.

Only instance inference is implemented (the official COCO instance YAMLs set
``MODEL.MASK_FORMER.TEST.INSTANCE_ON True``, ``SEMANTIC_ON`` / ``PANOPTIC_ON False``); asking for
semantic or panoptic output is a ``ValueError`` at build time.
"""
import logging
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ...visualization import overlay

from ..criterion import SetCriterion
from ..matcher import HungarianMatcher

logger = logging.getLogger(__name__)


def freeze_parameters(model: nn.Module, keys: Sequence[str]) -> Tuple[int, int]:
    """Official MODEL.MASK_FORMER.FREEZE_KEYS semantics: a parameter is frozen
    (``requires_grad=False``) when any key is a *substring* of its name, e.g. the official
    ``["backbone", "encoder"]`` freezes ``backbone.*`` and the pixel decoder's deformable encoder
    ``sem_seg_head.pixel_decoder.transformer.encoder.*`` but not
    ``sem_seg_head.pixel_decoder.transformer.level_embed`` (trainable officially).

    (The official trainer tests the key against the name of the module that owns the parameter;
    for keys that name modules, as the official ones do, both give the same set.)

    Frozen modules stay in train mode as officially (Swin drop-path and dropout stay active).
    One addition: a ``BatchNorm2d`` / ``SyncBatchNorm`` whose affine parameters are all frozen is
    replaced by detectron2's ``FrozenBatchNorm2d`` (same state-dict keys but
    ``num_batches_tracked``), so that its running statistics are frozen too; the official
    backbones have none (Swin uses LayerNorm, the R50 configs FrozenBN), so this changes nothing
    for them.

    Returns:
        ``(tensors, values)``: number of frozen parameter tensors and of scalar parameters.

    Raises:
        ValueError: naming a key that is a substring of no parameter name (a misspelt key would
            otherwise silently train everything).
    """
    named = list(model.named_parameters())
    tensors, values = 0, 0
    for key in keys:
        matched = [p for n, p in named if key in n]
        if not matched:
            raise ValueError(f"MODEL.MASK_FORMER.FREEZE_KEYS: '{key}' is a substring of no "
                             f"parameter name of {type(model).__name__}")
        for p in matched:
            if p.requires_grad:
                p.requires_grad_(False)
                tensors += 1
                values += p.numel()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if (isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)) and child.affine
                    and not any(p.requires_grad for p in child.parameters())):
                setattr(parent, child_name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
    return tensors, values


def _paint(masks: torch.Tensor) -> np.ndarray:
    """(N, H, W) bool masks, most important first -> (H, W) int64 label map (0 = none, i + 1 =
    mask i where it is the first mask covering the pixel)."""
    labels = np.zeros(masks.shape[-2:], np.int64)
    for i in range(masks.shape[0] - 1, -1, -1):
        labels[masks[i].cpu().numpy()] = i + 1
    return labels


# OVERSAMPLE_RATIO / IMPORTANCE_SAMPLE_RATIO of the official IN-1K top-level configs
# (configs/PartProposalLearning.yaml, configs/PartDistillation.yaml at 827c35d / 938fd78): detectron2's
# point sampler rejects them (it needs k >= 1 and beta in [0, 1]); the official per-stage sh files
# pass the same two numbers the other way round (OVERSAMPLE_RATIO 3.0, IMPORTANCE_SAMPLE_RATIO 0.0).
OFFICIAL_SWAPPED_POINT_RATIOS = (0.0, 3.0)


def point_sampling_ratios(cfg) -> Tuple[float, float]:
    """``(oversample_ratio, importance_sample_ratio)`` of the mask losses' point sampling, from
    MODEL.MASK_FORMER.OVERSAMPLE_RATIO / IMPORTANCE_SAMPLE_RATIO. The published pair of the official
    IN-1K configs (:data:`OFFICIAL_SWAPPED_POINT_RATIOS`: 0.0 / 3.0, which the sampler cannot run) is
    read swapped, as the official sh files pass it (3.0 / 0.0: uniformly random points), with a
    warning.

    Raises:
        ValueError: any other pair with OVERSAMPLE_RATIO < 1 or IMPORTANCE_SAMPLE_RATIO outside
            [0, 1] (naming both keys).
    """
    mf = cfg.MODEL.MASK_FORMER
    k, beta = float(mf.OVERSAMPLE_RATIO), float(mf.IMPORTANCE_SAMPLE_RATIO)
    if (k, beta) == OFFICIAL_SWAPPED_POINT_RATIOS:
        logger.warning("MODEL.MASK_FORMER.OVERSAMPLE_RATIO %s / IMPORTANCE_SAMPLE_RATIO %s (the official IN-1K "
                       "config's swapped pair) read as OVERSAMPLE_RATIO %s / IMPORTANCE_SAMPLE_RATIO %s, the "
                       "official sh files' values", k, beta, beta, k)
        return beta, k
    if k < 1 or not 0.0 <= beta <= 1.0:
        raise ValueError(f"MODEL.MASK_FORMER.OVERSAMPLE_RATIO {k} / IMPORTANCE_SAMPLE_RATIO {beta}: the point "
                         "sampler needs OVERSAMPLE_RATIO >= 1 and IMPORTANCE_SAMPLE_RATIO in [0, 1] "
                         "(Mask2Former: 3.0 / 0.75)")
    return k, beta


def build_criterion(cfg, num_classes: int, match_points: int = None, loss_points: int = None) -> SetCriterion:
    """Mask2Former's Hungarian matcher + set criterion from MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT
    (the same numbers weigh matching costs and losses, as officially), NO_OBJECT_WEIGHT,
    OVERSAMPLE_RATIO, IMPORTANCE_SAMPLE_RATIO (:func:`point_sampling_ratios`); ``_{i}`` weight
    copies for the DEC_LAYERS - 1 auxiliary predictions when DEEP_SUPERVISION. Points sampled per
    mask for matching and for the losses: ``match_points`` / ``loss_points`` (stage 6:
    TRAIN_NUM_POINTS_MATCH / _LOSS), by default TRAIN_NUM_POINTS."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT,
                               cost_dice=mf.DICE_WEIGHT, num_points=match_points or mf.TRAIN_NUM_POINTS)
    weights = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    weight_dict = dict(weights)
    if mf.DEEP_SUPERVISION:
        for i in range(mf.DEC_LAYERS - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in weights.items()})
    oversample_ratio, importance_sample_ratio = point_sampling_ratios(cfg)
    return SetCriterion(
        num_classes=num_classes, matcher=matcher, weight_dict=weight_dict, eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=("labels", "masks"), num_points=loss_points or mf.TRAIN_NUM_POINTS,
        oversample_ratio=oversample_ratio, importance_sample_ratio=importance_sample_ratio)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask2Former: backbone + :class:`~part_distillation.modeling.meta_arch.mask_former_head.MaskFormerHead`
    + set criterion, with Mask2Former's instance inference.

    Training returns the criterion's losses multiplied by ``criterion.weight_dict``. Inference
    returns, per image, ``{"instances": Instances}`` at the original size (H, W) with
    ``pred_masks`` (N, H, W) float {0, 1}, ``pred_boxes`` (N, 4) XYXY boxes of the masks (the
    official code leaves zeros there), ``scores`` (N,) and ``pred_classes`` (N,) int64, N =
    TEST.DETECTIONS_PER_IMAGE: the top-N (query, class) pairs of the softmax class probabilities
    (no-object excluded) over all Q x K pairs, each scored by its class probability times the mean
    sigmoid mask probability inside its (logit > 0) mask.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module, criterion: SetCriterion,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int,
                 deep_supervision: bool, test_topk: int, freeze_keys: Sequence[str] = (),
                 vis_period_train: int = 0, vis_period_test: int = 0, vis_topk: int = 10,
                 input_format: str = "RGB"):
        """
        Args:
            backbone: detectron2 backbone (``output_shape()`` feeds the head).
            sem_seg_head: :class:`MaskFormerHead` (``num_classes`` foreground classes).
            criterion: :class:`SetCriterion` (unweighted losses; ``weight_dict`` applied here).
            pixel_mean, pixel_std: per-channel normalisation in the input's channel order
                (MODEL.PIXEL_MEAN / PIXEL_STD).
            size_divisibility: pad the batch to a multiple of this (MODEL.MASK_FORMER.SIZE_DIVISIBILITY;
                < 0 -> the backbone's ``size_divisibility``).
            deep_supervision: also train the auxiliary predictions (MASK_FORMER.DEEP_SUPERVISION).
            test_topk: predictions kept per image (TEST.DETECTIONS_PER_IMAGE).
            freeze_keys: MODEL.MASK_FORMER.FREEZE_KEYS, see :func:`freeze_parameters`.
            vis_period_train, vis_period_test, vis_topk: :meth:`visualize` every N training
                iterations / every N inference calls (0: never), drawing the top-k predictions
                (WANDB.VIS_PERIOD_TRAIN / VIS_PERIOD_TEST / VIS_TOPK; 0 when WANDB.DISABLE_WANDB).
            input_format: channel order of ``image`` (INPUT.FORMAT), for the visualisation.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility if size_divisibility >= 0 else backbone.size_divisibility
        self.deep_supervision = deep_supervision
        self.test_topk = test_topk
        self.freeze_keys = list(freeze_keys)
        self.vis_period = {"train": vis_period_train, "test": vis_period_test}
        self.vis_topk = vis_topk
        self.input_format = input_format
        self._test_calls = 0
        tensors, values = freeze_parameters(self, self.freeze_keys)
        if self.freeze_keys:
            logger.info("FREEZE_KEYS %s: froze %d parameter tensors (%d parameters)",
                        self.freeze_keys, tensors, values)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Build from MODEL.{BACKBONE, SEM_SEG_HEAD, MASK_FORMER, PIXEL_MEAN, PIXEL_STD} and
        TEST.DETECTIONS_PER_IMAGE.

        Raises:
            ValueError: MODEL.MASK_FORMER.TEST.SEMANTIC_ON / PANOPTIC_ON, or INSTANCE_ON off (only
                instance inference is implemented).
        """
        test = cfg.MODEL.MASK_FORMER.TEST
        if test.SEMANTIC_ON or test.PANOPTIC_ON or not test.INSTANCE_ON:
            raise ValueError("MaskFormer implements instance inference only: set "
                             "MODEL.MASK_FORMER.TEST.INSTANCE_ON True, SEMANTIC_ON / PANOPTIC_ON False")
        return cls.common_config(cfg)

    @staticmethod
    def common_config(cfg) -> dict:
        """Constructor arguments shared with subclasses (backbone, head, criterion, normalisation,
        padding, deep supervision, top-k, freeze keys)."""
        mf = cfg.MODEL.MASK_FORMER
        backbone = build_backbone(cfg)
        head = build_sem_seg_head(cfg, backbone.output_shape())
        vis = not cfg.WANDB.DISABLE_WANDB
        return {
            "backbone": backbone,
            "sem_seg_head": head,
            "criterion": build_criterion(cfg, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "test_topk": cfg.TEST.DETECTIONS_PER_IMAGE,
            "freeze_keys": mf.FREEZE_KEYS,
            "vis_period_train": cfg.WANDB.VIS_PERIOD_TRAIN if vis else 0,
            "vis_period_test": cfg.WANDB.VIS_PERIOD_TEST if vis else 0,
            "vis_topk": cfg.WANDB.VIS_TOPK,
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self) -> torch.device:
        """Device of the model's buffers and parameters."""
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalised images padded to ``size_divisibility``."""
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of weighted scalar losses. Inference: :meth:`inference`'s list."""
        images = self.preprocess(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        self.maybe_visualize(batched_inputs, images, outputs)
        if self.training:
            if not self.deep_supervision:
                outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
            losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
            return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}
        return self.inference(batched_inputs, images, outputs)

    @torch.no_grad()
    def maybe_visualize(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> None:
        """Every ``vis_period["train"]`` training iterations (the event storage's iteration) or
        every ``vis_period["test"]`` inference calls, put a panel of the batch's first image into
        detectron2's ``EventStorage`` (``put_image``, name ``"<train|test>/predictions"``), which
        the TensorBoard and W&B writers log: ``image | top-k predicted masks (> 0 logit) | target
        masks`` (the last only when the input has ``instances``). Predictions are ranked by their
        best foreground class probability. No-op without an active storage (e.g. ``--eval-only``).
        """
        split = "train" if self.training else "test"
        period = self.vis_period[split]
        if period <= 0:
            return
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside a trainer
            return
        if split == "test":
            self._test_calls += 1
            if (self._test_calls - 1) % period:
                return
        elif storage.iter % period:
            return
        storage.put_image(f"{split}/predictions", self.visualize(batched_inputs[0], images, outputs))

    def visualize(self, x: Dict, images: ImageList, outputs: Dict) -> np.ndarray:
        """The panel of :meth:`maybe_visualize` for the first image of the batch: uint8 (3, h, 2w
        or 3w) RGB, at the network input size h x w."""
        h, w = images.image_sizes[0]
        image = x["image"].detach().cpu().permute(1, 2, 0).float().clamp(0, 255).numpy().astype(np.uint8)[:h, :w]
        if self.input_format == "BGR":
            image = image[..., ::-1]
        scores = outputs["pred_logits"][0].float().softmax(-1)[:, :-1].max(-1).values
        top = scores.topk(min(self.vis_topk, scores.numel())).indices
        logits = F.interpolate(outputs["pred_masks"][0:1, top].float(), size=images.tensor.shape[-2:],
                               mode="bilinear", align_corners=False)[0, :, :h, :w]
        panels = [image, overlay(image, _paint(logits > 0))]
        if "instances" in x:
            gt = x["instances"].gt_masks
            gt = (gt.tensor if isinstance(gt, BitMasks) else gt).cpu().bool()[:, :h, :w]
            panels.append(overlay(image, _paint(gt)))
        return np.concatenate(panels, axis=1).transpose(2, 0, 1)

    def target_labels(self, instances: Instances, count: int) -> torch.Tensor:
        """(T,) int64 class of each target mask: ``instances.gt_classes``."""
        return instances.gt_classes.to(self.device, dtype=torch.int64)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Target masks of each image, zero-padded to the batch's padded size.

        Returns:
            per image ``{"labels": (T,) int64, "masks": (T, Hp, Wp) bool}`` on the model's device;
            T may be 0.
        """
        hp, wp = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            gt = x["instances"].gt_masks
            masks = gt.tensor if isinstance(gt, BitMasks) else gt
            masks = masks.to(self.device, dtype=torch.bool)
            padded = torch.zeros((masks.shape[0], hp, wp), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": self.target_labels(x["instances"], masks.shape[0]), "masks": padded})
        return targets

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Official Mask2Former instance inference (see class docstring), per image."""
        mask_logits = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                    mode="bilinear", align_corners=False)
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            out_h, out_w = int(x.get("height", h)), int(x.get("width", w))
            masks = sem_seg_postprocess(mask_logits[i], (h, w), out_h, out_w)
            results.append({"instances": self.instance_inference(outputs["pred_logits"][i], masks)})
        return results

    def instance_inference(self, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> Instances:
        """``class_logits`` (Q, K+1), ``mask_logits`` (Q, H, W) -> top-k :class:`Instances`."""
        num_classes = class_logits.shape[1] - 1
        probs = class_logits.float().softmax(-1)[:, :-1].flatten()  # query-major (q * K + k)
        scores, flat = probs.topk(min(self.test_topk, probs.numel()), sorted=False)
        classes = flat % num_classes
        masks = mask_logits[flat // num_classes].float()
        binary = (masks > 0).float()
        mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        result = Instances(tuple(masks.shape[-2:]))
        result.pred_masks = binary
        result.pred_boxes = BitMasks(binary > 0).get_bounding_boxes()
        result.scores = scores * mask_scores
        result.pred_classes = classes
        return result
