"""Stage 5 on the stage framework: class partitioning, a tiny run on real Pascal-Part images with a
random-init tiny stage-4 model, label consistency within a class, kill + rerun."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import part_distillation.modeling  # noqa: F401
from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, decode_mask,
                                                  list_pseudo_labels, load_pseudo_label,
                                                  save_pseudo_label)
from part_distillation.stages.partition import WorkItem, partition_items
from part_distillation.stages.part_ranking import PartRankingStage, part_ratios

from .helpers import REPO, needs_shared

K = 3


def _cfg(*opts):
    return setup_cfg("configs/part_ranking/tiny_cpu.yaml",
                     ["MODEL.EFFICIENTNET.PRETRAINED", "False", "PART_RANKING.NUM_CLUSTERS", str(K),
                      "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", *opts])


def test_partition_by_class_disjoint_and_complete():
    items = [WorkItem(f"im{i}", f"c{i % 5}", None) for i in range(23)]
    assert PartRankingStage.PARTITION_BY == "class"
    for total in (1, 2, 3, 7):
        parts = [partition_items(items, total, i, "class") for i in range(total)]
        keys = [it.key for mine, _ in parts for it in mine]
        assert sorted(keys) == sorted(it.key for it in items) and len(set(keys)) == len(keys)
        owners = [owned for _, owned in parts]
        assert set().union(*owners) == {f"c{i}" for i in range(5)}
        assert sum(len(o) for o in owners) == 5  # each class owned by exactly one partition
        for mine, owned in parts:
            assert all(it.class_code in owned for it in mine)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Stage-1-like pseudo-labels (GT object masks) of 3 real Pascal-Part images of 3 classes
    (person, bird, dog), plus a copy of the first image under another id (same class: it must get
    the same labels)."""
    d = str(tmp_path_factory.mktemp("s1"))
    recs = [resolve_dataset("pascal_part_examples")[i] for i in (0, 4, 6)]
    labels = []
    for r in recs:
        objs = [ObjectLabel(o["class_name"], decode_mask(o["mask"]), o["class_name"],
                            class_id=int(o.get("class_id", -1))) for o in r["objects"]]
        labels.append(ImagePseudoLabel(r["file_name"], str(r["image_id"]), r["height"], r["width"],
                                       "object_masks", objs))
    dup = labels[0]
    labels.append(ImagePseudoLabel(dup.file_name, dup.image_id + "_copy", dup.height, dup.width,
                                   "object_masks", dup.objects))
    for lab in labels:
        save_pseudo_label(d, lab)
    return d


def _outputs(folder):
    return {os.path.relpath(p, folder): json.load(open(p)) for p in list_pseudo_labels(folder)}


