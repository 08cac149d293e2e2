"""Stages 4-6 of the main job on the images of stages 1-3: train the part-proposal model on the
stage-3 pseudo-labels, rank parts with it, train the PartDistillation model on the ranked labels,
and predict with both models on the same images.

Used by :func:`part_distillation.stages.pipeline.run_pipeline` (``tools/run_part_pipeline.py
--stages 1-6``). Output layout, beside the stage 1-3 folders::

    <out>/proposal_learning/                 stage 4: detectron2 OUTPUT_DIR (checkpoints, logs)
    <out>/proposal_learning/predictions/     its per-pixel segments on the images (pseudo-labels,
                                             stage "proposal_learning", parts unlabelled)
    <out>/proposal_learning/proposals/       the stage-4 predictor on the stage-1 objects: segments
                                             and query features (ProposalLearningStage), stage 5's input
    <out>/part_ranking/                      stage 5 pseudo-labels (PartRankingStage)
    <out>/part_distillation/                 stage 6: detectron2 OUTPUT_DIR
    <out>/part_distillation/predictions/     its labelled segments (stage "part_distillation")

Every step resumes: a training whose ``model_final.pth`` exists is not rerun (otherwise it
continues from ``last_checkpoint``, detectron2 ``resume=True``), stage 5 resumes through the stage
runner, and a prediction folder whose ``logs/predict.json`` names the same checkpoint (path, size,
mtime) and images is not redone.

Models are trained and run in this process through :class:`part_distillation.engine.trainer.Trainer`
(what ``tools/train_net.py`` runs), with TEST.EVAL_PERIOD 0: evaluation happens here, once, with
the trainer's test loader and evaluators (``--eval-only`` of ``train_net.py``) on the main job's
images, plus :class:`PredictionWriter` that stores the predictions as pseudo-labels, so that stages
4 and 6 are scored by the same :func:`~part_distillation.stages.evaluate.evaluate_pseudo_labels` as
stages 2, 3 and 5 and drawn in the same collages.
"""
import json
import logging
import os
import time
from contextlib import contextmanager
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset

from ..config import with_overrides
from ..data.datasets import dataset_name
from ..data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel, save_pseudo_label
from ..utils.io import atomic_write_json
from .part_ranking import PartRankingStage, predictor_overrides
from .proposal_learning import ProposalLearningStage

logger = logging.getLogger(__name__)

STAGE4, STAGE5, STAGE6 = "proposal_learning", "part_ranking", "part_distillation"


class PredictionWriter(DatasetEvaluator):
    """detectron2 evaluator that writes each image's ``part_seg`` outputs as a pseudo-label file.

    Inputs are those of :class:`~part_distillation.data.proposal_dataset.PartEvalDatasetMapper`
    (``file_name``, ``image_id``, ``height``, ``width``, ``objects``: GTObjects); outputs hold
    ``"part_seg"``: one (H, W) int label map per input object, 0 = no part, ``v > 0`` = segment
    ``v``. Each object of the file is the ground-truth object (its mask, class name / code / id)
    with one part per distinct ``v``: ``label = v - 1`` when ``labelled`` (stage 6: class-consistent
    part labels) else None (stage 4: segment ids mean nothing across images). ``evaluate`` returns
    ``{}`` (the files are the result).
    """

    def __init__(self, output_dir: str, stage: str, labelled: bool):
        self.output_dir, self.stage, self.labelled = output_dir, stage, labelled
        self.num_written = 0

    def reset(self) -> None:
        self.num_written = 0

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        for inp, out in zip(inputs, outputs):
            objects = []
            for gt, seg in zip(inp["objects"], out["part_seg"]):
                seg = seg.numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
                parts = [PartLabel(seg == v, int(v - 1) if self.labelled else None)
                         for v in np.unique(seg) if v > 0]
                objects.append(ObjectLabel(gt.class_name, gt.mask, gt.class_code, 1.0, None, parts,
                                           gt.class_id))
            save_pseudo_label(self.output_dir, ImagePseudoLabel(
                inp["file_name"], str(inp["image_id"]), int(inp["height"]), int(inp["width"]),
                self.stage, objects))
            self.num_written += 1

    def evaluate(self) -> dict:
        return {}


