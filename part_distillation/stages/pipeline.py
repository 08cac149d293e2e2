"""The main job of stages 1-3: object masks -> proposal generation -> dense-CRF -> evaluation + pictures.

``run_pipeline`` runs every *variant* (a name + config overrides) on the same stage-1 object masks,
each with its own stage-2/3 folders, evaluates each stage-2 and stage-3 output with the same
evaluator, and writes ``metrics.json``, ``metrics.md`` (a table) and collages. Every step resumes:
rerunning after a kill redoes only unfinished images.

Output layout::

    <out>/object_masks/<class_dir>/<id>.json                    stage 1
    <out>/<variant>/proposal_generation/<class_dir>/<id>.json    stage 2
    <out>/<variant>/dcrf[_official]/<class_dir>/<id>.json        stage 3 (keep_parts / official CRF)
    <out>/metrics.json, <out>/metrics.md
    <out>/collages/<id>.png  (or VIS_OUTPUT_DIR/<id>.png when set)

With ``learned_cfgs`` (``tools/run_part_pipeline.py --stages 1-6``) stages 4-6 follow on the first
variant's stage-3 labels (:mod:`part_distillation.stages.learned_stages`: ``<out>/proposal_learning``,
``<out>/part_ranking``, ``<out>/part_distillation``), are evaluated like stages 2-3 (stages 5-6
also with C-/A-mIoU and :func:`~part_distillation.stages.evaluate.label_consistency`), summarised
in a second table of ``metrics.md`` and drawn per object class in ``<collages>/labels/<class>.png``.
"""
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..config import plain_config, with_overrides
from ..data.datasets import (check_load_skips, dataset_name, format_load_skips, has_part_annotations,
                             resolve_dataset)
from ..evaluation.unsupervised import part_vocabulary
from ..data.images import ImageReadError, read_image_rgb
from ..data.pseudo_labels import class_dir, load_pseudo_label, pseudo_label_path
from ..utils.io import atomic_write, atomic_write_json
from ..visualization import save_collage
from .dense_crf import DenseCRFStage
from .evaluate import (describe_scoring, evaluate_pseudo_labels, format_size_table, format_stage_table,
                       format_table, gt_objects, label_agreement, label_consistency, label_ids,
                       match_objects)
from .learned_stages import STAGE4, STAGE5, STAGE6, run_learned_stages
from .object_masks import ObjectMasksStage, record_class_code
from .proposal_generation import ProposalGenerationStage

logger = logging.getLogger(__name__)

STAGE2, STAGE3 = ProposalGenerationStage.NAME, DenseCRFStage.NAME

# name -> (config overrides, also run the official CRF mode)
DEFAULT_VARIANT = {"pretrained": ([], True)}
OFFICIAL_VARIANTS = {
    "pretrained_dot_official": (["PROPOSAL_GENERATION.DISTANCE_METRIC", "dot",
                                 "PROPOSAL_GENERATION.FEATURE_NORMALIZE", False], False),
    "pretrained_l2_unnormalized": (["PROPOSAL_GENERATION.DISTANCE_METRIC", "l2",
                                    "PROPOSAL_GENERATION.FEATURE_NORMALIZE", False], False),
    "pretrained_l2_normalized": (["PROPOSAL_GENERATION.DISTANCE_METRIC", "l2",
                                  "PROPOSAL_GENERATION.FEATURE_NORMALIZE", True], False),
}
BASELINE_VARIANTS = {
    "random_init": (["MODEL.EFFICIENTNET.PRETRAINED", False, "MODEL.WEIGHTS", ""], False),
    "rgbxy_kmeans": (["PROPOSAL_GENERATION.GROUPING", "kmeans_rgbxy",
                      "PROPOSAL_GENERATION.DISTANCE_METRIC", "l2", "PROPOSAL_GENERATION.POSITION_WEIGHT", 0.0],
                     False),
    "grid_2x2": (["PROPOSAL_GENERATION.GROUPING", "grid"], False),
}


