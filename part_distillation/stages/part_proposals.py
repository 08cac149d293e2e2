"""The stage-4 predictor: the part-proposal model's segments and query features per object, written
as pseudo-labels (stage ``part_proposals``), so that stage 5 clusters features read from disk.

Per image and per object of area ratio > PART_RANKING.MIN_OBJECT_AREA_RATIO, one forward pass of
the stage-4 network and the segments of part ranking's pass 1
(:func:`~part_distillation.modeling.meta_arch.part_ranking_model.clustering_segments`: top
TEST.DETECTIONS_PER_IMAGE queries, per-pixel winners with USE_PER_PIXEL_LABEL_DURING_CLUSTERING,
MIN_AREA_RATIO_1 / MIN_SCORE_1, clipped to the object mask, object IoU > 0.001). Each kept segment
becomes a part: ``mask`` (upsampled from the network input to the image, clipped to the object's
full-resolution mask), ``score`` (its part probability), ``label`` null and ``feature`` (its
PROPOSAL_KEY query feature, ``decoder_output``, L2-normalised with PROPOSAL_FEATURE_NORM; float32,
base64 in the file, see :mod:`part_distillation.data.pseudo_labels`). A segment that is empty at
the image resolution is dropped, with its feature, so that the file's features are exactly its
parts'. Objects at or below MIN_OBJECT_AREA_RATIO stay without parts and are listed in
``skipped_objects``.

``config["PASS1"]`` records :meth:`~part_distillation.stages.part_ranking.RankingNetworkStage.
pass1_settings` (the keys above, the input size and the weights' identity); stage 5, given this
folder as input, uses the features only when its own pass-1 settings are the same, and then runs
the network once per image (pass 2) instead of twice. Config, sharding (by object class, with
``PART_RANKING.TOTAL_PARTITIONS`` / ``PARTITION_INDEX``, so that one array job's predictor and
ranking tasks own the same classes) and resume are those of stage 5.

Cost per image: one network pass plus O(O S H W) for upsampling S segments of O objects to the
image size H x W; on disk each part adds its RLE mask and 4 D bytes of feature (~1.4 KiB base64).
"""
from typing import List

import numpy as np

from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel
from .build import register_stage
from .partition import WorkItem
from .part_ranking import PROPOSALS_STAGE, RankingNetworkStage


@register_stage
class PartProposalStage(RankingNetworkStage):
    """Stage-4 predictor (see the module docstring): stage-1 objects in, ``part_proposals``
    pseudo-labels with per-part query features out."""

    NAME = PROPOSALS_STAGE

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
