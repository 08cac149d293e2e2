import json
import os
import re
import stat

import numpy as np
import pytest

from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, PseudoLabelError,
                                                  decode_mask, encode_mask, is_complete, list_pseudo_labels,
                                                  load_pseudo_label, mask_area, mask_to_box, read_header,
                                                  save_pseudo_label)
from part_distillation.utils.io import atomic_write_json


def _label(stage="proposal_generation"):
    obj = np.zeros((6, 8), bool)
    obj[1:5, 2:7] = True
    p1 = obj.copy()
    p1[:, 4:] = False
    return ImagePseudoLabel("/x/img.jpg", "img", 6, 8, stage,
                            [ObjectLabel("cat", obj, "n02121808", 0.9,
                                         parts=[PartLabel(p1, None, 1.0), PartLabel(obj & ~p1, 3, 0.5)])],
                            [{"index": 1, "reason": "empty object mask"}], {"K": 4})


def test_round_trip_keeps_masks_boxes_labels(tmp_path):
    path = save_pseudo_label(str(tmp_path), _label())
    back = load_pseudo_label(path)
    o = back.objects[0]
    assert o.bbox == [2.0, 1.0, 7.0, 5.0]  # XYXY, exclusive max
    assert o.mask.sum() == 20 and o.parts[0].mask.sum() == 8 and o.parts[1].mask.sum() == 12
    assert [p.label for p in o.parts] == [None, 3]
    assert o.class_code == "n02121808" and back.skipped_objects[0]["reason"] == "empty object mask"
    lm = o.part_label_map()
    assert set(np.unique(lm)) == {0, 1, 2} and (lm > 0).sum() == 20
    assert list_pseudo_labels(str(tmp_path)) == [path]  # no temp files left behind


def test_part_features_round_trip_exactly_and_corrupt_ones_name_the_file(tmp_path):
    lab = _label("proposal_learning")
    feat = np.array([0.1, -2.5e-8, 3.0e7, np.float32(1) / 3], np.float32)
    lab.objects[0].parts[1].feature = feat
    path = save_pseudo_label(str(tmp_path), lab)
    d = json.load(open(path))
    assert "feature" not in d["objects"][0]["parts"][0]  # parts without one carry no key
    back = load_pseudo_label(path, "proposal_learning").objects[0].parts
    assert back[0].feature is None
    assert back[1].feature.dtype == np.float32 and back[1].feature.tobytes() == feat.tobytes()
    # another dtype; not base64; 3 bytes (not a whole float32)
    for bad in ({"dtype": "float16", "b64": "AAAA"}, {"dtype": "float32", "b64": "AAA"},
                {"dtype": "float32", "b64": "AAAA"}):
        d["objects"][0]["parts"][1]["feature"] = bad
        atomic_write_json(path, d)
        with pytest.raises(PseudoLabelError, match="img.json"):
            load_pseudo_label(path)


def test_truncated_and_foreign_files_raise_naming_file(tmp_path):
    path = save_pseudo_label(str(tmp_path), _label())
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(PseudoLabelError, match="img.json.*corrupt or truncated"):
        load_pseudo_label(path)
    assert not is_complete(path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(PseudoLabelError, match="other.json.*not a pseudo-label"):
        load_pseudo_label(str(other))
    with pytest.raises(PseudoLabelError, match="no such"):
        load_pseudo_label(str(tmp_path / "missing.json"))


def test_wrong_mask_size_is_rejected(tmp_path):
    d = _label().to_dict()
    d["image"]["height"] = 7
    p = tmp_path / "img.json"
    p.write_text(json.dumps(d))
    with pytest.raises(PseudoLabelError, match="!= image size"):
        load_pseudo_label(str(p))


def test_undecoded_masks_stay_rle_and_write_back_the_same_file(tmp_path):
    label = _label()
    label.class_code = ""  # the folder then comes from the largest object's area
    path = save_pseudo_label(str(tmp_path), label)
    rle = load_pseudo_label(path, decode=False)
    o = rle.objects[0]
    assert isinstance(o.mask, dict) and isinstance(o.parts[1].mask["counts"], str)
    assert np.array_equal(decode_mask(o.parts[1].mask), label.objects[0].parts[1].mask)
    assert mask_area(o.mask) == 20 and mask_to_box(o.mask) == mask_to_box(label.objects[0].mask) == [2.0, 1.0, 7.0, 5.0]
    assert mask_to_box(encode_mask(np.zeros((3, 4), bool))) == [0.0, 0.0, 0.0, 0.0]
    again = save_pseudo_label(str(tmp_path / "again"), rle)
    assert open(again, "rb").read() == open(path, "rb").read()
    d = rle.to_dict()
    d["image"]["height"] = 7
    with pytest.raises(PseudoLabelError, match=r"object mask \(6, 8\) != image size \(7, 8\)"):
        ImagePseudoLabel.from_dict(d, decode=False)


def test_is_complete_checks_stage(tmp_path):
    path = save_pseudo_label(str(tmp_path), _label("object_masks"))
    assert is_complete(path) and is_complete(path, "object_masks")
    assert not is_complete(path, "dcrf")
    assert not is_complete(os.path.join(str(tmp_path), "nope.json"))


def test_outputs_get_umask_permissions_not_temp_file_ones(tmp_path):
    path = str(tmp_path / "a.json")
    atomic_write_json(path, {"x": 1})
    open(tmp_path / "plain.json", "w").close()
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain.json").st_mode)


def test_layout_class_id_header_and_object_indices(tmp_path):
    label = _label()
    label.objects[0].class_id = 7
    path = save_pseudo_label(str(tmp_path), label)
    assert path == os.path.join(str(tmp_path), "n02121808", "img.json")  # <class_code>/<image_id>.json
    back = load_pseudo_label(path, "proposal_generation")
    assert back.objects[0].class_id == 7 and back.class_code == "n02121808"
    assert back.object_indices() == [0]  # stage 1 dropped object 1 (listed), object 0 kept
    header = read_header(path, "proposal_generation")  # no mask decoded
    assert header.object_areas == [20.0] and header.part_areas == [[8.0, 12.0]]
    assert header.class_code == "n02121808" and (header.height, header.width) == (6, 8)
    moved = tmp_path / "n02121808" / "other.json"
    os.rename(path, moved)  # a valid file under another image's name is not trusted
    with pytest.raises(PseudoLabelError, match="holds image id 'img', not the file's name 'other'"):
        read_header(str(moved))
    assert not is_complete(str(moved))


def test_non_integer_part_labels_are_refused_not_truncated(tmp_path):
    """A stage-5 label 2.7, "3" or true would become part 2 / 3 / 1 of stage 6 without a word."""
    path = save_pseudo_label(str(tmp_path), _label("part_ranking"))
    d = json.load(open(path))
    for bad in (2.7, "3", True, 3.0, [1]):
        d["objects"][0]["parts"][1]["label"] = bad
        atomic_write_json(path, d)
        with pytest.raises(PseudoLabelError, match=rf"img.json: object 0 part 1: part label {re.escape(repr(bad))} is not an integer"):
            load_pseudo_label(path)
        with pytest.raises(PseudoLabelError, match="not an integer"):
            load_pseudo_label(path, decode=False)
    d["objects"][0]["parts"][1]["label"] = 3
    atomic_write_json(path, d)
    assert [p.label for p in load_pseudo_label(path).objects[0].parts] == [None, 3]
