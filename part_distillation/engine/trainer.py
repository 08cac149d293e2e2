"""Training and evaluation of the part-proposal model (stage 4) with detectron2's
``DefaultTrainer``: data loaders from :mod:`part_distillation.data.proposal_dataset`, the
Mask2Former optimizer recipe (AdamW, backbone LR multiplier, norm / embedding weight decay,
full-model gradient clipping), detectron2's LR schedules (``detectron2.projects.deeplab``, as
officially), part evaluators.

Checkpoints (``model_XXXXXXX.pth``, ``last_checkpoint``, written atomically by
:class:`~part_distillation.engine.checkpoint.AtomicCheckpointer`), ``metrics.json``, TensorBoard
events and, unless WANDB.DISABLE_WANDB, a Weights & Biases run
(:class:`~part_distillation.engine.wandb_writer.WandbWriter`) go to OUTPUT_DIR. ``Trainer.resume_or_load(resume=True)`` restores model, optimizer, LR scheduler and
iteration from the last checkpoint there, so a killed run continues with the same iteration and LR.
"""
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Type

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import DatasetEvaluators
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch import nn

import part_distillation.data  # noqa: F401  (registers the built-in datasets)
from part_distillation.data.datasets import dataset_metadata, dataset_name, resolve_dataset
from part_distillation.config import setup_cfg
from part_distillation.data.part_distillation_dataset import (
    PartDistillationDatasetMapper,
    PartDistillationEvalDatasetMapper,
    register_part_distillation_train_datasets,
)
from part_distillation.data.build import build_train_mapper, is_mapper_name
from part_distillation.data.proposal_dataset import PartEvalDatasetMapper, register_proposal_train_datasets
from part_distillation.data.supervised_dataset import (
    check_num_classes,
    load_supervised_train_dicts,
    part_class_names,
)
from part_distillation.engine.hooks import IterationSeedHook
from part_distillation.evaluation.evaluators import PartProposalEvaluator, PartSegmentEvaluator, PredictionVisualizer
from part_distillation.evaluation.unsupervised import UnsupervisedPartEvaluator, evaluation_vocabulary
from part_distillation.evaluation.supervised import SupervisedPartEvaluator
import part_distillation.modeling  # noqa: F401  (registers backbones, heads and ProposalModel)
from part_distillation.modeling.meta_arch.proposal_model import output_mode_for
from part_distillation.modeling.weights import check_complete_weights
from part_distillation.utils.process import OutputLock
from part_distillation.utils.io import atomic_write_json
from .checkpoint import AtomicCheckpointer
from .wandb_writer import WandbWriter

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
               nn.LocalResponseNorm)
# Swin's position tables are embeddings too (official Mask2Former: no weight decay on them).
_EMBED_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def optimizer_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                           weight_decay_norm: float, weight_decay_embed: float,
                           backbone_multiplier: float) -> List[Dict[str, Any]]:
    """Mask2Former's per-parameter hyper-parameters (official ``build_optimizer``), merged into
    as few groups as possible.

    Trainable parameters only (frozen ones are left out). ``lr`` = ``base_lr``, times
    ``backbone_multiplier`` under the ``backbone`` module (SOLVER.BACKBONE_MULTIPLIER);
    ``weight_decay`` = SOLVER.WEIGHT_DECAY, WEIGHT_DECAY_NORM for parameters of normalisation
    layers, WEIGHT_DECAY_EMBED for ``nn.Embedding`` weights (queries, level embeddings) and Swin's
    position tables.

    Returns:
        list of ``{"params": [...], "lr": float, "weight_decay": float}``.
    """
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr, wd = base_lr, weight_decay
            if module_name == "backbone" or module_name.startswith("backbone."):
                lr = base_lr * backbone_multiplier
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            if isinstance(module, nn.Embedding) or name in _EMBED_PARAM_NAMES:
                wd = weight_decay_embed
            groups.append({"params": [param], "lr": lr, "weight_decay": wd})
    return reduce_param_groups(groups)


