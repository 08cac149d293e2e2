"""The official unsupervised evaluation on hand-built predictions with known results."""
import math

import numpy as np
import pytest

from part_distillation.data.ground_truth import GTObject
from part_distillation.evaluation.unsupervised import (
    UnsupervisedPartEvaluator, UnsupervisedPartMetric, part_vocabulary)

VOCAB = ["head", "body", "tail"]  # ids 0, 1, 2; 2 object classes -> official A-metrics drop id 2


def row(*pixels, width):
    m = np.zeros((1, width), bool)
    m[0, list(pixels)] = True
    return m


def masks(*rows):
    return np.stack(rows)


def add_all(metric):
    # cat: 6 px, object = 0..4 (pixel 5 outside), head {0,1}, body {2,3}, tail {4}
    w = 6
    obj = row(0, 1, 2, 3, 4, width=w)
    gt = masks(row(0, 1, width=w), row(2, 3, width=w), row(4, width=w))
    names = ["head", "body", "tail"]
    # image 1: label 0 = head; label 1 = body + tail + pixel 5 (outside the object)
    metric.add("cat", masks(row(0, 1, width=w), row(2, 3, 4, 5, width=w)), [0, 1], gt, names, obj)
    # image 2: label 0 = {0,1,2}; label 1 = {3,4}; label 2 on pixel 5 only (no GT part overlap)
    metric.add("cat", masks(row(0, 1, 2, width=w), row(3, 4, width=w), row(5, width=w)),
               [0, 1, 2], gt, names, obj)
    # dog: 4 px, all object, head {0,1}, body {2,3}; one label over everything
    gt = masks(row(0, 1, width=4), row(2, 3, width=4))
    metric.add_label_map("dog", np.array([[1, 1, 1, 1]]), gt, ["head", "body"], np.ones((1, 4), bool))


def test_official_protocol_hand_values():
    m = UnsupervisedPartMetric(VOCAB, num_object_classes=2, protocol="official")
    add_all(m)
    # match pass: label 2 (pixel 5 only, IoU 0 with every GT part) is filtered; its zero row maps
    # to part 0 (official K rows); cat L0 = (4, 1, 0, 0), L1 = (0, 3, 2, 1)
    assert m.matching()["cat"].tolist() == [0, 1, 0]
    assert m.matching()["dog"].tolist() == [0, 0, 0]  # (2, 2, 0, 0) -> head (first maximum); K = 3
    s = m.summarize()
    # evaluate pass: image 2's label 2 is mapped to head and merged with label 0 BEFORE the filter:
    # the union {0, 1, 2, 5} has IoU 2/4 with head and survives, so pixel 5 counts as head
    assert m.num_filtered_segments == 0
    cat = {"head": 100 * 4 / 6, "body": 100 * 3 / 7, "tail": 0.0}  # head: TP 4, GT 4, Pred 6
    dog = {"head": 50.0, "body": 0.0}
    assert s["per_class"]["cat"] == pytest.approx(cat)
    assert s["per_class"]["dog"] == pytest.approx(dog)
    assert s["C-mIoU"] == pytest.approx((sum(cat.values()) / 3 + 25.0) / 2)
    assert s["class_mIoU"] == pytest.approx({"cat": sum(cat.values()) / 3, "dog": 25.0})
    # official quirk: tail (id 2 >= 2 object classes) is left out of the A-metrics
    assert s["A-mIoU"] == pytest.approx((cat["head"] + cat["body"] + 50 + 0) / 4)
    assert s["C-mACC"] == pytest.approx(((100 + 75 + 0) / 3 + (100 + 0) / 2) / 2)
    # IoPred: cat head 4/6, body 3/6 (tail: no prediction); dog head 2/4
    assert s["C-mIoPred"] == pytest.approx(((400 / 6 + 50) / 2 + 50) / 2)
    assert s["A-mIoPred"] == pytest.approx((400 / 6 + 50 + 50) / 3)
    # the filtered-per-cluster reading keeps pixel 5 out
    per_cluster = UnsupervisedPartMetric(VOCAB, 2, "official", gt_filter="per_cluster")
    add_all(per_cluster)
    assert per_cluster.summarize()["per_class"]["cat"]["head"] == pytest.approx(80.0)
    assert per_cluster.num_filtered_segments == 1


