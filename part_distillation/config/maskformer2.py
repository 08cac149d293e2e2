"""Mask2Former keys (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.*``, ``MODEL.SWIN.*``,
``INPUT.*``, ``SOLVER.*``), declared as official Mask2Former's and PartDistillation's
``add_maskformer2_config`` does (official ``part_distillation/config.py``)."""
from detectron2.config import CfgNode as CN


def add_maskformer2_config(cfg: CN) -> None:
    """Declare the Mask2Former keys (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.*``,
    ``MODEL.SWIN.*``, ``INPUT.*``, ``SOLVER.*``) with the official Mask2Former defaults, so that
    official Mask2Former YAMLs merge without edits."""
    # data
    cfg.INPUT.DATASET_MAPPER_NAME = "proposal_learning"
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
    # MODEL.MASK_FORMER.NHEADS and uses 4 points (see modeling/pixel_decoder/msdeformattn.py).
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
