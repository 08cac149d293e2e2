"""Ground-truth geometry of the evaluation mappers (CUSTOM_DATASETS.EVAL_GEOMETRY): the official
per-dataset paths (Pascal-Part: masks at the input size, bilinear > 0 back to the original size;
PartImageNet: the input size) and the original masks, on real Pascal-Part images."""
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import sem_seg_postprocess

from part_distillation.config import setup_cfg
from part_distillation.engine.trainer import Trainer
from part_distillation.data.proposal_dataset import (
    PartEvalDatasetMapper,
    resolve_eval_geometry,
    transform_masks,
)
from part_distillation.utils.masks import upsample_masks_official

TINY = "configs/proposal_learning/tiny_cpu.yaml"


def cfg_with(geometry, size=128):
    return setup_cfg(TINY, ["MODEL.EFFICIENTNET.PRETRAINED", False, "INPUT.MIN_SIZE_TEST", size,
                            "CUSTOM_DATASETS.EVAL_GEOMETRY", geometry])


def test_upsample_rule_is_detectron2_sem_seg_postprocess_then_bool():
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.random((3, 17, 23)) > 0.7)
    padded = torch.zeros((3, 32, 32), dtype=torch.bool)
    padded[:, :17, :23] = small
    for out_size in [(40, 51), (9, 12), (17, 23)]:
        official = sem_seg_postprocess(padded.float(), (17, 23), *out_size).bool()
        ours = upsample_masks_official(small, out_size)
        assert torch.equal(ours, official), out_size
    one = upsample_masks_official(small[0], (40, 51))
    assert one.shape == (40, 51) and torch.equal(one, upsample_masks_official(small, (40, 51))[0])
    assert upsample_masks_official(torch.zeros((0, 5, 5), dtype=torch.bool), (8, 8)).shape == (0, 8, 8)


def test_official_geometry_per_dataset():
    assert MetadataCatalog.get("pascal_part_examples").official_eval_geometry == "upsampled"
    assert MetadataCatalog.get("pascal_part_evaluate_val").official_eval_geometry == "upsampled"
    assert MetadataCatalog.get("part_imagenet_evaluate_val").official_eval_geometry == "input"
    assert MetadataCatalog.get("cityscapes_part_evaluate_val").official_eval_geometry == "upsampled"
    assert MetadataCatalog.get("ade20k_part_subset").official_eval_geometry == "upsampled"  # Pascal layout
    assert resolve_eval_geometry("official", "part_imagenet_match_val") == "input"
    assert resolve_eval_geometry("official", None) == "original"
    assert resolve_eval_geometry("input", "pascal_part_examples") == "input"
    with pytest.raises(ValueError, match="CUSTOM_DATASETS.EVAL_GEOMETRY"):
        resolve_eval_geometry("bilinear", "pascal_part_examples")


def test_mapper_geometries_on_a_real_image():
    record = DatasetCatalog.get("pascal_part_examples")[0]
    H, W = record["height"], record["width"]
    original = PartEvalDatasetMapper(cfg_with("original"), dataset_name="pascal_part_examples")(record)
    official = PartEvalDatasetMapper(cfg_with("official"), dataset_name="pascal_part_examples")(record)
    inp = PartEvalDatasetMapper(cfg_with("input"), dataset_name="pascal_part_examples")(record)
    h, w = original["image"].shape[1:]
    assert (h, w) != (H, W)
    # the model input and its object masks do not depend on the geometry
    for out in (official, inp):
        assert torch.equal(out["image"], original["image"])
        assert torch.equal(out["object_masks"], original["object_masks"])
    assert (original["height"], original["width"]) == (H, W) == (official["height"], official["width"])
    assert (inp["height"], inp["width"]) == (h, w)
    transforms = T.TransformList([T.ResizeTransform(H, W, h, w)])
    for o, up, small in zip(original["objects"], official["objects"], inp["objects"]):
        assert up.mask.shape == (H, W) and up.parts.shape == o.parts.shape
        assert small.mask.shape == (h, w) and small.parts.shape == (len(o.parts), h, w)
        assert small.part_names == o.part_names == up.part_names
        # input geometry: the nearest-resized masks (the model's object-mask frame)
        assert np.array_equal(small.mask, transform_masks([o.mask], transforms, (h, w))[0].numpy())
        # upsampled: those masks brought back by the official bilinear > 0 rule
        back = upsample_masks_official(torch.from_numpy(small.parts), (H, W)).numpy()
        assert np.array_equal(up.parts, back)
        # which widens them: almost every original object pixel is kept, and a few more come in
        assert up.mask.sum() > o.mask.sum()
        assert (o.mask & ~up.mask).sum() <= 0.01 * o.mask.sum()
        assert up.mask.sum() <= 1.15 * o.mask.sum()


def test_mapper_rejects_an_unknown_geometry():
    with pytest.raises(ValueError, match="CUSTOM_DATASETS.EVAL_GEOMETRY"):
        PartEvalDatasetMapper(cfg_with("nearest"), dataset_name="pascal_part_examples")


def test_trainer_test_loader_follows_the_dataset():
    """train_net's test loader gives the dataset's official geometry (Pascal layout: upsampled),
    and "original" the annotated masks."""
    record = DatasetCatalog.get("pascal_part_examples")[0]
    first = {}
    for geometry in ("official", "original"):
        batch = next(iter(Trainer.build_test_loader(cfg_with(geometry), "pascal_part_examples")))
        assert batch[0]["image_id"] == record["image_id"]
        first[geometry] = batch[0]["objects"][0]
    H, W = record["height"], record["width"]
    assert first["official"].mask.shape == first["original"].mask.shape == (H, W)
    assert first["official"].mask.sum() > first["original"].mask.sum()
    original = PartEvalDatasetMapper(cfg_with("original"))(record)["objects"][0]
    assert np.array_equal(first["original"].mask, original.mask)
