import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data.pseudo_labels import (ImagePseudoLabel, ObjectLabel, PartLabel, encode_mask,
                                                  list_pseudo_labels, load_pseudo_label, read_header,
                                                  save_pseudo_label)
from part_distillation.stages.dense_crf import (DenseCRFStage, _cells_of, _nearest_index, _part_rles,
                                                crf_refine)
from part_distillation.stages.proposal_generation import segments_to_parts

from .helpers import EFFNET_CFG

PARAMS = {"GT_PROB": 0.7, "GAUSSIAN_SXY": 3, "GAUSSIAN_COMPAT": 3, "BILATERAL_SXY": 20,
          "BILATERAL_SRGB": 13, "BILATERAL_COMPAT": 10, "NUM_ITERS": 10}


def _scene():
    """Grey background; object = red left half + blue right half; noisy segments."""
    h, w = 48, 64
    img = np.full((h, w, 3), 128, np.uint8)
    obj = np.zeros((h, w), bool)
    obj[8:40, 8:56] = True
    img[8:40, 8:32] = (230, 30, 30)
    img[8:40, 32:56] = (30, 30, 230)
    truth = np.zeros((h, w), np.int32)
    truth[8:40, 8:32], truth[8:40, 32:56] = 1, 2
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    flip = obj & (rng.random((h, w)) < 0.2)
    noisy[flip] = 3 - noisy[flip]
    return img, obj, truth, noisy


def test_crf_cleans_noisy_segments_along_colour_edges():
    img, obj, truth, noisy = _scene()
    out, _ = crf_refine(img, noisy, obj, 3, PARAMS, "keep_parts")
    before = (noisy[obj] == truth[obj]).mean()
    after = (out[obj] == truth[obj]).mean()
    assert before < 0.85 and after > 0.97


def test_keep_parts_keeps_object_pixels_on_parts_official_may_not():
    img, obj, truth, _ = _scene()
    seg = truth.copy()
    img = img.copy()
    img[8:40, 8:14] = 128  # a strip of the object that looks like the background
    keep, moved = crf_refine(img, seg, obj, 3, PARAMS, "keep_parts")
    off, moved_off = crf_refine(img, seg, obj, 3, PARAMS, "official")
    assert (keep[obj] > 0).all() and (keep[~obj] == 0).all()
    assert moved == moved_off > 0 and (off[obj] == 0).sum() == moved_off
    with pytest.raises(ValueError, match="OBJECT_PIXELS"):
        crf_refine(img, seg, obj, 3, PARAMS, "other")


def test_stage_with_two_workers_equals_one(tmp_path):
    img, obj, truth, noisy = _scene()
    s2 = tmp_path / "s2"
    for i in range(3):
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        parts = [PartLabel(noisy == j) for j in (1, 2)]
        save_pseudo_label(str(s2), ImagePseudoLabel(str(tmp_path / f"im{i}.png"), f"im{i}", 48, 64,
                                                    "proposal_generation", [ObjectLabel("thing", obj, parts=parts)],
                                                    config={"INPUT_SIZE": [48, 64]}))
    cfg = setup_cfg(EFFNET_CFG)  # its INPUT size is not used: stage 3 takes stage 2's from the files
    one = DenseCRFStage(cfg, str(tmp_path / "w1")).run(str(s2), workers=1).as_dict()
    two = DenseCRFStage(cfg, str(tmp_path / "w2")).run(str(s2), workers=2).as_dict()
    assert one["processed"] == two["processed"] == 3 and not one["failed"] and not two["failed"]
    for f1, f2 in zip(list_pseudo_labels(str(tmp_path / "w1")), list_pseudo_labels(str(tmp_path / "w2"))):
        a, b = load_pseudo_label(f1), load_pseudo_label(f2)
        assert a.stage == "dcrf"
        lm = a.objects[0].part_label_map()
        assert np.array_equal(lm, b.objects[0].part_label_map())
        assert (lm[obj] == truth[obj]).mean() > 0.97


def test_keep_parts_partitions_the_full_resolution_object_when_the_crf_runs_smaller(tmp_path):
    # a thin, ragged object: at a third of the size nearest-neighbour sampling misses many of its
    # pixels, which must still get a part, while no pixel outside the object may get one
    img, _, _, _ = _scene()
    obj = np.zeros((48, 64), bool)
    for y in range(48):
        obj[y, max(0, y - 2): y + 1] = True
        obj[y, 40 + y % 5] = True
    seg = np.where(obj, 1 + (np.arange(64)[None, :] >= 32), 0).astype(np.int32)
    Image.fromarray(img).save(tmp_path / "im.png")
    parts = [PartLabel(seg == j) for j in (1, 2)]
    save_pseudo_label(str(tmp_path / "s2"), ImagePseudoLabel(str(tmp_path / "im.png"), "im", 48, 64,
                                                             "proposal_generation", [ObjectLabel("thing", obj, parts=parts)],
                                                             config={"INPUT_SIZE": [16, 22]}))
    cfg = setup_cfg(EFFNET_CFG)
    out = str(tmp_path / "s3")
    assert DenseCRFStage(cfg, out).run(str(tmp_path / "s2")).processed == 1
    lm = load_pseudo_label(list_pseudo_labels(out)[0]).objects[0].part_label_map()
    assert (lm[obj] > 0).all() and (lm[~obj] == 0).all()
    assert set(np.unique(lm[obj])) == {1, 2}


