#!/usr/bin/env python
"""Load an official Mask2Former / PartDistillation checkpoint into the model of a config exactly as
training's MODEL.WEIGHTS does (detectron2 ``DetectionCheckpointer``), print fvcore's report of
missing, unexpected and shape-mismatched keys (mismatches are skipped, e.g. the 80-class COCO
``class_embed`` and ``criterion.empty_weight`` vs. the 1-class ProposalModel), and optionally save
the loaded model as ``.pth`` (``{"model": state_dict}``, loadable through MODEL.WEIGHTS).

Example::

    .venv/bin/python tools/convert_weights.py --config-file configs/proposal_learning/swin_L.yaml \
        --weights weights/mask2former/instance/swinL_i21k_q200_e100.pkl \
        --output weights/proposal_swin_L_init.pth MODEL.DEVICE cpu
"""
import argparse
import sys

import torch
from detectron2.modeling import build_model

import part_distillation.modeling  # noqa: F401  (registers backbones, heads, meta-architectures)
from part_distillation.config import setup_cfg
from part_distillation.modeling.weights import format_incompatible_keys, load_weights
from part_distillation.utils.io import atomic_write


def main(argv=None) -> int:
    """Parse ``argv``, load, print the report; returns the process exit code (0)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help=".pkl (model zoo) or .pth checkpoint")
    parser.add_argument("--output", default="", help="optional .pth to save the loaded model to")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = setup_cfg(args.config_file, args.opts)
    model = build_model(cfg)
    print(f"{args.weights} -> {cfg.MODEL.META_ARCHITECTURE}: "
          + format_incompatible_keys(load_weights(model, args.weights)))
    if args.output:
        atomic_write(args.output, lambda f: torch.save({"model": model.state_dict()}, f), mode="wb")
        print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
