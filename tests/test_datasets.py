"""Pascal-Part (real examples + official vocabulary), the GT contract, image reading robustness,
the loader registry and the load report."""
import os
import shutil

import numpy as np
import pytest
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.datasets import (dataset_metadata, dataset_name, load_report,
                                             register_dataset)
from part_distillation.data.ground_truth import GroundTruthError, GTObject, gt_objects, validate_record
from part_distillation.data.image_folder import load_image_folder, unique_image_ids
from part_distillation.data.images import ImageReadError, read_image_resized, read_image_rgb
from part_distillation.data.load_report import LoadReport
from part_distillation.data.pascal_part import (PASCAL_CLASSES, PASCAL_PART_CLASSES, PASCAL_PART_DEFINITIONS,
                                                load_part_annotation, load_pascal_part, merge_part_name,
                                                pascal_part_classes)
from part_distillation.data.pseudo_labels import decode_mask

from .helpers import PASCAL_EXAMPLES, needs_shared


def write_part_mat(path, objects):
    """Write a Pascal-Part ``.mat``: ``objects`` = [(class, class_ind, mask, [(part_name, mask)])]."""
    objs = np.empty((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for i, (cls, ind, mask, parts) in enumerate(objects):
        p = np.empty((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
        for j, (name, pm) in enumerate(parts):
            p[0, j] = (name, pm.astype(np.uint8))
        objs[0, i] = (cls, np.array([[ind]]), mask.astype(np.uint8), p if parts else np.zeros((0, 0)))
    scipy.io.savemat(path, {"anno": {"imname": os.path.basename(path)[:-4], "objects": objs}})


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------ Pascal-Part vocabulary


def test_official_vocabulary_ids_and_names():
    assert len(PASCAL_PART_CLASSES) == 50  # official supervised config: NUM_CLASSES 50
    ids = {n: i for i, n in enumerate(PASCAL_PART_CLASSES)}
    assert ids["body"] == 0 and ids["wheel"] == 5 and ids["seat"] == 6 and ids["license plate"] == 23
    assert ids["locomotive"] == 39 and ids["coach_car"] == 44 and ids["coach_roof"] == 48 and ids["screen"] == 49
    assert PASCAL_CLASSES[10] == "diningtable" and len(PASCAL_CLASSES) == 20
    # a class subset is sorted and renumbered (official register_pascal_parts)
    assert pascal_part_classes(["person", "bottle"])[:2] == ["cap", "body"]


# Raw part names as the Pascal-Part release writes them (dataset docs / part_mask.m), per class,
# with the merged name the official evaluation expects. Numbered parts carry "_<n>".
RAW_TO_MERGED = {
    "aeroplane": {"body": "body", "stern": "stern", "lwing": "wing", "rwing": "wing", "tail": "tail",
                  "engine_1": "engine", "engine_4": "engine", "wheel_2": "wheel"},
    "bicycle": {"fwheel": "wheel", "bwheel": "wheel", "saddle": "seat", "handlebar": "handlebar",
                "chainwheel": "chainwheel", "headlight_1": "headlight"},
    "bird": {"head": "head", "leye": "eye", "reye": "eye", "beak": "beak", "torso": "torso", "neck": "neck",
             "lwing": "wing", "rwing": "wing", "lleg": "leg", "rleg": "leg", "lfoot": "foot", "rfoot": "foot",
             "tail": "tail"},
    "bottle": {"cap": "cap", "body": "body"},
    "bus": {"frontside": "front", "backside": "back", "leftside": "side", "rightside": "side", "roofside": "roof",
            "leftmirror": "mirror", "rightmirror": "mirror", "fliplate": "license plate", "bliplate": "license plate",
            "door_1": "door", "wheel_3": "wheel", "headlight_2": "headlight", "window_12": "window"},
    "car": {"frontside": "front", "fliplate": "license plate", "door_3": "door", "window_7": "window"},
    "cat": {"head": "head", "leye": "eye", "lear": "ear", "rear": "ear", "nose": "nose", "torso": "torso",
            "neck": "neck", "lfleg": "leg", "rbleg": "leg", "lfpa": "paw", "rbpa": "paw", "tail": "tail"},
    "cow": {"muzzle": "muzzle", "lhorn": "horn", "rhorn": "horn", "lfuleg": "leg", "rblleg": "leg", "tail": "tail"},
    "dog": {"muzzle": "muzzle", "lbpa": "paw", "rfleg": "leg", "rear": "ear"},
    "horse": {"lfho": "hoof", "rbho": "hoof", "lbuleg": "leg", "muzzle": "muzzle"},
    "motorbike": {"fwheel": "wheel", "bwheel": "wheel", "handlebar": "handlebar", "saddle": "seat",
                  "headlight_1": "headlight"},
    "person": {"head": "head", "leye": "eye", "reye": "eye", "lear": "ear", "lebrow": "eyebrow",
               "rebrow": "eyebrow", "nose": "nose", "mouth": "mouth", "hair": "hair", "torso": "torso",
               "neck": "neck", "llarm": "arm", "luarm": "arm", "rlarm": "arm", "ruarm": "arm", "lhand": "hand",
               "rhand": "hand", "llleg": "leg", "luleg": "leg", "rlleg": "leg", "ruleg": "leg", "lfoot": "foot",
               "rfoot": "foot"},
    "pottedplant": {"pot": "pot", "plant": "plant"},
    "sheep": {"lhorn": "horn", "lflleg": "leg", "muzzle": "muzzle"},
    "train": {"head": "locomotive", "hfrontside": "locomotive_front", "hleftside": "locomotive_side",
              "hrightside": "locomotive_side", "hbackside": "locomotive_backside", "hroofside": "locomotive_roof",
              "headlight_2": "headlight", "coach_1": "coach_car", "coach_3": "coach_car",
              "cfrontside_1": "coach_front", "cleftside_2": "coach_side", "crightside_1": "coach_side",
              "cbackside_3": "coach_backside", "croofside_1": "coach_roof"},
    "tvmonitor": {"screen": "screen"},
}


def test_all_classes_raw_names_merge_as_official():
    assert set(RAW_TO_MERGED) | {"boat", "chair", "diningtable", "sofa"} == set(PASCAL_CLASSES)
    for cls, table in RAW_TO_MERGED.items():
        for raw, merged in table.items():
            assert merge_part_name(raw, cls) == merged, (cls, raw)
            assert merged in PASCAL_PART_CLASSES
    # every definition's raw name (with and without a number) is known for its class
    for cls, parts in PASCAL_PART_DEFINITIONS.items():
        for raw, merged in parts:
            assert merge_part_name(raw, cls) == merge_part_name(raw + "_7", cls) == merged
    assert not PASCAL_PART_DEFINITIONS["boat"] and not PASCAL_PART_DEFINITIONS["diningtable"]
    assert merge_part_name("saddle", "motorbike") == "seat"
    with pytest.raises(KeyError):
        merge_part_name("wing", "person")


@needs_shared
def test_pascal_part_examples_counts_and_merge():
    raw = load_pascal_part(PASCAL_EXAMPLES, merge=False)
    assert len(raw) == 18
    assert sum(len(r["objects"]) for r in raw) == 53
    assert sum(len(o["parts"]) for r in raw for o in r["objects"]) == 398
    raw_names = {p["raw_name"] for r in raw for o in r["objects"] for p in o["parts"]}
    assert len(raw_names) == 70 and {p["name"] for r in raw for o in r["objects"] for p in o["parts"]} == raw_names
    merged = resolve_dataset("pascal_part_examples")  # registered name, official merged vocabulary
    # 279 merged parts: the examples hold no train, so the coach/locomotive fix leaves the count
    assert sum(len(o["parts"]) for r in merged for o in r["objects"]) == 279
    names = {p["name"] for r in merged for o in r["objects"] for p in o["parts"]}
    assert names <= set(PASCAL_PART_CLASSES) and {"leg", "arm", "eye", "ear", "wheel", "license plate"} <= names
    classes = {o["class_name"] for r in merged for o in r["objects"]}
    assert "diningtable" in classes and "table" not in classes
    for r in merged:
        for o in r["objects"]:
            assert PASCAL_CLASSES[o["class_id"]] == o["class_name"] == o["class_code"]
            for p in o["parts"]:
                assert PASCAL_PART_CLASSES[p["part_id"]] == p["name"]
    # merging unites masks: a merged part covers exactly the union of its raw parts
    for r_raw, r_m in zip(raw, merged):
        for o_raw, o_m in zip(r_raw["objects"], r_m["objects"]):
            ears = [decode_mask(p["mask"]) for p in o_raw["parts"] if p["raw_name"] in ("lear", "rear")]
            if len(ears) == 2:
                ear = next(decode_mask(p["mask"]) for p in o_m["parts"] if p["name"] == "ear")
                assert (ear == (ears[0] | ears[1])).all()
                return
    pytest.fail("no object with both ears found")


@needs_shared
def test_use_merged_gt_false_applies_when_loading_for_the_config():
    cfg = setup_cfg(opts=["CUSTOM_DATASETS.USE_MERGED_GT", "False"])
    recs = resolve_dataset("pascal_part_examples", cfg)
    assert sum(len(o["parts"]) for r in recs for o in r["objects"]) == 398
    assert "lear" in {p["name"] for r in recs for o in r["objects"] for p in o["parts"]}
    # building that config changed nothing registered
    assert sum(len(o["parts"]) for r in resolve_dataset("pascal_part_examples") for o in r["objects"]) == 279


def test_train_coach_sides_locomotive_and_table(tmp_path):
    h, w = 10, 12
    parts = [("head", _box(h, w, 0, 5, 0, 3)), ("hfrontside", _box(h, w, 0, 2, 0, 2)),
             ("coach_1", _box(h, w, 0, 5, 4, 8)), ("coach_2", _box(h, w, 0, 5, 8, 12)),
             ("cfrontside_1", _box(h, w, 0, 2, 4, 5)), ("cfrontside_2", _box(h, w, 0, 2, 8, 9)),
             ("cleftside_1", _box(h, w, 2, 4, 4, 8)), ("hleftside", _box(h, w, 2, 4, 0, 3))]
    mat = tmp_path / "t.mat"
    write_part_mat(str(mat), [("train", 19, _box(h, w, 0, 5, 0, 12), parts), ("table", 11, _box(h, w, 6, 9, 0, 4), [])])
    objs = load_part_annotation(str(mat))
    train, table = objs
    got = {p["name"]: p for p in train["parts"]}
    assert set(got) == {"locomotive", "locomotive_front", "coach_car", "coach_front", "coach_side", "locomotive_side"}
    assert decode_mask(got["coach_front"]["mask"]).sum() == 4  # cfrontside_1 + cfrontside_2 united
    assert got["coach_front"]["raw_name"] == "cfrontside_1+cfrontside_2"
    assert got["coach_front"]["part_id"] == PASCAL_PART_CLASSES.index("coach_front")
    assert table["class_name"] == "diningtable" and table["class_id"] == PASCAL_CLASSES.index("diningtable")
    raw = load_part_annotation(str(mat), merge=False)[0]["parts"]
    assert [p["name"] for p in raw] == [n for n, _ in parts]
    assert raw[4]["part_id"] == raw[5]["part_id"] == PASCAL_PART_CLASSES.index("coach_front")
    # an unknown part of a Pascal class names the file
    write_part_mat(str(mat), [("person", 15, _box(h, w, 0, 5, 0, 12), [("wing", _box(h, w, 0, 1, 0, 1))])])
    with pytest.raises(ValueError, match="t.mat.*wing"):
        load_part_annotation(str(mat))


@needs_shared
def test_ade_subset_counts_keep_ade_names():
    recs = resolve_dataset("ade20k_part_subset")
    assert len(recs) == 248
    assert sum(len(r["objects"]) for r in recs) == 691
    assert sum(len(o["parts"]) for r in recs for o in r["objects"]) == 1929
    classes = {o["class_name"] for r in recs for o in r["objects"]}
    assert "table" in classes and "diningtable" not in classes  # ADE names are not Pascal names
    meta = MetadataCatalog.get("ade20k_part_subset")
    for o in (o for r in recs for o in r["objects"]):
        assert meta.thing_classes[o["class_id"]] == o["class_name"]
        assert all(meta.part_classes[p["part_id"]] == f"{o['class_name']}'s {p['name']}" for p in o["parts"])


# ------------------------------------------------------------------ GT contract


@needs_shared
def test_gt_objects_validate_and_decode():
    rec = resolve_dataset("pascal_part_examples")[0]
    gts = gt_objects(rec)
    assert len(gts) == len(rec["objects"])
    g = gts[0]
    assert g.mask.shape == (rec["height"], rec["width"]) and g.mask.dtype == bool
    assert g.parts.shape == (len(rec["objects"][0]["parts"]), rec["height"], rec["width"])
    assert g.class_code == g.class_name and g["mask"] is g.mask
    bad = dict(rec, objects=[dict(rec["objects"][0], mask=dict(rec["objects"][0]["mask"], size=[3, 3]))])
    with pytest.raises(GroundTruthError, match=os.path.basename(rec["annotation_file"])):
        validate_record(bad)
    with pytest.raises(GroundTruthError, match="part masks"):
        GTObject("cat", "cat", 7, np.ones((2, 2), bool), np.ones((1, 3, 3), bool), ["x"], [0])
    with pytest.raises(GroundTruthError, match="names"):
        GTObject("cat", "cat", 7, np.ones((2, 2), bool), np.ones((1, 2, 2), bool), [], [])


# ------------------------------------------------------------------ reliability


def test_image_modes_become_rgb_and_bad_files_raise(tmp_path):
    for mode, ext, color in [("L", "png", 1), ("RGBA", "png", (10, 20, 30, 40)), ("CMYK", "jpg", (0, 0, 0, 0)),
                             ("P", "png", 1)]:
        p = tmp_path / f"im_{mode}.{ext}"
        Image.new(mode, (20, 16), color=color).save(p)
        img = read_image_rgb(str(p))
        assert img.shape == (16, 20, 3) and img.dtype == np.uint8
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="0-byte"):
        read_image_rgb(str(empty))
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        read_image_rgb(str(corrupt))
    with pytest.raises(ImageReadError, match="no such"):
        read_image_rgb(str(tmp_path / "missing.jpg"))


def test_read_image_resized_gives_the_resize_transforms_pixels(tmp_path):
    from detectron2.data import transforms as T

    def size_fn(h, w):
        return T.ResizeShortestEdge.get_output_shape(h, w, 24, 40)

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((160, 120), Image.BILINEAR)
    deep = Image.fromarray((np.arange(90 * 70, dtype=np.uint32).reshape(70, 90) * 9).astype(np.uint16))
    # under 8x the output (160 x 120 -> 32 x 24): exactly what detectron2's resize gives, every mode
    for name, im in [("rgb.jpg", noise), ("rgb.png", noise), ("l.jpg", noise.convert("L")),
                     ("cmyk.jpg", noise.convert("CMYK")), ("rgba.png", noise.convert("RGBA")),
                     ("p.png", noise.convert("P")), ("deep.png", deep), ("small.jpg", noise.resize((30, 20)))]:
        im.save(tmp_path / name)
        full = read_image_rgb(str(tmp_path / name))
        expected = T.ResizeShortestEdge(24, 40).get_transform(full).apply_image(full)
        got = read_image_resized(str(tmp_path / name), size_fn)
        assert got.dtype == np.uint8 and np.array_equal(got, expected), name
    # a JPEG 10x the output is decoded at reduced scale: close to, not equal to, the full decode
    noise.resize((400, 300), Image.BILINEAR).save(tmp_path / "big.jpg", quality=95)
    full = read_image_rgb(str(tmp_path / "big.jpg"))
    expected = T.ResizeShortestEdge(24, 40).get_transform(full).apply_image(full).astype(int)
    got = read_image_resized(str(tmp_path / "big.jpg"), size_fn)
    assert got.shape == (24, 32, 3) and 0 < np.abs(got - expected).mean() < 1  # 0.16 when written
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="0-byte"):
        read_image_resized(str(tmp_path / "empty.jpg"), size_fn)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "big.jpg").read_bytes()[:200])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image_resized(str(tmp_path / "cut.jpg"), size_fn)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(16 * 20, dtype=np.uint32).reshape(16, 20) * 200).astype(np.uint16)  # 0 .. 63800
    p = tmp_path / "deep.png"
    Image.fromarray(ramp).save(p)
    assert Image.open(p).mode.startswith("I")
    img = read_image_rgb(str(p))
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.abs(img[..., 0].astype(int) - expected).max() <= 1
    assert (img[..., 0] == img[..., 2]).all() and img.mean() < 200  # not the almost-white clip


