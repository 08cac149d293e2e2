"""Training and evaluation of the part-proposal model (stage 4) with detectron2's
``DefaultTrainer``: data loaders from :mod:`part_distillation.data.proposal_dataset`, the
Mask2Former optimizer recipe (AdamW, backbone LR multiplier, norm / embedding weight decay,
full-model gradient clipping), detectron2 / Mask2Former LR schedules, part evaluators.

Checkpoints (``model_XXXXXXX.pth``, ``last_checkpoint``), ``metrics.json`` and TensorBoard events go
to OUTPUT_DIR. ``Trainer.resume_or_load(resume=True)`` restores model, optimizer, LR scheduler and
iteration from the last checkpoint there, so a killed run continues with the same iteration and LR.
"""
import itertools
import logging
from typing import Any, Dict, List, Optional, Type

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import DatasetEvaluators
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler, ParamScheduler
from torch import nn

import part_distillation.data  # noqa: F401  (registers the built-in datasets)
from part_distillation.config import setup_cfg
from part_distillation.data.proposal_dataset import (
    PartEvalDatasetMapper,
    build_train_mapper,
    register_proposal_train_datasets,
)
from part_distillation.engine.hooks import IterationSeedHook
from part_distillation.evaluation.evaluators import PartProposalEvaluator, PartSegmentEvaluator
import part_distillation.modeling  # noqa: F401  (registers backbones, heads and ProposalModel)

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


class PolyParamScheduler(ParamScheduler):
    """Multiplier ``(1 - where) ** power`` (``where`` = iter / MAX_ITER), floored at
    ``constant_ending`` once it drops below it when ``constant_ending > 0`` (Mask2Former
    ``WarmupPolyLR``: SOLVER.POLY_LR_POWER, SOLVER.POLY_LR_CONSTANT_ENDING)."""

    def __init__(self, power: float, constant_ending: float = 0.0):
        self.power = power
        self.constant_ending = constant_ending

    def __call__(self, where: float) -> float:
        value = (1.0 - where) ** self.power
        if self.constant_ending > 0 and value < self.constant_ending:
            return self.constant_ending
        return value


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (Mask2Former) or "WarmupMultiStepLR" (step decay
    by SOLVER.GAMMA at SOLVER.STEPS), with SOLVER.WARMUP_{FACTOR,ITERS,METHOD}; per-iteration
    multiplier of each group's initial LR.

    Raises:
        ValueError: another scheduler name.
    """
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME == "WarmupPolyLR":
        sched = PolyParamScheduler(s.POLY_LR_POWER, s.POLY_LR_CONSTANT_ENDING)
    elif s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x <= s.MAX_ITER]
        sched = MultiStepParamScheduler(values=[s.GAMMA ** k for k in range(len(steps) + 1)],
                                        milestones=steps, num_updates=s.MAX_ITER)
    else:
        raise ValueError("SOLVER.LR_SCHEDULER_NAME must be 'WarmupPolyLR' or 'WarmupMultiStepLR', "
                         f"got {s.LR_SCHEDULER_NAME!r}")
    sched = WarmupParamScheduler(sched, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / s.MAX_ITER, 1.0),
                                 s.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=s.MAX_ITER)


class Trainer(DefaultTrainer):
    """detectron2 ``DefaultTrainer`` for ProposalModel (MODEL.META_ARCHITECTURE) with the stage-4
    loaders, optimizer, schedule and part evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        """Pseudo-label folders of PROPOSAL_LEARNING (or DATASETS.TRAIN) through the
        INPUT.DATASET_MAPPER_NAME mapper, SOLVER.IMS_PER_BATCH images per step (square crops,
        so no aspect-ratio grouping)."""
        names = register_proposal_train_datasets(cfg)
        dicts = get_detection_dataset_dicts(names, filter_empty=False)
        return build_detection_train_loader(dicts, mapper=build_train_mapper(cfg),
                                            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                            aspect_ratio_grouping=False,
                                            num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Ground-truth part dataset ``dataset_name`` through :class:`PartEvalDatasetMapper`."""
        return build_detection_test_loader(DatasetCatalog.get(dataset_name),
                                           mapper=PartEvalDatasetMapper(cfg),
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        """Proposal AR@K (:class:`PartProposalEvaluator`) and per-object segment metrics
        (:class:`PartSegmentEvaluator`) for datasets with ``evaluator_type == "part"``.

        Raises:
            ValueError: the dataset has no part ground truth.
        """
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "none")
        if evaluator_type != "part":
            raise ValueError(f"dataset '{dataset_name}' has no part ground truth "
                             f"(evaluator_type={evaluator_type!r}); remove it from DATASETS.TEST")
        return DatasetEvaluators([PartProposalEvaluator(), PartSegmentEvaluator()])

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

    def build_hooks(self):
        """detectron2's hooks, preceded by :class:`IterationSeedHook` when SEED_EACH_ITERATION."""
        hooks = super().build_hooks()
        if self.cfg.SEED_EACH_ITERATION:
            hooks.insert(0, IterationSeedHook(self.cfg.SEED))
        return hooks

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
    ``default_setup`` (logging, OUTPUT_DIR/config.yaml, seeding)."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    amp_off = cfg.SOLVER.AMP.ENABLED and not (cfg.MODEL.DEVICE.startswith("cuda")
                                              and torch.cuda.is_available())
    if amp_off:
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    default_setup(cfg, args)
    if amp_off:
        logging.getLogger("part_distillation").warning(
            "SOLVER.AMP.ENABLED needs CUDA (MODEL.DEVICE=%s, cuda available=%s): AMP disabled",
            cfg.MODEL.DEVICE, torch.cuda.is_available())
    return cfg


def main(args):
    """``--eval-only``: load MODEL.WEIGHTS (or, with ``--resume``, the last checkpoint of
    OUTPUT_DIR) and return the evaluation results; otherwise train (resuming with ``--resume``)
    and return the last evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
