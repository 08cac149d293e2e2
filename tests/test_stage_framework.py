"""The stage framework on a synthetic gather -> reduce -> map stage and on stages 1-2: phases,
class partitioning, kill and resume, the done-manifest, the resume guard, duplicate ids."""
import json
import os

import numpy as np
import pytest
from detectron2.config import configurable
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, class_code_of_dir, class_dir,
                                                  encode_mask, list_pseudo_labels, load_pseudo_label,
                                                  save_pseudo_label)
from part_distillation.labelers.labeler import GivenMaskLabeler
from part_distillation.stages.build import register_stage
from part_distillation.stages.partition import WorkItem, assign_classes, partition_items
from part_distillation.stages.resume import StageConfigMismatch
from part_distillation.stages.runner import RunOptions
from part_distillation.stages.stage import Stage
from part_distillation.stages.store import DoneManifest
from part_distillation.stages.dense_crf import DenseCRFStage
from part_distillation.stages.object_masks import ObjectMasksStage
from part_distillation.stages.proposal_generation import ProposalGenerationStage, grid_segments
from part_distillation.utils.sharding import SkipItem

from .helpers import EFFNET_CFG


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so the runner does not count it and stops."""


@register_stage
class ToyClassStage(Stage):
    """Gather: two feature rows per image, (value, i); reduce: per class the first row, the row
    count and the mean; map: each image's value minus its class mean."""

    NAME = "toy_class_stage"
    CONFIG_NAMESPACE = "PART_RANKING"
    PARTITION_BY = "class"
    RECORDED_ARGUMENTS = ("shift",)
    gather_buffer_bytes = 48  # two images' rows per chunk: many chunks
    kill_gather_after = kill_map_after = None

    @configurable
    def __init__(self, *, output_dir, run_options, shift):
        super().__init__(output_dir=output_dir, run_options=run_options)
        self.shift = shift
        self.calls = {"gather": 0, "map": 0, "reduce": []}

    @classmethod
    def from_config(cls, cfg, output_dir):
        return dict(super().from_config(cfg, output_dir), shift=0.0)

    def list_items(self, records):
        return [WorkItem(r["image_id"], r["class_code"], r) for r in records]

    def gather(self, item):
        if self.calls["gather"] == self.kill_gather_after:
            raise Killed()
        self.calls["gather"] += 1
        v = float(item.source["value"])
        if v < 0:
            raise SkipItem("negative value", item.image_id)
        return {item.class_code: np.array([[v, 0.0], [v, 1.0]], np.float32)}

    def reduce_many(self, features):
        self.calls["reduce"].append(sorted(features))
        return {c: {"first": f[0], "count": np.int64(len(f)), "mean": f.mean(0)} for c, f in features.items()}

    def process_with_state(self, item, states):
        if self.calls["map"] == self.kill_map_after:
            raise Killed()
        self.calls["map"] += 1
        s = states[item.class_code]
        rec = item.source
        label = ImagePseudoLabel(rec["image_id"] + ".jpg", item.image_id, 4, 4, self.NAME,
                                 config={"offset": float(rec["value"] - s["mean"][0] + self.shift), "count": int(s["count"]),
                                         "first": s["first"].tolist()})
        return label, {"labelled": 1}


def _records():
    out = []
    for c, n in (("cat", 5), ("dog", 3), ("n01440764", 4), ("tv monitor", 2)):
        out += [{"image_id": f"{c[:3]}{i}", "class_code": c, "value": 10 * len(out) + i} for i in range(n)]
    return out


def _cfg(*opts):
    return setup_cfg(EFFNET_CFG, list(opts))


def _tree(folder):
    """{relative path: bytes} of the pseudo-label files under ``folder``."""
    return {os.path.relpath(p, folder): open(p, "rb").read() for p in list_pseudo_labels(folder)}


def test_class_partitions_are_disjoint_and_complete():
    items = [WorkItem(r["image_id"], r["class_code"], r) for r in _records()]
    for total in (1, 2, 3, 5):
        parts = [partition_items(items, total, i, "class") for i in range(total)]
        keys = [it.key for mine, _ in parts for it in mine]
        assert sorted(keys) == sorted(it.key for it in items)  # complete, no item twice
        owned = [o for _, o in parts]
        assert set().union(*owned) == {"cat", "dog", "n01440764", "tv monitor"}
        assert sum(map(len, owned)) == 4  # disjoint
        for mine, o in parts:
            assert {it.class_code for it in mine} <= o
    assert assign_classes({"a": 5, "b": 3, "c": 4, "d": 2}, 2) == {"a": 0, "c": 1, "b": 1, "d": 0}
    by_image = [partition_items(items, 3, i, "image")[0] for i in range(3)]
    assert sorted(it.key for p in by_image for it in p) == sorted(it.key for it in items)


