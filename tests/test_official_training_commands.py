"""The training-side commands of the official ``docs/TRAINING_1K.md`` (commit 938fd78), chained as a
user runs them, in this project's CLI (docs/MODEL_ZOO.md, "Official command -> this project"), with
the official top-level configs unchanged but for small sizes, 2 iterations, CPU and random initial
weights, on the two real images of a tiny ImageNet-1K layout (``imagenet_1k/train/<wnid>/``, the
PartImageNet copy of tests/_official_data.py). Every step runs in one working folder, so the
configs' relative ``pseudo_labels/``, ``output/`` and ``weights/`` paths are the official ones:

1. object masks (Detic needs its weights: the PartImageNet ground-truth object of each image
   instead, ``tools/label_objects.py`` with the ``given`` labeler) into the config's
   ``PROPOSAL_GENERATION.OBJECT_MASK_PATH``;
2. ``proposal_generation_net.py --config-file configs/ProposalGeneration.yaml --eval-only
   PROPOSAL_GENERATION.DETIC_LABELING_MODE max-gt-label PROPOSAL_GENERATION.OBJECT_MASK_PATH ...``
   = ``tools/train_net.py`` with the same arguments;
3. ``continuously_postprocess_dcrf.py --res res3_res4 --num_k 4`` = ``tools/dense_crf.py`` from the
   stage-2 folder into the ``processed_proposals/.../res3_res4/dot_4_norm_False/`` folder that
   configs/PartProposalLearning.yaml and configs/PartRanking.yaml read;
4. ``part_proposal_train_net.py --config-file configs/PartProposalLearning.yaml`` (its
   DATASET_PATH_LIST without the human-only folder, which needs Detic), then the final weight moved
   to ``weights/PartProposalLearning/IN1K+Human/part_proposal_model.pth`` as the document says;
5. ``part_ranking_train_net.py --config-file configs/PartRanking.yaml --eval-only`` with
   OUTPUT_DIR = the folder configs/PartDistillation.yaml reads;
6. ``part_distillation_train_net.py --config-file configs/PartDistillation.yaml``.

Stage 1 as documented (``detic_labeling_net.py --config-file configs/DeticLabeling.yaml
--eval-only``) needs Detic and its weights: the same command here stops saying what to install or
download."""
import glob
import importlib.util
import json
import math
import os

import pytest
import torch

from part_distillation.data.pseudo_labels import list_pseudo_labels, load_pseudo_label

from part_distillation.stages.cli import detic_labeling_argv

from ._official_data import SMALL, WNIDS, build_official_datasets, config, run_tool, tool_status
from .helpers import needs_shared

pytestmark = needs_shared

# the official configs' pseudo-label folders (relative to the working folder)
OBJECT_MASKS = "pseudo_labels/object_labels/detic_predictions/max-gt-label/imagenet_1k_train/"
PROPOSALS = "pseudo_labels/part_labels/proposals/max-gt-label/imagenet_1k_train/detic/res3_res4/dot_4_norm_False/"
PROCESSED = ("pseudo_labels/part_labels/processed_proposals/max-gt-label/imagenet_1k_train/detic/res3_res4/"
             "dot_4_norm_False/")
RANKED = ("pseudo_labels/part_labels/part_masks_with_class/imagenet_1k_train/lr_0.00001_scale_0.1_2.0_"
          "sampling_ratio_0.0/dot_8/r1_0.0_s1_0.7_r2_0.0_s2_0.0/")
STAGE4_OUT, STAGE6_OUT = "output/PartProposalLearning/IN1K+Human", "output/PartDistillation/IN1K+Human"
STAGE4_WEIGHTS = "weights/PartProposalLearning/IN1K+Human/part_proposal_model.pth"
TRAIN = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128", "CUSTOM_DATASETS.BASE_SIZE", "128",
         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.AMP.ENABLED", "False"]
K_PARTS, O_CLASSES, HIDDEN, QUERIES = 8, 1000, 256, 200  # as configs/PartDistillation.yaml / Swin-L Mask2Former


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """``(datasets root, working folder)``; the ~1 GB checkpoints are removed afterwards."""
    root = tmp_path_factory.mktemp("datasets")
    build_official_datasets(root)
    cwd = tmp_path_factory.mktemp("user")
    yield root, cwd
    for p in glob.glob(str(cwd / "**" / "*.pth"), recursive=True):
        os.remove(p)


def _labels(cwd, folder):
    return [load_pseudo_label(p) for p in list_pseudo_labels(str(cwd / folder))]