def register_image_subset(records: List[dict], source: str, output_dir: str) -> str:
    """Register ``records`` (the main job's images of dataset ``source``) as a dataset with the
    source's metadata (part vocabulary, classes, ``evaluator_type``), so that the trainer's test
    loader and evaluators run on exactly these images. Returns its name
    ``"pipeline:<abs output_dir>"`` (re-registered when called again)."""
    name = "pipeline:" + os.path.abspath(output_dir)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    meta = {k: v for k, v in MetadataCatalog.get(dataset_name(source)).as_dict().items() if k != "name"}
    MetadataCatalog.get(name).set(**meta)
    return name


def train(cfg) -> str:
    """Train with :class:`~part_distillation.engine.trainer.Trainer` into cfg.OUTPUT_DIR unless
    ``model_final.pth`` is there (resuming from its last checkpoint otherwise). Returns the path of
    ``model_final.pth``.

    Raises:
        FileNotFoundError: training ended without writing ``model_final.pth``.
    """
    from ..engine.hooks import seed_training
    from ..engine.trainer import Trainer

    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if os.path.isfile(final):
        logger.info("%s exists: training not rerun", final)
        return final
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_training(cfg.SEED)
    # no evaluation inside training (detectron2's EvalHook evaluates after the last iteration
    # even with EVAL_PERIOD 0): predict() evaluates the final checkpoint once
    trainer = Trainer(with_overrides(cfg, ["DATASETS.TEST", ()]))
    trainer.resume_or_load(resume=True)
    trainer.train()
    if not os.path.isfile(final):
        raise FileNotFoundError(f"training into {cfg.OUTPUT_DIR} wrote no model_final.pth")
    return final


