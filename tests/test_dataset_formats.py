"""Each supported dataset format, built tiny on disk in exactly its release layout, then loaded
through the registry."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from part_distillation.data.cityscapes_part import CITYSCAPES_PART_CLASSES
from part_distillation.data.datasets import register_dataset
from part_distillation.data.ground_truth import gt_objects, parts_from_label_map
from part_distillation.data.imagenet import filter_class_codes, iter_imagenet, partition_class_codes
from part_distillation.data.load_report import LoadReport
from part_distillation.data.loader_registry import DATASET_LOADER_REGISTRY
from part_distillation.data.ov_parts import ADE_PART_234_CLASSES, PASCAL_PART_116_CLASSES
from part_distillation.data.part_imagenet import imagenet_1k_to_22k
from part_distillation.data.pseudo_labels import decode_mask

# ------------------------------------------------------------------ PartImageNet

PI_CATEGORIES = [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
                 {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
                 {"id": 2, "name": "Fish Fin", "supercategory": "Fish"}]


def _coco_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _part_imagenet(tmp_path):
    ann, img = tmp_path / "part_imagenet", tmp_path / "imagenet_1k" / "train"
    ann.mkdir()
    for wnid in ("n01440764", "n02085620", "n09999999"):
        (img / wnid).mkdir(parents=True)
    h, w = 12, 16
    images, annos = [], []
    # image 1 (dog): head as a polygon, body as a compressed RLE, a second head polygon
    Image.new("RGB", (w, h)).save(img / "n02085620" / "n02085620_7.JPEG", format="JPEG")
    images.append({"id": 1, "file_name": "n02085620_7.JPEG", "height": h, "width": w})
    annos.append({"id": 1, "image_id": 1, "category_id": 0, "iscrowd": 0,
                  "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "bbox": [0, 0, 4, 4], "area": 16})
    body = np.zeros((h, w), bool)
    body[4:10, 2:14] = True
    annos.append({"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _coco_rle(body),
                  "bbox": [2, 4, 12, 6], "area": 72})
    annos.append({"id": 3, "image_id": 1, "category_id": 0, "iscrowd": 0,
                  "segmentation": [[10, 0, 14, 0, 14, 3, 10, 3]], "bbox": [10, 0, 4, 3], "area": 12})
    # image 2 (fish): uncompressed RLE fin; image 3: no annotation; image 4: file missing
    Image.new("RGB", (w, h)).save(img / "n01440764" / "n01440764_3.JPEG", format="JPEG")
    images.append({"id": 2, "file_name": "n01440764_3.JPEG", "height": h, "width": w})
    fin = np.zeros((h, w), bool)
    fin[0:3, 0:5] = True
    annos.append({"id": 4, "image_id": 2, "category_id": 2, "iscrowd": 0,
                  # uncompressed RLE, column-major: 5 columns of 3 rows set
                  "segmentation": {"size": [h, w], "counts": [0, 3, 9, 3, 9, 3, 9, 3, 9, 3, h * w - 51]}})
    images.append({"id": 3, "file_name": "n02085620_8.JPEG", "height": h, "width": w})
    images.append({"id": 4, "file_name": "n09999999_1.JPEG", "height": h, "width": w})
    annos.append({"id": 5, "image_id": 4, "category_id": 2, "iscrowd": 0,
                  "segmentation": [[0, 0, 2, 0, 2, 2]], "bbox": [0, 0, 2, 2], "area": 2})
    Image.new("RGB", (w, h)).save(img / "n02085620" / "n02085620_8.JPEG", format="JPEG")
    val = {"images": images[:2], "annotations": annos[:4], "categories": PI_CATEGORIES}
    test = {"images": images[2:], "annotations": annos[4:], "categories": PI_CATEGORIES}
    (ann / "val.json").write_text(json.dumps(val))
    (ann / "test.json").write_text(json.dumps(test))
    return ann, img, fin, body


def test_part_imagenet_coco_layout(tmp_path):
    ann, img, fin, body = _part_imagenet(tmp_path)
    for merge in (True, False):
        register_dataset(f"t_pi_{merge}", "PartImageNetLoader", annotations_dirname=str(ann),
                         images_dirname=str(img), split="valtest", merge=merge, eval_mode="evaluate")
    recs = DatasetCatalog.get("t_pi_True")  # valtest = val + test merged (no valtest.json)
    assert [r["image_id"] for r in recs] == ["n01440764_3", "n02085620_7"]
    fish, dog = recs
    assert dog["file_name"] == os.path.join(str(img), "n02085620", "n02085620_7.JPEG")
    g = gt_objects(dog)[0]
    assert g.class_code == "n02085620" and g.class_id == 1 and g.part_names == ["Quadruped Head", "Quadruped Body"]
    assert g.parts[0].sum() == 16 + 12 and (g.parts[1] == body).all()  # two head polygons united
    assert (g.mask == (g.parts[0] | g.parts[1])).all()
    assert dog["objects"][0]["imagenet_1k_class_id"] == 1  # sorted ImageNet-1K folders
    assert (gt_objects(fish)[0].parts[0] == fin).all() and fish["objects"][0]["parts"][0]["part_id"] == 2
    meta = MetadataCatalog.get("t_pi_True")
    assert meta.part_classes == [c["name"] for c in PI_CATEGORIES] and meta.super_categories == ["Fish", "Quadruped"]
    assert meta.thing_classes == ["n01440764", "n02085620"] and meta.class_super_category["n01440764"] == "Fish"
    assert meta.load_report.skipped == {"no_annotation": 1, "no_image": 1}
    raw = DatasetCatalog.get("t_pi_False")
    assert [p["name"] for p in raw[1]["objects"][0]["parts"]] == ["Quadruped Head", "Quadruped Body", "Quadruped Head"]
    assert imagenet_1k_to_22k(["n01440764", "n02085620", "n0"], ["n0", "n02085620", "x", "n01440764"]) == [3, 1, 0]


def test_part_imagenet_stage1_files_land_where_later_stages_read_them(tmp_path):
    """Stage 1 on PartImageNet records writes ``<wnid>/<stem>.json`` (official layout), each file
    listed and read back with its image id, so stage 2 gets every image."""
    from part_distillation.config import setup_cfg
    from part_distillation.data.pseudo_labels import list_pseudo_labels, load_pseudo_label
    from part_distillation.stages.object_masks import ObjectMasksStage

    ann, img, _, _ = _part_imagenet(tmp_path)
    register_dataset("t_pi_stage1", "PartImageNetLoader", annotations_dirname=str(ann), images_dirname=str(img),
                     split="valtest", merge=True)
    out = tmp_path / "object_masks"
    cfg = setup_cfg("", ["PROPOSAL_GENERATION.OBJECT_MASK_TYPE", "given"])
    assert ObjectMasksStage(cfg, str(out)).run(DatasetCatalog.get("t_pi_stage1")).processed == 2
    files = list_pseudo_labels(str(out))
    assert [os.path.relpath(p, out) for p in files] == ["n01440764/n01440764_3.json", "n02085620/n02085620_7.json"]
    assert [load_pseudo_label(p).objects[0].class_code for p in files] == ["n01440764", "n02085620"]


# ------------------------------------------------------------------ ImageNet folders


def _imagenet(tmp_path):
    root = tmp_path / "imagenet_22k"
    codes = ["n00000003", "n00000001", "n00000002", "n00000004"]
    for c in codes[:3]:
        (root / c).mkdir(parents=True)
        for k in range(3):
            (root / c / f"{c}_{k}.JPEG").write_bytes(b"")  # never opened: the index reads no headers
    (root / "n00000001" / "n00000001_0.jpg").write_bytes(b"")  # same stem, other extension
    (root / "n00000001" / "notes.txt").write_text("x")
    (root / "synsets.dat").write_text("\n".join(codes) + "\n")
    (root / "words.txt").write_text("n00000001\tdog\nn00000002\tcake\nn00000003\tcar\n")
    return root, codes


def test_imagenet_folders_filters_partitions(tmp_path):
    root, codes = _imagenet(tmp_path)
    keep = tmp_path / "keep.txt"
    keep.write_text("n00000001\nn00000002\nn00000003\n")
    excl = tmp_path / "exclude.pth"
    torch.save(["n00000002"], excl)  # official lists are torch.save'd lists of wnids
    register_dataset("t_in22k", "ImageNetLoader", root=str(root), synsets_file=str(root / "synsets.dat"),
                     words_file=str(root / "words.txt"), filtered_code_path_list=[str(keep)],
                     exclude_code_path=str(excl))
    recs = DatasetCatalog.get("t_in22k")
    assert [r["class_code"] for r in recs] == ["n00000003"] * 3 + ["n00000001"] * 4
    ids = [r["image_id"] for r in recs]
    assert len(set(ids)) == 7 and "n00000001_0.jpg" in ids and "n00000001_1" in ids
    car = recs[0]
    assert car["class_id"] == 0 and car["class_name"] == "car" and car["objects"] == []
    meta = MetadataCatalog.get("t_in22k")
    assert meta.class_codes == codes and meta.thing_classes[:3] == ["car", "dog", "cake"]
    assert meta.evaluator_type == "none"
    assert filter_class_codes(codes, [str(keep)], str(excl)) == ["n00000003", "n00000001"]
    assert [partition_class_codes(codes, 3, i) for i in range(3)] == [[codes[0]], [codes[1]], codes[2:]]
    with pytest.raises(ValueError):
        partition_class_codes(codes, 3, 3)
    streamed = iter_imagenet(str(root), ["n00000004", "n00000002"], codes)
    assert next(streamed)["class_code"] == "n00000002"  # missing class folder skipped, stream goes on
    part = DATASET_LOADER_REGISTRY.get("ImageNetLoader")(
        root=str(root), synsets_file=str(root / "synsets.dat"), total_partitions=2, partition_index=1)
    assert {r["class_code"] for r in part.records(LoadReport("p"))} == {"n00000002"}  # n00000004: no folder
    # ImageNet-1K: class list = sorted folders
    register_dataset("t_in1k", "ImageNetLoader", root=str(root))
    assert DatasetCatalog.get("t_in1k")[0]["class_code"] == "n00000001"


# ------------------------------------------------------------------ Cityscapes-Panoptic-Parts


def test_cityscapes_panoptic_parts_layout(tmp_path):
    root = tmp_path / "cityscapes_part"
    stem = "aachen_000000_000019"
    h, w = 8, 10
    for d in ("leftImg8bit", "gtFine", "gtFinePanopticParts"):
        (root / d / "val" / "aachen").mkdir(parents=True)
    Image.new("RGB", (w, h)).save(root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png")
    Image.new("RGB", (w, h)).save(root / "leftImg8bit" / "val" / "aachen" / "aachen_000001_000019_leftImg8bit.png")
    inst = np.full((h, w), 7, np.int32)  # road (no instances)
    inst[0:4, 0:4] = 24001  # person #1
    inst[4:8, 5:10] = 26002  # car #2
    Image.fromarray(inst.astype(np.uint16)).save(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_instanceIds.png")
    uids = np.full((h, w), 7, np.int32)
    uids[0:4, 0:4] = 24001  # person without part label
    uids[0:2, 0:4] = 2400102  # person head (pid 2)
    uids[4:8, 5:7] = 2600202  # car wheel (pid 2)
    uids[4:8, 7:10] = 2600205  # car chassis (pid 5)
    Image.fromarray(uids).save(root / "gtFinePanopticParts" / "val" / "aachen" / f"{stem}_gtFinePanopticParts.tif")
    register_dataset("t_city", "CityscapesPartLoader", images_dirname=str(root / "leftImg8bit"),
                     annotations_dirname=str(root / "gtFine"), parts_dirname=str(root / "gtFinePanopticParts"),
                     split="val")
    recs = DatasetCatalog.get("t_city")
    assert [r["image_id"] for r in recs] == [stem]
    person, car = gt_objects(recs[0])
    assert (person.class_name, person.class_id, car.class_name, car.class_id) == ("person", 0, "car", 2)
    assert person.part_names == ["person-head"] and person.parts[0].sum() == 8
    assert car.part_names == ["car-wheel", "car-chassis"] and car.parts.sum(axis=(1, 2)).tolist() == [8, 12]
    assert [CITYSCAPES_PART_CLASSES[i] for i in car.part_ids] == car.part_names
    assert MetadataCatalog.get("t_city").load_report.skipped == {"no_annotation": 1}


def test_parts_from_label_map_keeps_ids_inside_the_object_that_part_of_names():
    part_map = np.array([[0, 1, 1, 2],
                         [0, 3, 3, 2]])
    obj = np.array([[True, True, False, False],
                    [True, True, True, True]])
    names = {1: ("a", "raw_a", 10), 3: ("c", "raw_c", 30)}  # id 0 background, id 2 another object's
    parts = parts_from_label_map(part_map, obj, names.get)
    assert [(p["name"], p["raw_name"], p["part_id"]) for p in parts] == [("a", "raw_a", 10), ("c", "raw_c", 30)]
    assert decode_mask(parts[0]["mask"]).tolist() == [[False, True, False, False], [False] * 4]
    assert decode_mask(parts[1]["mask"]).sum() == 2


# ------------------------------------------------------------------ OV-PARTS


def test_ov_parts_layout(tmp_path):
    root = tmp_path / "PascalPart116"
    for d in ("images", "annotations_detectron2_part", "annotations_detectron2_obj"):
        (root / d / "val").mkdir(parents=True)
    h, w = 6, 8
    Image.new("RGB", (w, h)).save(root / "images" / "val" / "2008_000001.jpg")
    obj = np.full((h, w), 255, np.uint8)
    obj[:, :4] = 7  # cat
    obj[:, 4:] = 14  # person
    part = np.full((h, w), 255, np.uint8)
    head_cat = PASCAL_PART_116_CLASSES.index("cat's head")
    hand = PASCAL_PART_116_CLASSES.index("person's hand")
    part[0:2, 0:4] = head_cat
    part[0:3, 4:8] = hand
    Image.fromarray(obj).save(root / "annotations_detectron2_obj" / "val" / "2008_000001.png")
    Image.fromarray(part).save(root / "annotations_detectron2_part" / "val" / "2008_000001.png")
    Image.new("RGB", (w, h)).save(root / "images" / "val" / "2008_000002.jpg")  # no maps
    register_dataset("t_ov", "OVPartsLoader", root=str(root), split_dir="val",
                     object_classes=MetadataCatalog.get("pascal_part_116_val").thing_classes,
                     part_classes=PASCAL_PART_116_CLASSES, ignore=255)
    recs = DatasetCatalog.get("t_ov")
    cat, person = gt_objects(recs[0])
    assert (cat.class_name, person.class_name) == ("cat", "person")
    assert cat.part_names == ["head"] and cat.part_ids == [head_cat] and cat.parts[0].sum() == 8
    assert person.part_names == ["hand"] and person.parts[0].sum() == 12
    assert MetadataCatalog.get("t_ov").load_report.skipped == {"no_annotation": 1}
    assert ADE_PART_234_CLASSES[0] == "person's arm" and ADE_PART_234_CLASSES[-1] == "light's shade"
    assert decode_mask(recs[0]["objects"][0]["mask"]).sum() == 24


def test_ov_parts_ade_instances_json(tmp_path):
    root = tmp_path / "ADE20KPart234"
    for d in ("images", "annotations_detectron2_part"):
        (root / d / "validation").mkdir(parents=True)
    h, w = 6, 8
    Image.new("RGB", (w, h)).save(root / "images" / "validation" / "ADE_val_1.jpg")
    part = np.full((h, w), 65535, np.uint16)  # 16-bit part map, 65535 = no part
    wheel = ADE_PART_234_CLASSES.index("car's wheel")
    part[4:6, 0:8] = wheel
    Image.fromarray(part).save(root / "annotations_detectron2_part" / "validation" / "ADE_val_1.png")
    cars = [[0, 0, 4, 0, 4, 6, 0, 6], [4, 0, 8, 0, 8, 6, 4, 6]]  # two car instances (polygons)
    (root / "ade20k_instance_val.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "ADE_val_1.jpg", "height": h, "width": w}],
        "annotations": [{"id": k, "image_id": 1, "category_id": 30, "segmentation": [poly], "iscrowd": 0}
                        for k, poly in enumerate(cars)],
        "categories": [{"id": 30, "name": "car"}]}))
    meta = MetadataCatalog.get("ade20k_part_234_val")
    register_dataset("t_ade234", "OVPartsLoader", root=str(root), split_dir="validation",
                     object_classes=meta.thing_classes, part_classes=meta.part_classes, ignore=65535,
                     instances_json=str(root / "ade20k_instance_val.json"))
    left, right = gt_objects(DatasetCatalog.get("t_ade234")[0])
    assert left.class_name == right.class_name == "car" and meta.thing_classes[left.class_id] == "car"
    assert left.part_names == right.part_names == ["wheel"] and left.part_ids == [wheel]
    assert left.parts[0].sum() == right.parts[0].sum() == 8  # each instance keeps its own wheel pixels


def test_part_imagenet_bad_annotations_are_counted_skips_naming_file_and_id(tmp_path):
    """A bad part annotation (polygon [[]], 2 points, unknown category, wrong-size RLE) is a counted
    skip naming the JSON file and the annotation id, the image keeps its other parts; an empty
    polygon is an empty_part skip, and an image whose only part is empty is skipped (not loaded as
    an object with an empty mask); a damaged JSON file is named."""
    ann, img, fin, body = _part_imagenet(tmp_path)
    val = json.loads((ann / "val.json").read_text())
    h, w = 12, 16
    bad = [{"segmentation": [[]]}, {"segmentation": [[0, 0, 4, 4]]}, {"segmentation": [[0, 0, 4, 0, 4, 4]],
                                                                       "category_id": 77},
           {"segmentation": {"size": [5, 5], "counts": "00"}}, {"segmentation": []}]
    for i, extra in enumerate(bad):  # on the dog image, beside its three good annotations
        val["annotations"].append(dict({"id": 100 + i, "image_id": 1, "category_id": 1, "iscrowd": 0}, **extra))
    val["annotations"].append({"id": 200, "image_id": 2, "category_id": 2, "iscrowd": 0, "segmentation": []})
    val["annotations"] = [a for a in val["annotations"] if a["id"] != 4]  # the fish: only an empty part
    (ann / "val.json").write_text(json.dumps(val))
    register_dataset("t_pi_bad", "PartImageNetLoader", annotations_dirname=str(ann), images_dirname=str(img),
                     split="val", merge=True)
    recs = DatasetCatalog.get("t_pi_bad")
    assert [r["image_id"] for r in recs] == ["n02085620_7"]
    g = gt_objects(recs[0])[0]
    assert g.part_names == ["Quadruped Head", "Quadruped Body"] and (g.parts[1] == body).all()
    report = MetadataCatalog.get("t_pi_bad").load_report
    assert report.skipped == {"bad_part_annotation": 4, "empty_part": 2, "bad_annotation": 1}
    files = report.skipped_files["bad_part_annotation"]
    assert files == [f"{ann / 'val.json'} annotation id {i}" for i in (100, 101, 102, 103)]
    assert report.num_skipped == 1 and report.num_loaded == 1
    (ann / "val.json").write_text(json.dumps(val)[:200])
    with pytest.raises(ValueError, match=r"val.json: not valid JSON"):
        DatasetCatalog.get("t_pi_bad")
