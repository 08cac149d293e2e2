"""Stage-1 Detic labeler (``OBJECT_MASK_TYPE: detic``; PartDistillation's ImageNet-21K labels).

Optional extra (``pip install -e .[detic]``, see INSTALL.md): the PyPI packages ``detic-fast``
and ``centernet2`` (installed ``--no-deps``) and the CLIP tokenizer they import
(``clip-anytorch``, ``ftfy``, ``regex``). Detic imports ``mmcv`` only for fp16 training
(``wrap_fp16_model``); inference does not need it, so when mmcv is absent a stub that raises on
use stands in for that one function.

Model: the official config ``Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size``
(``configs/detic/``, Detic/CenterNet2 keys, its own CfgNode: ``PROPOSAL_GENERATION.
LABELER_CONFIG``) and checkpoint ``weights/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.pth``.
The classifier is replaced by CLIP text embeddings of ``"a " + class name`` (official prompt) for
the classes of the records being labelled, read from PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH:
an ``.npz`` with ``names`` (C,) str and ``embeddings`` (C, 512) float32 (CLIP ViT-B/32 text
features of ``"a " + name``, one row per name; :func:`write_clip_embeddings` makes it with
``clip-anytorch`` when the CLIP weights are available). Images are resized to fit
INPUT.MAX_SIZE_TEST x INPUT.MAX_SIZE_TEST of the Detic config (640: official) keeping the aspect ratio; kept objects: see :func:`select_predictions`
(``image_class_else_all``: the image's own class, top 10 by score, else the top 10 of all).
"""
import logging
import os
import sys
import types
from typing import List, Sequence

import numpy as np
import torch
from detectron2.config import configurable

from ..data.pseudo_labels import ObjectLabel
from .build import OBJECT_LABELER_REGISTRY
from .common import BatchedModelLabeler, check_weights, objects_from_instances

logger = logging.getLogger(__name__)

INSTALL_HELP = ("The Detic labeler needs the optional extra: .venv/bin/python -m pip install --no-deps "
                "detic-fast==1.0.post20230203 centernet2==1.0.post20221121 clip-anytorch==2.6.0 && "
                ".venv/bin/python -m pip install ftfy regex (or pip install -e .[detic]; see INSTALL.md)")
WEIGHTS_HELP = ("Download Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.pth from the Detic model zoo "
                "(facebookresearch/Detic, MODEL_ZOO.md) to that path (see weights/README.md).")


def import_detic():
    """Import Detic + CenterNet2 and return ``(add_centernet_config, add_detic_config)``.

    Raises:
        ImportError: with :data:`INSTALL_HELP` when a package is missing.
    """
    if "mmcv" not in sys.modules:
        try:
            import mmcv.runner.fp16_utils  # noqa: F401
        except ImportError:
            _stub_mmcv_fp16()
    try:
        from centernet.config import add_centernet_config
        from detic.config import add_detic_config
    except ImportError as e:
        raise ImportError(f"{e}. {INSTALL_HELP}") from None
    return add_centernet_config, add_detic_config


def _stub_mmcv_fp16():
    def wrap_fp16_model(model):
        raise NotImplementedError("fp16 Detic training needs mmcv (pip install mmcv<2)")

    mods = {name: types.ModuleType(name) for name in ("mmcv", "mmcv.runner", "mmcv.runner.fp16_utils")}
    mods["mmcv.runner.fp16_utils"].wrap_fp16_model = wrap_fp16_model
    sys.modules.update(mods)


# keys of the official configs/DeticLabeling.yaml that are this project's (the stage-1 settings
# and the input size), not Detic's: left out of the Detic config
PROJECT_KEYS = ("PROPOSAL_GENERATION", "INPUT.IMAGE_SIZE")