@needs_shared
def test_tiny_run_labels_consistent_and_kill_rerun_identical(stage1, tmp_path):
    from detectron2.modeling import build_model

    # a random-init tiny stage-4 model saved as its checkpoint (ProposalModel keys)
    torch.manual_seed(1)
    weights = str(tmp_path / "stage4.pth")
    torch.save({"model": build_model(_cfg()).state_dict()}, weights)
    cfg = _cfg("MODEL.WEIGHTS", weights)
    clean = str(tmp_path / "clean")
    summary = PartRankingStage(cfg, clean).run(stage1)
    assert not summary.failed and summary.processed == 4
    outs = _outputs(clean)
    assert len(outs) == 4
    n_parts = 0
    for path in list_pseudo_labels(clean):
        lab = load_pseudo_label(path, "part_ranking")
        for obj in lab.objects:
            if not obj.parts:
                continue
            labels = [p.label for p in obj.parts]
            assert all(0 <= x < K for x in labels) and len(set(labels)) == len(labels)
            seg = np.zeros(obj.mask.shape, int)
            for p in obj.parts:
                assert not (p.mask & ~obj.mask).any()  # inside the object
                assert not (seg & p.mask).any()  # per-pixel: no overlap
                seg |= p.mask
            n_parts += len(obj.parts)
        ratios = lab.config["RATIOS"]
        assert len(ratios["object_ratio"]) == len(lab.objects)
        assert ratios["part_ratios"][0] == pytest.approx(part_ratios(lab.objects[0].parts, lab.height, lab.width)[1])
    assert n_parts > 0
    # same class, same image under two ids: identical labels (one classifier per class)
    files = {os.path.basename(p): p for p in list_pseudo_labels(clean)}
    first = min(k for k in files if k.endswith("_copy.json")).replace("_copy", "")
    a, b = load_pseudo_label(files[first]), load_pseudo_label(files[first.replace(".json", "_copy.json")])
    for oa, ob in zip(a.objects, b.objects):
        assert [p.label for p in oa.parts] == [p.label for p in ob.parts]
        assert all((pa.mask == pb.mask).all() for pa, pb in zip(oa.parts, ob.parts))

    # two class partitions in two concurrent processes (the stage tool, as an sbatch array runs it)
    # write the same files as one process: each class is gathered and clustered by one owner
    two = str(tmp_path / "two")
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "part_ranking.py"), "--config-file",
         "configs/part_ranking/tiny_cpu.yaml", "--input-dir", stage1, "--output-dir", two,
         "MODEL.EFFICIENTNET.PRETRAINED", "False", "PART_RANKING.NUM_CLUSTERS", str(K),
         "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", "MODEL.WEIGHTS", weights,
         "PART_RANKING.TOTAL_PARTITIONS", "2", "PART_RANKING.PARTITION_INDEX", str(i)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}) for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert _outputs(two) == outs

    # killed mid-gather, then mid-labelling; each rerun resumes; the result equals the clean run
    class Killed(BaseException):
        pass

    class Killer(PartRankingStage):
        budget = {"gather": 2, "process_with_state": 10**6}

        def gather(self, item):
            self.budget["gather"] -= 1
            if self.budget["gather"] < 0:
                raise Killed()
            return super().gather(item)

        def process_with_state(self, item, states):
            self.budget["process_with_state"] -= 1
            if self.budget["process_with_state"] < 0:
                raise Killed()
            return super().process_with_state(item, states)

    killed = str(tmp_path / "killed")
    with pytest.raises(Killed):
        Killer(cfg, killed).run(stage1)
    Killer.budget = {"gather": 10**6, "process_with_state": 2}
    with pytest.raises(Killed):
        Killer(cfg, killed).run(stage1)
    assert 0 < len(list_pseudo_labels(killed)) < 4
    again = PartRankingStage(cfg, killed).run(stage1)
    assert again.resumed == 2 and again.processed == 2
    assert _outputs(killed) == outs
    shutil.rmtree(killed)


def test_default_input_names_each_folder_once():
    """configs/PartRanking.yaml names its stage-3 folder in DATASET_PATH and DATASET_PATH_LIST: the
    stage reads it once (a second copy would be refused as duplicate image ids)."""
    cfg = setup_cfg(os.path.join(REPO, "configs", "PartRanking.yaml"), [])
    assert PartRankingStage.default_input(cfg) == [os.path.normpath(cfg.PART_RANKING.DATASET_PATH)]
    cfg = setup_cfg("", ["PART_RANKING.DATASET_PATH_LIST", "('a/', 'b')", "PART_RANKING.DATASET_PATH", "c"])
    assert PartRankingStage.default_input(cfg) == ["a", "b", "c"]
    assert PartRankingStage.default_input(setup_cfg("", [])) is None


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="CLASSIFIER_METRIC"):
        PartRankingStage.validate_config(_cfg("PART_RANKING.CLASSIFIER_METRIC", "cosine"))
    with pytest.raises(ValueError, match="NUM_CLUSTERS"):
        PartRankingStage.validate_config(_cfg("PART_RANKING.NUM_CLUSTERS", "0"))
    with pytest.raises(ValueError, match="DATASET_PATH"):
        PartRankingStage(_cfg(), str(tmp_path)).list_items("")


