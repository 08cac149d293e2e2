"""Stage 5, part ranking (PartDistillation, Cho et al., CVPR 2023, Sec. 3.3): class-consistent part
labels 0..K-1 for every object of every image, from the stage-4 part-proposal model.

Input: a folder of pseudo-labels with object masks (stage 1 ``object_masks`` or any later stage;
``--input-dir`` or PART_RANKING.DATASET_PATH); the images they name. Given the folder of the
stage-4 predictor (stage ``proposal_learning``, :mod:`part_distillation.stages.proposal_learning`: the
same objects with each kept segment's query feature), pass 1 reads the features from the files
instead of running the network, after checking that they were made with the same pass-1 settings
and weights; the outputs are the same. Output: ``part_ranking``
pseudo-labels in the official ``<class_dir>/<image_id>.json`` layout, each object's parts with
``label`` (its cluster id) and ``score``. Objects keep their stage-1 identity; an object that
cannot be labelled stays without parts and is listed in ``skipped_objects`` with the reason.

The three phases of the framework's gather -> reduce -> map form
(:class:`part_distillation.stages.stage.Stage`), partitioned by object class (PARTITION_BY
"class": each job owns every image of its classes, so each class is clustered by one job):

1. **gather** (pass 1, :func:`~part_distillation.modeling.meta_arch.part_ranking_model.clustering_segments`):
   per image (unless the input holds the predictor's features), one forward pass of the stage-4
   network (PartRankingModel, INPUT.MIN_SIZE_TEST /
   MAX_SIZE_TEST fit, TEST.DETECTIONS_PER_IMAGE = 200 queries); per object of area ratio >
   MIN_OBJECT_AREA_RATIO, the ``decoder_output`` features of its kept segments, returned as
   ``{object class code: float32 (S, 256)}``. The framework streams them to
   ``logs/gather/<i>of<n>/chunk_*.npz`` with at most PART_RANKING.FEATURE_BUFFER_MB in memory.
2. **reduce** (:func:`~part_distillation.modeling.part_clustering.cluster_classes`): per class,
   k-means with K = NUM_CLUSTERS over all its features, classes batched (at most
   FEATURE_BUFFER_MB of features per call from the framework, and at most CLUSTER_BATCH_MB of
   k-means working memory per batched call); the state of a class is ``{"centroids": (K_c, D)}``,
   stored as ``logs/reduce/<class_dir>.npz``.
3. **map** (pass 2, :func:`~part_distillation.modeling.meta_arch.part_ranking_model.labelling_segments`):
   per image, a second forward pass; each object labelled with its class's centroids
   (CLASSIFIER_METRIC), masks upsampled to the image and clipped to the object mask.

Complexity, for I images with O objects each, Q queries, an h x w network input, S kept segments
per object, N_c features of class c, D = 256, K clusters, T k-means iterations:

* time: 2 I network passes (dominant on real data) + O(I O Q h w) post-processing per pass;
  clustering O(sum_c T N_c K D) (+ k-means++ seeding O(N_c K D log K)), class-batched;
* memory: one image's network activations and O(Q h w) masks; gather holds at most
  FEATURE_BUFFER_MB of features before writing a chunk, reduce loads at most FEATURE_BUFFER_MB of
  features (or one class, if larger) and a k-means call uses at most about CLUSTER_BATCH_MB (or
  one class); states are read lazily, a few classes cached. Disk: 4 D bytes per feature
  (~1 KiB), I O S features, plus K D floats per class.

Object classes are the objects' ``class_code`` (else ``class_name``). With TOTAL_PARTITIONS > 1,
an image is owned by the job of its folder class; an object of another class in it (multi-class
datasets such as Pascal-Part) is labelled only if that job also owns its class, otherwise it is
skipped with reason ``"class not in this partition"`` (ImageNet images have one class, so the
official use is unaffected; run multi-class datasets in one partition).

Per object, the ratios the official labeller records for stage 6's filters are in
``config["RATIOS"]`` of each file: ``object_ratio`` = sum of part areas / image area and
``part_ratios`` = each part's area / image area (see :func:`part_ratios`).
"""
import logging
import os
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from detectron2.config import configurable