def test_decompression_bomb_is_a_named_counted_skip(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(imgs / "small.png")
    Image.new("RGB", (100, 100)).save(imgs / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 100x100 > 2 x limit -> DecompressionBombError
    with pytest.raises(ImageReadError, match="huge.png.*decompression-bomb"):
        read_image_rgb(str(imgs / "huge.png"))
    report = LoadReport("t")
    recs = load_image_folder(str(imgs), report=report)
    assert [r["image_id"] for r in recs] == ["small"]
    assert report.skipped == {"unreadable_image": 1}
    assert report.skipped_files["unreadable_image"][0].endswith("huge.png")


def test_duplicate_stems_get_distinct_ids(tmp_path):
    assert unique_image_ids(["cat.jpg", "cat.png", "x.JPG", "x.jpg", "dog.jpg"]) == {
        "cat.jpg": "cat.jpg", "cat.png": "cat.png", "x.JPG": "x.JPG", "x.jpg": "x.jpg", "dog.jpg": "dog"}
    for name in ("cat.jpg", "cat.png", "x.JPG", "x.jpg", "dog.jpg"):
        Image.new("RGB", (6, 4)).save(tmp_path / name, format="PNG")
    ids = [r["image_id"] for r in resolve_dataset(str(tmp_path))]
    assert len(ids) == len(set(ids)) == 5 and "dog" in ids and "cat.png" in ids


def _pascal_copy(tmp_path, ids):
    root = tmp_path / "pp"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations_Part").mkdir()
    for i in ids:
        shutil.copy(os.path.join(PASCAL_EXAMPLES, "JPEGImages", i + ".jpg"), root / "JPEGImages")
        shutil.copy(os.path.join(PASCAL_EXAMPLES, "Annotations_Part", i + ".mat"), root / "Annotations_Part")
    return root


@needs_shared
def test_missing_files_and_bad_sizes_are_counted_and_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_part_annotation(str(tmp_path / "x.mat"))
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="bad.mat"):
        load_part_annotation(str(bad))
    with pytest.raises(FileNotFoundError, match="missing folder .*JPEGImages"):
        load_pascal_part(str(tmp_path))
    ids = sorted(f[:-4] for f in os.listdir(os.path.join(PASCAL_EXAMPLES, "Annotations_Part")))[:4]
    root = _pascal_copy(tmp_path, ids)
    os.remove(root / "JPEGImages" / f"{ids[0]}.jpg")  # annotation without image
    os.remove(root / "Annotations_Part" / f"{ids[1]}.mat")  # image without annotation
    h, w = 7, 9  # part mask of another size than the image
    write_part_mat(str(root / "Annotations_Part" / f"{ids[2]}.mat"),
                   [("cat", 8, np.ones((h, w)), [("head", np.ones((h + 1, w)))])])
    recs = resolve_dataset(str(root))
    assert [r["image_id"] for r in recs] == [ids[3]]
    rep = load_report(str(root))
    assert rep["num_loaded"] == 1
    assert rep["skipped"] == {"no_image": 1, "no_annotation": 1, "bad_annotation": 1}
    assert rep["skipped_files"]["no_annotation"][0].endswith(f"{ids[1]}.jpg")
    assert rep["skipped_files"]["bad_annotation"][0].endswith(f"{ids[2]}.mat")
    assert all("/" not in k for k in rep["skipped"])  # reason keys, never paths
    name = "folder:" + os.path.abspath(str(root))
    assert MetadataCatalog.get(name).load_report.num_skipped == 3


def test_image_folder_with_and_without_masks(tmp_path):
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    Image.new("RGB", (30, 20)).save(imgs / "a.jpg")
    Image.new("RGB", (30, 20)).save(imgs / "b.png")
    Image.new("RGB", (30, 20)).save(imgs / "c.png")
    (imgs / "broken.jpg").write_bytes(b"")
    (imgs / "notes.txt").write_text("ignored")
    inst = np.zeros((20, 30), np.uint8)
    inst[2:8, 2:9] = 1
    inst[10:18, 12:25] = 2
    Image.fromarray(inst).save(masks / "a.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "c.png")  # wrong size
    whole = load_image_folder(str(imgs))
    assert [r["image_id"] for r in whole] == ["a", "b", "c"]  # broken file skipped
    assert decode_mask(whole[0]["objects"][0]["mask"]).all()
    report = LoadReport("m")
    with_masks = load_image_folder(str(imgs), str(masks), "toy", report=report)
    assert [r["image_id"] for r in with_masks] == ["a"]
    assert report.skipped == {"unreadable_image": 1, "no_mask": 1, "bad_annotation": 1}
    objs = with_masks[0]["objects"]
    assert len(objs) == 2 and objs[0]["class_name"] == objs[0]["class_code"] == "toy" and objs[0]["class_id"] == 0
    assert decode_mask(objs[1]["mask"]).sum() == 8 * 13


# ------------------------------------------------------------------ registry


def test_unknown_dataset_lists_registered_names():
    with pytest.raises(KeyError, match="pascal_part_examples"):
        resolve_dataset("no_such_dataset")


def test_registered_names_metadata_and_missing_folder_error(tmp_path):
    names = set(DatasetCatalog.list())
    for n in ("pascal_part_train", "pascal_part_val", "pascal_part_valtest", "pascal_part_match_val",
              "pascal_part_evaluate_val", "part_imagenet_train", "part_imagenet_valtest",
              "part_imagenet_match_val", "part_imagenet_evaluate_val", "part_imagenet_pre_labeling_val",
              "imagenet_1k_train", "imagenet_1k_val", "imagenet_22k_train", "imagenet_1k_pre_labeling_train",
              "imagenet_1k_post_labeling_train", "cityscapes_part_train", "cityscapes_part_val",
              "cityscapes_part_match_val", "pascal_part_116_val", "ade20k_part_234_val",
              "pascal_part_examples", "ade20k_part_subset"):
        assert n in names, n
        meta = MetadataCatalog.get(n)
        assert meta.evaluator_type in ("part", "none") and meta.layout and isinstance(meta.load_report, LoadReport)
    assert MetadataCatalog.get("pascal_part_match_val").eval_mode == "match"
    assert len(MetadataCatalog.get("pascal_part_val").part_classes) == 50
    assert len(MetadataCatalog.get("cityscapes_part_val").part_classes) == 23
    assert len(MetadataCatalog.get("pascal_part_116_val").part_classes) == 116
    assert len(MetadataCatalog.get("ade20k_part_234_val").part_classes) == 234
    # a config's folders apply when data is loaded for it; the catalog is never re-registered
    before = MetadataCatalog.get("pascal_part_val").images_dirname
    cfg = setup_cfg("", ["CUSTOM_DATASETS.PASCAL_PARTS.IMAGES_DIRNAME", str(tmp_path / "voc"),
                         "CUSTOM_DATASETS.PASCAL_PARTS.SUBSET_CLASS_NAMES", "['cat', 'dog']"])
    assert MetadataCatalog.get("pascal_part_val").images_dirname == before
    with pytest.raises(FileNotFoundError, match=r"(?s)pascal_part_val.*voc/JPEGImages"):
        resolve_dataset("pascal_part_val", cfg)
    assert dataset_metadata("pascal_part_val", cfg)["thing_classes"] == ["cat", "dog"]
    assert len(dataset_metadata("pascal_part_val", cfg)["part_classes"]) < 50
    with pytest.raises(FileNotFoundError, match=r"(?s)pascal_part_val.*datasets/pascal_parts/images/JPEGImages"):
        resolve_dataset("pascal_part_val")


def test_deprecated_pascal_parts_names_warn():
    assert MetadataCatalog.get("pascal_parts_val").deprecated_alias_of == "pascal_part_val"
    with pytest.warns(FutureWarning, match="pascal_parts_val.*pascal_part_val"):
        assert dataset_name("pascal_parts_val") == "pascal_part_val"
    # a trainer reads DATASETS.TRAIN / TEST through DatasetCatalog.get: the alias warns there too
    # and loads the official name (without its folder: an error naming that name)
    with pytest.warns(FutureWarning, match="pascal_parts_val.*pascal_part_val"):
        try:
            DatasetCatalog.get("pascal_parts_val")
        except FileNotFoundError as e:
            assert "dataset 'pascal_part_val'" in str(e)


@needs_shared
def test_pascal_parts_split_from_voc_lists(tmp_path):
    ids = sorted(f[:-4] for f in os.listdir(os.path.join(PASCAL_EXAMPLES, "Annotations_Part")))[:3]
    images, annos = tmp_path / "images", tmp_path / "annotations"
    (images / "JPEGImages").mkdir(parents=True)
    (images / "ImageSets" / "Main").mkdir(parents=True)
    annos.mkdir()
    for i in ids:
        shutil.copy(os.path.join(PASCAL_EXAMPLES, "JPEGImages", i + ".jpg"), images / "JPEGImages")
        shutil.copy(os.path.join(PASCAL_EXAMPLES, "Annotations_Part", i + ".mat"), annos)
    Image.new("RGB", (5, 5)).save(images / "JPEGImages" / "2010_999999.jpg")  # VOC image without parts
    (images / "ImageSets" / "Main" / "train.txt").write_text(f"{ids[0]}\n{ids[2]}\n2010_999999\n")
    (images / "ImageSets" / "Main" / "val.txt").write_text(f"{ids[1]}\n")
    for split in ("train", "val"):
        register_dataset(f"t_pascal_parts_{split}", "PascalPartsSplitLoader", images_dirname=str(images),
                         annotations_dirname=str(annos), split=split)
    train = DatasetCatalog.get("t_pascal_parts_train")
    assert [r["image_id"] for r in train] == [ids[0], ids[2]]
    assert MetadataCatalog.get("t_pascal_parts_train").load_report.skipped == {"no_annotation": 1}
    assert [r["image_id"] for r in DatasetCatalog.get("t_pascal_parts_val")] == [ids[1]]




def test_exif_orientation_is_applied_by_every_reader_as_detectron2_does(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6 / 8 / 3): pixels, header size and the
    resized read are those of the displayed image (detectron2's read_image), so masks drawn on the
    displayed image (here an image-folder mask) line up with the pixels."""
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image as d2_read_image

    from part_distillation.data.images import read_image_size

    stored = np.zeros((40, 64, 3), np.uint8)  # as stored: 64 wide, 40 high, a red left quarter
    stored[:, :16] = (250, 0, 0)
    stored[:, 16:] = (0, 0, 250)
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    for orientation in (6, 8, 3):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = str(imgs / f"o{orientation}.jpg")
        Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)
        img = read_image_rgb(path)
        assert np.array_equal(img, d2_read_image(path, "RGB")), orientation
        assert read_image_size(path) == (img.shape[1], img.shape[0])
        red = img[..., 0] > 128
        if orientation == 6:  # turned 90 degrees clockwise for display: the red quarter on top
            assert img.shape[:2] == (64, 40) and red[:14].all() and not red[18:].any()
        elif orientation == 8:  # counter-clockwise: at the bottom
            assert img.shape[:2] == (64, 40) and red[-14:].all() and not red[:-18].any()
        else:  # 180 degrees: on the right
            assert img.shape[:2] == (40, 64) and red[:, -14:].all() and not red[:, :-18].any()
        got = read_image_resized(path, lambda h, w: T.ResizeShortestEdge.get_output_shape(h, w, 20, 40))
        assert np.array_equal(got, T.ResizeShortestEdge(20, 40).get_transform(img).apply_image(img))
        tiny = read_image_resized(path, lambda h, w: T.ResizeShortestEdge.get_output_shape(h, w, 4, 40))
        assert tiny.shape[:2] == ((6, 4) if orientation != 3 else (4, 6))  # JPEG draft, then turned
        Image.fromarray(red.astype(np.uint8)).save(masks / f"o{orientation}.png")  # drawn as displayed
    recs = load_image_folder(str(imgs), str(masks), "thing")
    assert [r["image_id"] for r in recs] == ["o3", "o6", "o8"]
    for r in recs:
        assert (r["height"], r["width"]) == read_image_rgb(r["file_name"]).shape[:2]


def _own_folder(root, objects_of, n):
    """A Pascal-Part-layout folder of ``n`` 24 x 32 images; image i's objects: ``objects_of(i)``
    as (class, class_ind, [part names]) with each part a vertical stripe of the object."""
    os.makedirs(root / "JPEGImages")
    os.makedirs(root / "Annotations_Part")
    h, w = 24, 32
    for i in range(n):
        Image.new("RGB", (w, h), (i * 20 % 255, 80, 120)).save(root / "JPEGImages" / f"im{i:02d}.jpg")
        objects = []
        for cls, ind, names in objects_of(i):
            cuts = np.linspace(2, 30, len(names) + 1).astype(int)
            parts = [(nm, _box(h, w, 2, 22, cuts[j], cuts[j + 1])) for j, nm in enumerate(names)]
            objects.append((cls, ind, _box(h, w, 2, 22, 2, 30), parts))
        write_part_mat(str(root / "Annotations_Part" / f"im{i:02d}.mat"), objects)
    return str(root)


def test_own_folders_merged_names_other_vocabularies_and_the_skip_share(tmp_path):
    """A folder whose names are already merged (Pascal-Part-116 style) loads every image; one of
    another vocabulary is detected and loaded as-is; a load that skips more than 5% is refused
    (naming the reasons and --accept-skips) unless accepted."""
    from part_distillation.data.datasets import TooManySkippedError, check_load_skips, dataset_name
    from part_distillation.data.datasets import load_report as report_of

    assert merge_part_name("eye", "person") == "eye" and merge_part_name("coach_front", "train") == "coach_front"
    assert merge_part_name("cfrontside_2", "train") == "coach_front" and merge_part_name("leye", "cat") == "eye"
    merged = _own_folder(tmp_path / "merged", lambda i: [("person", 15, ["head", "eye", "leye", "leg"]),
                                                        ("car", 7, ["front", "wheel_1", "license plate"])], 6)
    recs = resolve_dataset(merged)
    assert len(recs) == 6 and check_load_skips(merged)["skipped"] == {}
    assert [p["name"] for p in recs[0]["objects"][0]["parts"]] == ["head", "eye", "leg"]  # eye + leye united
    assert [p["name"] for p in recs[0]["objects"][1]["parts"]] == ["front", "wheel", "license plate"]
    assert report_of(merged)["vocabulary"] == "pascal"

    other = _own_folder(tmp_path / "other", lambda i: [("robot", 3, ["antenna", "tread"])], 5)
    recs = resolve_dataset(other)  # detected: loaded with its own names
    assert len(recs) == 5 and [p["name"] for p in recs[0]["objects"][0]["parts"]] == ["antenna", "tread"]
    assert recs[0]["objects"][0]["class_name"] == "robot" and report_of(other)["vocabulary"] == "as-is"
    dataset_name(other, "pascal")  # --vocabulary pascal: every file is a bad annotation
    assert resolve_dataset(other) == [] and report_of(other)["skipped"] == {"bad_annotation": 5}
    with pytest.raises(TooManySkippedError, match=r"5 of 5 images skipped \(100% > 5%\).*bad_annotation: 5") as e:
        check_load_skips(other)
    assert "im00.mat" in str(e.value) and "--accept-skips" in str(e.value) and "--vocabulary as-is" in str(e.value)
    assert check_load_skips(other, accept=True)["skipped"] == {"bad_annotation": 5}
    dataset_name(other, "as-is")
    assert len(resolve_dataset(other)) == 5

    # mostly Pascal names with one unknown: Pascal vocabulary, the odd file a counted skip
    mixed = _own_folder(tmp_path / "mixed", lambda i: [("person", 15, ["head", "tentacle" if i == 0 else "hair"])], 4)
    assert len(resolve_dataset(mixed)) == 3 and report_of(mixed)["skipped"] == {"bad_annotation": 1}
    with pytest.raises(TooManySkippedError, match="1 of 4 images skipped"):
        check_load_skips(mixed)
