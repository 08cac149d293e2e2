import os

import numpy as np
import pytest
import torch
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, encode_mask, list_pseudo_labels,
                                                  load_pseudo_label, save_pseudo_label)
from part_distillation.modeling.feature_extractor import BackboneFeatures, RGBXYFeatures
from part_distillation.stages.resume import StageConfigMismatch
from part_distillation.stages.object_masks import ObjectMasksStage
from part_distillation.stages.proposal_generation import (PixelGrouper, ProposalGenerationStage, build_segmenter,
                                                     grid_segments, score_maps, upsample_scores)
from part_distillation.stages.partition import WorkItem, partition_items
from part_distillation.utils.sharding import resolve_partition

from .helpers import EFFNET_CFG


RGBXY = ("PROPOSAL_GENERATION.GROUPING", "kmeans_rgbxy", "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2")


def _cfg(*opts):
    return setup_cfg(EFFNET_CFG, ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128", *opts])


def _two_tone(h=64, w=96):
    """Left half red, right half blue; object = a centred rectangle spanning both halves."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (220, 20, 20)
    img[:, w // 2:] = (20, 20, 220)
    mask = np.zeros((h, w), bool)
    mask[8:56, 16:80] = True
    return img, mask


def test_kmeans_rgb_splits_colour_halves():
    cfg = _cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "2", "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2")
    grouper = PixelGrouper(cfg, feature_fn=RGBXYFeatures(cfg, xy_weight=0.0))
    img, mask = _two_tone()
    (seg,) = grouper(img, [mask], "toy")
    assert set(np.unique(seg)) == {0, 1, 2}
    assert (seg[~mask] == 0).all() and (seg[mask] > 0).all()
    left, right = seg[8:56, 16:44], seg[8:56, 52:80]  # away from the colour edge
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]


def test_dot_metric_collapses_on_unequal_norms_l2_does_not():
    # two clusters in direction, one with 10x the norm: dot assigns (almost) everything to it
    small = torch.tensor([1.0, 0.2])
    big = torch.tensor([2.0, 10.0])
    feats = torch.zeros(2, 4, 8)
    feats[:, :, :4] = small[:, None, None]
    feats[:, :, 4:] = big[:, None, None]
    centers = torch.stack([small, big])
    dot = score_maps(feats, centers, "dot").argmax(0)
    l2 = score_maps(feats, centers, "l2").argmax(0)
    assert (dot == 1).all()  # collapse: the large-norm centre also wins the other cluster's pixels
    assert (l2[:, :4] == 0).all() and (l2[:, 4:] == 1).all()
    with pytest.raises(ValueError, match="dot' or 'l2"):
        score_maps(feats, centers, "cosine")


def test_upsampled_scores_equal_scores_of_upsampled_features():
    g = torch.Generator().manual_seed(0)
    feats, centers = torch.randn(6, 5, 7, generator=g), torch.randn(3, 6, generator=g)
    for metric in ("dot", "l2"):
        fast = upsample_scores(score_maps(feats, centers, metric), (40, 56), (40, 56), 8)
        up = torch.nn.functional.interpolate(feats[None], size=(40, 56), mode="bilinear", align_corners=False)[0]
        direct = -((up[None] - centers[:, :, None, None]) ** 2).sum(1) if metric == "l2" else torch.einsum("chw,kc->khw", up, centers)
        assert torch.equal(fast.argmax(0), direct.argmax(0))


def test_small_objects_take_the_fallback_and_grid_baseline():
    cfg = _cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "4", "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2")
    grouper = PixelGrouper(cfg, feature_fn=RGBXYFeatures(cfg))
    img, mask = _two_tone()
    tiny = np.zeros_like(mask)
    tiny[30:34, 46:50] = True  # 16 pixels across 4 stride-8 cells (none covered >= 50%), both colours
    out = grouper(img, [mask, tiny, np.zeros_like(mask)], "toy")
    assert out[0] is not None and out[2] is None  # an empty mask still gets nothing
    assert ((out[1] > 0) == tiny).all()  # every pixel of the small object has a segment
    assert (out[1][30:34, 46:48] != out[1][30:34, 48:50]).all()  # split at the colour edge
    assert grouper.last_counts == {"objects_small_fallback": 1}
    box = np.zeros((10, 12), bool)
    box[2:8, 2:10] = True
    seg = grid_segments(box)
    assert [int((seg == i).sum()) for i in (1, 2, 3, 4)] == [12, 12, 12, 12] and (seg[~box] == 0).all()


def test_sharding_is_disjoint_covering_and_reads_slurm(monkeypatch):
    items = [WorkItem(f"img{i}", "", None) for i in range(10)]
    parts = [partition_items(items, 3, i, "image")[0] for i in range(3)]
    keys = [it.key for part in parts for it in part]
    assert sorted(keys) == sorted(it.key for it in items) and len(keys) == 10
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert resolve_partition(3, -1) == (3, 2)
    assert partition_items(items, *resolve_partition(3, -1), "image")[0] == parts[2]
    with pytest.raises(ValueError, match="out of range"):
        resolve_partition(3, 3)


def _stage1(tmp_path, n=4):
    d = tmp_path / "s1"
    for i in range(n):
        img, mask = _two_tone()
        path = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(path)
        save_pseudo_label(str(d), ImagePseudoLabel(str(path), f"im{i}", 64, 96, "object_masks",
                                                   [ObjectLabel("thing", mask)]))
    return str(d)


def test_stage_resumes_and_counts_failures(tmp_path):
    s1 = _stage1(tmp_path)
    (tmp_path / "im3.png").write_bytes(b"")  # a corrupt image: skipped, counted, the rest goes on
    with pytest.raises(ValueError, match="kmeans_rgbxy needs .*DISTANCE_METRIC l2"):
        build_segmenter(_cfg("PROPOSAL_GENERATION.GROUPING", "kmeans_rgbxy"))  # default metric: dot
    cfg = _cfg(*RGBXY)
    out = str(tmp_path / "s2")
    seg_fn = build_segmenter(cfg)
    first = ProposalGenerationStage(cfg, out, seg_fn).run(s1).as_dict()
    assert first["processed"] == 3 and first["skipped"] == {"unreadable image": 1}  # one counter, no path
    assert first["skipped_items"][0]["item"] == "thing/im3" and "im3.png" in first["skipped_items"][0]["detail"]
    files = list_pseudo_labels(out)
    assert len(files) == 3 and load_pseudo_label(files[0]).stage == "proposal_generation"
    assert len(load_pseudo_label(files[0]).objects[0].parts) >= 2
    # a killed job leaves a truncated file and a stray temp file: both are redone/ignored
    with open(files[1], "w") as f:
        f.write('{"schema": "part_distillation/pseudo_label", "vers')
    stale = os.path.join(os.path.dirname(files[1]), ".im2.json.123.tmp")
    open(stale, "w").close()
    again = ProposalGenerationStage(cfg, out, seg_fn).run(s1).as_dict()
    assert again["resumed"] == 2 and again["processed"] == 1
    assert load_pseudo_label(files[1]).stage == "proposal_generation"
    assert not os.path.exists(stale)  # stale temp files of this stage are removed on start
    assert sorted(os.listdir(os.path.join(out, "logs"))) == ["config.json", "done", "lock_0of1", "summary_0of1.json"]
    # resuming with other settings would mix two configs in one folder: refused, naming the key
    other = _cfg(*RGBXY, "PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "3")
    with pytest.raises(StageConfigMismatch, match="NUM_SUPERPIXEL_CLUSTERS.*4 -> 3"):
        ProposalGenerationStage(other, out).run(s1)


def test_random_init_features_depend_on_the_seed_only():
    img = _two_tone()[0]
    feats = [BackboneFeatures(_cfg("MODEL.EFFICIENTNET.PRETRAINED", False, "PROPOSAL_GENERATION.SEED", s))(img)[0]
             for s in (0, 0, 1)]
    torch.manual_seed(123)  # global RNG state does not matter and is left alone
    state = torch.random.get_rng_state()
    again = BackboneFeatures(_cfg("MODEL.EFFICIENTNET.PRETRAINED", False))(img)[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(feats[0], feats[1]) and torch.equal(feats[0], again)
    assert not torch.allclose(feats[0], feats[2])


def test_empty_object_mask_and_image_below_stride_are_counted_not_lost(tmp_path):
    # stage 1: an annotated object with an empty mask is dropped and listed with its reason
    img, mask = _two_tone()
    Image.fromarray(img).save(tmp_path / "ok.png")
    thin = np.full((2, 400, 3), 128, np.uint8)  # resized to 2 x 320: under one stride-8 cell
    Image.fromarray(thin).save(tmp_path / "thin.png")
    thin_mask = np.zeros((2, 400), bool)
    thin_mask[:, 100:300] = True
    records = [
        {"file_name": str(tmp_path / "ok.png"), "image_id": "ok", "height": 64, "width": 96,
         "objects": [{"class_name": "thing", "mask": encode_mask(np.zeros_like(mask))},
                     {"class_name": "thing", "mask": encode_mask(mask)}]},
        {"file_name": str(tmp_path / "thin.png"), "image_id": "thin", "height": 2, "width": 400,
         "objects": [{"class_name": "thing", "mask": encode_mask(thin_mask)}]},
    ]
    cfg = _cfg()
    s1 = str(tmp_path / "s1")
    first = ObjectMasksStage(cfg, s1).run(records).as_dict()
    assert first["processed"] == 2 and first["objects_skipped_empty"] == 1
    ok = load_pseudo_label(os.path.join(s1, "thing", "ok.json"))
    assert len(ok.objects) == 1
    assert ok.skipped_objects == [{"index": 0, "reason": "empty object mask", "stage": "object_masks"}]
    assert ok.object_indices() == [1]
    # stage 2: the image below the feature stride fails with a clear, counted error; the rest goes on
    with pytest.raises(ValueError, match="smaller than the feature stride 8"):
        BackboneFeatures(cfg)(thin)
    out = ProposalGenerationStage(cfg, str(tmp_path / "s2")).run(s1).as_dict()
    assert out["processed"] == 1 and out["failed"] == 1
    assert out["failed_items"][0]["item"] == "thing/thin"
    assert "smaller than the feature stride" in out["failed_items"][0]["error"]


_PEAK_SCRIPT = """
import sys, numpy as np, torch
from part_distillation.stages.proposal_generation import assign_segments

def mib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key + ":"))

