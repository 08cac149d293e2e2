"""Stage 4, proposal learning, as a stage: the trained part-proposal model's segments and query
features per object, written as ``proposal_learning`` pseudo-labels so that stage 5 clusters
features read from disk instead of running the network again.

(Training stage 4 is ``tools/train_net.py`` with a ``configs/proposal_learning`` config; this
module is its predictor, run with ``tools/run_stage.py --stage proposal_learning``.)

Per image and per object of area ratio > PROPOSAL_LEARNING.MIN_OBJECT_AREA_RATIO, one forward
pass of the stage-4 network (``MODEL.WEIGHTS``: the stage-4 checkpoint; INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST fit, TEST.DETECTIONS_PER_IMAGE queries) and its segments
(:func:`~part_distillation.modeling.meta_arch.part_ranking_model.clustering_segments`: per-pixel
winners with PROPOSAL_LEARNING.USE_PER_PIXEL_LABEL, MIN_AREA_RATIO / MIN_SCORE, clipped to the
object mask with APPLY_MASKING_WITH_OBJECT_MASK). Each kept segment becomes a part: ``mask``
(upsampled from the network input to the image, clipped to the object's full-resolution mask),
``score`` (its part probability), ``label`` null and ``feature`` (its PROPOSAL_KEY query feature,
``decoder_output``, L2-normalised with PROPOSAL_FEATURE_NORM; float32, base64 in the file, see
:mod:`part_distillation.data.pseudo_labels`). A segment that is empty at the image resolution is
dropped, with its feature, so that the file's features are exactly its parts'. Objects at or
below MIN_OBJECT_AREA_RATIO stay without parts and are listed in ``skipped_objects``.

``config["PASS1"]`` records :meth:`ProposalNetworkStage.pass1_settings` (the segment settings
above, the input size and the weights' identity); stage 5, given this folder as input, uses the
features only when its own pass-1 settings are the same
(:func:`~part_distillation.stages.part_ranking.predictor_overrides` gives the
PROPOSAL_LEARNING overrides that make them so). Sharded by object class with
PROPOSAL_LEARNING.TOTAL_PARTITIONS / PARTITION_INDEX (the same class assignment as stage 5's for
the same inputs and partition count), resumable as every stage.

Cost per image: one network pass plus O(O S H W) for upsampling S segments of O objects to the
image size H x W; on disk each part adds its RLE mask and 4 D bytes of feature (~1.4 KiB base64).
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from ..config import plain_config
from ..data.proposal_dataset import transform_masks, read_image
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel
from ..modeling.meta_arch.part_ranking_model import PartRankingModel
from ..modeling.weights import check_complete_weights, load_weights
from ..utils.io import weights_identity
from ..utils.object_filter import object_area_ratio_keep
from ..utils.sharding import SkipItem
from .build import register_stage
from .partition import WorkItem
from .resume import RUN_KEYS
from .stage import PseudoLabelInputStage

logger = logging.getLogger(__name__)

# the recorded segment settings of pass 1, in the names of PartRankingModel's pass-1 arguments
SEGMENT_SETTINGS = ("proposal_key", "feature_norm", "min_object_area_ratio", "min_area_ratio", "min_score",
                    "per_pixel", "apply_object_mask")


class ProposalNetworkStage(PseudoLabelInputStage):
    """What the stages that run the stage-4 network on object masks share (this module's
    :class:`ProposalLearningStage` and stage 5): the stage-4 network, its test input size and
    top-k, the segment settings of pass 1; partitioned by object class; input: any pseudo-labels
    with object masks.

    Args:
        output_dir, run_options: see :class:`~part_distillation.stages.stage.Stage`.
        default_inputs: the input folders :meth:`list_items` uses when given none (from the config:
            :meth:`default_input`; may be empty).
        network_cfg: the stage-4 network's own detectron2 config, as a labeler's ``model_cfg``: the
            network is ``PartRankingModel.from_config(network_cfg)`` with the segment settings,
            weights ``MODEL.WEIGHTS`` (``MODEL.WEIGHTS_ALLOWED_MISSING`` may keep their
            initialisation), on ``MODEL.DEVICE``, seeded with ``SEED`` when ``MODEL.WEIGHTS`` is
            empty; images are read in ``INPUT.FORMAT`` and resized to ``INPUT.MIN_SIZE_TEST`` /
            ``MAX_SIZE_TEST``; ``TEST.DETECTIONS_PER_IMAGE`` queries. Recorded by the resume guard:
            its MODEL node (``network``) and those input and test values (``network_input``).
        segment_settings: ``{name: value}`` for every name of :data:`SEGMENT_SETTINGS` (from the
            config: :meth:`segment_settings_from_config`, the stage's namespace).
    """

    PARTITION_BY = "class"
    INPUT_STAGE = ""  # any stage's objects
    INPUT_KEYS = ""  # the config keys that name the input folders (for messages)
    RECORDED_ARGUMENTS = ("segment_settings", "network", "network_input")

    @configurable
    def __init__(self, *, output_dir: str, run_options, default_inputs: Sequence[str], network_cfg,
                 segment_settings: dict):
        super().__init__(output_dir=output_dir, run_options=run_options)
        if sorted(segment_settings) != sorted(SEGMENT_SETTINGS):
            raise ValueError(f"segment_settings must have the keys {list(SEGMENT_SETTINGS)}, got "
                             f"{sorted(segment_settings)}")
        self.default_inputs, self.segment_settings = list(default_inputs), dict(segment_settings)
        self.network_cfg = network_cfg
        self.network = plain_config(network_cfg.MODEL, RUN_KEYS)
        self.weights = network_cfg.MODEL.WEIGHTS
        self.image_format = network_cfg.INPUT.FORMAT
        self.test_size = (network_cfg.INPUT.MIN_SIZE_TEST, network_cfg.INPUT.MAX_SIZE_TEST)
        self.network_input = {"FORMAT": self.image_format, "MIN_SIZE_TEST": self.test_size[0],
                              "MAX_SIZE_TEST": self.test_size[1],
                              "DETECTIONS_PER_IMAGE": network_cfg.TEST.DETECTIONS_PER_IMAGE}
        self._model: Optional[PartRankingModel] = None
        self._pass1_settings: Optional[dict] = None

    @classmethod
    def from_config(cls, cfg, output_dir: str) -> dict:
        """:meth:`default_input`, ``cfg`` itself as ``network_cfg`` and
        :meth:`segment_settings_from_config`."""
        return dict(super().from_config(cfg, output_dir), default_inputs=cls.default_input(cfg) or [],
                    network_cfg=cfg, segment_settings=cls.segment_settings_from_config(cfg))

    @classmethod
    def segment_settings_from_config(cls, cfg) -> dict:
        """``{name: value}`` for every name of :data:`SEGMENT_SETTINGS`, from the stage's namespace."""
        raise NotImplementedError

    def weight_files(self) -> List[str]:
        """``MODEL.WEIGHTS`` of the network when set."""
        return [self.weights] if self.weights else []

    def model_arguments(self) -> dict:
        """Keyword arguments of the network's ``PartRankingModel``: its ``from_config(network_cfg)``
        with pass 1 set by the segment settings (stage 5 also sets pass 2)."""
        seg = self.segment_settings
        return dict(PartRankingModel.from_config(self.network_cfg), proposal_key=seg["proposal_key"],
                    feature_norm=seg["feature_norm"], min_area_ratio_1=seg["min_area_ratio"],
                    min_score_1=seg["min_score"], per_pixel_clustering=seg["per_pixel"],
                    apply_object_mask_ranking=seg["apply_object_mask"])

    def list_items(self, inputs) -> List[WorkItem]:
        """Items of ``inputs`` (a folder, a list of folders or a list of files); when empty, of
        :meth:`default_input`.

        Raises:
            ValueError: no input given at all.
        """
        inputs = inputs or self.default_inputs
        if not inputs:
            raise ValueError(f"stage {self.NAME} needs an input folder: --input-dir"
                             + (", " + self.INPUT_KEYS if self.INPUT_KEYS else ""))
        if isinstance(inputs, str) or not all(os.path.isdir(p) for p in inputs):
            return super().list_items(inputs)
        items = []
        for folder in inputs:  # (zero-argument super() does not work inside a comprehension)
            items += super().list_items(folder)
        return items

    def prepare(self, mine: List[WorkItem], todo: List[WorkItem]) -> None:
        """Build the network (and check MODEL.WEIGHTS, see :attr:`model`) before any item, so that
        a wrong checkpoint stops the run instead of failing every item."""
        if todo:
            self.model  # noqa: B018 - built for its check

    def __getstate__(self) -> dict:
        """Pickled for worker processes without the network (each worker builds its own)."""
        return dict(self.__dict__, _model=None)

    @property
    def model(self) -> PartRankingModel:
        """The stage-4 network with the ranking passes (pass 1 with :meth:`segment_settings`),
        weights MODEL.WEIGHTS, in eval mode (built on first use, so worker processes build their own).

        Raises:
            IncompleteWeightsError: MODEL.WEIGHTS lacks parameters of the network outside
                MODEL.WEIGHTS_ALLOWED_MISSING (e.g. the checkpoint of another model)."""
        if self._model is None:
            mc = self.network_cfg.MODEL
            if not self.weights:
                # no checkpoint (tests, dry runs): a seeded init, so that reruns resume alike
                seed = max(self.network_cfg.SEED, 0)
                logger.warning("stage %s with MODEL.WEIGHTS empty: randomly initialised network "
                               "(seed SEED=%d)", self.NAME, seed)
                torch.manual_seed(seed)
            model = PartRankingModel(**self.model_arguments()).to(torch.device(mc.DEVICE))
            if self.weights:
                check_complete_weights(load_weights(model, self.weights), self.weights, mc.WEIGHTS_ALLOWED_MISSING)
            self._model = model.eval()
        return self._model

    def _kept_objects(self, label: ImagePseudoLabel) -> List[int]:
        """Indices of the objects whose area ratio is > the namespace's MIN_OBJECT_AREA_RATIO."""
        area = float(label.height * label.width)
        min_ratio = self.segment_settings["min_object_area_ratio"]
        return [i for i, o in enumerate(label.objects) if object_area_ratio_keep(float(o.mask.sum()), area, min_ratio)]

    def _inputs(self, item: WorkItem, label: Optional[ImagePseudoLabel] = None
                ) -> Tuple[ImagePseudoLabel, List[int], Dict]:
        """The item's input pseudo-label (``label`` when already loaded), the indices of the
        objects to run (area ratio > MIN_OBJECT_AREA_RATIO; others are skipped) and the model
        input dict (image resized to the network input, object masks resized alike).

        Raises:
            SkipItem: no object to run, or the image cannot be read.
        """
        label = self.load_input(item) if label is None else label
        kept = self._kept_objects(label)
        if not kept:
            raise SkipItem("no object above MIN_OBJECT_AREA_RATIO")
        try:
            image = read_image(label.file_name, self.image_format)
        except (OSError, ValueError) as e:
            raise SkipItem(f"unreadable image: {e}") from None
        if image.shape[:2] != (label.height, label.width):
            raise SkipItem(f"image size {image.shape[:2]} != pseudo-label size "
                           f"{(label.height, label.width)}")
        aug = T.AugInput(image)
        transforms = T.AugmentationList([T.ResizeShortestEdge(*self.test_size)])(aug)
        size = aug.image.shape[:2]
        x = {"image": torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
             "object_masks": transform_masks([label.objects[i].mask for i in kept], transforms, size),
             "height": label.height, "width": label.width}
        return label, kept, x

    def pass1_settings(self) -> dict:
        """What determines pass 1's segments and features (JSON-ready, computed once): the segment
        settings, INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, TEST.DETECTIONS_PER_IMAGE and the weights'
        identity. A ``proposal_learning`` file records it; stage 5 compares it before using the
        file's features."""
        if self._pass1_settings is None:
            out = dict(self.segment_settings)
            out.update(MIN_SIZE_TEST=self.test_size[0], MAX_SIZE_TEST=self.test_size[1],
                       DETECTIONS_PER_IMAGE=self.network_input["DETECTIONS_PER_IMAGE"])
            out["WEIGHTS_IDENTITY"] = [weights_identity(p) for p in self.weight_files()]
            self._pass1_settings = json.loads(json.dumps(out))
        return self._pass1_settings


@register_stage
class ProposalLearningStage(ProposalNetworkStage):
    """The stage-4 predictor (see the module docstring): objects in, ``proposal_learning``
    pseudo-labels with per-part query features out; configured by ``PROPOSAL_LEARNING.*``."""

    NAME = "proposal_learning"
    CONFIG_NAMESPACE = "PROPOSAL_LEARNING"

    @classmethod
    def segment_settings_from_config(cls, cfg) -> dict:
        """PROPOSAL_LEARNING.{PROPOSAL_KEY, PROPOSAL_FEATURE_NORM, MIN_OBJECT_AREA_RATIO,
        MIN_AREA_RATIO, MIN_SCORE, USE_PER_PIXEL_LABEL, APPLY_MASKING_WITH_OBJECT_MASK}."""
        pl = cfg.PROPOSAL_LEARNING
        return dict(proposal_key=pl.PROPOSAL_KEY, feature_norm=pl.PROPOSAL_FEATURE_NORM,
                    min_object_area_ratio=pl.MIN_OBJECT_AREA_RATIO, min_area_ratio=pl.MIN_AREA_RATIO,
                    min_score=pl.MIN_SCORE, per_pixel=pl.USE_PER_PIXEL_LABEL,
                    apply_object_mask=pl.APPLY_MASKING_WITH_OBJECT_MASK)

    def process(self, item: WorkItem) -> ImagePseudoLabel:
        label, kept, x = self._inputs(item)
        results = self.model([dict(x, with_segments=True)])[0]
        by_index = {i: (seg, f) for i, seg, f in zip(kept, results["segments"], results["features"])}
        objects: List[ObjectLabel] = []
        for i, obj in enumerate(label.objects):
            parts = []
            if i in by_index:
                seg, feats = by_index[i]
                for m, s, f in zip(seg["masks"].numpy(), seg["scores"].tolist(), feats.numpy()):
                    m = m & obj.mask
                    if m.any():
                        parts.append(PartLabel(m, None, float(s), np.asarray(f, np.float32)))
            objects.append(ObjectLabel(obj.class_name, obj.mask, obj.class_code, obj.score, obj.bbox,
                                       parts, obj.class_id))
        skipped = [{"index": label.object_indices()[i], "reason": "object below MIN_OBJECT_AREA_RATIO",
                    "stage": self.NAME} for i in range(len(label.objects)) if i not in by_index]
        return ImagePseudoLabel(label.file_name, label.image_id, label.height, label.width, self.NAME,
                                objects, list(label.skipped_objects) + skipped,
                                {"PASS1": self.pass1_settings()}, item.class_code)
