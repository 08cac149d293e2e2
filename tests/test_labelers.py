"""Stage-1 model labelers end to end on CPU with random-init weights on two real images
(resize, class filtering, top-k, saving, resume, batched DataLoader), and their error paths."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2 import model_zoo

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import list_pseudo_labels, load_pseudo_label
from part_distillation.data.images import read_image_rgb
from part_distillation.labelers.common import PASCAL_TO_COCO, image_class_names, select_predictions
from part_distillation.labelers.detectron2_model import Detectron2ModelLabeler, load_labeler_config
from part_distillation.stages.object_masks import ObjectMasksStage, build_labeler
from tests.helpers import EFFNET_CFG, REPO, needs_shared

DETIC_CFG = "configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml"
MASK_RCNN = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")


@pytest.fixture(scope="module")
def two_records():
    """Two real Pascal-Part images of different classes (dataset dicts)."""
    from part_distillation.data import resolve_dataset

    records = resolve_dataset("pascal_part_examples")
    first = records[0]
    other = next(r for r in records if image_class_names(r)[0] != image_class_names(first)[0])
    return [first, other]


def _cfg(mask_type, *opts):
    return setup_cfg(EFFNET_CFG, ["PROPOSAL_GENERATION.OBJECT_MASK_TYPE", mask_type, "DATALOADER.NUM_WORKERS", 1,
                                  "PROPOSAL_GENERATION.LABELER_BATCH_SIZE", 2, *opts])


def test_select_predictions_rules():
    names = ["dog", "person", "cat", "person", "dog"]
    scores = np.array([0.9, 0.2, 0.8, 0.5, 0.1])
    assert select_predictions(names, scores, ["person"], "none", 3).tolist() == [0, 2, 3]
    assert select_predictions(names, scores, ["person"], "image_class", 10).tolist() == [3, 1]
    assert select_predictions(names, scores, ["person"], "image_class_else_all", 1).tolist() == [3]
    # no prediction of the image's class: nothing, or the top-k of all
    assert select_predictions(names, scores, ["horse"], "image_class", 10).tolist() == []
    assert select_predictions(names, scores, ["horse"], "image_class_else_all", 2).tolist() == [0, 2]
    # Pascal names map to COCO ones
    assert select_predictions(["airplane", "tv"], np.array([0.1, 0.9]), ["aeroplane"], "image_class", 5).tolist() == [0]
    with pytest.raises(ValueError, match="OBJECT_CLASS_FILTER"):
        select_predictions(names, scores, [], "best", 3)


def _all_predictions(labeler, records):
    """Every prediction per image (no class filter, no top-k), ``records`` in one batch."""
    saved = labeler.class_filter, labeler.top_k
    labeler.class_filter, labeler.top_k = "none", 10**6
    try:
        return labeler.predict([labeler.transform(read_image_rgb(r["file_name"])) for r in records], records)
    finally:
        labeler.class_filter, labeler.top_k = saved


def _check_rule(label, record, all_names):
    """OBJECT_CLASS_FILTER image_class_else_all, top 10 (objects with an empty mask at image
    resolution are listed in skipped_objects instead)."""
    own = {n for c in image_class_names(record) for n in (c, PASCAL_TO_COCO.get(c, c))}
    names = [o.class_name for o in label.objects]
    selected = len(names) + len(label.skipped_objects)
    n_own = sum(n in own for n in all_names)
    if n_own:
        assert set(names) <= own and selected == min(10, n_own), (names, n_own)
    else:
        assert selected == min(10, len(all_names))


def _check_outputs(out, records, vocabulary=None):
    files = {os.path.basename(f)[:-5]: f for f in list_pseudo_labels(out)}
    assert sorted(files) == sorted(str(r["image_id"]) for r in records)
    for r in records:
        label = load_pseudo_label(files[str(r["image_id"])])
        assert label.stage == "object_masks" and (label.height, label.width) == (r["height"], r["width"])
        assert 1 <= len(label.objects) <= 10 and len(label.objects) + len(label.skipped_objects) <= 10
        scores = [o.score for o in label.objects]
        assert scores == sorted(scores, reverse=True)
        kept = {o.class_name for o in label.objects}
        if vocabulary is not None:
            assert kept <= set(vocabulary)
        for o in label.objects:
            assert o.mask.shape == (r["height"], r["width"]) and o.mask.any()
            assert len(o.bbox) == 4
        yield label


@needs_shared
def test_detectron2_labeler_mask_rcnn_end_to_end(tmp_path, two_records):
    cfg = _cfg("detectron2", "PROPOSAL_GENERATION.LABELER_CONFIG", MASK_RCNN)
    model_cfg = load_labeler_config(MASK_RCNN, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 160,
                                                "INPUT.MAX_SIZE_TEST", 256, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    torch.manual_seed(0)
    labeler = Detectron2ModelLabeler(cfg, model_cfg)
    # resize: shortest edge to INPUT.MIN_SIZE_TEST, long side at most MAX_SIZE_TEST
    x, h, w = labeler.transform(np.zeros((213, 320, 3), np.uint8))
    assert (h, w) == (213, 320) and x.shape[0] == 3 and min(x.shape[1:]) == 160 and max(x.shape[1:]) <= 256
    out = str(tmp_path / "m2f")
    summary = ObjectMasksStage(cfg, out, labeler=labeler).run(two_records)
    assert summary.processed == 2 and not summary.failed
    # (batched images are padded to a common size, so the check runs on the same two-image batch)
    all_names = [[o.class_name for o in objs] for objs in _all_predictions(labeler, two_records)]
    for label, r, names in zip(_check_outputs(out, two_records), two_records, all_names):
        _check_rule(label, r, names)
    with open(os.path.join(out, "logs", "config.json")) as f:
        assert json.load(f)["arguments"]["labeler"]["top_k"] == 10
    # resume: nothing left to do
    again = ObjectMasksStage(cfg, out, labeler=labeler).run(two_records)
    assert again.processed == 0 and again.resumed == 2


@needs_shared
def test_detectron2_labeler_with_the_official_mask2former_config(tmp_path, two_records):
    """The official COCO Mask2Former instance config (``MaskFormer`` meta-architecture, R50,
    random init, small input) as the stage-1 labeler: top-10 objects of the image's classes."""
    m2f = os.path.join(REPO, "configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml")
    cfg = _cfg("detectron2", "PROPOSAL_GENERATION.LABELER_CONFIG", m2f)
    model_cfg = load_labeler_config(m2f, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 96,
                                          "INPUT.MAX_SIZE_TEST", 128, "MODEL.MASK_FORMER.DEC_LAYERS", 2])
    torch.manual_seed(0)
    labeler = Detectron2ModelLabeler(cfg, model_cfg)
    assert type(labeler.model).__name__ == "MaskFormer" and len(labeler.class_names) == 80
    out = str(tmp_path / "m2f")
    summary = ObjectMasksStage(cfg, out, labeler=labeler).run(two_records)
    assert summary.processed == 2 and not summary.failed
    all_names = [[o.class_name for o in objs] for objs in _all_predictions(labeler, two_records)]
    for label, r, names in zip(_check_outputs(out, two_records), two_records, all_names):
        _check_rule(label, r, names)


