#!/usr/bin/env python
"""Manual evaluation of part segmentations (precision / diversity / generality), blinded::

    .venv/bin/python tools/manual_eval.py prepare --method ours=OUT/part_distillation/predictions \
        --method baseline=OUT/pretrained/dcrf --classes 20 --per-class 3 --seed 0 --out STUDY
    .venv/bin/python tools/manual_eval.py serve STUDY [--host 127.0.0.1] [--port 8000] [--token T]
    .venv/bin/python tools/manual_eval.py report STUDY

Protocol and metric definitions: docs/MANUAL_EVAL.md.
"""
import argparse
import json
import logging
import sys

from part_distillation.manual_eval import StudyError, prepare_study


def _classes(text):
    if text is None or text.isdigit():
        return None if text is None else int(text)
    return [c for c in text.replace(",", " ").split() if c]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prepare", help="sample objects, render the blinded panels, write the study")
    pr.add_argument("--method", action="append", required=True, metavar="NAME=FOLDER",
                    help="a method and its prediction folder (pseudo-label schema); at least two")
    pr.add_argument("--classes", default=None,
                    help="N (N random classes) or a comma/space-separated list of class codes; default all")
    pr.add_argument("--class-list", default=None, help="file with one class code a line: the pool for N random")
    pr.add_argument("--per-class", type=int, default=2)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", required=True, help="the study folder")
    sv = sub.add_parser("serve", help="the annotators' web page")
    sv.add_argument("study")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token", default=None, help="every request must carry it (?token=, Bearer header or cookie)")
    rp = sub.add_parser("report", help="figures, intervals, agreement: report.md/json/png in the study")
    rp.add_argument("study")
    rp.add_argument("--resamples", type=int, default=2000)
    rp.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "prepare":
            methods = {}
            for m in args.method:
                name, sep, folder = m.partition("=")
                if not sep or name in methods:
                    p.error(f"--method {m!r}: give NAME=FOLDER, each name once")
                methods[name] = folder
            pool = None
            if args.class_list:
                with open(args.class_list) as f:
                    pool = [line.strip() for line in f if line.strip()]
            summary = prepare_study(methods, args.out, _classes(args.classes), args.per_class, args.seed, pool)
            print(json.dumps({k: summary[k] for k in ("num_items", "classes", "classes_short_of_per_class")}))
            print(f"wrote {args.out}")
        elif args.command == "serve":
            from part_distillation.manual_eval.server import serve

            serve(args.study, args.host, args.port, args.token)
        else:
            from part_distillation.manual_eval.report import write_report

            paths = write_report(args.study, args.resamples, args.seed)
            print(open(paths["md"]).read())
            print("wrote " + ", ".join(paths.values()))
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
