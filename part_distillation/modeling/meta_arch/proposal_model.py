"""Class-agnostic part-proposal model of PartDistillation stage 4 ("part-proposal learning",
Cho et al., CVPR 2023, Sec. 3.2): a Mask2Former (backbone + :class:`MaskFormerHead`) with one
foreground class, "part", trained on the dense-CRF pseudo-labels of stage 3.

Registered in detectron2's ``META_ARCH_REGISTRY`` as ``ProposalModel`` (the official
``MODEL.META_ARCHITECTURE`` name), so that ``detectron2.modeling.build_model(cfg)`` builds it and
checkpoint keys are ``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``
(official Mask2Former layout: official checkpoints load into it, see
:mod:`part_distillation.modeling.weights`).

Inputs (one dict per image, as produced by
:class:`part_distillation.data.proposal_dataset.ProposalDatasetMapper` /
:class:`~part_distillation.data.proposal_dataset.PartEvalDatasetMapper`):

* ``image``: (3, h, w) uint8/float tensor in ``INPUT.FORMAT`` channel order, at the input
  resolution (after the mapper's resize).
* training: ``instances`` with ``gt_masks`` (T, h, w) ``BitMasks`` (the parts, class-agnostic).
* inference: ``object_masks`` (O, h, w) bool tensor at the input resolution, and the original
  image size ``height`` / ``width`` that predictions are returned at.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances

from ..postprocess import area_then_score_keep, per_pixel_winner
from .maskformer_model import MaskFormer

OUTPUT_MODES = ("proposals", "per_pixel")
# official PROPOSAL_LEARNING.POSTPROCESS_TYPES entries -> output mode
POSTPROCESS_TYPES = {"prop": "proposals", "semseg": "per_pixel"}


def output_mode_for(postprocess_type: str) -> str:
    """Output mode of an official PROPOSAL_LEARNING.POSTPROCESS_TYPES entry ("prop": overlapping
    proposals, "semseg": per-pixel segments).

    Raises:
        ValueError: another entry (the official "prop-filtered", which also raises MIN_SCORE to 0.3,
            is not supported).
    """
    if postprocess_type not in POSTPROCESS_TYPES:
        raise ValueError(f"PROPOSAL_LEARNING.POSTPROCESS_TYPES entries must be one of "
                         f"{sorted(POSTPROCESS_TYPES)}, got {postprocess_type!r}")
    return POSTPROCESS_TYPES[postprocess_type]


@META_ARCH_REGISTRY.register()
class ProposalModel(MaskFormer):
    """Mask2Former (:class:`MaskFormer`: same modules, criterion, normalisation, FREEZE_KEYS and
    training) with NUM_CLASSES = 1 ("part" vs. no-object) for part proposals; every target mask
    is class 0, and inference is per object (below) instead of per image.

    Training returns the criterion's losses multiplied by ``criterion.weight_dict``. Inference
    returns, per image, for each object of ``object_masks``:

    * ``"proposals"``: dict with ``pred_masks`` (N, H, W) bool, ``scores`` (N,) float32 and
      ``decoder_output`` (N, C) float32 (the kept queries' normalised decoder features, which part
      ranking clusters), at the original image size H x W;
    * ``"part_seg"``: (H, W) int64 label map, 0 = not a part, ``i + 1`` = i-th kept segment.

    Scores follow Mask2Former's instance inference: softmax probability of "part" times the mean
    sigmoid mask probability inside the predicted (> 0.5) mask. With ``apply_object_mask`` the
    mask probabilities are multiplied by the object mask first (official
    PROPOSAL_LEARNING.APPLY_MASKING_WITH_OBJECT_MASK), so proposals lie inside the object.

    ``output_mode`` (official PROPOSAL_LEARNING.USE_PER_PIXEL_LABEL: True -> ``"per_pixel"``, False
    -> ``"proposals"``; per test set PROPOSAL_LEARNING.POSTPROCESS_TYPES, see
    :func:`output_mode_for`) picks the proposals: ``"proposals"`` keeps the
    top-``test_topk`` queries as overlapping masks (``sigmoid > 0.5``); ``"per_pixel"`` keeps
    non-overlapping segments, every object pixel going to the kept query with the highest
    ``score * sigmoid(mask)``, after the official area-then-score filter
    (:func:`~part_distillation.modeling.postprocess.area_then_score_keep`: area / object area >
    ``min_area_ratio``, then score > ``min_score``, each only when something survives it); the
    pixels of dropped segments are re-assigned to the remaining ones (ours; officially they stay
    unassigned). ``part_seg`` is this per-pixel map in both modes.
    """

    @configurable
    def __init__(self, *, apply_object_mask: bool, output_mode: str, min_area_ratio: float,
                 min_score: float, **mask_former_args):
        """
        Args:
            apply_object_mask: multiply mask probabilities by the object mask.
            output_mode: ``"proposals"`` or ``"per_pixel"`` (see class docstring).
            min_area_ratio, min_score: ``per_pixel`` filters (PROPOSAL_LEARNING.MIN_AREA_RATIO,
                MIN_SCORE).
            mask_former_args: :class:`MaskFormer`'s arguments (``test_topk``: proposals kept per
                object, at most Q).

        Raises:
            ValueError: unknown ``output_mode`` or a FREEZE_KEYS entry matching nothing.
        """
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        super().__init__(**mask_former_args)
        self.apply_object_mask = apply_object_mask
        self.output_mode = output_mode
        self.min_area_ratio = min_area_ratio
        self.min_score = min_score

    @classmethod
    def from_config(cls, cfg) -> dict:
        """:meth:`MaskFormer.common_config` plus PROPOSAL_LEARNING.{APPLY_MASKING_WITH_OBJECT_MASK,
        USE_PER_PIXEL_LABEL, MIN_AREA_RATIO, MIN_SCORE}.

        Raises:
            ValueError: MODEL.SEM_SEG_HEAD.NUM_CLASSES is not 1.
        """
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != 1:
            raise ValueError("ProposalModel is class-agnostic: MODEL.SEM_SEG_HEAD.NUM_CLASSES must "
                             f"be 1, got {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}")
        pl = cfg.PROPOSAL_LEARNING
        return {
            **MaskFormer.common_config(cfg),
            "apply_object_mask": pl.APPLY_MASKING_WITH_OBJECT_MASK,
            "output_mode": "per_pixel" if pl.USE_PER_PIXEL_LABEL else "proposals",
            "min_area_ratio": pl.MIN_AREA_RATIO,
            "min_score": pl.MIN_SCORE,
        }

    def target_labels(self, instances: Instances, count: int) -> torch.Tensor:
        """Class-agnostic: every part mask is class 0 ("part"); (T,) int64 zeros."""
        return torch.zeros(count, dtype=torch.int64, device=self.device)

    def input_object_masks(self, x: Dict, size) -> torch.Tensor:
        """``x["object_masks"]`` (O, h, w) as bool on the model's device, checked to be at the
        network input size ``size`` = (h, w) (the image without padding).

        Raises:
            KeyError: ``x`` has no ``object_masks``; ValueError: their size is not ``size``.
        """
        if "object_masks" not in x:
            raise KeyError(f"{type(self).__name__} inference needs 'object_masks' (O, h, w) bool in "
                           "every input dict")
        object_masks = x["object_masks"].to(self.device, dtype=torch.bool)
        if tuple(object_masks.shape[-2:]) != tuple(size):
            raise ValueError(f"object_masks {tuple(object_masks.shape)} do not match the input "
                             f"image size {tuple(size)}")
        return object_masks

    @staticmethod
    def foreground_probs(pred_logits: torch.Tensor) -> torch.Tensor:
        """(B, Q, K + 1) class logits -> (B, Q) float probability of any foreground class
        (sum of the K foreground softmax probabilities; with K = 1 the "part" probability)."""
        return pred_logits.float().softmax(-1)[..., :-1].sum(-1)

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Per-image, per-object proposals from the decoder outputs (CPU tensors): a list of
        ``{"proposals": [...], "part_seg": [...]}`` (one entry per object; see class docstring).

        Raises:
            KeyError: an inference input lacks ``object_masks``.
        """
        mask_logits = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                    mode="bilinear", align_corners=False)
        part_probs = self.foreground_probs(outputs["pred_logits"])  # (B, Q)
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            object_masks = self.input_object_masks(x, (h, w))
            out_size = (int(x.get("height", h)), int(x.get("width", w)))
            probs = mask_logits[i, :, :h, :w].float().sigmoid()  # (Q, h, w)
            per_object = [self._object_inference(part_probs[i], probs, outputs["decoder_output"][i].float(),
                                                 obj, out_size) for obj in object_masks]
            results.append({"proposals": [p for p, _ in per_object],
                            "part_seg": [s for _, s in per_object]})
        return results

    def _object_inference(self, part_prob: torch.Tensor, probs: torch.Tensor, queries: torch.Tensor,
                          object_mask: torch.Tensor, out_size: Tuple[int, int]
                          ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """One object: ``part_prob`` (Q,), ``probs`` (Q, h, w) sigmoid masks at the input size,
        ``queries`` (Q, C), ``object_mask`` (h, w) bool -> (proposals dict, (H, W) label map)."""
        if self.apply_object_mask:
            probs = probs * object_mask
        binary = probs > 0.5
        mask_score = (probs * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores = part_prob * mask_score
        top_scores, top = scores.topk(min(self.test_topk, scores.numel()))
        full = F.interpolate(probs[top][None], size=out_size, mode="bilinear", align_corners=False)[0]
        full_object = F.interpolate(object_mask[None, None].float(), size=out_size, mode="nearest")[0, 0] > 0.5
        if self.apply_object_mask:
            full = full * full_object
        seg, seg_queries = self._per_pixel(full, top_scores, full_object)
        if self.output_mode == "proposals":
            proposals = {"pred_masks": full > 0.5, "scores": top_scores, "decoder_output": queries[top]}
        else:
            labels = torch.arange(1, len(seg_queries) + 1, device=seg.device)
            proposals = {"pred_masks": seg[None] == labels[:, None, None],
                         "scores": top_scores[seg_queries], "decoder_output": queries[top][seg_queries]}
        return {k: v.cpu() for k, v in proposals.items()}, seg.cpu()

    def _per_pixel(self, probs: torch.Tensor, scores: torch.Tensor, object_mask: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping segments inside the object.

        Args:
            probs: (N, H, W) float mask probabilities, scores: (N,) float (sorted descending),
                object_mask: (H, W) bool.

        Returns:
            ``seg`` (H, W) int64 (0 outside / unassigned, ``j + 1`` = segment j) and
            ``kept`` (S,) int64 indices into ``probs`` of segments ``1..S`` (descending score).
        """
        object_area = object_mask.sum()

        def assign(cands: torch.Tensor):
            best, winner = per_pixel_winner(scores[cands], probs[cands])
            assigned = object_mask & (best > 0)
            return winner, assigned, torch.bincount(winner[assigned], minlength=cands.numel())

        candidates = torch.arange(len(scores), device=probs.device)
        if candidates.numel():
            winner, assigned, areas = assign(candidates)
            # the official area-then-score filter on the segments (area / object area); the pixels
            # of dropped segments are re-assigned once among the kept candidates (ours)
            keep = area_then_score_keep(areas, scores, object_area, self.min_area_ratio, self.min_score)
            dropped = torch.ones(candidates.numel(), dtype=torch.bool, device=probs.device)
            dropped[keep] = False
            if bool((areas[dropped] > 0).any()):  # re-assign only when a dropped one held pixels
                candidates = candidates[keep]
                winner, assigned, _ = assign(candidates)
        seg = torch.zeros(probs.shape[-2:], dtype=torch.int64, device=probs.device)
        if candidates.numel() == 0:
            return seg, candidates
        present = torch.unique(winner[assigned])  # candidate slots that won at least one pixel
        relabel = torch.zeros(candidates.numel(), dtype=torch.int64, device=probs.device)
        relabel[present] = torch.arange(1, present.numel() + 1, device=probs.device)
        seg[assigned] = relabel[winner[assigned]]
        return seg, candidates[present]