@pytest.mark.parametrize("full_shape", [(97, 130), (31, 40), (64, 64)])  # larger, smaller, equal to the grid
def test_cells_and_parts_equal_the_full_resolution_computation(full_shape):
    """The block-wise ``_cells_of`` and the windowed ``_part_rles`` give what building the
    (H, W) maps would: nonzero-pixel cells, and ``segments_to_parts`` of the nearest-upsampled
    map (cut to the object for keep_parts), RLE for RLE."""
    rng = np.random.default_rng(1)
    size = (48, 64)
    obj = np.zeros(full_shape, bool)
    obj[full_shape[0] // 5: full_shape[0] * 3 // 4, full_shape[1] // 3:] = True
    obj &= rng.random(full_shape) < 0.9
    cells = np.zeros(size, bool)
    ys, xs = np.nonzero(obj)
    cells[_nearest_index(size[0], full_shape[0])[ys], _nearest_index(size[1], full_shape[1])[xs]] = True
    assert np.array_equal(_cells_of(obj, size), cells)
    box = (slice(5, 40), slice(20, 64))
    refined = np.zeros(size, np.uint8)
    refined[box] = rng.integers(0, 6, (35, 44))
    refined[refined == 4] = 0  # an id the CRF left out
    for keep in (True, False):
        full = refined[_nearest_index(size[0], full_shape[0])[:, None], _nearest_index(size[1], full_shape[1])]
        if keep:
            full[~obj] = 0
        expected = [encode_mask(p.mask) for p in segments_to_parts(full)]
        assert _part_rles(refined, box, obj, keep) == expected


PARAMS_JSON = json.dumps(PARAMS)
_CRF_PEAK_SCRIPT = """
import sys, warnings
warnings.filterwarnings("ignore")
import json
from part_distillation.stages.dense_crf import CRFImageWorker
from part_distillation.utils.io import atomic_write_json

def mib(key):  # a /proc/self/status field in MiB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key + ":"))

worker = CRFImageWorker(json.loads(sys.argv[1]), "keep_parts")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS (ru_maxrss would carry pytest's own peak across exec)
before = mib("VmRSS")
label, _ = worker(sys.argv[2])
atomic_write_json(sys.argv[3], label.to_dict())
print(mib("VmHWM") - before)  # MiB of peak resident memory above that before the call
"""


def test_worker_memory_is_bounded_by_a_few_full_resolution_masks_not_all_of_them(tmp_path):
    """48 MP JPEG (6000 x 8000), two rectangular objects of 4 parts (24 and 5.4 MP); the call
    and the write of its output, as one stage-3 worker does them. One 48 MP bool or uint8 mask is
    46 MiB. The worker decodes the image at reduced scale and holds one object mask, one part
    mask and one output buffer at full resolution at a time: 172 MiB of peak resident memory
    above that before the call when written; the code before (full-resolution image, every
    input mask decoded, every output part kept until the write) took 1,332 MiB on this scene.
    The bound is 400 MiB."""
    from PIL import ImageDraw

    h, w = 6000, 8000
    img = Image.new("RGB", (w, h), (120, 120, 120))
    draw = ImageDraw.Draw(img)
    boxes = [(500, 1000, 5500, 5800), (1000, 6000, 4000, 7800)]  # y0, x0, y1, x1
    objects = []
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
        quads = [(y0, x0, ym, xm), (y0, xm, ym, x1), (ym, x0, y1, xm), (ym, xm, y1, x1)]
        for j, (a, b, c, d) in enumerate(quads):
            draw.rectangle((b, a, d - 1, c - 1), fill=(40 + 50 * j, 200 - 40 * k, 30 + 60 * j))
        rles = []
        for a, b, c, d in [(y0, x0, y1, x1)] + quads:  # masks encoded one at a time, never all decoded
            m = np.zeros((h, w), bool)
            m[a:c, b:d] = True
            rles.append(encode_mask(m))
        objects.append(ObjectLabel("thing", rles[0], "n01", bbox=[x0, y0, x1, y1],
                                   parts=[PartLabel(r) for r in rles[1:]]))
    img.save(tmp_path / "big.jpg", quality=90)
    del img, draw
    s2 = save_pseudo_label(str(tmp_path / "s2"), ImagePseudoLabel(
        str(tmp_path / "big.jpg"), "big", h, w, "proposal_generation", objects, config={"INPUT_SIZE": [384, 640]}))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = str(tmp_path / "out" / "big.json")
    out = subprocess.run([sys.executable, "-c", _CRF_PEAK_SCRIPT, PARAMS_JSON, s2, out_path], capture_output=True,
                         text=True, cwd=root, env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 400, out.stdout
    header = read_header(out_path, "dcrf")
    assert [len(p) for p in header.part_areas] == [4, 4]
    assert [sum(p) for p in header.part_areas] == header.object_areas  # the parts still partition each object
