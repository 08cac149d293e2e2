#!/usr/bin/env python
"""Parts of the objects in your images with a stage-4 (ProposalModel) or stage-6
(PartDistillationModel) checkpoint, detectron2 ``demo/demo.py`` style.

    .venv/bin/python demo/demo.py --config-file configs/PartDistillation.yaml \\
        --input photos/ --output demo_out \\
        --opts MODEL.WEIGHTS weights/PartDistillation/IN1K+Human/part_distillation_model.pth

--input takes image files, folders (their images) and glob patterns. Object masks (--labeler):

* ``given`` (default): the objects of a pseudo-label file of the image (the project's format,
  e.g. the output of tools/label_objects.py): the file of the image's id in --masks DIR (DIR or
  DIR/<class folder>), else ``<image path without extension>.json`` beside the image; an image
  without such a file is one object covering the whole image (class name "object").
* ``detectron2`` / ``detic``: a stage-1 labeler built from --labeler-config (see
  tools/label_objects.py and INSTALL.md for Detic).

Object classes (stage 6; the index into the class head): --object-class when given, else each
object's ``class_id`` from its file or labeler (the whole-image object: 0); a negative id gives
no parts. Per image it writes ``<output>/<image id>.jpg`` (parts coloured by label, captioned and
listed in a legend as ``<object class>: part <label>``, stage 4 ``segment <v>``) and the
pseudo-label ``<output>/<class folder>/<image id>.json`` (stage ``part_distillation`` or
``proposal_learning``; ``part_distillation.data.pseudo_labels.load_pseudo_label`` reads it).
"""
import argparse
import glob
import logging
import os
import sys

import numpy as np
from detectron2.utils.logger import setup_logger

from part_distillation.config import setup_cfg, with_overrides
from part_distillation.data.image_folder import IMAGE_EXTENSIONS
from part_distillation.data.images import image_id_of_path
from part_distillation.data.proposal_dataset import read_image
from part_distillation.data.pseudo_labels import ObjectLabel, load_pseudo_label, save_pseudo_label
from part_distillation.engine.predictor import PartPredictor
from part_distillation.labelers.build import build_labeler
from part_distillation.visualization import save_part_predictions

logger = logging.getLogger("part_distillation.demo")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    p.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder for the overlays and pseudo-labels")
    p.add_argument("--labeler", default="given", choices=["given", "detectron2", "detic"],
                   help="where the object masks come from (default: given)")
    p.add_argument("--labeler-config", default="", help="detectron2 / detic: the labeler's own config")
    p.add_argument("--masks", default="", metavar="DIR", help="given: a pseudo-label folder with the objects")
    p.add_argument("--object-class", type=int, default=None,
                   help="stage 6: class-head index of every object (default: each object's class_id)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def list_inputs(specs):
    """Image paths of --input entries (files, folders, globs), in order, without repeats.

    Raises:
        FileNotFoundError: an entry that names nothing.
    """
    out = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(spec):
            found = [spec]
        else:
            found = sorted(f for f in glob.glob(spec) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise FileNotFoundError(f"--input {spec}: no image there")
        out += [f for f in found if f not in out]
    return out


def mask_file(image_path: str, masks_dir: str) -> str:
    """The pseudo-label file with the objects of ``image_path`` ('' if none, see the module docstring)."""
    image_id = image_id_of_path(image_path)
    if masks_dir:
        hits = sorted(glob.glob(os.path.join(glob.escape(masks_dir), f"{glob.escape(image_id)}.json"))
                      + glob.glob(os.path.join(glob.escape(masks_dir), "*", f"{glob.escape(image_id)}.json")))
        return hits[0] if hits else ""
    beside = os.path.splitext(image_path)[0] + ".json"
    return beside if os.path.isfile(beside) else ""


def given_objects(image_path: str, size, masks_dir: str):
    """The objects of the image's pseudo-label file, or one whole-image object.

    Raises:
        PseudoLabelError: an unreadable file; ValueError: its size is not the image's.
    """
    path = mask_file(image_path, masks_dir)
    if not path:
        logger.info("%s: no mask file, the whole image is the object", image_path)
        return [ObjectLabel("object", np.ones(size, dtype=bool), "object", class_id=0)]
    label = load_pseudo_label(path)
    if (label.height, label.width) != tuple(size):
        raise ValueError(f"{path}: objects of a {label.height}x{label.width} image, {image_path} is "
                         f"{size[0]}x{size[1]}")
    return label.objects


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="part_distillation")
    cfg = setup_cfg(args.config_file, args.opts)
    predictor = PartPredictor(cfg)
    labeler = None
    if args.labeler != "given":
        labeler = build_labeler(with_overrides(cfg, ["PROPOSAL_GENERATION.OBJECT_MASK_TYPE", args.labeler,
                                                     "PROPOSAL_GENERATION.LABELER_CONFIG", args.labeler_config]))
    paths = list_inputs(args.input)
    ids = [image_id_of_path(p) for p in paths]
    if len(set(ids)) != len(ids):
        raise ValueError(f"--input: two images with one image id (file name): {sorted(i for i in ids if ids.count(i) > 1)}")
    os.makedirs(args.output, exist_ok=True)
    for path, image_id in zip(paths, ids):
        image = read_image(path, "BGR")
        size = image.shape[:2]
        if labeler is None:
            objects = given_objects(path, size, args.masks)
        else:
            objects = labeler(image[:, :, ::-1], {"file_name": path, "image_id": image_id,
                                                  "height": size[0], "width": size[1]})
        if not objects:
            logger.warning("%s: no object, nothing written", path)
            continue
        classes = [args.object_class if args.object_class is not None else o.class_id for o in objects]
        if predictor.labelled and any(c < 0 for c in classes):
            logger.warning("%s: %d object(s) without a class-head index get no parts (give --object-class)",
                           path, sum(c < 0 for c in classes))
        outputs = predictor(image, [o.mask for o in objects], classes)
        label = predictor.to_pseudo_label(path, image_id, objects, outputs)
        label.config = {"MODEL.WEIGHTS": cfg.MODEL.WEIGHTS, "labeler": args.labeler, "object_classes": classes}
        word = "part {}" if predictor.labelled else "segment {}"
        first = 0 if predictor.labelled else 1
        names = [[word.format(v + first) for v in range(int(seg.max()) if seg.numel() else 0)]
                 for seg in outputs["part_seg"]]
        save_part_predictions(os.path.join(args.output, f"{image_id}.jpg"), np.ascontiguousarray(image[:, :, ::-1]),
                              outputs["part_seg"], [o.class_name for o in objects], names, legend=True)
        written = save_pseudo_label(args.output, label)
        logger.info("%s: %d object(s), %d part(s) -> %s", path, len(objects),
                    sum(len(o.parts) for o in label.objects), written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