def test_class_dirs_are_safe_and_reversible():
    for code in ("n01440764", "tv monitor", "a/b", "..", ".hidden", "logs", "", "x%y"):
        d = class_dir(code)
        assert "/" not in d and not d.startswith(".") and d not in ("logs", "collages")
        assert class_code_of_dir(d) == code


def test_gather_reduce_map_in_two_partitions_equals_one_and_resumes_after_kills(tmp_path):
    recs = _records()
    ref = ToyClassStage(_cfg(), str(tmp_path / "one"))
    s = ref.run(recs).as_dict()
    assert s["processed"] == len(recs) and s["labelled"] == len(recs)
    out = json.load(open(os.path.join(tmp_path, "one", "cat", "cat0.json")))
    assert out["stage"] == "toy_class_stage" and out["image"]["class_code"] == "cat"
    assert out["config"]["count"] == 10 and out["config"]["first"] == [0.0, 0.0]  # 5 images x 2 rows
    assert os.path.isfile(os.path.join(tmp_path, "one", "tv%20monitor", "tv 0.json"))
    one = _tree(str(tmp_path / "one"))

    # two partitions, each killed once in gather and once in map, then resumed
    two = str(tmp_path / "two")
    for index in (0, 1):
        opts = ["PART_RANKING.TOTAL_PARTITIONS", "2", "PART_RANKING.PARTITION_INDEX", str(index)]
        for kill in ({"kill_gather_after": 3}, {"kill_map_after": 2}):
            st = ToyClassStage(_cfg(*opts), two)
            st.__dict__.update(kill)
            with pytest.raises(Killed):
                st.run(recs)
        st = ToyClassStage(_cfg(*opts), two)
        summary = st.run(recs).as_dict()
        assert summary["resumed"] == 2 and st.calls["gather"] == 0  # gather and 2 images were done
        assert summary["processed"] + summary["resumed"] == sum(
            r["class_code"] in partition_items([WorkItem(r["image_id"], r["class_code"], r) for r in recs], 2,
                                               index, "class")[1] for r in recs)
        again = ToyClassStage(_cfg(*opts), two)
        assert again.run(recs).as_dict()["processed"] == 0 and again.calls == {"gather": 0, "map": 0, "reduce": []}
    assert _tree(two) == one  # byte-identical to the uninterrupted single-partition run


def test_a_run_built_with_other_arguments_is_refused_naming_the_argument(tmp_path):
    """The resume guard records the stage's explicit constructor arguments (RECORDED_ARGUMENTS),
    however the stage was built; run keys (partitions, filters) are not arguments it records."""
    out = str(tmp_path / "a")
    args = ToyClassStage.from_config(_cfg(), out)
    assert sorted(args) == ["output_dir", "run_options", "shift"]
    assert ToyClassStage(**args).run(_records()).processed == len(_records())
    with open(os.path.join(out, "logs", "config.json")) as f:
        assert json.load(f) == {"stage": "toy_class_stage", "arguments": {"shift": 0.0}, "WEIGHTS_IDENTITY": []}
    with pytest.raises(StageConfigMismatch, match=r"arguments\.shift: 0\.0 -> 1\.5"):
        ToyClassStage(**dict(args, shift=1.5)).run(_records())
    assert ToyClassStage(_cfg("PART_RANKING.DEBUG", "True"), out).run(_records()).processed == 0  # resumes

    # stage 1: its own arguments, named; a stage-2 key of the same namespace is not one of them
    recs = _image_records(tmp_path)
    s1 = str(tmp_path / "s1")
    ObjectMasksStage(_cfg(), s1).run(recs)
    assert ObjectMasksStage(_cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "7"), s1).run(recs).resumed == 2
    with pytest.raises(StageConfigMismatch, match=r"arguments\.min_object_area: 1 -> 5"):
        ObjectMasksStage(_cfg("PROPOSAL_GENERATION.MIN_OBJECT_AREA", "5"), s1).run(recs)
    explicit = ObjectMasksStage(output_dir=s1, run_options=RunOptions.from_config(_cfg(), "PROPOSAL_GENERATION"),
                                labeler=GivenMaskLabeler(), min_object_area=1, save_score_threshold=0.0)
    assert explicit.settings() == ObjectMasksStage(_cfg(), s1).settings() and explicit.run(recs).resumed == 2


