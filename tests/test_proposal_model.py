"""Stage 4: pseudo-label dataset filters, mappers, ProposalModel training / inference, FREEZE_KEYS
and checkpoint loading (official .pkl layout)."""
import importlib.util
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.build import DEPRECATED_MAPPER_NAMES, build_train_mapper
from part_distillation.data.proposal_dataset import (
    PartEvalDatasetMapper,
    ProposalDatasetMapper,
    load_pseudo_label_dataset,
)
from part_distillation.data.pseudo_labels import (
    ImagePseudoLabel,
    ObjectLabel,
    PartLabel,
    save_pseudo_label,
)
from part_distillation.modeling.meta_arch.proposal_model import ProposalModel
from part_distillation.modeling.weights import format_incompatible_keys, load_weights

TINY = "configs/proposal_learning/tiny_cpu.yaml"


def tiny_cfg(*opts):
    """Tiny config, random-init backbone, 128 px."""
    return setup_cfg(TINY, ["MODEL.EFFICIENTNET.PRETRAINED", False, "INPUT.IMAGE_SIZE", 128,
                            "INPUT.IMAGE_SIZE_BASE", 128, "INPUT.MIN_SIZE_TEST", 128, *opts])


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _image(path, h, w, red_mask=None):
    """Write an RGB image: red 255 on ``red_mask``, 0 elsewhere; green/blue gradients."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = np.linspace(0, 200, w, dtype=np.uint8)[None]
    img[..., 2] = 60
    if red_mask is not None:
        img[..., 0] = red_mask * 255
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def label_folder(tmp_path):
    """Pseudo-labels: 'a' (big object with 3 parts, one tiny; plus a tiny object), 'b' (only a tiny
    object -> dropped), 'c' (object without parts), and a corrupt JSON."""
    folder = tmp_path / "labels"
    h, w = 40, 60
    obj = _box(h, w, 4, 36, 5, 55)  # 32 x 50 = 1600 px = 0.667 of the image
    p0, p1 = _box(h, w, 4, 36, 5, 30), _box(h, w, 4, 36, 30, 54)  # 800 + 768 px
    p2 = _box(h, w, 4, 36, 54, 55)  # 32 px = 0.02 of the object (< 0.05)
    tiny = _box(h, w, 0, 2, 0, 4)  # 8 px = 0.0033 of the image (< 0.01)
    img_a = _image(str(tmp_path / "a.png"), h, w, obj)
    save_pseudo_label(str(folder), ImagePseudoLabel(img_a, "a", h, w, "dcrf", [
        ObjectLabel("dog", obj, parts=[PartLabel(p0), PartLabel(p1), PartLabel(p2)]),
        ObjectLabel("cat", tiny, parts=[PartLabel(tiny)]),
    ]))
    img_b = _image(str(tmp_path / "b.png"), h, w)
    save_pseudo_label(str(folder), ImagePseudoLabel(img_b, "b", h, w, "dcrf", [
        ObjectLabel("cat", tiny, parts=[PartLabel(tiny)])]))
    img_c = _image(str(tmp_path / "c.png"), h, w, obj)
    save_pseudo_label(str(folder), ImagePseudoLabel(img_c, "c", h, w, "dcrf", [
        ObjectLabel("dog", obj, parts=[])]))
    (folder / "dog" / "d.json").write_text('{"schema": "part_distillation/pseudo_la')
    return folder


def test_dataset_filters(label_folder):
    dicts = load_pseudo_label_dataset(str(label_folder), min_object_area_ratio=0.01, min_area_ratio=0.05)
    by_id = {d["image_id"]: d for d in dicts}
    assert sorted(by_id) == ["a", "c"]  # b: its only object is too small; d: corrupt
    assert by_id["a"]["kept_objects"] == [{"index": 0, "parts": [0, 1]}]
    assert by_id["c"]["kept_objects"] == [{"index": 0, "parts": []}]
    assert by_id["a"]["pseudo_label_path"] == str(label_folder / "dog" / "a.json")
    assert (by_id["a"]["height"], by_id["a"]["width"]) == (40, 60)
    unfiltered = load_pseudo_label_dataset(str(label_folder))
    assert {d["image_id"]: d["kept_objects"] for d in unfiltered}["a"] == [
        {"index": 0, "parts": [0, 1, 2]}, {"index": 1, "parts": [0]}]
    with pytest.raises(ValueError, match="no usable pseudo-label"):
        load_pseudo_label_dataset(str(label_folder), min_object_area_ratio=0.9)
    # PROPOSAL_LEARNING.LABEL_PERCENTAGE and the class filter lists
    assert [d["image_id"] for d in load_pseudo_label_dataset(str(label_folder), 0.01, 0.05, 50)] == ["a"]
    assert [d["image_id"] for d in load_pseudo_label_dataset(str(label_folder), class_filter=({"cat"}, set()))] == ["b"]


def test_train_mapper_transforms_masks_like_the_image(label_folder):
    cfg = tiny_cfg("INPUT.IMAGE_SIZE", 64, "INPUT.IMAGE_SIZE_BASE", 48, "INPUT.CROP.ENABLED", True)
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, ProposalDatasetMapper) and cfg.INPUT.DATASET_MAPPER_NAME == "proposal_learning"
    # the former name is a deprecated alias: it warns and builds the same mapper
    assert DEPRECATED_MAPPER_NAMES["part_proposal"] == "proposal_learning"
    with pytest.warns(FutureWarning, match="'part_proposal' is deprecated, use 'proposal_learning'"):
        assert type(build_train_mapper(cfg, "part_proposal")) is ProposalDatasetMapper
    a = next(d for d in load_pseudo_label_dataset(str(label_folder), 0.01, 0.0) if d["image_id"] == "a")
    np.random.seed(0)
    for _ in range(8):
        out = mapper(a)
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
        parts, objects = out["instances"].gt_masks.tensor, out["object_masks"]
        assert objects.shape[0] == 1 and objects.shape[1:] == (64, 64) and objects.dtype == torch.bool
        assert parts.shape[1:] == (64, 64) and parts.shape[0] <= 3
        assert torch.equal(out["instances"].gt_classes, torch.zeros(parts.shape[0], dtype=torch.int64))
        assert bool(parts.flatten(1).any(1).all())  # empty parts after cropping are dropped
        # the three parts partition the object: same transform => their union is the object
        assert torch.equal(parts.any(0), objects[0])
        assert not bool((parts & ~objects[0]).any())
        red = out["image"][0]
        if objects.any():  # image and masks aligned: the object is the red region
            assert (red[objects[0]] > 127).float().mean() > 0.95
            assert objects[0][red > 200].float().mean() > 0.95


def test_train_mapper_image_without_parts(label_folder):
    c = next(d for d in load_pseudo_label_dataset(str(label_folder), 0.01, 0.05) if d["image_id"] == "c")
    out = ProposalDatasetMapper(tiny_cfg())(c)
    assert out["instances"].gt_masks.tensor.shape == (0, 128, 128)
    assert out["object_masks"].shape == (1, 128, 128)


def test_eval_mapper_on_pascal_part():
    d = DatasetCatalog.get("pascal_part_examples")[0]
    out = PartEvalDatasetMapper(tiny_cfg())(d)
    h, w = out["image"].shape[1:]
    assert min(h, w) == 128 and (out["height"], out["width"]) == (d["height"], d["width"])
    assert out["object_masks"].shape == (len(d["objects"]), h, w)
    for obj, src in zip(out["objects"], d["objects"]):
        assert obj.mask.shape == (d["height"], d["width"])
        assert obj.parts.shape == (len(src["parts"]), d["height"], d["width"])
        assert obj.part_names == [p["name"] for p in src["parts"]]
    # object masks at the input resolution are the resized original masks
    orig = torch.from_numpy(out["objects"][0].mask).float()[None, None]
    resized = torch.nn.functional.interpolate(orig, size=(h, w), mode="nearest")[0, 0] > 0.5
    assert (resized != out["object_masks"][0]).float().mean() < 0.02


def _sample(h, w, part_boxes, object_box):
    """A synthetic training input: random image, part masks from boxes (y0, y1, x0, x1)."""
    inst = Instances((h, w))
    masks = [torch.from_numpy(_box(h, w, *b)) for b in part_boxes]
    inst.gt_masks = BitMasks(torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool))
    inst.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    return {"image": torch.randint(0, 255, (3, h, w), dtype=torch.uint8), "instances": inst,
            "object_masks": torch.from_numpy(_box(h, w, *object_box))[None], "height": h, "width": w}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_training_losses_are_weighted(tiny_model):
    model = tiny_model.train()
    wd = model.criterion.weight_dict
    assert (wd["loss_ce"], wd["loss_mask"], wd["loss_dice"]) == (2.0, 5.0, 5.0)
    assert set(wd) == {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1", "_2")}
    batch = [_sample(96, 128, [(10, 50, 10, 60), (50, 90, 10, 60)], (10, 90, 10, 60)),
             _sample(128, 96, [(0, 64, 0, 96)], (0, 128, 0, 96))]
    losses = model(batch)
    assert set(losses) == set(wd)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    seen = {}

    def fake_criterion(outputs, targets):
        seen["targets"] = targets
        return {k: torch.tensor(1.0) for k in wd}

    criterion, model.criterion = model.criterion, _FakeCriterion(fake_criterion, wd)
    try:
        weighted = model(batch)
    finally:
        model.criterion = criterion
    assert {k: float(v) for k, v in weighted.items()} == pytest.approx(wd)
    t0, t1 = seen["targets"]
    assert t0["masks"].shape == (2, 128, 128) and t1["masks"].shape == (1, 128, 128)  # padded to /32
    assert not t0["masks"][:, 96:].any() and torch.equal(t0["labels"], torch.zeros(2, dtype=torch.int64))
    assert torch.equal(t0["masks"][0, :96, :], batch[0]["instances"].gt_masks.tensor[0])


class _FakeCriterion(torch.nn.Module):
    def __init__(self, fn, weight_dict):
        super().__init__()
        self.fn, self.weight_dict = fn, weight_dict

    def forward(self, outputs, targets):
        return self.fn(outputs, targets)


def test_training_with_zero_parts(tiny_model):
    model = tiny_model.train()
    for batch in ([_sample(64, 64, [], (0, 64, 0, 64)), _sample(64, 64, [(0, 32, 0, 64)], (0, 64, 0, 64))],
                  [_sample(64, 64, [], (0, 64, 0, 64))]):
        model.zero_grad()
        loss = sum(model(batch).values())
        assert torch.isfinite(loss)
        loss.backward()
        head_grads = [p.grad for n, p in model.named_parameters() if n.startswith("sem_seg_head.predictor")]
        assert all(g is not None for g in head_grads)


def test_inference_proposals(tiny_model):
    model = tiny_model.eval()
    x = _sample(96, 128, [], (20, 80, 30, 100))
    x["height"], x["width"] = 48, 64  # predictions come back at the original size
    x["object_masks"] = torch.cat([x["object_masks"], torch.from_numpy(_box(96, 128, 0, 10, 0, 10))[None]])
    out = model([x])[0]
    assert len(out["proposals"]) == 2 and len(out["part_seg"]) == 2
    object_full = torch.from_numpy(_box(48, 64, 10, 40, 15, 50))
    for proposals, seg in zip(out["proposals"][:1], out["part_seg"][:1]):
        assert proposals["pred_masks"].shape == (20, 48, 64) and proposals["pred_masks"].dtype == torch.bool
        assert proposals["scores"].shape == (20,) and proposals["decoder_output"].shape == (20, 128)
        assert torch.all(proposals["scores"][:-1] >= proposals["scores"][1:])
        assert not (proposals["pred_masks"] & ~object_full).any()  # masked by the object
        assert seg.shape == (48, 64) and seg.dtype == torch.int64
        assert not seg[~object_full].any()
    model.test_topk = 5
    assert model([x])[0]["proposals"][0]["pred_masks"].shape[0] == 5
    model.test_topk = 20
    with pytest.raises(KeyError, match="object_masks"):
        model([{k: v for k, v in x.items() if k != "object_masks"}])


def test_inference_per_pixel_mode(tiny_model):
    model = tiny_model.eval()
    x = _sample(64, 64, [], (8, 56, 8, 56))
    model.output_mode, model.min_area_ratio = "per_pixel", 0.2
    try:
        out = model([x])[0]
    finally:
        model.output_mode, model.min_area_ratio = "proposals", 0.0
    masks, seg = out["proposals"][0]["pred_masks"], out["part_seg"][0]
    assert 1 <= masks.shape[0] <= 5  # each segment has >= 20 % of the object
    assert masks.sum(0).max() <= 1  # non-overlapping
    assert torch.equal(masks.sum((1, 2)), torch.bincount(seg.flatten(), minlength=masks.shape[0] + 1)[1:])
    assert bool((masks.sum((1, 2)) >= 0.2 * 48 * 48).all())
    assert out["proposals"][0]["decoder_output"].shape == (masks.shape[0], 128)


def test_per_pixel_filters_exact(tiny_model):
    """1 x 10 object: q0 (score .9) on px 0-5, q1 (.8) on 6-8, q2 (.7) on px 9 only."""
    model = tiny_model
    probs = torch.zeros(3, 1, 10)
    probs[0, 0, :6], probs[1, 0, 6:9], probs[2, 0, 9] = 0.9, 0.9, 0.9
    probs[0, 0, 9] = 0.2  # q0 would take pixel 9 once q2 is gone (0.9*0.2 > 0)
    scores = torch.tensor([0.9, 0.8, 0.7])
    obj = torch.ones(1, 10, dtype=torch.bool)
    model.min_area_ratio, model.min_score = 0.0, -1.0
    seg, kept = model._per_pixel(probs, scores, obj)
    assert seg.tolist() == [[1] * 6 + [2] * 3 + [3]] and kept.tolist() == [0, 1, 2]
    model.min_area_ratio = 0.2  # q2's single pixel (10 %) is dropped and re-assigned to q0
    seg, kept = model._per_pixel(probs, scores, obj)
    assert seg.tolist() == [[1] * 6 + [2] * 3 + [1]] and kept.tolist() == [0, 1]
    model.min_area_ratio, model.min_score = 0.0, 0.85  # only q0 scores high enough
    seg, kept = model._per_pixel(probs, scores, obj)
    assert seg.tolist() == [[1] * 6 + [0] * 3 + [1]] and kept.tolist() == [0]
    model.min_score = -1.0


def test_freeze_keys_official_semantics():
    """Official ["backbone", "encoder"]: substring match; the deformable encoder freezes, its
    level_embed (a parameter of ...transformer, not of ...transformer.encoder) stays trainable;
    frozen modules stay in train mode; frozen BatchNorms become FrozenBatchNorm2d."""
    from detectron2.layers import FrozenBatchNorm2d

    model = build_model(tiny_cfg("MODEL.MASK_FORMER.FREEZE_KEYS", ["backbone", "encoder"]))
    names = [n for n, _ in model.named_parameters()]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in names if n.startswith(("backbone.", "sem_seg_head.pixel_decoder.transformer.encoder."))}
    assert any(n.startswith("sem_seg_head.pixel_decoder.transformer.encoder.layers.1.") for n in frozen)
    trainable = set(names) - frozen
    assert "sem_seg_head.pixel_decoder.transformer.level_embed" in trainable
    assert "sem_seg_head.pixel_decoder.input_proj.0.0.weight" in trainable
    assert "sem_seg_head.predictor.level_embed.weight" in trainable  # the decoder's, not "encoder"
    model.train()
    assert all(m.training for m in model.modules())  # frozen modules stay in train mode
    bns = [m for m in model.backbone.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) for m in bns)
    with torch.no_grad():  # frozen statistics: a training forward leaves the backbone unchanged
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        model.backbone(torch.randn(2, 3, 64, 64))
        assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    with pytest.raises(ValueError, match="transformr"):
        build_model(tiny_cfg("MODEL.MASK_FORMER.FREEZE_KEYS", ["sem_seg_head.pixel_decoder.transformr"]))


def test_freeze_keys_keep_swin_drop_path_active():
    """A frozen Swin backbone in train mode still drops paths (stochastic), as officially."""
    model = build_model(tiny_cfg("MODEL.BACKBONE.NAME", "D2SwinTransformer", "MODEL.SWIN.EMBED_DIM", 32,
                                 "MODEL.SWIN.DEPTHS", [1, 1, 1, 1], "MODEL.SWIN.NUM_HEADS", [1, 2, 4, 8],
                                 "MODEL.SWIN.DROP_PATH_RATE", 0.5, "MODEL.PIXEL_MEAN", [0.0, 0.0, 0.0],
                                 "MODEL.MASK_FORMER.FREEZE_KEYS", ["backbone"]))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = torch.randn(1, 3, 64, 64)
    model.train()
    with torch.no_grad():
        a, b = model.backbone(x)["res5"], model.backbone(x)["res5"]
        model.eval()
        c, d = model.backbone(x)["res5"], model.backbone(x)["res5"]
    assert not torch.equal(a, b) and torch.equal(c, d)


def test_model_requires_one_class():
    with pytest.raises(ValueError, match="NUM_CLASSES must be 1"):
        ProposalModel(tiny_cfg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 80))


def test_load_official_pkl_layout(tmp_path, tiny_model):
    """An official-layout .pkl (numpy arrays under "model", "__author__") of an 80-class model,
    loaded the way MODEL.WEIGHTS is: exactly the three class-count tensors are shape-mismatched
    (class_embed weight/bias, criterion.empty_weight), the perturbed keys are reported, everything
    else loads bit-exact."""
    torch.manual_seed(1)
    source = build_model(tiny_cfg())
    state = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    state["sem_seg_head.predictor.class_embed.weight"] = np.zeros((81, 128), np.float32)
    state["sem_seg_head.predictor.class_embed.bias"] = np.zeros((81,), np.float32)
    state["criterion.empty_weight"] = np.ones((81,), np.float32)
    state["sem_seg_head.predictor.extra.weight"] = np.ones(3, np.float32)
    del state["sem_seg_head.predictor.query_feat.weight"]
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "Mask2Former"}, f)

    target = tiny_model
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_weights(target, str(path))
    assert sorted(report.incorrect_shapes) == [("criterion.empty_weight", (81,), (2,)),
                                               ("sem_seg_head.predictor.class_embed.bias", (81,), (2,)),
                                               ("sem_seg_head.predictor.class_embed.weight", (81, 128), (2, 128))]
    assert report.unexpected_keys == ["sem_seg_head.predictor.extra.weight"]
    mismatched = [k for k, _, _ in report.incorrect_shapes]
    assert sorted(report.missing_keys) == sorted(mismatched + ["sem_seg_head.predictor.query_feat.weight"])
    skipped = {k for k, _, _ in report.incorrect_shapes} | {"sem_seg_head.predictor.query_feat.weight"}
    after, src = target.state_dict(), source.state_dict()
    for k in after:
        if k in skipped:
            assert torch.equal(after[k], before[k])
        else:
            assert torch.equal(after[k], src[k]), k
    text = format_incompatible_keys(report)
    assert text.startswith("1 missing, 1 unexpected, 3 shape-mismatched")
    assert "class_embed.weight: checkpoint [81, 128] vs model [2, 128]" in text
    assert "sem_seg_head.predictor.extra.weight" in text and "query_feat.weight" in text


def test_load_pth_layouts(tmp_path, tiny_model):
    state = tiny_model.state_dict()
    torch.save({"model": state, "iteration": 3}, tmp_path / "a.pth")
    torch.save(state, tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        report = load_weights(tiny_model, str(tmp_path / name))
        assert not (report.missing_keys or report.unexpected_keys or report.incorrect_shapes)
    with pytest.raises(FileNotFoundError, match="weights/README.md"):
        load_weights(tiny_model, str(tmp_path / "missing.pkl"))


def test_convert_weights_tool(tmp_path, tiny_model, capsys):
    spec = importlib.util.spec_from_file_location("convert_weights", "tools/convert_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch.save({"model": tiny_model.state_dict()}, tmp_path / "in.pth")
    out = tmp_path / "out.pth"
    assert tool.main(["--config-file", TINY, "--weights", str(tmp_path / "in.pth"), "--output", str(out),
                 "MODEL.EFFICIENTNET.PRETRAINED", "False"]) == 0
    printed = capsys.readouterr().out
    assert "0 missing, 0 unexpected, 0 shape-mismatched" in printed
    saved = torch.load(out, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in tiny_model.state_dict().items())
