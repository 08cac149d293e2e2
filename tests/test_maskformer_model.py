"""The ``MaskFormer`` meta-architecture: official Mask2Former COCO-instance YAMLs build as they are,
instance inference follows the official top-k over queries x classes with mask scores, training
losses run, and ProposalModel shares its code."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from part_distillation.config import setup_cfg
from part_distillation.modeling.meta_arch.maskformer_model import MaskFormer
from part_distillation.modeling.meta_arch.proposal_model import ProposalModel

M2F = "configs/mask2former/coco/instance-segmentation/"
R50 = M2F + "maskformer2_R50_bs16_50ep.yaml"
SWIN_L = M2F + "swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
OFFICIAL_STAGE4 = "configs/proposal_learning/"


def test_official_swin_l_yaml_values():
    cfg = setup_cfg(SWIN_L)
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer" and cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert (cfg.MODEL.SWIN.EMBED_DIM, cfg.MODEL.SWIN.DEPTHS, cfg.MODEL.SWIN.WINDOW_SIZE) == (192, [2, 2, 18, 2], 12)
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200 and cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 80 and cfg.SOLVER.MAX_ITER == 737500
    assert (cfg.MODEL.MASK_FORMER.CLASS_WEIGHT, cfg.MODEL.MASK_FORMER.MASK_WEIGHT) == (2.0, 5.0)


@pytest.mark.parametrize("name, batch, iters, steps, min_obj, min_area", [
    ("swinL_train_multi.yaml", 512, 50000, (40000, 45000), 0.05, 0.05),
    ("swinL_train_single.yaml", 8, 80000, (60000, 70000), 0.001, 0.01),
])
def test_official_stage4_configs(name, batch, iters, steps, min_obj, min_area):
    """The official train_multi.sh / train_single.sh overrides on the official Swin-L base."""
    cfg = setup_cfg(OFFICIAL_STAGE4 + name)
    assert cfg.MODEL.META_ARCHITECTURE == "ProposalModel" and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1
    assert cfg.MODEL.WEIGHTS == "weights/mask2former/instance/swinL_i21k_q200_e100.pkl"
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (batch, iters, steps)
    assert cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO == 0.0 and cfg.INPUT.SIZE_DIVISIBILITY == 16
    assert cfg.MODEL.MASK_FORMER.FREEZE_KEYS == ["backbone", "encoder"]
    pl = cfg.PROPOSAL_LEARNING
    assert (pl.MIN_OBJECT_AREA_RATIO, pl.MIN_AREA_RATIO, pl.MIN_SCORE) == (min_obj, min_area, -1.0)


@pytest.fixture(scope="module")
def r50_model():
    """The official R50 COCO-instance config built as it is (random weights; FrozenBN ResNet)."""
    torch.manual_seed(0)
    cfg = setup_cfg(R50, ["MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", 7])
    model = build_model(cfg)
    assert type(model) is MaskFormer
    return model


def test_official_r50_yaml_builds_with_official_keys(r50_model):
    sd = r50_model.state_dict()
    assert sd["sem_seg_head.predictor.class_embed.weight"].shape == (81, 256)
    assert sd["criterion.empty_weight"].shape == (81,) and float(sd["criterion.empty_weight"][-1]) == pytest.approx(0.1)
    assert sd["sem_seg_head.predictor.query_feat.weight"].shape == (100, 256)
    assert sum(k.startswith("sem_seg_head.pixel_decoder.transformer.encoder.layers.5.") for k in sd) > 0
    assert len(r50_model.criterion.weight_dict) == 3 * 10


def test_instance_inference_output(r50_model):
    model = r50_model.eval()
    image = torch.randint(0, 255, (3, 60, 90), dtype=torch.uint8)
    out = model([{"image": image, "height": 30, "width": 45}])[0]["instances"]
    assert isinstance(out, Instances) and out.image_size == (30, 45) and len(out) == 7
    assert out.pred_masks.shape == (7, 30, 45) and out.pred_classes.dtype == torch.int64
    assert bool((out.pred_classes >= 0).all() and (out.pred_classes < 80).all())
    assert bool((out.scores >= 0).all() and (out.scores <= 1).all())
    boxes = out.pred_boxes.tensor
    nonempty = out.pred_masks.flatten(1).any(1)
    assert torch.equal(boxes[nonempty], BitMasks(out.pred_masks[nonempty] > 0).get_bounding_boxes().tensor)


def test_instance_inference_topk_over_queries_and_classes(r50_model):
    """Hand-built logits: 3 queries x 2 classes; the best (query, class) pairs win, a query may
    appear with two classes, and scores multiply the mean sigmoid inside the mask."""
    model = r50_model
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1],     # q0: class 0 .6, class 1 .3
                                     [0.05, 0.5, 0.45],   # q1: class 1 .5
                                     [0.2, 0.1, 0.7]]))   # q2: mostly no-object
    masks = torch.full((3, 2, 2), -5.0)
    masks[0, 0, :] = 2.0  # q0: top row, sigmoid(2) inside
    masks[1] = 1.0        # q1: everywhere, sigmoid(1)
    masks[2, 1, 1] = 3.0
    saved, model.test_topk = model.test_topk, 3
    try:
        r = model.instance_inference(logits, masks)
    finally:
        model.test_topk = saved
    got = sorted(zip(r.scores.tolist(), r.pred_classes.tolist(), r.pred_masks.flatten(1).sum(1).tolist()), reverse=True)
    s2, s1 = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(1.0)).item()
    expected = sorted([(0.6 * s2, 0, 2.0), (0.5 * s1, 1, 4.0), (0.3 * s2, 1, 2.0)], reverse=True)
    assert [(c, a) for _, c, a in got] == [(c, a) for _, c, a in expected]
    assert [s for s, _, _ in got] == pytest.approx([s for s, _, _ in expected], rel=1e-5)


def test_training_losses_with_classes(r50_model):
    model = r50_model.train()
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32], masks[1, 32:] = True, True
    inst = Instances((64, 64), gt_masks=BitMasks(masks), gt_classes=torch.tensor([3, 17]))
    losses = model([{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "instances": inst}])
    assert set(losses) == set(model.criterion.weight_dict)
    assert all(torch.isfinite(v) for v in losses.values())
    targets = model.prepare_targets([{"instances": inst}], model.preprocess(
        [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}]))
    assert targets[0]["labels"].tolist() == [3, 17]


def test_semantic_or_panoptic_inference_is_refused():
    with pytest.raises(ValueError, match="instance inference only"):
        build_model(setup_cfg(R50, ["MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True]))


def test_proposal_model_shares_maskformer_code():
    assert issubclass(ProposalModel, MaskFormer)
    for name in ("forward", "preprocess", "prepare_targets"):
        assert getattr(ProposalModel, name) is getattr(MaskFormer, name)


def test_doubled_pixel_decoder_prefix_loads_through_model_weights(tmp_path):
    """A checkpoint whose pixel-decoder keys carry the doubled official prefix
    ``sem_seg_head.pixel_decoder.pixel_decoder.*`` (the official PartDistillation head renames it
    on load) loads through MODEL.WEIGHTS: 0 missing / unexpected / mis-shaped keys, equal tensors."""
    from part_distillation.engine.checkpoint import AtomicCheckpointer
    from part_distillation.engine.trainer import load_eval_weights

    def tiny(seed):
        cfg = setup_cfg("configs/proposal_learning/tiny_cpu.yaml",
                        ["MODEL.EFFICIENTNET.PRETRAINED", False, "OUTPUT_DIR", str(tmp_path)])
        torch.manual_seed(seed)
        return cfg, build_model(cfg)

    cfg, reference = tiny(0)
    plain = "sem_seg_head.pixel_decoder."
    doubled = {(plain + "pixel_decoder." + k[len(plain):] if k.startswith(plain) else k): v
               for k, v in reference.state_dict().items()}  # a plain dict: no _metadata version
    n_renamed = sum(k.startswith(plain + "pixel_decoder.") for k in doubled)
    assert n_renamed > 40
    path = str(tmp_path / "old_layout.pth")
    torch.save({"model": doubled}, path)

    _, model = tiny(1)
    checkpointer = AtomicCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.resume_or_load(path, resume=False)
    _, incompatible = checkpointer.loaded
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    expected = reference.state_dict()
    state = model.state_dict()
    assert set(state) == set(expected)
    for k, v in expected.items():
        assert torch.equal(state[k], v), k

    _, model = tiny(2)  # the --eval-only loader (raises on keys left at their initialisation)
    load_eval_weights(cfg, model, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())

    both = dict(doubled, **{plain + "mask_features.weight": expected[plain + "mask_features.weight"]})
    with pytest.raises(ValueError, match="both"):
        model.load_state_dict(both)