def test_gather_skips_are_counted_and_image_partitioning_of_a_gather_stage_is_refused(tmp_path):
    recs = _records()
    recs[0]["value"] = -1
    s = ToyClassStage(_cfg(), str(tmp_path / "a")).run(recs).as_dict()
    assert s["skipped"] == {"negative value": 1}
    assert s["skipped_items"] == [{"item": "cat/cat0", "reason": "negative value", "detail": "cat0"}]

    class ByImage(ToyClassStage):
        PARTITION_BY = "image"

    with pytest.raises(ValueError, match="gather form needs PARTITION_BY 'class'"):
        ByImage(_cfg("PART_RANKING.TOTAL_PARTITIONS", "2"), str(tmp_path / "b")).run(recs)


def test_class_filters_and_duplicate_ids(tmp_path):
    keep, excl = tmp_path / "keep.txt", tmp_path / "excl.txt"
    keep.write_text("# classes\ncat\n/data/imagenet/train/n01440764/\ndog\n")
    excl.write_text("dog\n")
    cfg = _cfg("PART_RANKING.FILTERED_CODE_PATH_LIST", f"['{keep}']", "PART_RANKING.EXCLUDE_CODE_PATH", str(excl),
               "PART_RANKING.PATH_ONLY", "True")
    ToyClassStage(cfg, str(tmp_path / "f")).run(_records())
    assert sorted(os.listdir(tmp_path / "f")) == ["cat", "logs", "n01440764"]
    with pytest.raises(FileNotFoundError, match="EXCLUDE_CODE_PATH"):
        ToyClassStage(_cfg("PART_RANKING.EXCLUDE_CODE_PATH", "/nope.txt"), str(tmp_path / "g")).run(_records())
    recs = _records() + [{"image_id": "cat0", "class_code": "dog", "value": 1}]
    with pytest.raises(ValueError, match="duplicate image id 'cat0'"):
        ToyClassStage(_cfg(), str(tmp_path / "h")).run(recs)
    assert not os.path.exists(tmp_path / "h" / "logs" / "config.json")


def test_done_manifest_ignores_a_torn_line_and_a_changed_file(tmp_path):
    m = DoneManifest(str(tmp_path), "0of1")
    item = WorkItem("x", "cat", None)
    path = m.output_path(item)
    os.makedirs(os.path.dirname(path))
    open(path, "w").write("12345")
    m.add(item.key, 5)
    with open(m.path, "a") as f:
        f.write("cat/y\t1")  # a kill mid-append
    done = m.done_keys()
    assert done == {"cat/x": 5} and m.is_done(item, done)
    open(path, "w").write("123")  # truncated afterwards: not trusted
    assert not m.is_done(item, done) and not m.is_done(WorkItem("z", "cat", None), done)


def _image_records(tmp_path, names=("a.png", "b.png")):
    recs = []
    mask = np.zeros((32, 48), bool)
    mask[4:28, 6:42] = True
    for n in names:
        img = np.zeros((32, 48, 3), np.uint8)
        img[:, 24:] = 200
        Image.fromarray(img).save(tmp_path / n)
        recs.append({"file_name": str(tmp_path / n), "image_id": os.path.splitext(n)[0], "height": 32, "width": 48,
                     "objects": [{"class_name": "thing", "class_id": 3, "mask": encode_mask(mask)}]})
    return recs