H, W = 6000, 8000  # 48 MP
mask = torch.zeros(H, W, dtype=torch.bool)
mask[500:5500, 1000:7000] = True  # a 30 MP object
feats, centers = torch.randn(8, 48, 64), torch.randn(4, 8)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS (ru_maxrss would carry pytest's own peak across exec)
before = mib("VmRSS")
seg = assign_segments(feats, centers, mask, (384, 512), "l2", 8)
peak = mib("VmHWM")
assert seg.shape == (H, W) and seg.dtype == np.int32 and ((seg > 0) == mask.numpy()).all()
print(peak - before)  # MiB of peak resident memory above that before the call
"""


def test_assignment_memory_is_bounded_by_the_box_chunks_not_k_full_size_maps():
    """48 MP image: K full-resolution float score maps alone would be 768 MB; the output map is
    192 MB (int32), so the call's extra peak must stay well below the former."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    extra = int(out.stdout.split()[-1])
    assert 192 <= extra < 600, out.stdout  # at least the int32 output map itself: the figure is real


def test_last_inertia_is_the_kmeans_inertia_of_each_object():
    cfg = _cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "2", "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2")
    grouper = PixelGrouper(cfg, feature_fn=RGBXYFeatures(cfg))
    img, mask = _two_tone()
    segs = grouper(img, [mask, np.zeros_like(mask)], "toy")
    inertia = grouper.last_inertia
    assert inertia[1] is None and inertia[0] > 0  # an empty mask has no k-means
    feats, resized = RGBXYFeatures(cfg)(img)
    from part_distillation.stages.proposal_generation import grid_cell_masks
    cells = grid_cell_masks(torch.from_numpy(mask)[None], resized, feats.shape[1:], 8)[0].view(-1)
    pts = feats.view(feats.shape[0], -1).T[cells]
    # two colour halves: the k-means optimum puts one centre per half (segments follow it)
    assert len(np.unique(segs[0][mask])) == 2
    d = torch.cdist(pts, torch.stack([pts[pts[:, 0] > 0.5].mean(0), pts[pts[:, 0] <= 0.5].mean(0)]))
    assert inertia[0] == pytest.approx(float((d.min(1).values ** 2).sum()), rel=1e-4)


