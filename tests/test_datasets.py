import os
import shutil

import numpy as np
import pytest
from PIL import Image

from part_distillation.data import resolve_dataset
from part_distillation.data.image_folder import load_image_folder
from part_distillation.data.images import ImageReadError, read_image_rgb
from part_distillation.data.pascal_part import load_pascal_part, load_part_annotation, merge_part_name
from part_distillation.data.pseudo_labels import decode_mask

from .helpers import ADE_SUBSET, PASCAL_EXAMPLES, needs_shared


@needs_shared
def test_pascal_part_examples_counts_and_merge():
    raw = load_pascal_part(PASCAL_EXAMPLES, merge=False)
    assert len(raw) == 18
    assert sum(len(r["objects"]) for r in raw) == 53
    assert sum(len(o["parts"]) for r in raw for o in r["objects"]) == 398
    merged = resolve_dataset("pascal_part_examples")  # registered name, merged taxonomy
    names = {p["name"] for r in merged for o in r["objects"] for p in o["parts"]}
    assert {"leg", "arm", "eye", "ear", "wheel"} <= names
    assert not any(n.startswith(("l", "r")) and n[1:] in {"leg", "eye", "ear"} for n in names)
    assert not any(n.startswith("wheel_") for n in names)
    # merging unites masks: a merged part covers exactly the union of its raw parts
    r0 = next(r for r in raw if any(p["raw_name"] in ("lear", "rear") for o in r["objects"] for p in o["parts"]))
    m0 = next(r for r in merged if r["image_id"] == r0["image_id"])
    for o_raw, o_m in zip(r0["objects"], m0["objects"]):
        ears = [decode_mask(p["mask"]) for p in o_raw["parts"] if p["raw_name"] in ("lear", "rear")]
        if len(ears) == 2:
            ear = next(decode_mask(p["mask"]) for p in o_m["parts"] if p["name"] == "ear")
            assert (ear == (ears[0] | ears[1])).all()
            break
    else:
        pytest.fail("no object with both ears found")
    rec = merged[0]
    assert decode_mask(rec["objects"][0]["mask"]).shape == (rec["height"], rec["width"])


@needs_shared
def test_ade_subset_counts_and_unknown_names_pass_through():
    recs = resolve_dataset("ade20k_part_subset")
    assert len(recs) == 248
    assert sum(len(r["objects"]) for r in recs) == 691
    assert sum(len(o["parts"]) for r in recs for o in r["objects"]) == 1929
    assert merge_part_name("door") == "door" and merge_part_name("wheel") == "wheel"


def test_merge_map():
    assert merge_part_name("lleg") == merge_part_name("rleg") == "leg"
    assert merge_part_name("lfuleg") == "leg" and merge_part_name("lfho") == "hoof"
    assert merge_part_name("wheel_3") == "wheel" and merge_part_name("window_12") == "window"
    assert merge_part_name("seat_cushion") == "seat_cushion"  # unknown (ADE) names unchanged
    assert merge_part_name("arm_2") == "arm_2"  # numbering is only merged for known repeated parts


def test_unknown_dataset_lists_registered_names():
    with pytest.raises(KeyError, match="pascal_part_examples"):
        resolve_dataset("no_such_dataset")


@needs_shared
def test_missing_annotation_and_bad_mat(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_part_annotation(str(tmp_path / "x.mat"))
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="bad.mat"):
        load_part_annotation(str(bad))
    with pytest.raises(FileNotFoundError, match="missing folder .*JPEGImages"):
        load_pascal_part(str(tmp_path))
    # an annotation whose image is missing is skipped (counted in the log), not a crash
    root = tmp_path / "pp"
    shutil.copytree(PASCAL_EXAMPLES, root)
    first = sorted(os.listdir(root / "JPEGImages"))[0]
    os.remove(root / "JPEGImages" / first)
    assert len(load_pascal_part(str(root))) == 17


def _save(path, mode, size=(20, 16)):
    Image.new(mode, size, color=(1 if mode in ("L", "P") else (10, 20, 30, 40)[: len(mode)] if mode != "CMYK" else (0, 0, 0, 0))).save(path)


def test_image_modes_become_rgb_and_bad_files_raise(tmp_path):
    for mode, ext in [("L", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "png")]:
        p = tmp_path / f"im_{mode}.{ext}"
        _save(p, mode)
        img = read_image_rgb(str(p))
        assert img.shape == (16, 20, 3) and img.dtype == np.uint8
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="0-byte"):
        read_image_rgb(str(empty))
    corrupt = tmp_path / "corrupt.jpg"
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        read_image_rgb(str(corrupt))
    with pytest.raises(ImageReadError, match="no such"):
        read_image_rgb(str(tmp_path / "missing.jpg"))


def test_image_folder_with_and_without_masks(tmp_path):
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    Image.new("RGB", (30, 20), (0, 0, 0)).save(imgs / "a.jpg")
    Image.new("RGB", (30, 20), (0, 0, 0)).save(imgs / "b.png")
    (imgs / "broken.jpg").write_bytes(b"")
    (imgs / "notes.txt").write_text("ignored")
    inst = np.zeros((20, 30), np.uint8)
    inst[2:8, 2:9] = 1
    inst[10:18, 12:25] = 2
    Image.fromarray(inst).save(masks / "a.png")
    whole = load_image_folder(str(imgs))
    assert [r["image_id"] for r in whole] == ["a", "b"]  # broken file skipped
    assert decode_mask(whole[0]["objects"][0]["mask"]).all()
    with_masks = load_image_folder(str(imgs), str(masks), "toy")
    assert [r["image_id"] for r in with_masks] == ["a"]  # b has no mask: skipped
    objs = with_masks[0]["objects"]
    assert len(objs) == 2 and objs[0]["class_name"] == "toy"
    assert decode_mask(objs[1]["mask"]).sum() == 8 * 13