@pytest.fixture(scope="module")
def stage3(work):
    """Steps 1-3; returns the labels of each folder."""
    root, cwd = work
    run_tool(root, cwd, "label_objects.py", "--config-file", config("ProposalGeneration.yaml"), "--dataset",
             "part_imagenet_valtest", "--output-dir", OBJECT_MASKS, "PROPOSAL_GENERATION.OBJECT_MASK_TYPE", "given",
             "MODEL.DEVICE", "cpu")
    run_tool(root, cwd, "train_net.py", "--config-file", config("ProposalGeneration.yaml"), "--eval-only",
             "PROPOSAL_GENERATION.DETIC_LABELING_MODE", "max-gt-label", "PROPOSAL_GENERATION.OBJECT_MASK_PATH",
             OBJECT_MASKS, "MODEL.WEIGHTS", "", *SMALL, "OUTPUT_DIR", PROPOSALS)
    run_tool(root, cwd, "dense_crf.py", "--config-file", config("ProposalGeneration.yaml"), "--input-dir", PROPOSALS,
             "--output-dir", PROCESSED, "DENSE_CRF.NUM_WORKERS", "1")
    return {f: _labels(cwd, f) for f in (OBJECT_MASKS, PROPOSALS, PROCESSED)}


def _losses(out_dir):
    """The loss entries of every ``metrics.json`` line that has them."""
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    return [{k: v for k, v in r.items() if k.startswith(("loss", "total_loss"))} for r in rows if "total_loss" in r]


@pytest.fixture(scope="module")
def stage4(work, stage3):
    """Step 4: the training log, its losses and the state dict, the weight then moved into place."""
    root, cwd = work
    log = run_tool(root, cwd, "train_net.py", "--config-file", config("PartProposalLearning.yaml"),
                   "MODEL.WEIGHTS", "", *SMALL, *TRAIN,
                   "PROPOSAL_LEARNING.DATASET_PATH_LIST", f"('{PROCESSED}',)")
    final = cwd / STAGE4_OUT / "model_final.pth"
    state = torch.load(final, map_location="cpu", mmap=True, weights_only=False)["model"]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    (cwd / STAGE4_WEIGHTS).parent.mkdir(parents=True)
    os.replace(final, cwd / STAGE4_WEIGHTS)  # "move the final weight to ./weights/..." (TRAINING_1K.md)
    return log, _losses(cwd / STAGE4_OUT), shapes


@pytest.fixture(scope="module")
def stage5(work, stage4):
    """Step 5: the stage-5 labels."""
    root, cwd = work
    run_tool(root, cwd, "train_net.py", "--config-file", config("PartRanking.yaml"), "--eval-only", *SMALL,
             "OUTPUT_DIR", RANKED)
    return _labels(cwd, RANKED)


@pytest.fixture(scope="module")
def stage6(work, stage5):
    """Step 6: the training log, its losses and the state dict's shapes."""
    root, cwd = work
    log = run_tool(root, cwd, "train_net.py", "--config-file", config("PartDistillation.yaml"), *SMALL, *TRAIN)
    state = torch.load(cwd / STAGE6_OUT / "model_final.pth", map_location="cpu", mmap=True, weights_only=False)
    return log, _losses(cwd / STAGE6_OUT), {k: tuple(v.shape) for k, v in state["model"].items()}


def test_object_masks_pixel_grouping_and_dense_crf(stage3):
    """Stages 1-3: one object per image in its wnid folder, its k-means parts (K = 4, official
    res3+res4) at stage 2, and dense-CRF-refined parts at stage 3 (DENSE_CRF.OBJECT_PIXELS
    "official": a segment may reach a little past the object)."""
    for folder, stage in ((OBJECT_MASKS, "object_masks"), (PROPOSALS, "proposal_generation"), (PROCESSED, "dcrf")):
        labels = stage3[folder]
        assert sorted(lab.image_id for lab in labels) == [f"{w}_1" for w in WNIDS], folder
        assert all(len(lab.objects) == 1 and lab.objects[0].class_code in WNIDS for lab in labels)
        if stage == "object_masks":
            continue
        assert all(1 <= len(lab.objects[0].parts) <= 4 for lab in labels), folder
        for lab in labels:
            obj = lab.objects[0]
            for part in obj.parts:  # stage 2 partitions the object; the official CRF may grow a segment
                inside = int((part.mask & obj.mask).sum())
                assert inside == part.mask.sum() if stage == "proposal_generation" else inside > 0.5 * part.mask.sum()
    assert all("DENSE_CRF" in lab.config for lab in stage3[PROCESSED])


