"""Models. Importing registers the backbones (EfficientNet-Lite0, Swin), the pixel decoder, the
transformer decoder, the Mask2Former head, the stage-4 ProposalModel and the SupervisedModel baseline with
detectron2's registries."""
from .backbone import efficientnet_lite, swin  # noqa: F401
from .meta_arch import mask_former_head  # noqa: F401
from .pixel_decoder import msdeformattn  # noqa: F401
from .transformer_decoder import mask2former_transformer_decoder  # noqa: F401
from .meta_arch import proposal_model  # noqa: F401
from .meta_arch import supervised_model  # noqa: F401