def load_detic_config(path: str, opts=()):
    """detectron2 defaults + CenterNet2 + Detic keys, then the YAML at ``path`` (its ``_BASE_`` chain)
    without :data:`PROJECT_KEYS`; the zero-shot classifier is built random ('rand') and replaced by
    :func:`set_vocabulary`, and the federated loss (training only; it reads a class-frequency
    file) is off. The official labeling model ``LabelingDetic`` (a ``CustomRCNN`` subclass that
    writes its predictions) is built as ``CustomRCNN``; this stage writes them.

    Raises:
        ImportError / FileNotFoundError / ValueError with what to do.
    """
    add_centernet_config, add_detic_config = import_detic()
    from detectron2.config import get_cfg

    if not path:
        raise ValueError("the Detic labeler needs PROPOSAL_GENERATION.LABELER_CONFIG (--labeler-config), e.g. "
                         "configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Detic config not found: {path}")
    cfg = get_cfg()
    add_centernet_config(cfg)
    add_detic_config(cfg)
    loaded = cfg.load_yaml_with_base(path, allow_unsafe=True)
    for key in PROJECT_KEYS:
        *parents, leaf = key.split(".")
        node = loaded
        for name in parents:
            node = node.get(name) or {}
        node.pop(leaf, None)
    cfg.merge_from_other_cfg(type(cfg)(loaded))
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.META_ARCHITECTURE == "LabelingDetic":
        cfg.MODEL.META_ARCHITECTURE = "CustomRCNN"
    cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH = "rand"
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    cfg.MODEL.ROI_BOX_HEAD.IGNORE_ZERO_CATS = False
    cfg.MODEL.RESET_CLS_TESTS = False
    return cfg


def load_clip_embeddings(path: str, names: Sequence[str]) -> np.ndarray:
    """(len(names), D) float32 rows of ``names`` from an ``.npz`` (``names``, ``embeddings``).

    Raises:
        FileNotFoundError: no file (says how to make one). KeyError: names missing from it.
    """
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"CLIP text embeddings not found at {path!r} (PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH): an .npz with "
            "'names' (C,) and 'embeddings' (C, 512) float32 of CLIP ViT-B/32 for 'a ' + name; make it with "
            "part_distillation.labelers.detic.write_clip_embeddings when you have the CLIP weights")
    with np.load(path) as z:
        table = {str(n): i for i, n in enumerate(z["names"])}
        missing = [n for n in names if n not in table]
        if missing:
            raise KeyError(f"{path} has no embedding for {missing[:10]} ({len(missing)} classes)")
        return z["embeddings"][[table[n] for n in names]].astype(np.float32)


def write_clip_embeddings(path: str, names: Sequence[str], model_name: str = "ViT-B/32", device: str = "cpu"):
    """Compute CLIP text embeddings of ``"a " + name`` (official Detic prompt) with
    ``clip-anytorch`` (downloads / reads its weights via ``clip.load``) and save the ``.npz``."""
    import clip

    from ..utils.io import atomic_write

    model, _ = clip.load(model_name, device=device)
    with torch.no_grad():
        feats = model.encode_text(clip.tokenize([f"a {n}" for n in names]).to(device)).float()
    feats = torch.nn.functional.normalize(feats, dim=1).cpu().numpy()
    atomic_write(path, lambda f: np.savez(f, names=np.array(list(names)), embeddings=feats), mode="wb")


def set_vocabulary(model, embeddings: np.ndarray) -> None:
    """Make every cascade stage's zero-shot classifier score the C classes of ``embeddings``
    (C, D): weight (D, C + 1) with a zero background column, L2-normalised per class when the
    classifier normalises (MODEL.ROI_BOX_HEAD.NORM_WEIGHT)."""
    w = torch.as_tensor(embeddings, dtype=torch.float32).t()
    w = torch.cat([w, w.new_zeros((w.shape[0], 1))], dim=1)
    for predictor in model.roi_heads.box_predictor:
        cls = predictor.cls_score
        weight = torch.nn.functional.normalize(w, p=2, dim=0) if cls.norm_weight else w
        del cls.zs_weight
        cls.register_buffer("zs_weight", weight.to(cls.linear.weight.device))
        predictor.num_classes = weight.shape[1] - 1
    model.roi_heads.num_classes = w.shape[1] - 1