def test_variants_with_other_weights_into_one_folder_are_refused(tmp_path):
    """The pipeline's ``pretrained`` and ``random_init`` variants differ only in the backbone's
    weights: resuming one into the other's folder must be refused."""
    recs = _image_records(tmp_path)
    s1 = str(tmp_path / "s1")
    small = ["INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "48"]
    ObjectMasksStage(_cfg(*small), s1).run(recs)
    lab = load_pseudo_label(os.path.join(s1, "thing", "a.json"))
    assert lab.objects[0].class_code == "thing" and lab.objects[0].class_id == 3
    out = str(tmp_path / "s2")
    assert ProposalGenerationStage(_cfg(*small), out).run(s1).processed == 2
    random_init = _cfg(*small, "MODEL.EFFICIENTNET.PRETRAINED", "False", "MODEL.WEIGHTS", "")
    with pytest.raises(StageConfigMismatch, match="PRETRAINED: True -> False"):
        ProposalGenerationStage(random_init, out).run(s1)
    # a weights file is recorded by identity: same path, other content -> refused
    w = tmp_path / "w.pkl"
    w.write_bytes(b"one")
    grid = lambda image, masks, image_id: [grid_segments(m) for m in masks]  # noqa: E731 (no weights loaded)
    st = ProposalGenerationStage(_cfg(*small, "MODEL.WEIGHTS", str(w)), str(tmp_path / "s2w"), grid)
    assert st.settings()["WEIGHTS_IDENTITY"][0]["size"] == 3
    st.run(s1)
    w.write_bytes(b"two")
    with pytest.raises(StageConfigMismatch, match="sha1_4MiB"):
        ProposalGenerationStage(_cfg(*small, "MODEL.WEIGHTS", str(w)), str(tmp_path / "s2w"), grid).run(s1)


def test_bad_values_fail_at_start_before_anything_is_recorded(tmp_path):
    for opts, msg in ((["DENSE_CRF.OBJECT_PIXELS", "keep-parts"], "OBJECT_PIXELS must be one of"),
                      (["DENSE_CRF.GT_PROB", "1.5"], "GT_PROB")):
        with pytest.raises(ValueError, match=msg):
            DenseCRFStage(_cfg(*opts), str(tmp_path / "crf")).run(str(tmp_path))
    with pytest.raises(ValueError, match="NUM_SUPERPIXEL_CLUSTERS must be >= 1"):
        ProposalGenerationStage(_cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "0"), str(tmp_path / "pg"))
    assert not os.path.exists(tmp_path / "crf") and not os.path.exists(tmp_path / "pg")


def test_truncated_recorded_config_names_the_file(tmp_path):
    recs = _image_records(tmp_path)
    out = tmp_path / "s1"
    ObjectMasksStage(_cfg(), str(out)).run(recs)
    cfg_file = out / "logs" / "config.json"
    cfg_file.write_text(cfg_file.read_text()[:10])
    with pytest.raises(ValueError, match="config.json: corrupt or truncated"):
        ObjectMasksStage(_cfg(), str(out)).run(recs)


