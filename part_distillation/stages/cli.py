"""The one command line of every stage tool (``tools/run_stage.py --stage NAME``; the tools users
know, ``tools/label_objects.py``, ``tools/pixel_grouping.py`` (stage ``proposal_generation``),
``tools/dense_crf.py`` (stage ``dcrf``), are this with the stage fixed): ``--config-file``, ``--output-dir``, the stage's input (``--dataset`` for a stage
that reads a dataset, ``--input-dir`` for one that reads pseudo-labels) and trailing ``KEY VALUE``
config overrides. Exit status 1 when some item failed (skips are not failures)."""
import argparse
import ast
import logging
import os
import sys
from typing import Optional, Sequence

import torch


def stage_parser(description: str, stage: Optional[str] = None) -> argparse.ArgumentParser:
    """``--config-file``, ``--output-dir`` and trailing ``KEY VALUE`` config overrides; with
    ``stage``, also that stage's input argument (without it, ``--stage``, ``--dataset`` and
    ``--input-dir``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config-file", default="configs/proposal_generation/effnet_lite0_cpu.yaml", metavar="FILE")
    p.add_argument("--output-dir", required=True, help="where this stage writes its pseudo-labels")
    if stage == "*":
        p.add_argument("--stage", required=True, help="registered stage name (STAGE_REGISTRY)")
        p.add_argument("--dataset", help="registered dataset name or folder (stages that read a dataset)")
        p.add_argument("--input-dir", help="input pseudo-label folder (stages that read pseudo-labels)")
    elif stage is not None and _stage_class(stage).INPUT_KIND == "dataset":
        p.add_argument("--dataset", help="registered dataset name or folder (default: the stage's config key, "
                                         "e.g. PROPOSAL_GENERATION.DATASET_NAME)")
    if stage == "*" or (stage is not None and _stage_class(stage).INPUT_KIND == "dataset"):
        add_dataset_load_args(p)
    if stage == "*" or stage == "object_masks":
        p.add_argument("--labeler-config", default=None,
                       help="stage 1: the labeler's own config (PROPOSAL_GENERATION.LABELER_CONFIG): a "
                            "detectron2 model config, or configs/detic/Detic_*.yaml")
    elif stage is not None:
        p.add_argument("--input-dir", help=f"{_stage_class(stage).INPUT_STAGE} pseudo-label folder (default: the "
                                           "stage's config key, e.g. PROPOSAL_GENERATION.OBJECT_MASK_PATH)")
    if stage in ("*", "part_ranking"):
        p.add_argument("--proposals-dir", default=None,
                       help="stage 5: first run the stage-4 predictor (stage proposal_learning) on the input "
                            "with stage 5's pass-1 settings into this folder, then rank its features")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as KEY VALUE pairs, e.g. PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS 5")
    return p


def add_dataset_load_args(p: argparse.ArgumentParser) -> None:
    """``--vocabulary`` and ``--accept-skips``: how a ``--dataset`` folder is read and how many of
    its images a load may skip (see :func:`~part_distillation.data.datasets.check_load_skips`)."""
    p.add_argument("--vocabulary", choices=("auto", "pascal", "as-is"), default="",
                   help="a Pascal-Part-layout --dataset folder: its part names mapped to the Pascal-Part "
                        "vocabulary (pascal), kept as they are (as-is), or detected (auto, the default)")
    p.add_argument("--accept-skips", action="store_true",
                   help="run even when the dataset load skipped more than 5%% of its images")


def load_dataset(spec: str, args) -> tuple:
    """``(dataset dicts, load report)`` of ``--dataset`` ``spec`` with ``args.vocabulary``,
    refused when the load skipped too much (unless ``args.accept_skips``).

    Raises:
        TooManySkippedError: see :func:`~part_distillation.data.datasets.check_load_skips`.
    """
    from ..data.datasets import check_load_skips, dataset_name, resolve_dataset

    dataset_name(spec, getattr(args, "vocabulary", "") or "")
    records = resolve_dataset(spec)
    return records, check_load_skips(spec, getattr(args, "accept_skips", False))


def detic_labeling_argv(config_file: str, opts: Sequence[str] = ()) -> Optional[list]:
    """The stage-1 command line (``tools/label_objects.py`` arguments) that runs an official
    ``LabelingDetic`` config (configs/DeticLabeling.yaml, ``detic_labeling_net.py --config-file
    ... --eval-only``): the file is the labeler's config (``--labeler-config``, Detic keys), its
    PROPOSAL_GENERATION keys and ``opts`` go to this project's defaults with OBJECT_MASK_TYPE
    ``detic``, the dataset is its DATASETS.TEST[0] and the output the official folder
    ``<ROOT_FOLDER_NAME>/object_labels/detic_predictions/<DETIC_LABELING_MODE>/<dataset>/`` (which
    configs/ProposalGeneration.yaml reads). None when ``config_file`` is no LabelingDetic config.
    Running it needs Detic (an ImportError says what to install) and its weights."""
    import yaml

    try:
        with open(config_file) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or (data.get("MODEL") or {}).get("META_ARCHITECTURE") != "LabelingDetic":
        return None
    from ..config import setup_cfg

    pg_opts = [x for k, v in (data.get("PROPOSAL_GENERATION") or {}).items()
               for x in (f"PROPOSAL_GENERATION.{k}", str(v))]
    pg_opts += ["PROPOSAL_GENERATION.OBJECT_MASK_TYPE", "detic", *opts]
    pg = setup_cfg("", pg_opts).PROPOSAL_GENERATION
    tests = (data.get("DATASETS") or {}).get("TEST") or ("imagenet_1k_train",)
    dataset = ast.literal_eval(tests) if isinstance(tests, str) and tests.startswith(("(", "[")) else tests
    dataset = dataset[0] if isinstance(dataset, (list, tuple)) else str(dataset)
    out = os.path.join(pg.ROOT_FOLDER_NAME, "object_labels", "detic_predictions", pg.DETIC_LABELING_MODE, dataset, "")
    return ["--config-file", "", "--labeler-config", config_file, "--dataset", dataset, "--output-dir", out, *pg_opts]


def _stage_class(name: str):
    from . import build

    try:
        return build.stage_class(name)
    except KeyError as e:
        raise SystemExit(e.args[0]) from None


def setup(args):
    """Config from ``args``, logging to stderr and ``<output_dir>/logs/log.txt``; returns cfg."""
    from detectron2.utils.logger import setup_logger

    from ..config import setup_cfg
    import part_distillation.modeling  # noqa: F401  (registers backbones)

    cfg = setup_cfg(args.config_file, args.opts)
    os.makedirs(os.path.join(args.output_dir, "logs"), exist_ok=True)
    setup_logger(os.path.join(args.output_dir, "logs", "log.txt"), name="part_distillation", abbrev_name="pd")
    setup_logger(os.path.join(args.output_dir, "logs", "log.txt"), name="detectron2", abbrev_name="d2")
    if cfg.MODEL.DEVICE == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    logging.getLogger("part_distillation").info("config %s, overrides %s", args.config_file, args.opts)
    return cfg


def main(stage: Optional[str] = None, argv: Optional[Sequence[str]] = None, description: str = "") -> int:
    """Parse ``argv``, run the stage (``stage`` or ``--stage``), return the exit status."""
    args = stage_parser(description or "Run one stage (sharded, resumable)", stage or "*").parse_args(argv)
    name = stage or args.stage
    cls = _stage_class(name)
    if getattr(args, "labeler_config", None):
        args.opts = ["PROPOSAL_GENERATION.LABELER_CONFIG", args.labeler_config, *args.opts]
    cfg = setup(args)
    if cls.INPUT_KIND == "dataset":
        spec = getattr(args, "dataset", None) or cls.default_input(cfg)
        if not spec:
            raise SystemExit(f"stage {name} reads a dataset: pass --dataset")
        inputs, report = load_dataset(spec, args)
    else:
        report = None
        inputs = getattr(args, "input_dir", None) or cls.default_input(cfg)
        if not inputs:
            raise SystemExit(f"stage {name} reads {cls.INPUT_STAGE} pseudo-labels: pass --input-dir")
    if getattr(args, "proposals_dir", None):
        from ..config import with_overrides
        from .part_ranking import predictor_overrides
        from .proposal_learning import ProposalLearningStage

        if name != "part_ranking":
            raise SystemExit("--proposals-dir is for stage part_ranking")
        if ProposalLearningStage(with_overrides(cfg, predictor_overrides(cfg)), args.proposals_dir).run(inputs).failed:
            return 1
        inputs = args.proposals_dir
    stage_obj = cls(cfg, args.output_dir)
    stage_obj.input_report = report
    summary = stage_obj.run(inputs)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