from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel
from ..modeling.part_clustering import CLASSIFIER_METRICS, cluster_classes
from .build import register_stage
from .partition import WorkItem
from .resume import StageConfigMismatch
from .proposal_learning import ProposalLearningStage, ProposalNetworkStage

logger = logging.getLogger(__name__)

PROPOSALS_STAGE = ProposalLearningStage.NAME  # the stage-4 predictor's files (stages/proposal_learning.py)
# share of predictor parts without a feature above which stage 5 refuses to cluster
MAX_PARTS_WITHOUT_FEATURE = 0.05


def object_class(obj: ObjectLabel) -> str:
    """The class an object is clustered with: its ``class_code``, else its ``class_name``."""
    return obj.class_code or obj.class_name


def part_ratios(parts: List[PartLabel], height: int, width: int) -> Tuple[float, List[float]]:
    """``(object_ratio, part_ratios)`` as the official labeller records them: the summed part
    areas over the image area, and each part's area over the image area."""
    areas = [float(p.mask.sum()) for p in parts]
    return sum(areas) / float(height * width), [a / float(height * width) for a in areas]


def predictor_overrides(cfg) -> List:
    """``KEY VALUE`` overrides that give the stage-4 predictor
    (:class:`~part_distillation.stages.proposal_learning.ProposalLearningStage`) stage 5's pass-1
    segment settings and partitioning, so that stage 5 uses the predictor's features instead of
    running the network for pass 1 (the main job runs the predictor with them)."""
    seg, pr = PartRankingStage.segment_settings_from_config(cfg), cfg.PART_RANKING
    keys = {"proposal_key": "PROPOSAL_KEY", "feature_norm": "PROPOSAL_FEATURE_NORM",
            "min_object_area_ratio": "MIN_OBJECT_AREA_RATIO", "min_area_ratio": "MIN_AREA_RATIO",
            "min_score": "MIN_SCORE", "per_pixel": "USE_PER_PIXEL_LABEL",
            "apply_object_mask": "APPLY_MASKING_WITH_OBJECT_MASK"}
    out = []
    for name, key in keys.items():
        out += [f"PROPOSAL_LEARNING.{key}", seg[name]]
    for key in ("TOTAL_PARTITIONS", "PARTITION_INDEX"):
        out += [f"PROPOSAL_LEARNING.{key}", pr[key]]
    return out