def _file_identity(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def predict(cfg, weights: str, test_set: str, output_dir: str, stage: str, labelled: bool) -> dict:
    """Run the model of ``cfg`` with ``weights`` on dataset ``test_set`` (``--eval-only`` of
    ``tools/train_net.py``: the trainer's test loader and evaluators), writing its predictions as
    pseudo-labels into ``output_dir`` (:class:`PredictionWriter`). Returns the trainer's evaluation
    results, also stored with the checkpoint's identity in ``<output_dir>/logs/predict.json``; when
    that file names the same checkpoint and image count, nothing is rerun. The predictions are
    written at the original image size with the annotated object masks
    (CUSTOM_DATASETS.EVAL_GEOMETRY "original"), the frame the main job's evaluation reads."""
    from ..engine.trainer import Trainer, load_eval_weights

    cfg = with_overrides(cfg, ["CUSTOM_DATASETS.EVAL_GEOMETRY", "original"])

    done_file = os.path.join(output_dir, "logs", "predict.json")
    ident = {"weights": _file_identity(weights), "num_images": len(DatasetCatalog.get(test_set))}
    if os.path.isfile(done_file):
        with open(done_file) as f:
            done = json.load(f)
        if done.get("identity") == ident:
            logger.info("%s: predictions of this checkpoint exist, not rerun", output_dir)
            return done["results"]
    model = Trainer.build_model(cfg)
    load_eval_weights(cfg, model, weights)
    model.eval()
    writer = PredictionWriter(output_dir, stage, labelled)
    evaluator = DatasetEvaluators([Trainer.build_evaluator(cfg, test_set), writer])
    results = inference_on_dataset(model, Trainer.build_test_loader(cfg, test_set), evaluator)
    results = _json_ready(results)
    atomic_write_json(done_file, {"identity": ident, "results": results}, indent=1)
    return results


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


@contextmanager
def _timed(timings: Dict[str, dict], step: str):
    """Record the step's wall and process CPU seconds (all threads) in ``timings[step]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[step] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}


def run_learned_stages(cfgs: Dict[str, object], records: List[dict], source: str, output_dir: str,
                       stage1_dir: str, stage3_dir: str, summaries: Dict[str, dict]) -> Dict[str, str]:
    """Stages 4-6 (module docstring) on the main job's images.

    Args:
        cfgs: frozen configs ``{"proposal_learning": ..., "part_ranking": ..., "part_distillation":
            ...}`` (e.g. the tiny CPU YAMLs + overrides). The main job sets: OUTPUT_DIR, the
            training folders (PROPOSAL_LEARNING / PART_DISTILLATION.DATASET_PATH), TEST.EVAL_PERIOD
            0; the stage-4 predictor and stage 5 run the stage-4 network (its MODEL node and test
            sizes, MODEL.WEIGHTS = the stage-4 checkpoint) with the "part_ranking" config, stage 5
            on the predictor's folder (features from disk, one network pass per image); stage 6 starts from the stage-4 checkpoint when its MODEL.WEIGHTS
            is empty (the class head never loads: shape) and predicts PART_RANKING.NUM_CLUSTERS
            labels.
        records: the dataset dicts of the images (ground truth used only for evaluation).
        source: the dataset's name or folder (for its metadata).
        output_dir: the main job's output folder.
        stage1_dir / stage3_dir: the object-mask and dense-CRF folders of stages 1 and 3.
        summaries: the main job's run summaries, extended in place (predictor and stage 5 runner summaries,
            trainer evaluation results of stages 4 and 6, and ``timings``: wall and process-CPU
            seconds of each step of this call; a resumed step takes ~0).

    Returns:
        ``{stage name: folder of its pseudo-labels}`` for stages 4 (predictions), 5 and 6
        (predictions).
    """
    test_set = register_image_subset(records, source, output_dir)
    s4_dir = os.path.join(output_dir, STAGE4)
    cfg4 = with_overrides(cfgs[STAGE4], ["OUTPUT_DIR", s4_dir, "PROPOSAL_LEARNING.DATASET_PATH", stage3_dir,
                                "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (test_set,)])
    timings = summaries.setdefault("timings", {})
    with _timed(timings, f"{STAGE4}/train"):
        weights4 = train(cfg4)
    s4_pred = os.path.join(s4_dir, "predictions")
    with _timed(timings, f"{STAGE4}/predict"):
        summaries[f"{STAGE4}/eval_only"] = predict(cfg4, weights4, test_set, s4_pred, STAGE4, labelled=False)

    s5_dir = os.path.join(output_dir, STAGE5)
    cfg5 = cfgs[STAGE5].clone()
    cfg5.defrost()
    cfg5.MODEL = cfg4.MODEL.clone()
    cfg5.defrost()  # the cloned node is frozen
    cfg5.MODEL.WEIGHTS = weights4
    cfg5.INPUT.MIN_SIZE_TEST, cfg5.INPUT.MAX_SIZE_TEST = cfg4.INPUT.MIN_SIZE_TEST, cfg4.INPUT.MAX_SIZE_TEST
    cfg5.freeze()
    proposals_dir = os.path.join(s4_dir, "proposals")
    with _timed(timings, f"{STAGE4}/proposals"):
        summaries[f"{STAGE4}/proposals"] = ProposalLearningStage(
            with_overrides(cfg5, predictor_overrides(cfg5)), proposals_dir).run(stage1_dir).as_dict()
    with _timed(timings, STAGE5):
        summaries[STAGE5] = PartRankingStage(cfg5, s5_dir).run(proposals_dir).as_dict()

    s6_dir = os.path.join(output_dir, STAGE6)
    cfg6 = cfgs[STAGE6]
    init: Optional[str] = cfg6.MODEL.WEIGHTS or weights4
    cfg6 = with_overrides(cfg6, ["OUTPUT_DIR", s6_dir, "PART_DISTILLATION.DATASET_PATH", s5_dir,
                        "PART_DISTILLATION.NUM_PART_CLASSES", cfg5.PART_RANKING.NUM_CLUSTERS,
                        "MODEL.WEIGHTS", init, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (test_set,)])
    with _timed(timings, f"{STAGE6}/train"):
        weights6 = train(cfg6)
    s6_pred = os.path.join(s6_dir, "predictions")
    with _timed(timings, f"{STAGE6}/predict"):
        summaries[f"{STAGE6}/eval_only"] = predict(cfg6, weights6, test_set, s6_pred, STAGE6, labelled=True)
    return {STAGE4: s4_pred, STAGE5: s5_dir, STAGE6: s6_pred}