@needs_shared
def test_stage4_predictor_features_feed_stage5_with_identical_outputs(stage1, tmp_path):
    """The stage-4 predictor writes each kept segment with its query feature; stage 5 on its folder
    (features read from disk, one network pass) writes exactly the files of stage 5 on the object
    masks (two network passes), and refuses predictor files made with other pass-1 settings."""
    from detectron2.modeling import build_model

    from part_distillation.stages.resume import StageConfigMismatch
    from part_distillation.config import with_overrides
    from part_distillation.stages.part_ranking import predictor_overrides
    from part_distillation.stages.proposal_learning import ProposalLearningStage

    torch.manual_seed(2)
    weights = str(tmp_path / "stage4.pth")
    torch.save({"model": build_model(_cfg()).state_dict()}, weights)
    cfg = _cfg("MODEL.WEIGHTS", weights)
    props = str(tmp_path / "proposals")
    assert ProposalLearningStage(with_overrides(cfg, predictor_overrides(cfg)), props).run(stage1).processed == 4
    stage = PartRankingStage(cfg, str(tmp_path / "unused"))
    n_parts = 0
    for path in list_pseudo_labels(props):
        lab = load_pseudo_label(path, "proposal_learning")
        assert lab.config["PASS1"]["WEIGHTS_IDENTITY"][0]["size"] == os.path.getsize(weights)
        # the features in the file are the network's pass-1 features of the same objects
        item = WorkItem(lab.image_id, lab.folder_class(), path)
        _, kept, x = stage._inputs(item)
        net = stage.model([x])[0]["features"]
        for i, f in zip(kept, net):
            feats = [p.feature for p in lab.objects[i].parts]
            assert len(feats) == len(f) and all(p.label is None for p in lab.objects[i].parts)
            if len(f):
                np.testing.assert_array_equal(np.stack(feats), f.numpy())
            for p in lab.objects[i].parts:
                assert p.feature.dtype == np.float32 and p.feature.shape == (f.shape[1],)
                assert not (p.mask & ~lab.objects[i].mask).any()
            n_parts += len(feats)
    assert n_parts > 0
    class Counting(PartRankingStage):  # counts network inputs built, one per network pass
        passes = 0

        def _inputs(self, item, label=None):
            Counting.passes += 1
            return super()._inputs(item, label)

    direct, via = str(tmp_path / "direct"), str(tmp_path / "via")
    Counting(cfg, direct).run(stage1)
    assert Counting.passes == 8
    Counting.passes = 0
    Counting(cfg, via).run(props)
    assert Counting.passes == 4  # pass 2 only
    assert _outputs(via) == _outputs(direct)
    with pytest.raises(StageConfigMismatch, match="pass-1 settings"):
        PartRankingStage(_cfg("MODEL.WEIGHTS", weights, "PART_RANKING.MIN_SCORE_1", "0.5"),
                         str(tmp_path / "other")).run(props)


@needs_shared
def test_stage4_checkpoint_of_another_model_stops_stages_4_and_5_naming_the_keys(stage1, tmp_path):
    """MODEL.WEIGHTS that leave the stage-4 head at its initialisation (another model's checkpoint)
    stop the predictor and stage 5 before any item, naming the file and the keys."""
    from detectron2.modeling import build_model

    from part_distillation.modeling.weights import IncompleteWeightsError
    from part_distillation.stages.proposal_learning import ProposalLearningStage

    state = build_model(_cfg()).state_dict()
    weights = str(tmp_path / "other.pth")
    torch.save({"model": {k: v for k, v in state.items() if "predictor.mask_embed" not in k}}, weights)
    for stage in (ProposalLearningStage, PartRankingStage):
        out = str(tmp_path / stage.NAME)
        with pytest.raises(IncompleteWeightsError, match="sem_seg_head.predictor.mask_embed.layers.0.weight"):
            stage(_cfg("MODEL.WEIGHTS", weights), out).run(stage1)
        assert not list_pseudo_labels(out)


def _proposals(folder, images, cfg, parts_per_image, feature_of):
    """Hand-built stage-4 predictor files (one 'bird' object per image, parts = vertical stripes)
    whose part j of image i has the feature ``feature_of(i, j)`` ((D,) float32 or None)."""
    stage = PartRankingStage(cfg, folder + "_unused")
    obj = np.zeros((40, 48), bool)
    obj[4:36, 4:44] = True
    for i, path in enumerate(images):
        cuts = np.linspace(4, 44, parts_per_image + 1).astype(int)
        parts = []
        for j in range(parts_per_image):
            m = np.zeros_like(obj)
            m[4:36, cuts[j]:cuts[j + 1]] = True
            parts.append(PartLabel(m, None, 0.9, feature_of(i, j)))
        save_pseudo_label(folder, ImagePseudoLabel(path, f"im{i}", 40, 48, "proposal_learning",
                                                   [ObjectLabel("bird", obj, "bird", parts=parts)],
                                                   config={"PASS1": stage.pass1_settings()}))
    return folder