@register_stage
class PartRankingStage(ProposalNetworkStage):
    """Stage 5 (see the module docstring).

    Args:
        output_dir, run_options, default_inputs, network_cfg, segment_settings: see
            :class:`~part_distillation.stages.proposal_learning.ProposalNetworkStage` (pass 1;
            ``segment_settings["apply_object_mask"]`` also clips pass 2's parts).
        num_clusters: K of the per-class k-means (``PART_RANKING.NUM_CLUSTERS``).
        kmeans_restarts: k-means seedings per class (``PART_RANKING.KMEANS_RESTARTS``).
        kmeans_hartigan: Hartigan refinement of each class's k-means (``PART_RANKING.KMEANS_HARTIGAN``).
        feature_buffer_mb: features held in memory while gathering, and per reduce call
            (``PART_RANKING.FEATURE_BUFFER_MB``).
        cluster_batch_mb: k-means working memory per batched call (``PART_RANKING.CLUSTER_BATCH_MB``).
        labelling_settings: pass 2, in the names of ``PartRankingModel``'s arguments:
            ``classifier_metric``, ``min_area_ratio_2``, ``min_score_2``, ``per_pixel_labeling``
            (``PART_RANKING.{CLASSIFIER_METRIC, MIN_AREA_RATIO_2, MIN_SCORE_2,
            USE_PER_PIXEL_LABEL_DURING_LABELING}``).
    """

    NAME = "part_ranking"
    CONFIG_NAMESPACE = "PART_RANKING"
    INPUT_KEYS = "PART_RANKING.DATASET_PATH or PART_RANKING.DATASET_PATH_LIST"
    RECORDED_ARGUMENTS = ProposalNetworkStage.RECORDED_ARGUMENTS + (
        "num_clusters", "kmeans_restarts", "kmeans_hartigan", "feature_buffer_mb", "cluster_batch_mb",
        "labelling_settings")
    LABELLING_SETTINGS = ("classifier_metric", "min_area_ratio_2", "min_score_2", "per_pixel_labeling")

    @configurable
    def __init__(self, *, output_dir: str, run_options, default_inputs, network_cfg, segment_settings: dict,
                 num_clusters: int, kmeans_restarts: int, feature_buffer_mb: int, cluster_batch_mb: int,
                 labelling_settings: dict, kmeans_hartigan: bool = True):
        super().__init__(output_dir=output_dir, run_options=run_options, default_inputs=default_inputs,
                         network_cfg=network_cfg, segment_settings=segment_settings)
        if sorted(labelling_settings) != sorted(self.LABELLING_SETTINGS):
            raise ValueError(f"labelling_settings must have the keys {list(self.LABELLING_SETTINGS)}, got "
                             f"{sorted(labelling_settings)}")
        self.num_clusters, self.kmeans_restarts = int(num_clusters), int(kmeans_restarts)
        self.kmeans_hartigan = bool(kmeans_hartigan)
        self.feature_buffer_mb, self.cluster_batch_mb = int(feature_buffer_mb), int(cluster_batch_mb)
        self.labelling_settings = dict(labelling_settings)
        self.gather_buffer_bytes = self.feature_buffer_mb << 20

    @classmethod
    def from_config(cls, cfg, output_dir: str) -> dict:
        """:meth:`ProposalNetworkStage.from_config` plus PART_RANKING.{NUM_CLUSTERS,
        KMEANS_RESTARTS, KMEANS_HARTIGAN, FEATURE_BUFFER_MB, CLUSTER_BATCH_MB, CLASSIFIER_METRIC,
        MIN_AREA_RATIO_2, MIN_SCORE_2, USE_PER_PIXEL_LABEL_DURING_LABELING}."""
        pr = cfg.PART_RANKING
        return dict(super().from_config(cfg, output_dir), num_clusters=pr.NUM_CLUSTERS,
                    kmeans_restarts=pr.KMEANS_RESTARTS, kmeans_hartigan=pr.KMEANS_HARTIGAN,
                    feature_buffer_mb=pr.FEATURE_BUFFER_MB,
                    cluster_batch_mb=pr.CLUSTER_BATCH_MB,
                    labelling_settings=dict(classifier_metric=pr.CLASSIFIER_METRIC,
                                            min_area_ratio_2=pr.MIN_AREA_RATIO_2, min_score_2=pr.MIN_SCORE_2,
                                            per_pixel_labeling=pr.USE_PER_PIXEL_LABEL_DURING_LABELING))

    def model_arguments(self) -> dict:
        """:meth:`ProposalNetworkStage.model_arguments` with pass 2 set by ``labelling_settings``."""
        return dict(super().model_arguments(), **self.labelling_settings)

    @classmethod
    def validate_config(cls, cfg) -> None:
        """Raises ValueError naming PART_RANKING.CLASSIFIER_METRIC / NUM_CLUSTERS /
        KMEANS_RESTARTS / FEATURE_BUFFER_MB / CLUSTER_BATCH_MB on a bad value."""
        super().validate_config(cfg)
        pr = cfg.PART_RANKING
        if pr.CLASSIFIER_METRIC not in CLASSIFIER_METRICS:
            raise ValueError(f"PART_RANKING.CLASSIFIER_METRIC must be one of {CLASSIFIER_METRICS}, "
                             f"got {pr.CLASSIFIER_METRIC!r}")
        for key in ("NUM_CLUSTERS", "KMEANS_RESTARTS", "FEATURE_BUFFER_MB", "CLUSTER_BATCH_MB"):
            if int(pr[key]) < 1:
                raise ValueError(f"PART_RANKING.{key} must be >= 1, got {pr[key]}")

    @classmethod
    def segment_settings_from_config(cls, cfg) -> dict:
        """Pass 1's segment settings: PART_RANKING.{PROPOSAL_KEY, PROPOSAL_FEATURE_NORM,
        MIN_OBJECT_AREA_RATIO, MIN_AREA_RATIO_1, MIN_SCORE_1, USE_PER_PIXEL_LABEL_DURING_CLUSTERING,
        APPLY_MASKING_WITH_OBJECT_MASK}."""
        pr = cfg.PART_RANKING
        return dict(proposal_key=pr.PROPOSAL_KEY, feature_norm=pr.PROPOSAL_FEATURE_NORM,
                    min_object_area_ratio=pr.MIN_OBJECT_AREA_RATIO, min_area_ratio=pr.MIN_AREA_RATIO_1,
                    min_score=pr.MIN_SCORE_1, per_pixel=pr.USE_PER_PIXEL_LABEL_DURING_CLUSTERING,
                    apply_object_mask=pr.APPLY_MASKING_WITH_OBJECT_MASK)

    @staticmethod
    def default_input(cfg) -> Optional[List[str]]:
        """The folders PART_RANKING.DATASET_PATH_LIST and DATASET_PATH (the official keys), the
        input when the command line names none, each folder once (the official configs/PartRanking.yaml
        names one folder in both); None when both are empty."""
        pr = cfg.PART_RANKING
        folders = list(pr.DATASET_PATH_LIST) + ([pr.DATASET_PATH] if pr.DATASET_PATH else [])
        return list(dict.fromkeys(os.path.normpath(f) for f in folders)) or None

    # ---- gather: pass 1 ----
    def gather(self, item: WorkItem) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
        """``({object class: float32 (S, D)}, counters)``: query features of the kept segments
        of the item's objects (classes with no feature are left out). From a stage-4 predictor
        input file, the features it holds (no network pass), counters ``parts_with_feature`` /
        ``parts_without_feature`` (see :meth:`check_gathered`).

        Raises:
            StageConfigMismatch: the predictor file was made with other pass-1 settings
                or weights (:meth:`pass1_settings`).
        """
        label = self.load_input(item)
        if label.stage == PROPOSALS_STAGE and "PASS1" in label.config:
            recorded = label.config["PASS1"]
            if self.pass1_settings() != recorded:
                raise StageConfigMismatch(
                    f"{item.source}: {PROPOSALS_STAGE} predictor file made with pass-1 settings {recorded}, "
                    f"this run has {self.pass1_settings()}; rerun the predictor with "
                    "predictor_overrides(cfg) (PROPOSAL_LEARNING keys = PART_RANKING pass 1) or match "
                    "INPUT / TEST / MODEL.WEIGHTS")
            objs = [label.objects[i] for i in self._kept_objects(label)]
            per_object = [(o, [p.feature for p in o.parts if p.feature is not None]) for o in objs]
            counters = {"parts_with_feature": sum(len(f) for _, f in per_object)}
            counters["parts_without_feature"] = sum(len(o.parts) for o in objs) - counters["parts_with_feature"]
        else:
            label, kept, x = self._inputs(item, label)
            feats = self.model([x])[0]["features"]
            per_object = [(label.objects[i], f.numpy()) for i, f in zip(kept, feats)]
            counters = {}
        out: Dict[str, List[np.ndarray]] = {}
        for obj, feats in per_object:
            if len(feats):  # (S, D) rows, as one array or a list of (D,) arrays
                out.setdefault(object_class(obj), []).append(np.asarray(feats, dtype=np.float32))
        return {c: np.concatenate(v) for c, v in out.items()}, counters

    def check_gathered(self, summary) -> None:
        """Refuse to cluster when more than :data:`MAX_PARTS_WITHOUT_FEATURE` of the
        predictor parts gathered in this run have no feature (the predictor writes one
        per part: such files are damaged; the parts would silently leave the clustering and change
        every label of their class). Counts: ``parts_without_feature`` / ``parts_with_feature`` of
        the run summary.

        Raises:
            ValueError: naming the share, the input folder and what to do.
        """
        missing, present = summary.extra.get("parts_without_feature", 0), summary.extra.get("parts_with_feature", 0)
        if missing:
            share = missing / (missing + present)
            logger.warning("%d of %d predictor parts have no feature: left out of the clustering",
                           missing, missing + present)
            if share > MAX_PARTS_WITHOUT_FEATURE:
                raise ValueError(
                    f"{missing} of {missing + present} parts ({100 * share:.1f}% > "
                    f"{100 * MAX_PARTS_WITHOUT_FEATURE:.0f}%) of the stage-4 predictor files have no "
                    f"feature: the files are damaged; rerun the stage-4 predictor into a fresh folder")

    # ---- reduce: clustering ----
    def reduce_many(self, features: Dict[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
        """Class-batched k-means; state ``{"centroids": float32 (K_c, D)}`` per class."""
        device = torch.device(self.network_cfg.MODEL.DEVICE)
        cents = cluster_classes({c: torch.from_numpy(np.asarray(f)) for c, f in features.items()},
                                self.num_clusters, restarts=self.kmeans_restarts, device=device,
                                hartigan=self.kmeans_hartigan,
                                max_batch_bytes=self.cluster_batch_mb << 20)
        return {c: {"centroids": cents[c].numpy().astype(np.float32)} for c in features}

    def reduce(self, class_code: str, features: np.ndarray) -> Dict[str, np.ndarray]:
        return self.reduce_many({class_code: features})[class_code]

    # ---- map: pass 2 ----
    def labels_made_with(self) -> dict:
        """What each output file's ``config["PART_RANKING"]`` records: the segment settings,
        ``num_clusters``, ``kmeans_restarts``, ``kmeans_hartigan`` and the labelling settings."""
        return {**self.segment_settings, "num_clusters": self.num_clusters,
                "kmeans_restarts": self.kmeans_restarts, "kmeans_hartigan": self.kmeans_hartigan,
                **self.labelling_settings}

    def process_with_state(self, item: WorkItem, states: Mapping[str, Dict[str, np.ndarray]]):
        """The item's ``part_ranking`` pseudo-label."""
        label, kept, x = self._inputs(item)
        skipped = [{"index": label.object_indices()[i], "reason": "object below MIN_OBJECT_AREA_RATIO",
                    "stage": self.NAME} for i in range(len(label.objects)) if i not in kept]
        centroids = []
        for i in kept:
            state = states.get(object_class(label.objects[i]))
            centroids.append(None if state is None else torch.from_numpy(state["centroids"]))
        results = self.model([dict(x, centroids=centroids)])[0]["parts"]
        objects, ratios = [], []
        apply_mask = self.segment_settings["apply_object_mask"]
        by_index = dict(zip(kept, results))
        for i, obj in enumerate(label.objects):
            res = by_index.get(i)
            parts = []
            if res is not None:
                for m, s, lab in zip(res["masks"].numpy(), res["scores"].tolist(), res["labels"].tolist()):
                    m = m & obj.mask if apply_mask else m
                    if m.any():
                        parts.append(PartLabel(m, int(lab), float(s)))
            elif i in by_index:
                skipped.append({"index": label.object_indices()[i], "stage": self.NAME,
                                "reason": "no cluster classifier: no features in its class, or the "
                                          "class is not in this partition"})
            objects.append(ObjectLabel(obj.class_name, obj.mask, obj.class_code, obj.score, obj.bbox,
                                       parts, obj.class_id))
            ratios.append(part_ratios(parts, label.height, label.width))
        config = {"PART_RANKING": self.labels_made_with(),
                  "RATIOS": {"object_ratio": [r[0] for r in ratios], "part_ratios": [r[1] for r in ratios]}}
        # the predictor's skips are this stage's own (same MIN_OBJECT_AREA_RATIO, checked in gather)
        inherited = [e for e in label.skipped_objects if e.get("stage") != PROPOSALS_STAGE]
        out = ImagePseudoLabel(label.file_name, label.image_id, label.height, label.width, self.NAME,
                               objects, inherited + skipped, config, item.class_code)
        return out
