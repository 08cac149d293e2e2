"""The worked examples of docs/EXTENDING.md run as written and do what the text says."""
import os
import re

import numpy as np
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, list_pseudo_labels,
                                                  load_pseudo_label, save_pseudo_label)

from .helpers import EFFNET_CFG, REPO


def _examples():
    text = open(os.path.join(REPO, "docs", "EXTENDING.md")).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_extending_examples_run(tmp_path):
    stage_code, labeler_code, grouper_code, dataset_code = _examples()
    cfg = setup_cfg(EFFNET_CFG, ["PROPOSAL_GENERATION.GROUPING", "halves",
                                 "PROPOSAL_GENERATION.OBJECT_MASK_TYPE", "centre_box"])
    mask = np.zeros((20, 30), bool)
    mask[4:16, 6:26] = True

    # grouper: left / right halves of the object
    ns = {}
    exec(grouper_code, ns)
    from part_distillation.stages.build import build_segmenter
    (seg,) = build_segmenter(cfg)(np.zeros((20, 30, 3), np.uint8), [mask], "x")
    assert set(np.unique(seg[mask])) == {1, 2} and (seg[:, :16][mask[:, :16]] == 1).all()

    # labeler: one centred box
    exec(labeler_code, {})
    from part_distillation.labelers import build_labeler
    (obj,) = build_labeler(cfg)(None, {"file_name": "x.jpg", "image_id": "x", "height": 20, "width": 40})
    assert obj.mask.sum() == 10 * 20 and obj.mask[5:15, 10:30].all()

    # stage: keeps the largest part of each object
    exec(stage_code, {})
    from part_distillation.stages.build import build_stage
    small, big = np.zeros_like(mask), mask.copy()
    small[4:6, 6:8] = True
    big[4:6, 6:8] = False
    folder = str(tmp_path / "dcrf")
    save_pseudo_label(folder, ImagePseudoLabel("x.jpg", "x", 20, 30, "dcrf",
                                               [ObjectLabel("thing", mask, parts=[PartLabel(small), PartLabel(big)])]))
    summary = build_stage("largest_part", cfg, str(tmp_path / "out")).run(folder)
    assert summary.processed == 1
    (out,) = [load_pseudo_label(p, "largest_part") for p in list_pseudo_labels(str(tmp_path / "out"))]
    assert len(out.objects[0].parts) == 1 and (out.objects[0].parts[0].mask == big).all()

    # dataset: every jpg of a folder, an unreadable one counted as a skip
    root = tmp_path / "my_birds"
    root.mkdir()
    Image.new("RGB", (32, 24)).save(root / "a.jpg")
    (root / "b.jpg").write_bytes(b"not a jpeg")
    ns = {}
    exec(dataset_code.replace('"datasets/my_birds"', repr(str(root))), ns)
    assert [(r["image_id"], r["width"], r["height"]) for r in ns["records"]] == [("a", 32, 24)]
    from detectron2.data import MetadataCatalog
    assert MetadataCatalog.get("my_birds").load_report.skipped == {"unreadable_image": 1}