def test_combine_levels_concat_and_hypercolumn():
    from part_distillation.modeling.feature_extractor import combine_levels

    g = torch.Generator().manual_seed(0)
    feats = {"res3": torch.randn(1, 4, 6, 8, generator=g), "res4": 50 * torch.randn(1, 3, 3, 4, generator=g)}
    cat = combine_levels(feats, ["res3", "res4"], (6, 8), normalize=False)
    assert cat.shape == (7, 6, 8) and torch.equal(cat[:4], feats["res3"][0])
    hyper = combine_levels(feats, ["res3", "res4"], (6, 8), normalize=True, per_level=True)
    a, b = hyper[:, 0, 0], hyper[:, 5, 7]
    cos = [torch.nn.functional.cosine_similarity(cat[s, 0, 0], cat[s, 5, 7], dim=0) for s in (slice(0, 4), slice(4, 7))]
    assert float(a @ b) == pytest.approx(float(sum(cos) / 2), abs=1e-5)  # mean of per-level cosines
    plain = combine_levels(feats, ["res3", "res4"], (6, 8), normalize=True)
    # without per-level normalisation the 50x larger res4 dominates the affinity
    assert float(plain[:, 0, 0] @ plain[:, 5, 7]) == pytest.approx(float(cos[1]), abs=0.05)