def test_official_nan_class_mean():
    m = UnsupervisedPartMetric(VOCAB, 2, "official")
    gt = masks(row(0, 1, width=4), row(2, 3, width=4))
    m.add("dog", masks(row(0, 1, width=4)), [0], gt, ["head", "body"])
    m.add("cat", np.zeros((0, 1, 4), bool), [], gt, ["head", "body"])  # no prediction at all
    s = m.summarize()
    assert math.isnan(s["C-mIoPred"]) and s["nan_classes"]["C-mIoPred"] == ["cat"]
    clean = UnsupervisedPartMetric(VOCAB, 2, "clean")
    clean.add("dog", masks(row(0, 1, width=4)), [0], gt, ["head", "body"])
    clean.add("cat", np.zeros((0, 1, 4), bool), [], gt, ["head", "body"])
    s = clean.summarize()
    assert s["C-mIoPred"] == pytest.approx(100.0) and s["nan_classes"]["C-mIoPred"] == ["cat"]


def test_clean_protocol_hand_values():
    m = UnsupervisedPartMetric(VOCAB, num_object_classes=2, protocol="clean")
    add_all(m)
    # in-object pixels only: L0 = (4, 1, 0), L1 = (0, 3, 2); label 2 has no pixel -> background
    assert m.matching()["cat"].tolist() == [0, 1, 3]
    s = m.summarize()
    cat = {"head": 80.0, "body": 50.0, "tail": 0.0}  # body: TP 3, GT 4, Pred 5
    assert s["per_class"]["cat"] == pytest.approx(cat)
    assert s["C-mIoU"] == pytest.approx((130 / 3 + 25) / 2)
    assert s["A-mIoU"] == pytest.approx((80 + 50 + 0 + 50 + 0) / 5)  # every (class, part) pair


def test_separate_match_split_and_merge():
    match = UnsupervisedPartMetric(VOCAB, 2, "official")
    w = 4
    gt = masks(row(0, 1, width=w), row(2, 3, width=w))
    # match split: label 0 lies on body, label 1 on head
    match.add("dog", masks(row(2, 3, width=w), row(0, 1, width=w)), [0, 1], gt, ["head", "body"])
    ev = UnsupervisedPartMetric(VOCAB, 2, "official")
    ev.add("dog", masks(row(0, 1, width=w), row(2, 3, width=w)), [0, 1], gt, ["head", "body"])
    assert ev.summarize()["C-mIoU"] == pytest.approx(100.0)  # own matching
    assert ev.summarize(match.matching())["C-mIoU"] == pytest.approx(0.0)  # swapped by the match split
    other = UnsupervisedPartMetric(VOCAB, 2, "official")
    other.add("dog", masks(row(0, 1, width=w)), [3], gt, ["head", "body"])
    ev.merge(other)
    assert len(ev.objects) == 2
    # official: K rows; label 2 never seen maps to part 0 like label 3 (head)
    assert ev.matching()["dog"].tolist() == [0, 1, 0, 0]
    clean = UnsupervisedPartMetric(VOCAB, 2, "clean")
    clean.add("dog", masks(row(0, 1, width=w)), [3], gt, ["head", "body"])
    assert clean.confusion["dog"].shape == (5, 4)
    assert clean.matching()["dog"].tolist() == [3, 3, 3, 0]  # unseen labels 0-2: background
    with pytest.raises(ValueError):
        ev.merge(UnsupervisedPartMetric(VOCAB, 2, "clean"))


def test_bad_inputs_and_empty():
    m = UnsupervisedPartMetric(VOCAB, 2)
    gt = masks(row(0, width=2))
    with pytest.raises(ValueError, match="vocabulary"):
        m.add("cat", masks(row(0, width=2)), [0], gt, ["wing"])
    with pytest.raises(ValueError):
        m.add("cat", masks(row(0, width=2)), [-1], gt, ["head"])
    with pytest.raises(ValueError):
        UnsupervisedPartMetric(VOCAB, 2, protocol="paper")
    assert math.isnan(m.summarize()["C-mIoU"])


