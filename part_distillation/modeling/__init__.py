"""Models. Importing registers the backbones (EfficientNet-Lite0/1/2, Swin), the pixel decoder, the
transformer decoders, the Mask2Former head, the ``MaskFormer`` meta-architecture, the stage-4
ProposalModel, the stage-5 PartRankingModel, the stage-6 PartDistillationModel and the
SupervisedModel baseline with detectron2's registries."""
from .backbone import efficientnet_lite, swin  # noqa: F401
from .meta_arch import mask_former_head  # noqa: F401
from .pixel_decoder import msdeformattn  # noqa: F401
from .transformer_decoder import mask2former_transformer_decoder  # noqa: F401
from .transformer_decoder import part_distillation_transformer_decoder  # noqa: F401
from .meta_arch import maskformer_model, proposal_model  # noqa: F401
from .meta_arch import part_distillation_model  # noqa: F401
from .meta_arch import part_ranking_model  # noqa: F401
from .meta_arch import supervised_model  # noqa: F401