def with_full_model_clipping(optimizer_cls: Type[torch.optim.Optimizer], max_norm: float,
                             norm_type: float = 2.0) -> Type[torch.optim.Optimizer]:
    """Subclass of ``optimizer_cls`` whose ``step`` first clips the gradient norm of ALL its
    parameters jointly to ``max_norm`` (Mask2Former SOLVER.CLIP_GRADIENTS.CLIP_TYPE
    "full_model", CLIP_VALUE, NORM_TYPE). Under AMP, ``GradScaler.step`` unscales before calling
    ``step``, so the clipping sees true gradients."""

    class FullModelGradientClipping(optimizer_cls):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = f"{optimizer_cls.__name__}FullModelGradientClipping"
    return FullModelGradientClipping


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "ADAMW" (official) or "SGD" (SOLVER.MOMENTUM) over
    :func:`optimizer_param_groups`, with SOLVER.CLIP_GRADIENTS (``full_model`` here, ``value`` /
    ``norm`` per parameter via detectron2).

    Raises:
        ValueError: unknown optimizer, or no trainable parameter.
    """
    s = cfg.SOLVER
    groups = optimizer_param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM,
                                    s.WEIGHT_DECAY_EMBED, s.BACKBONE_MULTIPLIER)
    if not groups:
        raise ValueError("no trainable parameter (MODEL.MASK_FORMER.FREEZE_KEYS froze everything?)")
    if s.OPTIMIZER == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {}
    elif s.OPTIMIZER == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {s.OPTIMIZER!r}")
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = with_full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        cls = maybe_add_gradient_clipping(cfg, cls)
    return cls(groups, lr=s.BASE_LR, **kwargs)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler._LRScheduler:
    """The official choice (PartDistillation / Mask2Former ``train_net.py``):
    ``detectron2.projects.deeplab.build_lr_scheduler``, i.e. SOLVER.LR_SCHEDULER_NAME
    "WarmupPolyLR" (DeepLab poly schedule, SOLVER.POLY_LR_POWER / POLY_LR_CONSTANT_ENDING) or
    anything detectron2's ``build_lr_scheduler`` knows ("WarmupMultiStepLR": step decay by
    SOLVER.GAMMA at SOLVER.STEPS, "WarmupCosineLR", ...), with SOLVER.WARMUP_{FACTOR,ITERS,METHOD}.

    Raises:
        ValueError: an unknown scheduler name (detectron2's message names it).
    """
    return build_deeplab_lr_scheduler(cfg, optimizer)


def register_test_datasets(cfg) -> List[str]:
    """Dataset names for the entries of DATASETS.TEST, each a registered name or a folder in a
    layout :func:`part_distillation.data.datasets.dataset_name` knows (as ``--dataset`` of the
    stage tools; a folder is registered once as ``"folder:<absolute path>"``). Logs what will be
    evaluated.

    Raises:
        KeyError: an entry is neither a registered name nor a folder (the message lists the
            registered names).
    """
    names = [dataset_name(spec) for spec in cfg.DATASETS.TEST]
    logger.info("evaluation datasets (DATASETS.TEST): %s", ", ".join(names) if names else "none")
    return names


def _with_test_sets(cfg, names: List[str]):
    """``cfg`` with DATASETS.TEST replaced by ``names`` (a frozen copy; ``cfg`` when equal)."""
    if tuple(names) == tuple(cfg.DATASETS.TEST):
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = tuple(names)
    cfg.freeze()
    return cfg


# MODEL.META_ARCHITECTURE -> what tools/train_net.py trains and evaluates (official names)
META_ARCHITECTURE_TASKS = {
    "ProposalModel": "proposal_learning",
    "MaskFormer": "proposal_learning",
    "PartDistillationModel": "part_distillation",
    "SupervisedModel": "supervised_learning",
}
# Official meta-architectures of the official stage scripts, which this project runs as stage
# tools: the stage (its STAGE_REGISTRY name), the tool and what to pass it. tools/train_net.py
# runs the stage for the first three; the evaluation baselines raise the message.
STAGE_META_ARCHITECTURES = {
    "LabelingDetic": ("object_masks", "tools/label_objects.py --labeler-config "
                      "configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml"),
    "ProposalGenerationModel": ("proposal_generation", "tools/pixel_grouping.py --input-dir <stage-1 folder>"),
    "PartRankingModel": ("part_ranking", "tools/part_ranking.py --input-dir <stage-4 folder> "
                         "(or PART_RANKING.DATASET_PATH)"),
    "PixelGroupingModel": ("", "tools/run_part_pipeline.py --dataset <dataset> --output-dir <dir> "
                           "(stages 1-3 on the dataset's given object masks, evaluated; "
                           "sh_files/pixel_grouping/run.sh)"),
    "ClusteringBaseline": ("", "tools/run_part_pipeline.py --dataset <dataset> --output-dir <dir> "
                           "--config-file configs/proposal_generation/R50.yaml (a ResNet backbone; "
                           "--baselines adds the RGB+XY k-means and grid baselines)"),
}


def training_task(cfg) -> str:
    """What the config trains and evaluates, chosen from MODEL.META_ARCHITECTURE (as the official
    ``*_train_net.py`` scripts each fix one); the one place where the trainer's data and
    evaluators are chosen from the config:

    * ``"proposal_learning"``: stage-4 ProposalModel (or MaskFormer) on pseudo-label folders; AR@K +
      segment evaluators; training mapper ``proposal_learning``;
    * ``"part_distillation"``: stage-6 PartDistillationModel on the stage-5 folders of
      PART_DISTILLATION; the stage-4 evaluators plus the unsupervised protocol;
    * ``"supervised_learning"``: SupervisedModel (per-class) on DATASETS.TRAIN ground truth (few-shot
      subset); :class:`SupervisedPartEvaluator` (mIoU over the part taxonomy); mapper
      ``supervised_learning``;
    * ``"supervised_learning_agnostic"``: SupervisedModel with SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING or
      CLASS_AGNOSTIC_INFERENCE: ground-truth training data, stage-4 evaluators.

    Raises:
        ValueError: an official meta-architecture this project runs as a stage tool
            (:data:`STAGE_META_ARCHITECTURES`; the message names the tool), or an unknown one.
    """
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch in STAGE_META_ARCHITECTURES:
        raise ValueError(f"MODEL.META_ARCHITECTURE {arch!r} (an official stage script) is run here by "
                         f"{STAGE_META_ARCHITECTURES[arch][1]}, with the same --config-file")
    if arch not in META_ARCHITECTURE_TASKS:
        raise ValueError(f"MODEL.META_ARCHITECTURE {arch!r}: tools/train_net.py trains "
                         f"{sorted(META_ARCHITECTURE_TASKS)}; stage tools run {sorted(STAGE_META_ARCHITECTURES)}")
    task = META_ARCHITECTURE_TASKS[arch]
    sm = cfg.SUPERVISED_MODEL
    if task == "supervised_learning" and (sm.CLASS_AGNOSTIC_LEARNING or sm.CLASS_AGNOSTIC_INFERENCE):
        return "supervised_learning_agnostic"
    return task


# training mapper of each task when INPUT.DATASET_MAPPER_NAME names none of this project's
# (the official YAMLs inherit Mask2Former's "coco_instance_lsj", which their trainers ignore)
_TASK_MAPPERS = {"proposal_learning": "proposal_learning", "supervised_learning": "supervised_learning",
                 "supervised_learning_agnostic": "supervised_learning"}


def train_mapper_name(cfg) -> str:
    """INPUT.DATASET_MAPPER_NAME when it is a registered mapper of this project, else the task's
    (:func:`training_task`) own training mapper."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    return name if is_mapper_name(name) else _TASK_MAPPERS[training_task(cfg)]


def evaluation_part_classes(cfg, dataset_name: str) -> List[str]:
    """Part taxonomy of ``dataset_name`` for per-class evaluation.

    Raises:
        ValueError: DATASETS.TRAIN uses another taxonomy (class ids would mean different parts), or
            MODEL.SEM_SEG_HEAD.NUM_CLASSES is smaller than the taxonomy.
    """
    classes = part_class_names(dataset_name)
    for train_name in cfg.DATASETS.TRAIN:
        if part_class_names(train_name) != classes:
            raise ValueError(f"part taxonomy of test dataset '{dataset_name}' differs from that of "
                             f"training dataset '{train_name}'")
    check_num_classes(cfg, classes)
    return classes


class Trainer(DefaultTrainer):
    """detectron2 ``DefaultTrainer`` for ProposalModel, PartDistillationModel and SupervisedModel
    (MODEL.META_ARCHITECTURE); :func:`training_task` picks the loaders and evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        """Pseudo-label folders of PROPOSAL_LEARNING (stage 4) or PART_DISTILLATION (stage 6), or
        for SupervisedModel the ground-truth DATASETS.TRAIN (:func:`load_supervised_train_dicts`),
        through the INPUT.DATASET_MAPPER_NAME mapper, SOLVER.IMS_PER_BATCH images per step (square
        crops, so no aspect-ratio grouping)."""
        task = training_task(cfg)
        if task == "part_distillation":
            dicts = get_detection_dataset_dicts(register_part_distillation_train_datasets(cfg),
                                                filter_empty=False)
            mapper = PartDistillationDatasetMapper(cfg, is_train=True)
        elif task == "proposal_learning":
            dicts = get_detection_dataset_dicts(register_proposal_train_datasets(cfg), filter_empty=False)
            mapper = build_train_mapper(cfg, train_mapper_name(cfg))
        else:
            dicts = load_supervised_train_dicts(cfg)
            mapper = build_train_mapper(cfg, train_mapper_name(cfg))
        return build_detection_train_loader(dicts, mapper=mapper,
                                            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                            aspect_ratio_grouping=False,
                                            num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation loop over DATASETS.TEST, whose entries may be folders
        (:func:`register_test_datasets`). With PROPOSAL_LEARNING.POSTPROCESS_TYPES (official: one
        "prop" | "semseg" per DATASETS.TEST entry), each set is evaluated with its output mode
        (:func:`~part_distillation.modeling.meta_arch.proposal_model.output_mode_for`) and the
        model's own mode is restored afterwards.

        Raises:
            ValueError: POSTPROCESS_TYPES does not have one entry per DATASETS.TEST entry, or the
                model has no output modes.
        """
        names = register_test_datasets(cfg)
        types = list(cfg.PROPOSAL_LEARNING.POSTPROCESS_TYPES)
        if not types:
            return super().test(_with_test_sets(cfg, names), model, evaluators)
        if len(types) != len(names):
            raise ValueError(f"PROPOSAL_LEARNING.POSTPROCESS_TYPES {types} needs one entry per "
                             f"DATASETS.TEST entry {list(cfg.DATASETS.TEST)}")
        inner = model.module if hasattr(model, "module") else model
        if not hasattr(inner, "output_mode"):
            raise ValueError(f"PROPOSAL_LEARNING.POSTPROCESS_TYPES is set but {type(inner).__name__} "
                             "has no output modes")
        modes = [output_mode_for(t) for t in types]
        saved, results = inner.output_mode, OrderedDict()
        try:
            for i, (name, mode) in enumerate(zip(names, modes)):
                inner.output_mode = mode
                logger.info("evaluating %s with output mode %s (POSTPROCESS_TYPES)", name, mode)
                ev = None if evaluators is None else [evaluators[i]]
                key = name if names.count(name) == 1 else f"{name} ({types[i]})"  # official: same set twice
                results[key] = super().test(_with_test_sets(cfg, [name]), model, ev)
        finally:
            inner.output_mode = saved
        return results if len(results) > 1 else next(iter(results.values()))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Ground-truth part dataset ``dataset_name`` through :class:`PartEvalDatasetMapper`
        (stage 6: :class:`PartDistillationEvalDatasetMapper`, which adds the object classes), with
        the dataset's ground-truth geometry (CUSTOM_DATASETS.EVAL_GEOMETRY)."""
        mapper_class = (PartDistillationEvalDatasetMapper if training_task(cfg) == "part_distillation"
                        else PartEvalDatasetMapper)
        mapper = mapper_class(cfg, dataset_name=dataset_name)
        return build_detection_test_loader(resolve_dataset(dataset_name, cfg), mapper=mapper,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        """Proposal AR@K (:class:`PartProposalEvaluator`) and per-object segment metrics
        (:class:`PartSegmentEvaluator`) for datasets with ``evaluator_type == "part"``; stage 6 adds
        the official unsupervised C-mIoU / A-mIoU under both protocols
        (:class:`UnsupervisedPartEvaluator`, vocabulary of :func:`evaluation_vocabulary`: the
        dataset's ``part_classes`` when they name its GT parts, else the names in its records); the per-class
        SupervisedModel (:func:`training_task` ``"supervised_learning"``) gets the part-class mIoU of
        :class:`SupervisedPartEvaluator` over :func:`evaluation_part_classes`.

        Raises:
            ValueError: the dataset has no part ground truth.
        """
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "none")
        if evaluator_type != "part":
            raise ValueError(f"dataset '{dataset_name}' has no part ground truth "
                             f"(evaluator_type={evaluator_type!r}); remove it from DATASETS.TEST")
        task = training_task(cfg)
        if task == "supervised_learning":
            return SupervisedPartEvaluator(evaluation_part_classes(cfg, dataset_name))
        evaluators = [PartProposalEvaluator(), PartSegmentEvaluator()]
        if cfg.VIS_OUTPUT_DIR:
            evaluators.append(PredictionVisualizer(os.path.join(cfg.VIS_OUTPUT_DIR, dataset_name.replace(os.sep, "_"))))
        if task == "part_distillation":
            meta = dataset_metadata(dataset_name, cfg)
            parts, num_objects = evaluation_vocabulary(meta.get("part_classes", None),
                                                       meta.get("thing_classes", None),
                                                       resolve_dataset(dataset_name, cfg))
            evaluators.append(UnsupervisedPartEvaluator(parts, num_objects,
                                                        num_labels=cfg.PART_DISTILLATION.NUM_PART_CLASSES))
        return DatasetEvaluators(evaluators)

    def build_hooks(self):
        """detectron2's default hooks, with the checkpointer replaced by
        :class:`~part_distillation.engine.checkpoint.AtomicCheckpointer` first (atomic saves,
        resume past truncated files), so the periodic checkpointer and ``resume_or_load`` use it;
        preceded by :class:`IterationSeedHook` when SEED_EACH_ITERATION."""
        old = self.checkpointer
        self.checkpointer = AtomicCheckpointer(old.model, old.save_dir, save_to_disk=old.save_to_disk,
                                               **old.checkpointables)
        hooks = super().build_hooks()
        if self.cfg.SEED_EACH_ITERATION:
            hooks.insert(0, IterationSeedHook(self.cfg.SEED))
        return hooks

    def train(self):
        """detectron2's training loop, holding OUTPUT_DIR alone (:class:`OutputLock` on
        ``OUTPUT_DIR/.train.lock`` in the main process: a second training into the same folder
        is refused with the holder's pid), after removing the temp files of checkpoint writes
        killed before this process (:meth:`AtomicCheckpointer.remove_stale_temp_files`).

        A run resumed at MAX_ITER (its last periodic checkpoint is the last iteration, e.g. a kill
        while ``model_final.pth`` was written) runs no step and writes ``model_final.pth`` from
        the resumed state when it is missing.

        Raises:
            OutputLockHeld: another process trains into OUTPUT_DIR.
        """
        lock = OutputLock(os.path.join(self.cfg.OUTPUT_DIR, ".train.lock"), f"OUTPUT_DIR {self.cfg.OUTPUT_DIR}")
        if comm.is_main_process():
            lock.acquire()
        try:
            self.checkpointer.remove_stale_temp_files()
            final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
            if self.start_iter >= self.max_iter and not os.path.isfile(final):
                logger.info("resumed at MAX_ITER %d without model_final.pth: writing it", self.max_iter)
                self.checkpointer.save("model_final", iteration=self.max_iter - 1)
            return super().train()
        finally:
            lock.release()

    def build_writers(self):
        """detectron2's writers (console, metrics.json, TensorBoard), preceded by a
        :class:`~part_distillation.engine.wandb_writer.WandbWriter` unless WANDB.DISABLE_WANDB
        (first, so that it sees the images before the TensorBoard writer clears them)."""
        writers = super().build_writers()
        if not self.cfg.WANDB.DISABLE_WANDB:
            writers.insert(0, WandbWriter(self.cfg))
        return writers

    def state_dict(self):
        """Iteration and hook states (detectron2) plus the inner trainer's: optimizer and, with
        AMP, the grad scaler. The PyPI detectron2 0.6 ``DefaultTrainer`` leaves the latter out, so
        its checkpoints resumed with fresh AdamW moments."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        """Inverse of :meth:`state_dict`; checkpoints without ``_trainer`` (older ones) restore
        iteration and hooks only."""
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_optimizer(cls, cfg, model):
        """See :func:`build_optimizer`."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """See :func:`build_lr_scheduler`."""
        return build_lr_scheduler(cfg, optimizer)


def setup(args):
    """Config from ``args.config_file`` + ``args.opts`` (:func:`setup_cfg`), AMP switched off
    (with a warning) unless MODEL.DEVICE is CUDA and CUDA is available, then detectron2's
    ``default_setup`` (logging, OUTPUT_DIR/config.yaml, seeding) and the ``part_distillation``
    logger (console + OUTPUT_DIR/log.txt)."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    amp_off = cfg.SOLVER.AMP.ENABLED and not (cfg.MODEL.DEVICE.startswith("cuda")
                                              and torch.cuda.is_available())
    if amp_off:
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    default_setup(cfg, args)
    # our modules log under "part_distillation" (e.g. the few-shot image ids): same files as detectron2
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="part_distillation", abbrev_name="pd")
    if amp_off:
        logging.getLogger("part_distillation").warning(
            "SOLVER.AMP.ENABLED needs CUDA (MODEL.DEVICE=%s, cuda available=%s): AMP disabled",
            cfg.MODEL.DEVICE, torch.cuda.is_available())
    return cfg