@needs_shared
def test_detectron2_labeler_skips_unreadable_image(tmp_path, two_records):
    cfg = _cfg("detectron2", "PROPOSAL_GENERATION.OBJECT_TOP_K", 3)
    model_cfg = load_labeler_config(MASK_RCNN, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 96,
                                                "INPUT.MAX_SIZE_TEST", 128, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    records = [two_records[0], {**two_records[1], "file_name": str(broken), "image_id": "broken"}]
    summary = ObjectMasksStage(cfg, str(tmp_path / "out"), labeler=Detectron2ModelLabeler(cfg, model_cfg)).run(records)
    assert summary.processed == 1 and sum(summary.skipped.values()) == 1 and not summary.failed
    files = {os.path.basename(f)[:-5]: f for f in list_pseudo_labels(str(tmp_path / "out"))}
    label = load_pseudo_label(files[two_records[0]["image_id"]])
    assert len(label.objects) + len(label.skipped_objects) == 3  # top 3 (empty masks listed as skipped)


def test_detectron2_labeler_errors(tmp_path):
    with pytest.raises(ValueError, match="LABELER_CONFIG"):
        build_labeler(_cfg("detectron2"))
    cfg = _cfg("detectron2", "PROPOSAL_GENERATION.LABELER_CONFIG", MASK_RCNN)
    missing = str(tmp_path / "weights" / "mask2former" / "instance" / "swinL_i21k_q200_e100.pkl")
    with pytest.raises(FileNotFoundError, match="swinL_i21k_q200_e100.pkl.*weights/README.md"):
        Detectron2ModelLabeler(cfg, load_labeler_config(MASK_RCNN, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", missing]))
    with pytest.raises(FileNotFoundError):
        load_labeler_config(str(tmp_path / "nope.yaml"))


# ---- Detic ------------------------------------------------------------------------------------

detic = pytest.importorskip("part_distillation.labelers.detic")


def _detic_model_cfg(*opts):
    return detic.load_detic_config(DETIC_CFG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.SWIN.SIZE", "T",
                                               "INPUT.MAX_SIZE_TEST", 128, "MODEL.CENTERNET.POST_NMS_TOPK_TEST", 32,
                                               *opts])


def _embeddings(path, names, dim=512, seed=0):
    emb = np.random.default_rng(seed).normal(size=(len(names), dim)).astype(np.float32)
    np.savez(path, names=np.array(names), embeddings=emb)
    return str(path)


@needs_shared
def test_detic_labeler_end_to_end(tmp_path, two_records):
    vocab = sorted({n for r in two_records for n in image_class_names(r)})
    emb = _embeddings(tmp_path / "clip.npz", ["horse", *vocab, "boat"])
    cfg = _cfg("detic", "PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH", emb, "PROPOSAL_GENERATION.LABELER_CONFIG", DETIC_CFG)
    torch.manual_seed(0)
    labeler = detic.DeticLabeler(cfg, _detic_model_cfg())
    x, h, w = labeler.transform(np.zeros((213, 320, 3), np.uint8))  # fit 128 x 128, aspect kept
    assert (h, w) == (213, 320) and tuple(x.shape) == (3, 85, 128)
    out = str(tmp_path / "detic")
    summary = ObjectMasksStage(cfg, out, labeler=labeler).run(two_records)
    assert summary.processed == 2 and not summary.failed
    assert labeler.class_names == vocab  # the partition's classes, not the whole embedding file
    all_names = [[o.class_name for o in objs] for objs in _all_predictions(labeler, two_records)]
    for label, r, names in zip(_check_outputs(out, two_records, vocabulary=vocab), two_records, all_names):
        _check_rule(label, r, names)
    again = ObjectMasksStage(cfg, out, labeler=labeler).run(two_records)
    assert again.processed == 0 and again.resumed == 2


def test_detic_labeler_errors(tmp_path, monkeypatch):
    cfg = _cfg("detic", "PROPOSAL_GENERATION.LABELER_CONFIG", DETIC_CFG)
    missing = "weights/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.pth"
    if not os.path.exists(missing):
        with pytest.raises(FileNotFoundError, match="Detic_LCOCOI21k.*model zoo"):
            detic.DeticLabeler(cfg, detic.load_detic_config(DETIC_CFG, ["MODEL.DEVICE", "cpu"]))
    with pytest.raises(ValueError, match="LABELER_CONFIG"):
        detic.load_detic_config("")
    with pytest.raises(FileNotFoundError, match="Detic config"):
        detic.load_detic_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="CLIP_EMBEDDINGS_PATH"):
        detic.load_clip_embeddings("", ["dog"])
    with pytest.raises(KeyError, match="cat"):
        detic.load_clip_embeddings(_embeddings(tmp_path / "e.npz", ["dog"]), ["dog", "cat"])
    labeler = detic.DeticLabeler(cfg, _detic_model_cfg())
    with pytest.raises(RuntimeError, match="set_classes"):
        labeler.predict([labeler.transform(np.zeros((32, 32, 3), np.uint8))], [{"class_name": "dog"}])
    # the package is missing: the error says what to install
    monkeypatch.setitem(sys.modules, "centernet.config", None)
    with pytest.raises(ImportError, match="pip install --no-deps detic-fast"):
        detic.import_detic()
