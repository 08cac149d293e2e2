"""Manual evaluation (the paper's precision / diversity / generality study) as a blinded web tool.

``prepare`` (:func:`prepare_study`) samples objects present in every compared method's predictions
(pseudo-label schema) and renders one panel per (object, method) with the shared part renderer
(:func:`part_distillation.visualization.draw_part_predictions`, the demo's); ``serve`` (:mod:`.server`, FastAPI +
uvicorn, imported only when serving) shows them to annotators in a per-item random order and
stores every answer in SQLite (:mod:`.store`); ``report`` (:mod:`.report`) computes the figures.
It reads ``data`` and ``visualization`` only. Protocol and definitions: docs/MANUAL_EVAL.md.
"""
from .prepare import prepare_study, segment_map
from .store import StudyError

__all__ = ["prepare_study", "segment_map", "StudyError", "pipeline_methods"]


def pipeline_methods(outputs: dict) -> dict:
    """The methods a main-job study compares, from the main job's ``metrics["outputs"]``
    (``{"<variant>/<stage>" or stage name: folder}`` in run order): stage 6 and stage 5 when run
    , and per variant its last stage that is not the
    official-CRF copy (stage 3: the unsupervised proposal-generation baseline), named after the variant."""
    methods, last = {}, {}
    for key, folder in outputs.items():
        variant, sep, stage = key.partition("/")
        if not sep:
            continue
        if not stage.endswith("_official"):
            last[variant] = folder
    for key in ("part_distillation", "part_ranking"):
        if key in outputs:
            methods[key] = outputs[key]
    methods.update(last)
    return methods

