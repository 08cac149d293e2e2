"""Transformer decoder of PartDistillation stage 6 (self-training, Cho et al., CVPR 2023, Sec. 3.4):
the Mask2Former decoder with one part classifier shared by all object classes.

The class head ``class_embed`` (official name and state-dict keys ``...predictor.class_embed.weight``
(K*O + 1, C) and ``.bias`` (K*O + 1,), float64 as in the official model) scores K part classes
for each of O object classes: object class ``o`` owns columns ``[o*K, (o+1)*K)``, the last column is
"no object". Every prediction (the initial queries' and every block's, i.e. all deep-supervision
outputs) of an image is restricted to its object's K columns plus no-object, so its logits are
(Q, K + 1) and the Mask2Former criterion with K classes applies unchanged. Only those K + 1 rows
of the weight are used (gathered, never the full (Q, K*O + 1) product), so all other object
classes' rows get exactly zero gradient and the cost does not grow with O.
(Official: PART_DISTILLATION.NUM_PART_CLASSES = K, NUM_OBJECT_CLASSES = O, 8 x 22000 in the
released ImageNet-22K run.)
"""
import math
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from torch import nn

from .mask2former_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
)


class ObjectPartClassifier(nn.Module):
    """Linear part classifier (C -> K*O + 1, float64) evaluated only on the columns of one object
    class per image.

    Parameters ``weight`` (K*O + 1, C) and ``bias`` (K*O + 1,) are float64 and initialised like
    ``nn.Linear`` (official: ``nn.Linear(C, K*O + 1).double()``), so official checkpoints and
    ``nn.Linear`` state dicts of that shape load into it.

    The object classes of the current batch are given either as the ``object_classes`` argument
    or bound beforehand with :meth:`bind` (how the decoder passes them through Mask2Former's
    prediction heads, which call ``class_embed(queries)``).
    """

    def __init__(self, in_features: int, num_part_classes: int, num_object_classes: int):
        """
        Args:
            in_features: query width C (MODEL.MASK_FORMER.HIDDEN_DIM).
            num_part_classes: K >= 1; num_object_classes: O >= 1.

        Raises:
            ValueError: K or O < 1.
        """
        super().__init__()
        if num_part_classes < 1 or num_object_classes < 1:
            raise ValueError(f"need >= 1 part and object classes, got K={num_part_classes}, "
                             f"O={num_object_classes}")
        self.num_part_classes = num_part_classes
        self.num_object_classes = num_object_classes
        out = num_part_classes * num_object_classes + 1
        self.weight = nn.Parameter(torch.empty(out, in_features, dtype=torch.float64))
        self.bias = nn.Parameter(torch.empty(out, dtype=torch.float64))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)
        self._bound: Optional[torch.Tensor] = None

    def bind(self, object_classes: Optional[torch.Tensor]) -> None:
        """Set (or clear, with None) the (B,) int64 object classes used when ``forward`` is called
        without them."""
        self._bound = object_classes

    def columns(self, object_classes: torch.Tensor) -> torch.Tensor:
        """(B,) int64 object classes -> (B, K + 1) int64 weight rows: ``o*K .. o*K + K - 1`` and the
        no-object row K*O.

        Raises:
            ValueError: a class outside [0, O).
        """
        object_classes = torch.as_tensor(object_classes, dtype=torch.int64, device=self.weight.device)
        if object_classes.numel() and (int(object_classes.min()) < 0
                                       or int(object_classes.max()) >= self.num_object_classes):
            raise ValueError(f"object classes {object_classes.tolist()} outside [0, "
                             f"{self.num_object_classes}) (PART_DISTILLATION.NUM_OBJECT_CLASSES)")
        k = self.num_part_classes
        parts = object_classes[:, None] * k + torch.arange(k, device=self.weight.device)
        no_object = torch.full_like(object_classes[:, None], k * self.num_object_classes)
        return torch.cat([parts, no_object], dim=1)

    def forward(self, queries: torch.Tensor, object_classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, Q, C) queries -> (B, Q, K + 1) float64 logits of each image's object class (the
        last entry is no-object), identical to ``nn.Linear`` over all K*O + 1 columns followed by
        taking those columns.

        Raises:
            RuntimeError: no object classes given or bound; ValueError: their count is not B or
                one is outside [0, O).
        """
        classes = object_classes if object_classes is not None else self._bound
        if classes is None:
            raise RuntimeError("ObjectPartClassifier needs the object class of every image "
                               "(pass object_classes or bind() them)")
        if len(classes) != queries.shape[0]:
            raise ValueError(f"{len(classes)} object classes for a batch of {queries.shape[0]}")
        cols = self.columns(classes)  # (B, K + 1)
        weight, bias = self.weight[cols], self.bias[cols]  # (B, K + 1, C), (B, K + 1)
        return torch.einsum("bqc,bkc->bqk", queries.to(torch.float64), weight) + bias[:, None, :]


@TRANSFORMER_DECODER_REGISTRY.register()
class PartDistillationTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """:class:`MultiScaleMaskedTransformerDecoder` whose ``class_embed`` is an
    :class:`ObjectPartClassifier`; ``forward`` takes the images' object classes (official: passed
    through the head's ``mask`` argument) and returns, for every prediction, ``pred_logits``
    (B, Q, K + 1) float64 restricted to each image's object class. Masks and ``decoder_output``
    are the base decoder's.
    """

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *,
                 num_part_classes: int, num_object_classes: int, **kwargs):
        """
        Args:
            in_channels, mask_classification, **kwargs: see
                :class:`MultiScaleMaskedTransformerDecoder` (``num_classes`` is ignored by the
                class head: it has K*O + 1 outputs).
            num_part_classes: K (PART_DISTILLATION.NUM_PART_CLASSES).
            num_object_classes: O (PART_DISTILLATION.NUM_OBJECT_CLASSES).
        """
        super().__init__(in_channels, mask_classification, **kwargs)
        hidden_dim = self.query_feat.weight.shape[1]
        self.class_embed = ObjectPartClassifier(hidden_dim, num_part_classes, num_object_classes)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        """The base decoder's keys plus PART_DISTILLATION.{NUM_PART_CLASSES, NUM_OBJECT_CLASSES}."""
        ret = super().from_config(cfg, in_channels, mask_classification)
        ret["num_part_classes"] = cfg.PART_DISTILLATION.NUM_PART_CLASSES
        ret["num_object_classes"] = cfg.PART_DISTILLATION.NUM_OBJECT_CLASSES
        return ret

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Decode with each image's logits cut to its object class.

        Args:
            x, mask_features: as :meth:`MultiScaleMaskedTransformerDecoder.forward`.
            mask: (B,) int64 object class of each image in [0, O) (the name is the head's
                argument, as in the official model).

        Returns:
            the base decoder's dict, with ``pred_logits`` and every ``aux_outputs[i]
            ["pred_logits"]`` of shape (B, Q, K + 1), float64.

        Raises:
            RuntimeError: ``mask`` is None; ValueError: wrong count or out-of-range classes.
        """
        self.class_embed.bind(mask)
        try:
            return super().forward(x, mask_features)
        finally:
            self.class_embed.bind(None)