def run_pipeline(cfg, dataset: str, output_dir: str, variants: Dict[str, Tuple[list, bool]] = None,
                 num_collages: int = 8, max_images: Optional[int] = None, config_file: str = "",
                 learned_cfgs: Optional[Dict[str, object]] = None, vocabulary: str = "",
                 accept_skips: bool = False) -> dict:
    """Run stages 1-3 for each variant on ``dataset`` (registered name or folder) and evaluate;
    with ``learned_cfgs`` (see :func:`~part_distillation.stages.learned_stages.run_learned_stages`)
    also stages 4-6 on the first variant's labels (``metrics["stages"]``: the summary rows).

    ``config_file`` (the YAML ``cfg`` came from) is recorded in ``metrics.json``; so is ``dataset``,
    also as ``PROPOSAL_GENERATION.DATASET_NAME`` of the recorded (and used) config.
    Returns the metrics dict also written to ``<output_dir>/metrics.json`` (empty ``results`` when
    the dataset has no part annotations); ``metrics.md`` states what is scored, then the tables.
    ``vocabulary`` (``--vocabulary``) is how a Pascal-Part-layout folder is read. What the dataset
    load skipped is in ``metrics["dataset_load"]``, in the stage-1 summary (``"load <reason>"``)
    and in the first lines of ``metrics.md``; more than 5% of the images skipped stops the run
    before anything is computed, unless ``accept_skips`` (``--accept-skips``).

    Raises:
        KeyError: an unknown dataset name; TooManySkippedError: see above.
    """
    variants = variants or DEFAULT_VARIANT
    cfg = with_overrides(cfg, ["PROPOSAL_GENERATION.DATASET_NAME", dataset])
    dataset_name(dataset, vocabulary)
    records = resolve_dataset(dataset)
    report = check_load_skips(dataset, accept_skips)
    if max_images:
        records = sorted(records, key=lambda r: str(r["image_id"]))[:max_images]
    evaluate = has_part_annotations(dataset)
    stage1 = os.path.join(output_dir, "object_masks")
    stage1_run = ObjectMasksStage(cfg, stage1)
    stage1_run.input_report = report
    summaries = {"object_masks": stage1_run.run(records).as_dict()}
    results: Dict[str, dict] = {}
    all_outputs: Dict[str, str] = {}  # "<variant>/<stage>" -> folder, in run order (collage columns)
    for name, (overrides, official_crf) in variants.items():
        vcfg = with_overrides(cfg, overrides)
        pg_dir = os.path.join(output_dir, name, STAGE2)
        summaries[f"{name}/{STAGE2}"] = ProposalGenerationStage(vcfg, pg_dir).run(stage1).as_dict()
        outputs = {STAGE2: pg_dir}
        modes = [vcfg.DENSE_CRF.OBJECT_PIXELS] + (["official"] if official_crf and vcfg.DENSE_CRF.OBJECT_PIXELS != "official" else [])
        for mode in modes:
            suffix = "" if mode == vcfg.DENSE_CRF.OBJECT_PIXELS else "_official"
            crf_dir = os.path.join(output_dir, name, STAGE3 + suffix)
            summaries[f"{name}/{STAGE3}{suffix}"] = DenseCRFStage(
                with_overrides(vcfg, ["DENSE_CRF.OBJECT_PIXELS", mode]), crf_dir).run(pg_dir).as_dict()
            outputs[STAGE3 + suffix] = crf_dir
        all_outputs.update({f"{name}/{stage}": folder for stage, folder in outputs.items()})
        if evaluate:
            for stage, folder in outputs.items():
                results[f"{name}/{stage}"] = evaluate_pseudo_labels(folder, records, stage.replace("_official", ""))
    stage_rows: Dict[str, dict] = {}
    if learned_cfgs:
        first = list(variants)[0]
        folders = run_learned_stages(learned_cfgs, records, dataset, output_dir, stage1,
                                     os.path.join(output_dir, first, STAGE3), summaries)
        if evaluate:
            stage_rows = {"2 proposal generation": results[f"{first}/{STAGE2}"],
                          "3 dense-CRF": results[f"{first}/{STAGE3}"]}
            for title, stage in (("4 proposal learning (per-pixel)", STAGE4), ("5 part ranking", STAGE5),
                                 ("6 PartDistillation", STAGE6)):
                res = evaluate_pseudo_labels(folders[stage], records, stage)
                if stage != STAGE4:
                    res["label_consistency"] = label_consistency(folders[stage], records, stage)
                results[stage] = stage_rows[title] = res
            results[STAGE6]["agreement_with_stage5"] = label_agreement(folders[STAGE5], folders[STAGE6])
        if num_collages:
            write_label_collages(records, {"stage 5": folders[STAGE5], "stage 6": folders[STAGE6]},
                                 os.path.join(cfg.VIS_OUTPUT_DIR or os.path.join(output_dir, "collages"), "labels"),
                                 evaluate, num_collages)
    metrics = {"dataset": dataset, "num_images": len(records), "dataset_load": report, "results": results,
               "stages": stage_rows, "run_summaries": summaries,
               "outputs": {**all_outputs, **(folders if learned_cfgs else {})},  # key -> pseudo-label folder
               "config": {"file": config_file, "PROPOSAL_GENERATION": plain_config(cfg.PROPOSAL_GENERATION),
                          "DENSE_CRF": plain_config(cfg.DENSE_CRF), "BACKBONE": cfg.MODEL.BACKBONE.NAME}}
    atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics, indent=1)
    if results:
        variants = {k: v for k, v in results.items() if k not in (STAGE4, STAGE5, STAGE6)}
        first = next(iter(variants.values()))
        text = (f"# Stages on {dataset}\n\nDataset load: {format_load_skips(report)}.\n\n"
                f"{describe_scoring(first)}\n\n")
        if stage_rows:
            text += "## Stages 2-6\n\n" + format_stage_table(stage_rows) + "\n\n## Stages 2-3 by variant\n\n"
        text += (f"{format_table(variants)}\n\n"
                 f"Per object size (best_match / hungarian / AR@10):\n\n{format_size_table(variants)}\n")
        atomic_write(os.path.join(output_dir, "metrics.md"), lambda f: f.write(text))
        logger.info("results on %s:\n%s", dataset, text)
    if num_collages:
        write_collages(output_dir, records[:num_collages], all_outputs, evaluate, cfg.VIS_OUTPUT_DIR)
    return metrics


