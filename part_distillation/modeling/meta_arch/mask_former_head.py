"""Mask2Former segmentation head: pixel decoder + transformer decoder (Cheng et al., CVPR 2022,
Fig. 2). Registered in detectron2's ``SEM_SEG_HEADS_REGISTRY`` under the official name
``MaskFormerHead`` with the official child names, so that checkpoint keys are
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*``.
"""
import logging
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder.msdeformattn import build_pixel_decoder
from ..transformer_decoder.mask2former_transformer_decoder import build_transformer_decoder

logger = logging.getLogger(__name__)


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Runs the pixel decoder on the backbone features and the masked-attention transformer
    decoder on the pixel decoder's multi-scale features and per-pixel mask features.

    Only the Mask2Former wiring ``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE =
    "multi_scale_pixel_decoder"`` is supported (the transformer decoder consumes three scales).

    Args:
        pixel_decoder: module whose ``forward_features(features)`` returns ``(mask_features
            (B, MASK_DIM, H/4, W/4), transformer_encoder_features, multi_scale_features)`` with
            ``multi_scale_features`` a list of three (B, CONVS_DIM, h_i, w_i) maps, lowest
            resolution first.
        transformer_predictor: the transformer decoder
            (:class:`~part_distillation.modeling.transformer_decoder.mask2former_transformer_decoder.MultiScaleMaskedTransformerDecoder`).
        num_classes: foreground classes (MODEL.SEM_SEG_HEAD.NUM_CLASSES).

    Loading: checkpoints whose pixel-decoder entries carry a doubled prefix
    ``sem_seg_head.pixel_decoder.pixel_decoder.*`` load as ``sem_seg_head.pixel_decoder.*``, as
    in the official PartDistillation head (``part_distillation/modeling/meta_arch/
    mask_former_head.py``, ``_load_from_state_dict``). Such files come from Mask2Former's
    version < 2 conversion (``sem_seg_head.X`` -> ``sem_seg_head.pixel_decoder.X``), which also
    fires on a state dict without ``_metadata`` that is already in the new layout; saving the model
    afterwards keeps the doubled names. ``_version = 2`` is the official state-dict metadata.
    """

    _version = 2

    @configurable
    def __init__(self, *, pixel_decoder: nn.Module, transformer_predictor: nn.Module,
                 num_classes: int):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        """Build both decoders from ``cfg`` and the backbone's ``output_shape()``; the transformer
        decoder's input channels are MODEL.SEM_SEG_HEAD.CONVS_DIM."""
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature != "multi_scale_pixel_decoder":
            raise ValueError(
                "MaskFormerHead supports MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE "
                f"'multi_scale_pixel_decoder' only, got '{in_feature}'")
        return {
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "transformer_predictor": build_transformer_decoder(
                cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_classification=True),
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Rename ``<prefix>pixel_decoder.pixel_decoder.*`` entries of ``state_dict`` (in place)
        to ``<prefix>pixel_decoder.*`` before the usual loading (see the class docstring).

        Raises:
            ValueError: a checkpoint holding both the doubled and the plain name of one entry
                (the official head silently keeps the doubled one's value).
        """
        old, new = prefix + "pixel_decoder.pixel_decoder.", prefix + "pixel_decoder."
        renamed = [k for k in list(state_dict.keys()) if k.startswith(old)]
        for key in renamed:
            target = new + key[len(old):]
            if target in state_dict:
                raise ValueError(f"checkpoint holds both '{key}' and '{target}': cannot rename the "
                                 "doubled pixel-decoder prefix")
            state_dict[target] = state_dict.pop(key)
        if renamed:
            logger.warning("checkpoint pixel-decoder keys renamed %s* -> %s* (%d entries)", old, new,
                           len(renamed))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None
                ) -> Dict[str, object]:
        """Args:
            features: backbone outputs, name (e.g. ``res2``..``res5``) -> (B, C, H/s, W/s).
            mask: passed to (and ignored by) the transformer decoder.

        Returns:
            the transformer decoder's dict: ``pred_logits`` (B, Q, K+1), ``pred_masks``
            (B, Q, H/4, W/4) mask logits, ``aux_outputs``, ``decoder_output`` (B, Q, HIDDEN_DIM).
        """
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
