"""Declared keys that nothing in this package reads, each with the reason."""

# Official keys that official YAMLs or sh files set and that nothing here reads: they merge so
# those files work unchanged, and are ignored for the reason given (tests/test_config_keys.py).
ACCEPTED_UNREAD_KEYS = {
    "PART_RANKING.ROOT_FOLDER_NAME": "official output root; the stage-5 tool writes to its --output-dir",
    "PART_RANKING.WEIGHT_NAME": "official output-folder name part; the stage-5 tool writes to its --output-dir",
    "PART_RANKING.SAVE_ANNOTATIONS": "official switch for writing labels; the stage-5 tool always writes them",
    "PART_DISTILLATION.TOTAL_PARTITIONS": "official key of the stage-6 label-saving run; stage 6 trains on "
                                          "all of PART_DISTILLATION.DATASET_PATH here",
    "PART_DISTILLATION.PARTITION_INDEX": "see PART_DISTILLATION.TOTAL_PARTITIONS",
    "CUSTOM_DATASETS.CITYSCAPES_PART.PATH_ONLY": "official lazy-listing switch; the Cityscapes-Part "
                                                 "loader here lists files without decoding masks anyway",
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