def test_part_proposal_learning_trains_with_the_official_config(stage4):
    """Stage 4: finite losses, a Swin-L class-agnostic Mask2Former with the official key names."""
    log, losses, shapes = stage4
    assert losses and all(math.isfinite(v) for row in losses for v in row.values())
    assert shapes["sem_seg_head.predictor.class_embed.weight"] == (2, HIDDEN)  # 1 class + no-object
    assert shapes["sem_seg_head.predictor.query_feat.weight"] == (QUERIES, HIDDEN)
    assert shapes["backbone.patch_embed.proj.weight"] == (192, 3, 4, 4)  # Swin-L embedding dim
    assert "swapped pair" in log  # the published OVERSAMPLE / IMPORTANCE ratios, read as the sh files pass them


def test_part_ranking_labels_parts_with_the_official_config(stage5):
    """Stage 5 with the stage-4 weight at the config's MODEL.WEIGHTS: every object labelled,
    labels in [0, K) of NUM_CLUSTERS = 8."""
    assert sorted(lab.image_id for lab in stage5) == [f"{w}_1" for w in WNIDS]
    for lab in stage5:
        assert lab.stage == "part_ranking" and len(lab.objects) == 1
        labels = [p.label for p in lab.objects[0].parts]
        assert labels and all(0 <= x < K_PARTS for x in labels), labels


def test_part_distillation_trains_from_the_stage4_weight(stage6):
    """Stage 6 from the stage-4 weight (all but the class head loaded): finite losses and the
    official class head of O x K + 1 classes."""
    log, losses, shapes = stage6
    assert f"Loading from {STAGE4_WEIGHTS}" in log
    assert losses and all(math.isfinite(v) for row in losses for v in row.values())
    assert shapes["sem_seg_head.predictor.class_embed.weight"] == (O_CLASSES * K_PARTS + 1, HIDDEN)
    assert shapes["sem_seg_head.predictor.query_feat.weight"] == (QUERIES, HIDDEN)


def test_detic_labeling_command_maps_to_stage1_with_the_official_paths():
    """configs/DeticLabeling.yaml through tools/train_net.py: stage 1 with the Detic labeler on its
    DATASETS.TEST, into the folder configs/ProposalGeneration.yaml reads."""
    argv = detic_labeling_argv(config("DeticLabeling.yaml"), ["PROPOSAL_GENERATION.DETIC_LABELING_MODE", "human-only"])
    assert argv[:8] == ["--config-file", "", "--labeler-config", config("DeticLabeling.yaml"), "--dataset",
                        "imagenet_1k_train", "--output-dir",
                        "pseudo_labels/object_labels/detic_predictions/human-only/imagenet_1k_train/"]
    opts = dict(zip(argv[8::2], argv[9::2]))
    assert opts["PROPOSAL_GENERATION.OBJECT_MASK_TYPE"] == "detic"
    assert opts["PROPOSAL_GENERATION.SAVE_SCORE_THRESHOLD"] == "0.0"
    assert OBJECT_MASKS == detic_labeling_argv(config("DeticLabeling.yaml"))[7]
    assert detic_labeling_argv(config("ProposalGeneration.yaml")) is None


@pytest.mark.parametrize("detic", ["missing", "installed"])
def test_detic_labeling_command_says_what_to_install_or_download(work, tmp_path, detic):
    """Without Detic (its package shadowed here) the official command ends naming the pip
    install; with it, naming the Detic weights to download."""
    root, _ = work
    if detic == "installed" and importlib.util.find_spec("centernet") is None:
        pytest.skip("Detic (detic-fast / centernet2) is not installed")
    blocker = tmp_path / "blocked"
    if detic == "missing":
        blocker.mkdir()
        (blocker / "centernet.py").write_text('raise ImportError("No module named \'centernet\'")\n')
    rc, out = tool_status(root, tmp_path, "train_net.py", "--config-file", config("DeticLabeling.yaml"), "--eval-only",
                          "MODEL.DEVICE", "cpu", pythonpath_first=blocker if detic == "missing" else "")
    assert rc != 0
    if detic == "missing":
        assert "ImportError" in out and "pip install --no-deps detic-fast" in out, out[-3000:]
    else:
        assert "Detic weights not found at weights/detic/" in out and "Detic model zoo" in out, out[-3000:]