def test_pixel_grouper_takes_keyword_only_arguments_without_defaults():
    """The grouper is built from the config or with every setting explicit: no constructor
    default can differ from the config's."""
    import inspect

    cfg = _cfg()
    params = inspect.signature(PixelGrouper.__init__).parameters.values()
    assert all(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params if p.name != "self")
    g = PixelGrouper(cfg, feature_fn=RGBXYFeatures(cfg))
    pg = cfg.PROPOSAL_GENERATION
    assert (g.k, g.metric, g.restarts) == (pg.NUM_SUPERPIXEL_CLUSTERS, pg.DISTANCE_METRIC, pg.KMEANS_RESTARTS)
    with pytest.raises(TypeError):
        PixelGrouper(feature_fn=RGBXYFeatures(cfg), k=2)


def _constant_features(h=64, w=96, stride=8):
    """feature_fn: every cell the same unit vector (no appearance cue at all)."""
    feats = torch.nn.functional.normalize(torch.ones(8, h // stride, w // stride), dim=0)
    return lambda image: (feats, (h, w))


def test_position_weight_splits_separated_blobs_with_identical_features():
    img = np.zeros((64, 96, 3), np.uint8)
    mask = np.zeros((64, 96), bool)
    mask[16:48, 0:32] = True
    mask[16:48, 64:96] = True  # one object: two blobs, 32 px apart, identical features
    segs = {}
    for w in (0.0, 1.0):
        cfg = _cfg("PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "2", "PROPOSAL_GENERATION.POSITION_WEIGHT", w)
        grouper = PixelGrouper(cfg, feature_fn=_constant_features())
        assert grouper.position_weight == w
        (segs[w],) = grouper(img, [mask], "toy")
        assert (segs[w][~mask] == 0).all() and (segs[w][mask] > 0).all()
    assert len(np.unique(segs[0.0][mask])) == 1  # nothing to tell the pixels apart
    left, right = segs[1.0][:, :32][mask[:, :32]], segs[1.0][:, 64:][mask[:, 64:]]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0] != right[0]
    with pytest.raises(ValueError, match="POSITION_WEIGHT must be >= 0"):
        PixelGrouper(_cfg("PROPOSAL_GENERATION.POSITION_WEIGHT", -1.0), feature_fn=_constant_features())
    with pytest.raises(ValueError, match="kmeans_rgbxy needs .*POSITION_WEIGHT 0"):
        build_segmenter(_cfg(*RGBXY, "PROPOSAL_GENERATION.POSITION_WEIGHT", 0.5))


def test_box_positions_and_position_scores():
    from part_distillation.stages.proposal_generation import box_positions

    cells = torch.zeros(1, 6, 10, dtype=torch.bool)
    cells[0, 1:3, 2:10] = True  # box 2 rows x 8 columns
    pos = box_positions(cells)[0]
    assert pos.shape == (2, 6, 10)
    # cell centres in units of the longer side (8 cells): x spans [1/16, 15/16], y keeps the aspect
    assert torch.allclose(pos[0, 1, 2:10], (torch.arange(8) + 0.5) / 8)
    assert torch.allclose(pos[1, 1:3, 2], torch.tensor([0.5, 1.5]) / 8)
    # with dot, a position centre far from the origin must not win by its norm: nearest centre
    feats = torch.cat([torch.ones(1, 1, 2), torch.tensor([[[0.1, 0.9]]])])  # (feature, x) of two pixels
    centers = torch.tensor([[1.0, 0.1], [1.0, 0.9]])
    assert score_maps(feats, centers, "dot", position_dims=1).argmax(0).tolist() == [[0, 1]]
    assert score_maps(feats, centers, "dot").argmax(0).tolist() == [[1, 1]]  # raw dot: the larger x wins
