"""Dataset folders and ground-truth options (official ``add_custom_datasets_config``; read by
:mod:`part_distillation.data.datasets`)."""
from detectron2.config import CfgNode as CN


def add_custom_datasets_config(cfg: CN) -> None:
    """``CUSTOM_DATASETS.*``: official dataset folders (empty: the defaults under
    ``$DETECTRON2_DATASETS``, see ``datasets/README.md``) and the ground-truth vocabulary."""
    cd = cfg.CUSTOM_DATASETS = CN()
    cd.BASE_SIZE = -1
    cd.AUG_NAME_LIST = []
    # True: official merged part vocabulary (Pascal-Part: 50 parts; PartImageNet: one mask per part
    # class); False: raw annotation names, one part per annotation
    cd.USE_MERGED_GT = True
    # ground-truth geometry of the evaluation mappers (data.proposal_dataset.PartEvalDatasetMapper):
    # "official" = the official mapper's per dataset (Pascal-Part "upsampled": masks at the input
    # size, bilinear > 0 back to the original size; PartImageNet "input": everything at the input
    # size; others "original"), or one of "original" (masks as annotated), "upsampled", "input"
    cd.EVAL_GEOMETRY = "official"
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
    cd.CITYSCAPES_PART.PATH_ONLY = False  # official key, unread (config.unread)
    # official key of add_custom_datasets_config; the few-shot percentage is
    # FEWSHOT_LEARNING.LABEL_PERCENTAGE (a value other than 100 here is refused by the trainer)
    cd.LABEL_PERCENTAGE = 100
