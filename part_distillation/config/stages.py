"""The stage namespaces, one ``add_<namespace>_config`` each (official names and layout of
official ``part_distillation/config.py``; defaults that differ from the official ones say so).

Stage map: stage 1 object masks and stage 2 proposal generation (``PROPOSAL_GENERATION.*``),
stage 3 dense-CRF (``DENSE_CRF.*``), stage 4 proposal learning (``PROPOSAL_LEARNING.*``), stage 5
part ranking (``PART_RANKING.*``), stage 6 PartDistillation self-training
(``PART_DISTILLATION.*``). The official eval-only ``PIXEL_GROUPING.*`` keys merge and are ignored.
"""
from detectron2.config import CfgNode as CN


def add_stage_run_keys(node: CN) -> None:
    """Declare the run keys every stage namespace has (official names; read by the stage runner,
    :mod:`part_distillation.stages.runner`): ``TOTAL_PARTITIONS`` (-1: one partition),
    ``PARTITION_INDEX`` (-1: ``SLURM_ARRAY_TASK_ID`` when set, else 0), ``FILTERED_CODE_PATH_LIST``
    (text files of class codes to keep; empty: all), ``EXCLUDE_CODE_PATH`` (a text file of class
    codes to drop), ``PATH_ONLY`` (the lists hold paths; a class code is a line's last component),
    ``DEBUG`` (only the first few items of the partition). Keys already declared keep their value."""
    defaults = {"TOTAL_PARTITIONS": -1, "PARTITION_INDEX": -1, "FILTERED_CODE_PATH_LIST": [],
                "EXCLUDE_CODE_PATH": "", "PATH_ONLY": False, "DEBUG": False}
    for key, value in defaults.items():
        if key not in node:
            node[key] = value


def add_proposal_generation_config(cfg: CN) -> None:
    """Stages 1 (object masks) and 2 (proposal generation: pixel grouping inside each object)."""
    pg = cfg.PROPOSAL_GENERATION = CN()
    pg.DATASET_NAME = ""  # stage 1's dataset when the tool gets no --dataset
    # Stage-1 labeler: "given" (the dataset's object masks), or another name registered in
    # OBJECT_LABELER_REGISTRY (part_distillation.labelers.build).
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
    # Pixel -> centre assignment: "l2" (-||x-c||^2) or "dot" (x.c). The official defaults (l2,
    # not normalised, res4 only); the official YAMLs and this project's configs
    # (configs/proposal_generation/Base-ProposalGeneration.yaml: dot on L2-normalised res3+res4,
    # with its figures) set their own.
    pg.DISTANCE_METRIC = "l2"
    pg.FEATURE_NORMALIZE = False  # L2-normalise the concatenated feature per pixel
    # This project's option, not official (0 = off, the official behaviour): weight w of each
    # feature pixel's (x, y) inside its object's box (units of the box's longer side), appended to
    # its (normalised) features for k-means and the assignment: SLIC-style spatial coherence
    # (stages/proposal_generation.py). GROUPING kmeans only; kmeans_rgbxy has its own XY.
    pg.POSITION_WEIGHT = 0.0
    pg.BACKBONE_FEATURE_KEY_LIST = ["res4"]
    pg.FEATURE_STRIDE = 8  # common stride the feature levels are resampled to
    pg.KMEANS_ITERS = 50
    pg.KMEANS_TOL = 1e-4
    pg.KMEANS_RESTARTS = 3  # 3 seedings reach sklearn's inertia or lower (tests/test_kmeans.py)
    pg.OBJECTS_PER_BATCH = 16  # objects clustered together in one batched k-means call
    pg.MIN_OBJECT_AREA = 1  # stage 1: objects with fewer full-resolution pixels are dropped and listed
    pg.SEED = 0
    pg.BATCH_SIZE = 1
    pg.ROOT_FOLDER_NAME = "pseudo_labels"
    pg.SINGLE_CLASS_CODE = ""  # keep only this class code ("" = all), with the class filters below
    pg.DETIC_LABELING_MODE = "max-gt-label"
    pg.SAVE_SCORE_THRESHOLD = 0.0  # stage 1: objects scored below are dropped and listed
    add_stage_run_keys(pg)