def test_duplicate_stems_are_refused_and_a_renamed_input_is_not_trusted(tmp_path):
    recs = _image_records(tmp_path, ("cat.jpg", "cat.png"))
    recs[0]["image_id"] = recs[1]["image_id"] = "cat"
    with pytest.raises(ValueError, match=r"duplicate image id 'cat': .*cat\.jpg and .*cat\.png"):
        ObjectMasksStage(_cfg(), str(tmp_path / "s1")).run(recs)
    recs = _image_records(tmp_path)
    s1 = tmp_path / "s1b"
    ObjectMasksStage(_cfg(), str(s1)).run(recs)
    os.rename(s1 / "thing" / "b.json", s1 / "thing" / "c.json")  # a valid file under another id
    s = ProposalGenerationStage(_cfg("INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "48"),
                           str(tmp_path / "s2")).run(str(s1)).as_dict()
    assert s["processed"] == 1 and s["failed"] == 1 and "holds image id 'b'" in s["failed_items"][0]["error"]


def test_stage1_drops_small_and_low_score_objects_and_lists_them(tmp_path):
    recs = _image_records(tmp_path, ("a.png",))
    small = np.zeros((32, 48), bool)
    small[0:2, 0:2] = True  # 4 pixels
    recs[0]["objects"].append({"class_name": "thing", "class_id": 3, "mask": encode_mask(small)})
    out = str(tmp_path / "s1")
    s = ObjectMasksStage(_cfg("PROPOSAL_GENERATION.MIN_OBJECT_AREA", "5"), out).run(recs).as_dict()
    assert s["objects"] == 1 and s["objects_dropped_small_or_low_score"] == 1
    lab = load_pseudo_label(os.path.join(out, "thing", "a.json"), "object_masks")
    assert lab.skipped_objects == [{"index": 1, "reason": "smaller than MIN_OBJECT_AREA", "stage": "object_masks"}]
    out2 = str(tmp_path / "s1b")
    s = ObjectMasksStage(_cfg("PROPOSAL_GENERATION.SAVE_SCORE_THRESHOLD", "1.5"), out2).run(recs).as_dict()
    assert s["objects"] == 0 and s["objects_dropped_small_or_low_score"] == 2  # given masks score 1.0
    with pytest.raises(ValueError, match="WITH_GIVEN_MASK False is not supported"):
        ProposalGenerationStage(_cfg("PROPOSAL_GENERATION.WITH_GIVEN_MASK", "False"), str(tmp_path / "s2"))


def test_official_pickled_code_lists_and_single_class_code(tmp_path):
    import torch

    keep = tmp_path / "codes.pkl"
    torch.save(["cat", "dog", "n01440764"], keep)
    cfg = _cfg("PART_RANKING.FILTERED_CODE_PATH_LIST", f"['{keep}']")
    ToyClassStage(cfg, str(tmp_path / "a")).run(_records())
    assert sorted(os.listdir(tmp_path / "a")) == ["cat", "dog", "logs", "n01440764"]
    cfg = _cfg("PROPOSAL_GENERATION.SINGLE_CLASS_CODE", "thing")
    recs = _image_records(tmp_path)
    recs[1]["objects"][0]["class_name"] = "other"
    assert ObjectMasksStage(cfg, str(tmp_path / "b")).run(recs).processed == 1
    assert sorted(os.listdir(tmp_path / "b")) == ["logs", "thing"]


def test_evaluation_checks_the_files_stage(tmp_path):
    from part_distillation.data.pseudo_labels import PseudoLabelError, PartLabel, ObjectLabel, save_pseudo_label
    from part_distillation.stages.evaluate import evaluate_pseudo_labels

    obj = np.zeros((20, 30), bool)
    obj[2:18, 2:28] = True
    rec = {"file_name": "x.jpg", "image_id": "x", "height": 20, "width": 30,
           "objects": [{"class_name": "thing", "class_code": "thing", "class_id": 0, "mask": encode_mask(obj), "parts": [{"name": "p", "mask": encode_mask(obj)}]}]}
    folder = str(tmp_path / "s2")
    save_pseudo_label(folder, ImagePseudoLabel("x.jpg", "x", 20, 30, "proposal_generation",
                                               [ObjectLabel("thing", obj, parts=[PartLabel(obj)])]))
    assert evaluate_pseudo_labels(folder, [rec])["stage"] == "proposal_generation"
    with pytest.raises(PseudoLabelError, match="a 'proposal_generation' pseudo-label where 'dcrf' was expected"):
        evaluate_pseudo_labels(folder, [rec], "dcrf")
    save_pseudo_label(folder, ImagePseudoLabel("y.jpg", "y", 20, 30, "dcrf", [ObjectLabel("thing", obj)]))
    with pytest.raises(PseudoLabelError, match="expected"):  # one folder, two stages
        evaluate_pseudo_labels(folder, [rec])


def test_kill_9_mid_stage_then_rerun_gives_identical_files(tmp_path):
    """A real SIGKILL of the stage-3 tool while it writes; the rerun finishes the rest and every
    file equals an uninterrupted run's, byte for byte."""
    import signal
    import subprocess
    import sys
    import time

    from part_distillation.data.pseudo_labels import ObjectLabel, PartLabel, save_pseudo_label

    rng = np.random.default_rng(0)
    obj = np.zeros((96, 128), bool)
    obj[8:88, 8:120] = True
    s2 = str(tmp_path / "s2")
    for i in range(16):
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"im{i:02d}.png")
        seg = rng.integers(1, 4, (96, 128))
        parts = [PartLabel(obj & (seg == k)) for k in (1, 2, 3)]
        save_pseudo_label(s2, ImagePseudoLabel(str(tmp_path / f"im{i:02d}.png"), f"im{i:02d}", 96, 128,
                                               "proposal_generation", [ObjectLabel("thing", obj, parts=parts)],
                                               config={"INPUT_SIZE": [96, 128]}))
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "dense_crf.py")

    def cmd(out):
        return [sys.executable, tool, "--input-dir", s2, "--output-dir", out, "DENSE_CRF.NUM_WORKERS", "1",
                "DENSE_CRF.NUM_ITERS", "20"]

    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = os.path.join(killed, "logs", "done", "0of1.tsv")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(manifest) and open(manifest).read().count("\n") >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = open(manifest).read().count("\n")
    assert 2 <= done_before < 16, "the kill must land mid-run"
    assert subprocess.run(cmd(killed), capture_output=True).returncode == 0
    summary = json.load(open(os.path.join(killed, "logs", "summary_0of1.json")))
    assert summary["resumed"] == done_before and summary["processed"] == 16 - done_before
    DenseCRFStage(_cfg("DENSE_CRF.NUM_ITERS", "20"), str(tmp_path / "ref")).run(s2, workers=1)
    assert _tree(killed) == _tree(str(tmp_path / "ref")) and len(_tree(killed)) == 16


