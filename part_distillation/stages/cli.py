"""Command-line plumbing shared by the stage tools in ``tools/``: the argument parser and set-up
(config with ``_BASE_`` + ``KEY VALUE`` overrides, logging, torch threads)."""
import argparse
import logging
import os

import torch


def stage_parser(description: str) -> argparse.ArgumentParser:
    """``--config-file``, ``--output-dir`` and trailing ``KEY VALUE`` config overrides."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config-file", default="configs/pixel_grouping/effnet_lite0_cpu.yaml", metavar="FILE")
    p.add_argument("--output-dir", required=True, help="where this stage writes its pseudo-labels")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as KEY VALUE pairs, e.g. PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS 5")
    return p


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
