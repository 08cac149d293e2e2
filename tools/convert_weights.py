#!/usr/bin/env python
"""Load an official Mask2Former / PartDistillation checkpoint into the model of a config, print
which keys are missing, unexpected or shape-mismatched (mismatches are skipped, e.g. the COCO
``class_embed`` vs. our 1-class ProposalModel), and optionally save the loaded model as ``.pth``
(``{"model": state_dict}``, loadable through MODEL.WEIGHTS).

Example::

    .venv/bin/python tools/convert_weights.py --config-file configs/part_proposal/swin_L.yaml \
        --weights weights/mask2former_swin_L_IN21k_coco_instance_q200.pkl \
        --output weights/proposal_swin_L_init.pth MODEL.DEVICE cpu
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

import part_distillation.modeling  # noqa: E402,F401  (registers backbones and heads)
from part_distillation.config import setup_cfg  # noqa: E402
from part_distillation.modeling.meta_arch import proposal_model  # noqa: E402,F401
from part_distillation.modeling.weights import load_checkpoint_state, load_state_into_model  # noqa: E402


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
    report = load_state_into_model(model, load_checkpoint_state(args.weights))
    print(report.format())
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        torch.save({"model": model.state_dict()}, args.output)
        print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