def test_a_second_process_on_the_same_partition_is_refused_naming_the_holder(tmp_path):
    """Two real processes of the stage-3 runner on one output folder and partition: the second
    (the tool) is refused with the first one's pid; a SIGKILL of the first releases the lock."""
    import signal
    import subprocess
    import sys
    import time

    from part_distillation.data.pseudo_labels import ObjectLabel, PartLabel, save_pseudo_label
    from part_distillation.utils.process import OutputLock

    obj = np.zeros((24, 32), bool)
    obj[4:20, 4:28] = True
    s2 = str(tmp_path / "s2")
    save_pseudo_label(s2, ImagePseudoLabel(str(tmp_path / "im.png"), "im", 24, 32, "proposal_generation",
                                           [ObjectLabel("thing", obj, parts=[PartLabel(obj)])],
                                           config={"INPUT_SIZE": [24, 32]}))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "out")
    args = ["--input-dir", s2, "--output-dir", out, "DENSE_CRF.NUM_WORKERS", "1"]
    # the first process: the stage runner whose item never ends (as a long image would)
    holder = ("import sys, time; from part_distillation.stages import cli; "
              "from part_distillation.stages.dense_crf import DenseCRFStage; "
              "DenseCRFStage.process = lambda self, item: time.sleep(600); "
              f"cli.main('dcrf', {args!r})")
    first = subprocess.Popen([sys.executable, "-c", holder], cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": repo})
    lock = os.path.join(out, "logs", "lock_0of1")
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if os.path.isfile(lock) and f"pid {first.pid}" in open(lock).read():
            break
        time.sleep(0.05)
    try:
        assert first.poll() is None, "the first process must still hold the lock"
        second = subprocess.run([sys.executable, os.path.join(repo, "tools", "dense_crf.py"), *args],
                                cwd=repo, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0, second.stderr[-3000:]
        assert f"pid {first.pid}" in second.stderr and "partition 1/1" in second.stderr
        assert not os.path.exists(os.path.join(out, "logs", "summary_0of1.json"))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with OutputLock(lock):  # released by the OS at the kill
        pass


def test_deprecated_stage_names_warn_and_resolve_to_the_official_stage(tmp_path):
    """The stage names used before the official ones (``pixel_grouping``, ``dense_crf``,
    ``part_proposals``) build the official stage and read old files as it, with a FutureWarning."""
    from part_distillation.stages.build import stage_class
    from part_distillation.stages.proposal_learning import ProposalLearningStage

    for old, cls in (("pixel_grouping", ProposalGenerationStage), ("dense_crf", DenseCRFStage),
                     ("part_proposals", ProposalLearningStage)):
        with pytest.warns(FutureWarning, match=f"stage '{old}' is deprecated, use '{cls.NAME}'"):
            assert stage_class(old) is cls
    assert stage_class("dcrf") is DenseCRFStage
    with pytest.raises(KeyError, match="unknown stage 'pixel_groupin'"):
        stage_class("pixel_groupin")
    obj = np.zeros((20, 30), bool)
    obj[5:15, 5:25] = True
    folder = str(tmp_path / "old")
    save_pseudo_label(folder, ImagePseudoLabel("x.jpg", "x", 20, 30, "dense_crf", [ObjectLabel("thing", obj)]))
    with pytest.warns(FutureWarning, match="stage 'dense_crf' is deprecated"):
        assert load_pseudo_label(list_pseudo_labels(folder)[0], "dcrf").stage == "dcrf"


def test_an_input_folder_without_pseudo_labels_is_an_error_not_a_run_of_0_images(tmp_path):
    # files one level too deep (<wnid>/<wnid>/<id>.json) are not this layout
    deep = tmp_path / "objects" / "n01" / "n01"
    deep.mkdir(parents=True)
    (deep / "a.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no pseudo-label files"):
        DenseCRFStage(_cfg(), str(tmp_path / "crf")).run(str(tmp_path / "objects"))
    assert not os.path.exists(tmp_path / "crf" / "n01")
