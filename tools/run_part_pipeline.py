#!/usr/bin/env python
"""Main job of stages 1-3 on real input: object masks -> proposal generation -> dense-CRF -> evaluation,
metrics and collages. Example (18 real Pascal-Part images, a few minutes on 2 CPU cores)::

    .venv/bin/python tools/run_part_pipeline.py --dataset pascal_part_examples \
        --output-dir output/pascal_part_examples --baselines

All six stages (stages 4-6 with the tiny CPU configs, trained and evaluated on the same images;
``<out>/proposal_learning``, ``<out>/part_ranking``, ``<out>/part_distillation``)::

    .venv/bin/python tools/run_part_pipeline.py --dataset pascal_part_examples \
        --output-dir output/six_stages/pascal_part_examples --stages 1-6 \
        --proposal-opts "SOLVER.MAX_ITER 300" --distillation-opts "SOLVER.MAX_ITER 300"

``--manual-eval-study DIR`` then prepares a small blinded study from this run's outputs (stage 6,
stage 5 and each variant's stage 3 as methods; docs/MANUAL_EVAL.md).

``--dataset`` takes a registered name (pascal_part, pascal_part_examples, ade20k_part_subset, ...)
or a folder (Pascal-Part layout, or any folder of images). A Pascal-Part-layout folder's names are
mapped to the Pascal-Part vocabulary, or kept when they come from another one (``--vocabulary
auto``, the default; ``pascal`` / ``as-is`` force either). When the load skips more than 5% of the
images the job stops before computing anything; ``--accept-skips`` runs on the rest (the skips are
in metrics.json, metrics.md and the stage-1 summary either way).
"""
import json
import os
import shlex


from part_distillation.stages.cli import add_dataset_load_args, setup, stage_parser
from part_distillation.stages.pipeline import (BASELINE_VARIANTS, DEFAULT_VARIANT,
                                               OFFICIAL_VARIANTS, run_pipeline)


def main():
    p = stage_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="pascal_part_examples", help="registered dataset name or folder")
    add_dataset_load_args(p)
    p.add_argument("--baselines", action="store_true", help="also run random-init, RGB+XY k-means and 2x2 grid")
    p.add_argument("--official-variants", action="store_true",
                   help="also run the official dot-metric / un-normalised feature settings")
    p.add_argument("--num-collages", type=int, default=8)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--stages", choices=("1-3", "1-6"), default="1-3",
                   help="1-6: also train stage 4 on the stage-3 labels, rank parts (5), train stage 6")
    for flag, default in (("proposal", "configs/proposal_learning/tiny_cpu.yaml"),
                          ("ranking", "configs/part_ranking/tiny_cpu.yaml"),
                          ("distillation", "configs/part_distillation/tiny_cpu.yaml")):
        p.add_argument(f"--{flag}-config", default=default, help=f"--stages 1-6: the {flag} config")
        p.add_argument(f"--{flag}-opts", default="", help='its overrides, one string: "KEY VALUE ..."')
    p.add_argument("--manual-eval-study", default=None, metavar="DIR",
                   help="then prepare a small blinded manual-evaluation study in DIR from this run's stage-6 / "
                        "stage-5 outputs and each variant's stage-3 labels (tools/manual_eval.py serve DIR)")
    p.add_argument("--manual-eval-classes", type=int, default=4, help="classes drawn for that study (2 objects each)")
    args = p.parse_args()
    if args.manual_eval_study and args.stages != "1-6" and not args.baselines:
        p.error("--manual-eval-study compares methods: add --stages 1-6 or --baselines")
    cfg = setup(args)
    learned = None
    if args.stages == "1-6":
        from part_distillation.config import setup_cfg
        from part_distillation.stages.learned_stages import STAGE4, STAGE5, STAGE6

        learned = {stage: setup_cfg(getattr(args, f"{flag}_config"), shlex.split(getattr(args, f"{flag}_opts")))
                   for stage, flag in ((STAGE4, "proposal"), (STAGE5, "ranking"), (STAGE6, "distillation"))}
    variants = dict(DEFAULT_VARIANT)
    if args.official_variants:
        variants.update(OFFICIAL_VARIANTS)
    if args.baselines:
        variants.update(BASELINE_VARIANTS)
    metrics = run_pipeline(cfg, args.dataset, args.output_dir, variants, args.num_collages, args.max_images,
                           config_file=args.config_file,
                           learned_cfgs=learned, vocabulary=args.vocabulary, accept_skips=args.accept_skips)
    print(json.dumps({k: v["segments"] for k, v in metrics["results"].items()}, indent=1))
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')} and collages/")
    if args.manual_eval_study:
        from part_distillation.manual_eval import pipeline_methods, prepare_study

        methods = pipeline_methods(metrics["outputs"])
        summary = prepare_study(methods, args.manual_eval_study, classes=args.manual_eval_classes, per_class=2)
        print(f"manual-evaluation study of {summary['num_items']} objects ({', '.join(methods)}) in "
              f"{args.manual_eval_study}: tools/manual_eval.py serve {args.manual_eval_study}")


if __name__ == "__main__":
    main()
