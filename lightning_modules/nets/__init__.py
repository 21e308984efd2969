"""The model zoo as plain `nn.Module`s (no Lightning): audio nets, image nets, a place classifier, pooling helpers.

Audio nets: `forward(audio [B, 40, T], nframes [B] | None)`, `frames(audio, nframes=None) -> [B, D, T']`,
`output_frames(nframes) -> LongTensor`, attributes `embedding_dim` and `pooled` (see docs/architecture.md).
"""

from .acl2017 import ACL2017AudioNet
from .classifier import AudioPlaceClassifier
from .common import masked_max, masked_mean, masked_pool
from .davenet import DAVEnetAudioNet
from .image import ResNet50Image, VGG16ConvImage, VGG16FC7Image
from .nips2016 import NIPS2016AudioNet
from .quantizers import TemporalJitter, VectorQuantizerEMA
from .resdavenet import RESDAVENET_DEFAULT_WIDTHS, RESDAVENET_RELEASED_WIDTHS, ResDAVEnetAudioNet

__all__ = [
    "ACL2017AudioNet",
    "AudioPlaceClassifier",
    "DAVEnetAudioNet",
    "NIPS2016AudioNet",
    "RESDAVENET_DEFAULT_WIDTHS",
    "RESDAVENET_RELEASED_WIDTHS",
    "ResDAVEnetAudioNet",
    "ResNet50Image",
    "TemporalJitter",
    "VGG16ConvImage",
    "VGG16FC7Image",
    "VectorQuantizerEMA",
    "masked_max",
    "masked_mean",
    "masked_pool",
]