def load_eval_weights(cfg, model: nn.Module, weights: str, resume: bool = False) -> None:
    """Load ``weights`` (with ``resume``: the newest readable checkpoint of OUTPUT_DIR, else
    ``weights``) into ``model`` for evaluation, refusing a checkpoint that leaves parameters at
    their initialisation (:func:`~part_distillation.modeling.weights.check_complete_weights`,
    allow-list MODEL.WEIGHTS_ALLOWED_MISSING). An empty ``weights`` evaluates the initialised model
    (logged by fvcore).

    Raises:
        CorruptCheckpointError: the file is unreadable; IncompleteWeightsError: keys missing.
    """
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    checkpointer.resume_or_load(weights, resume=resume)
    if checkpointer.loaded is not None:
        path, incompatible = checkpointer.loaded
        check_complete_weights(incompatible, path, cfg.MODEL.WEIGHTS_ALLOWED_MISSING)


def write_results(cfg, results) -> List[str]:
    """Write evaluation ``results`` as ``OUTPUT_DIR/inference/<dataset>/results.json`` per
    DATASETS.TEST entry (detectron2's ``inference/`` folder; a folder entry's name has ``/``
    replaced by ``_``) and all of them as ``OUTPUT_DIR/inference/results.json``; atomic writes.
    Returns the paths written."""
    names = [dataset_name(spec) for spec in cfg.DATASETS.TEST]
    if len(names) == 1:
        per_set = {names[0]: results}
    elif isinstance(results, dict) and len(results) == len(names):
        per_set = dict(results)  # Trainer.test: one entry per set, keyed by its name
    else:
        per_set = {"all": results}
    root = os.path.join(cfg.OUTPUT_DIR, "inference")
    paths = []
    for name, value in per_set.items():
        path = os.path.join(root, str(name).replace(os.sep, "_"), "results.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json(path, value, indent=1)
        paths.append(path)
    atomic_write_json(os.path.join(root, "results.json"), per_set, indent=1)
    logger.info("evaluation results written to %s", ", ".join(paths))
    return paths


def main(args):
    """``--eval-only``: load MODEL.WEIGHTS (or, with ``--resume``, the newest readable checkpoint
    of OUTPUT_DIR) and return the evaluation results; otherwise train (resuming with ``--resume``)
    and return the last evaluation results.

    Raises:
        CorruptCheckpointError: ``--eval-only`` on an unreadable MODEL.WEIGHTS (names the file).
        IncompleteWeightsError: ``--eval-only`` on a checkpoint that lacks parameters of the model
            outside MODEL.WEIGHTS_ALLOWED_MISSING (names the file and the keys).
    """
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_eval_weights(cfg, model, cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            write_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