def _image_labels(record: dict, folders: Dict[str, str]) -> Dict[str, object]:
    """``{title: ImagePseudoLabel}`` of ``record``'s image in each ``{title: folder}`` that has it
    (in ``folders`` order)."""
    labels = {}
    for title, folder in folders.items():
        path = pseudo_label_path(folder, str(record["image_id"]), record_class_code(record))
        if os.path.isfile(path):
            labels[title] = load_pseudo_label(path)
    return labels


def write_collages(output_dir: str, records: List[dict], outputs: Dict[str, str], with_gt: bool,
                   vis_dir: str = "") -> List[str]:
    """One PNG per image in ``vis_dir`` (VIS_OUTPUT_DIR; default ``<output_dir>/collages``): rows =
    objects; panels = image | object | one per entry of ``outputs`` (``{"<variant>/<stage>":
    pseudo-label folder}``, in order; the first must hold the image) | ground-truth parts | legend
    of the ground-truth part names."""
    paths = []
    for rec in records:
        image_id = str(rec["image_id"])
        labels = _image_labels(rec, outputs)
        if not labels:
            continue
        base = next(iter(labels.values()))
        gts = gt_objects(rec) if with_gt else []
        match = match_objects([o.mask for o in base.objects], [g.mask for g in gts])
        inv = {p: g for g, p in match.items()}
        rows = []
        for i, obj in enumerate(base.objects):
            maps = [(t, lab.objects[i].part_label_map()) for t, lab in labels.items() if i < len(lab.objects)]
            names = None
            if i in inv and len(gts[inv[i]].parts):
                gt = np.zeros(obj.mask.shape, np.int32)
                for j, m in enumerate(gts[inv[i]].parts):
                    gt[m] = j + 1
                maps.append(("ground truth parts", gt))
                names = list(gts[inv[i]].part_names)
            rows.append((obj.class_name, obj.mask, maps, names))
        try:
            image = read_image_rgb(base.file_name)
        except ImageReadError as e:
            logger.warning("no collage for %s", e)
            continue
        paths.append(save_collage(os.path.join(vis_dir or os.path.join(output_dir, "collages"), f"{image_id}.png"),
                                  image, rows))
    return paths



def write_label_collages(records: List[dict], folders: Dict[str, str], out_dir: str, with_gt: bool,
                         max_rows: int = 8) -> List[str]:
    """One PNG per object class, ``<out_dir>/<class>.png``: a row per object of the class (at most
    ``max_rows``, images in id order), panels image | object | one panel per entry of ``folders``
    (``{title: folder of labelled pseudo-labels}``, e.g. stages 5 and 6) | ground-truth parts.
    Label ``c`` has the same colour in every row and panel (legend on top), so a part that keeps
    its label across images keeps its colour. Objects are found in each folder by mask IoU with
    the first folder's object."""
    titles = list(folders)
    vocab = {n: i for i, n in enumerate(part_vocabulary(records))}
    rows_by_class: Dict[str, list] = {}
    num_labels = 0
    for rec in sorted(records, key=lambda r: str(r["image_id"])):
        image_id = str(rec["image_id"])
        labels = _image_labels(rec, folders)
        if titles[0] not in labels:
            continue
        base = labels[titles[0]]
        others = {t: (lab, match_objects([o.mask for o in lab.objects], [o.mask for o in base.objects]))
                  for t, lab in labels.items()}
        gts = gt_objects(rec) if with_gt else []
        gt_match = match_objects([g.mask for g in gts], [o.mask for o in base.objects])
        for i, obj in enumerate(base.objects):
            if not obj.parts or len(rows_by_class.get(obj.class_name, [])) >= max_rows:
                continue
            maps = []
            for t in titles:
                lab, match = others.get(t, (None, {}))
                if i in match:
                    maps.append((f"{t} labels", label_ids(lab.objects[match[i]]).astype(np.int32) + 1))
            if i in gt_match and len(gts[gt_match[i]].parts):
                gt = np.zeros(obj.mask.shape, np.int32)
                g = gts[gt_match[i]]
                for m, name in zip(g.parts, g.part_names):  # a fixed colour per part name
                    gt[m] = vocab[name] + 1
                maps.append(("GT parts", gt))
            num_labels = max([num_labels] + [int(m.max()) for t, m in maps if t != "GT parts"])
            rows_by_class.setdefault(obj.class_name, []).append((base.file_name, (image_id, obj.mask, maps)))
    paths = []
    legend = [(f"label {c}", c + 1) for c in range(num_labels)]
    for cls, rows in sorted(rows_by_class.items()):
        try:
            images = [read_image_rgb(f) for f, _ in rows]
        except ImageReadError as e:
            logger.warning("no label collage for %s: %s", cls, e)
            continue
        paths.append(save_collage(os.path.join(out_dir, f"{class_dir(cls)}.png"), images,
                                  [r for _, r in rows], legend=legend))
    return paths