def test_stage5_refuses_bad_features_naming_the_file_and_counts_parts_without_one(tmp_path):
    """Predictor features that are NaN, of another dimension (a whole file or one part) or missing
    for many parts stop stage 5 naming the file (a NaN centroid would give every part of the class
    one label); a few missing ones are counted in the summary."""
    from part_distillation.data.pseudo_labels import PseudoLabelError

    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        images.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images[-1])
    cfg = _cfg("PART_RANKING.MIN_OBJECT_AREA_RATIO", "0.0")
    good = {(i, j): rng.standard_normal(128).astype(np.float32) for i in range(3) for j in range(9)}

    def run(name, feature_of):
        folder = _proposals(str(tmp_path / name), images, cfg, 9, feature_of)
        return folder, PartRankingStage(cfg, str(tmp_path / (name + "_out"))).run(folder)

    # 1 of 27 parts without a feature: counted, the run goes on
    _, summary = run("one_missing", lambda i, j: None if (i, j) == (1, 4) else good[i, j])
    assert summary.processed == 3 and not summary.failed
    assert summary.extra["parts_without_feature"] == 1 and summary.extra["parts_with_feature"] == 26
    # 3 of 27 (11%): refused
    with pytest.raises(ValueError, match=r"3 of 27 parts \(11.1% > 5%\).*no feature"):
        run("many_missing", lambda i, j: None if j == 0 else good[i, j])
    # a whole file of another dimension: named, with the dimension seen before
    with pytest.raises(ValueError, match=r"bird/im2.json: features of dimension 6 .* but \[128\]"):
        run("other_dim", lambda i, j: good[i, j][:6] if i == 2 else good[i, j])
    # one part of another dimension, and a NaN feature: refused at decode, file and part named
    with pytest.raises(PseudoLabelError, match=r"bird/im1.json: features of different dimensions.*"
                                               r"128 \(object 0 part 0\), 7 \(object 0 part 3\)"):
        run("one_part_dim", lambda i, j: good[i, j][:7] if (i, j) == (1, 3) else good[i, j])
    nan = good[0, 2].copy()
    nan[5] = np.nan
    with pytest.raises(PseudoLabelError, match=r"bird/im0.json: object 0 part 2: feature with 1 NaN or infinite"):
        run("nan", lambda i, j: nan if (i, j) == (0, 2) else good[i, j])


@needs_shared
def test_sh_file_stage5_step_reads_its_input_from_part_ranking_dataset_path(stage1, tmp_path):
    """sh_files/part_ranking/run.sh (outside SLURM: one partition) passes its input folder as the
    official PART_RANKING.DATASET_PATH, not --input-dir; the stage takes it from there."""
    from detectron2.modeling import build_model

    torch.manual_seed(1)
    weights = str(tmp_path / "stage4.pth")
    torch.save({"model": build_model(_cfg()).state_dict()}, weights)
    out = str(tmp_path / "ranked")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    run = subprocess.run(["bash", "sh_files/part_ranking/run.sh"], cwd=REPO, capture_output=True, text=True,
                         env={**env, "PY": sys.executable, "CONFIG": "configs/part_ranking/tiny_cpu.yaml",
                              "WEIGHTS": weights, "INPUT_DIR": stage1, "OUTPUT_DIR": out, "OMP_NUM_THREADS": "1",
                              "EXTRA_OPTS": f"MODEL.EFFICIENTNET.PRETRAINED False PART_RANKING.NUM_CLUSTERS {K} "
                                            "INPUT.MIN_SIZE_TEST 128 INPUT.MAX_SIZE_TEST 128"})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "logs", "summary_0of1.json")))
    assert summary["processed"] == 4 and len(list_pseudo_labels(out)) == 4