@OBJECT_LABELER_REGISTRY.register()
class DeticLabeler(BatchedModelLabeler):
    """See the module docstring. ``set_classes(names)`` must be called before labelling (the
    stage runner passes the class names of its records)."""

    NAME = "detic"

    @configurable
    def __init__(self, *, model_cfg, top_k: int, class_filter: str, batch_size: int, num_workers: int,
                 embeddings_path: str):
        """
        Args:
            model_cfg: the Detic config (:func:`load_detic_config`).
            top_k, class_filter, batch_size, num_workers: as
                :class:`~part_distillation.labelers.detectron2_model.Detectron2ModelLabeler`'s.
            embeddings_path: .npz of CLIP text embeddings (``PROPOSAL_GENERATION.CLIP_EMBEDDINGS_PATH``).

        Raises:
            FileNotFoundError: its MODEL.WEIGHTS names a missing file.
        """
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        self.model_cfg = model_cfg
        self.top_k, self.class_filter = top_k, class_filter
        self.batch_size, self.num_workers = batch_size, num_workers
        self.embeddings_path = embeddings_path
        weights = check_weights(self.model_cfg.MODEL.WEIGHTS, "Detic", WEIGHTS_HELP)
        self.model = build_model(self.model_cfg).eval()
        if weights:
            DetectionCheckpointer(self.model).load(weights)
        self.fit_size = self.model_cfg.INPUT.MAX_SIZE_TEST
        self.class_names: List[str] = []

    @classmethod
    def from_config(cls, cfg, model_cfg=None) -> dict:
        """``model_cfg`` (default: :func:`load_detic_config` of PROPOSAL_GENERATION.LABELER_CONFIG on
        the project's MODEL.DEVICE), PROPOSAL_GENERATION.{OBJECT_TOP_K, OBJECT_CLASS_FILTER,
        LABELER_BATCH_SIZE, CLIP_EMBEDDINGS_PATH}, DATALOADER.NUM_WORKERS."""
        pg = cfg.PROPOSAL_GENERATION
        if model_cfg is None:
            model_cfg = load_detic_config(pg.LABELER_CONFIG, ["MODEL.DEVICE", cfg.MODEL.DEVICE])
        return dict(model_cfg=model_cfg, top_k=pg.OBJECT_TOP_K, class_filter=pg.OBJECT_CLASS_FILTER,
                    batch_size=pg.LABELER_BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS,
                    embeddings_path=pg.CLIP_EMBEDDINGS_PATH)

    def settings(self) -> dict:
        """:meth:`BatchedModelLabeler.settings` plus ``embeddings_path``."""
        return {**super().settings(), "embeddings_path": self.embeddings_path}

    def set_classes(self, names: Sequence[str]) -> None:
        """Vocabulary = ``names`` (embeddings from CLIP_EMBEDDINGS_PATH)."""
        self.class_names = list(names)
        set_vocabulary(self.model, load_clip_embeddings(self.embeddings_path, self.class_names))

    def transform(self, image: np.ndarray):
        """uint8 RGB (H, W, 3) -> ``(CHW float32 BGR tensor fitted in fit_size x fit_size, H, W)``."""
        import cv2

        h, w = image.shape[:2]
        scale = min(self.fit_size / h, self.fit_size / w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]  # Detic: BGR
        return torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32")), h, w

    @torch.no_grad()
    def predict(self, inputs: list, records: List[dict]) -> List[List[ObjectLabel]]:
        if not self.class_names:
            raise RuntimeError("DeticLabeler.set_classes(names) was not called")
        outputs = self.model([{"image": x, "height": h, "width": w} for x, h, w in inputs])
        return [objects_from_instances(out["instances"].to("cpu"), self.class_names, rec, self.class_filter,
                                       self.top_k) for out, rec in zip(outputs, records)]