def add_pixel_grouping_config(cfg: CN) -> None:
    """The official eval-only ``PixelGroupingModel`` keys: accepted and ignored
    (:data:`~part_distillation.config.ACCEPTED_UNREAD_KEYS`); stage 2 reads
    ``PROPOSAL_GENERATION.*``."""
    pgr = cfg.PIXEL_GROUPING = CN()
    pgr.NUM_SUPERPIXEL_CLUSTERS = 4  # official defaults
    pgr.DISTANCE_METRIC = "l2"
    pgr.BACKBONE_FEATURE_KEY_LIST = ["res4"]
    pgr.FEATURE_NORMALIZE = False
    pgr.DEBUG = False


def add_dense_crf_config(cfg: CN) -> None:
    """Stage 3, dense-CRF (official parameters; :mod:`part_distillation.stages.dense_crf`). The
    stage shards on its own (official ``DENSE_CRF.TOTAL_PARTITIONS`` / ``PARTITION_INDEX``)."""
    crf = cfg.DENSE_CRF = CN()
    crf.GT_PROB = 0.7
    crf.GAUSSIAN_SXY = 3
    crf.GAUSSIAN_COMPAT = 3
    crf.BILATERAL_SXY = 20
    crf.BILATERAL_SRGB = 13
    crf.BILATERAL_COMPAT = 10
    crf.NUM_ITERS = 10
    # "official" (default): background is CRF label 0 and may take object pixels. "keep_parts"
    # (this project's configs, with the figure): pixels of the object that the CRF moves to
    # background keep their best part label instead.
    crf.OBJECT_PIXELS = "official"  # "official" | "keep_parts"
    crf.NUM_WORKERS = 2
    add_stage_run_keys(crf)


def add_proposal_learning_config(cfg: CN) -> None:
    """Stage 4, proposal learning (class-agnostic Mask2Former on the stage-3 pseudo-labels, and
    its predictor that writes proposals with query features for stage 5)."""
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
    pl.LABEL_PERCENTAGE = 100  # percent of the training images used (data.datasets.few_shot_subset)
    # ours: the stage-4 predictor (stages/proposal_learning.py) writes each segment's query
    # feature (head output PROPOSAL_KEY, L2-normalised with PROPOSAL_FEATURE_NORM) for stage 5,
    # and shards by object class (TOTAL_PARTITIONS / PARTITION_INDEX)
    pl.PROPOSAL_KEY = "decoder_output"
    pl.PROPOSAL_FEATURE_NORM = True
    # FILTERED_CODE_PATH_LIST / EXCLUDE_CODE_PATH / PATH_ONLY (official keys, read by the stage-4
    # training set too), DEBUG, TOTAL_PARTITIONS / PARTITION_INDEX
    add_stage_run_keys(pl)


def add_part_ranking_config(cfg: CN) -> None:
    """Stage 5, part ranking (official names and defaults; :mod:`part_distillation.stages.part_ranking`)."""
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
    # ours: refine each class's k-means with Hartigan single-point moves (modeling/kmeans.py); only
    # lowers the k-means objective (to the official scikit-learn KMeans(n_init=10) inertia or below
    # on the parity fixture, docs/BENCHMARKS.md); False: plain Lloyd k-means as before
    pr.KMEANS_HARTIGAN = True
    pr.FEATURE_BUFFER_MB = 256
    pr.CLUSTER_BATCH_MB = 64  # CPU: small batches stay in cache (bench); GPU configs use more
    add_stage_run_keys(pr)  # TOTAL_PARTITIONS, PARTITION_INDEX, FILTERED_CODE_PATH_LIST, ...
    # official keys of configs/PartRanking.yaml (accepted, unread: config.unread)
    pr.ROOT_FOLDER_NAME = "pseudo_labels"
    pr.WEIGHT_NAME = "default"
    pr.SAVE_ANNOTATIONS = False


def add_part_distillation_config(cfg: CN) -> None:
    """Stage 6, PartDistillation self-training (``PART_DISTILLATION.*``, as official
    ``add_part_distillation_config``; read by
    :mod:`part_distillation.modeling.meta_arch.part_distillation_model` and
    :mod:`part_distillation.data.part_distillation_dataset`)."""
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
    pd.DEBUG = False  # official: first images only (configs/PartDistillation.yaml sets False)
    pd.TOTAL_PARTITIONS = -1  # official keys (unread: config.unread)
    pd.PARTITION_INDEX = -1