def test_evaluator_round_trip_both_protocols():
    ev = UnsupervisedPartEvaluator(VOCAB, 2, distributed=False)
    gt = masks(row(0, 1, width=4), row(2, 3, width=4))
    objects = [GTObject("dog", "dog", 0, np.ones((1, 4), bool), gt, ["head", "body"],
                        [VOCAB.index("head"), VOCAB.index("body")]) for _ in range(2)]
    outputs = [{"part_seg": [np.array([[2, 2, 1, 1]]), None]}]
    ev.process([{"objects": objects}], outputs)
    res = ev.evaluate()
    # label 1 -> head, label 0 -> body; the unlabelled second dog halves the recall
    for p in ("official", "clean"):
        assert res[f"unsupervised_{p}"]["C-mIoU"] == pytest.approx(50.0)
        assert res[f"unsupervised_{p}"]["IoU-dog/head"] == pytest.approx(50.0)
        assert res[f"unsupervised_{p}"]["mIoU-dog"] == pytest.approx(50.0)
    # the same predictions mapped by a match split where the labels are swapped
    swapped = UnsupervisedPartEvaluator(VOCAB, 2, distributed=False, matching={
        p: {"dog": m[::-1]} for p, m in ((p, ev.matchings[p]["dog"]) for p in ev.matchings)})
    swapped.process([{"objects": objects}], outputs)
    assert swapped.evaluate()["unsupervised_official"]["C-mIoU"] == pytest.approx(0.0)


def test_part_vocabulary():
    recs = [{"objects": [{"parts": [{"name": "leg"}, {"name": "head"}]}, {"parts": []}]}]
    assert part_vocabulary(recs) == ["head", "leg"]


def test_pseudo_label_folder_both_protocols(tmp_path):
    from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel,
                                                      encode_mask, save_pseudo_label)
    from part_distillation.stages.evaluate import evaluate_pseudo_labels

    obj = np.zeros((4, 6), bool)
    obj[:, :4] = True
    head, body = obj.copy(), obj.copy()
    head[:, 2:] = False
    body[:, :2] = False
    spill = body.copy()
    spill[:, 4] = True  # body label spills outside the object: official counts it, clean not
    records = [{"file_name": "x.jpg", "image_id": f"im{i}", "height": 4, "width": 6,
                "objects": [{"class_name": "cat", "class_code": "cat", "class_id": 0, "mask": encode_mask(obj),
                "parts": [{"name": "head", "mask": encode_mask(head)},
                          {"name": "body", "mask": encode_mask(body)}]}]} for i in range(2)]
    for i in range(2):
        parts = [PartLabel(head, 1, 0.9), PartLabel(spill if i == 0 else body, 0, 0.8)]
        save_pseudo_label(str(tmp_path), ImagePseudoLabel(
            "x.jpg", f"im{i}", 4, 6, "part_ranking", [ObjectLabel("cat", obj, "cat", parts=parts)]))
    res = evaluate_pseudo_labels(str(tmp_path), records)["unsupervised"]
    assert res["clean"]["C-mIoU"] == pytest.approx(100.0)
    # body: TP 16, GT 16, Pred 20 -> 80; head 100
    assert res["official"]["per_class"]["cat"] == pytest.approx({"head": 100.0, "body": 80.0})


def test_evaluation_vocabulary_uses_metadata_only_when_it_names_every_gt_part():
    from part_distillation.evaluation.unsupervised import evaluation_vocabulary

    recs = [{"objects": [{"class_name": "car", "parts": [{"name": "door"}, {"name": "wheel"}]}]},
            {"objects": [{"class_name": "person", "parts": [{"name": "head"}]}]}]
    # Pascal-like: the official vocabulary names every GT part -> its ids (order) are kept
    official = ["wheel", "head", "door", "tail"]
    assert evaluation_vocabulary(official, ["car", "person", "dog"], recs) == (official, 3)
    # ADE20K-like: "object's part" metadata names do not match the bare GT names -> the records'
    assert evaluation_vocabulary(["car's door", "car's wheel"], None, recs) == (["door", "head", "wheel"], 2)
    assert evaluation_vocabulary(None, None, [{"objects": []}]) == ([""], 0)
