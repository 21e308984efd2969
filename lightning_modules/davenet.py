"""DAVEnet: Harwath, Recasens, Surís, Chuang, Torralba, Glass, "Jointly Discovering Visual Objects and
Spoken Words from Raw Sensory Input".

A BatchNorm + 5-conv audio net giving a frame-level map, VGG16 conv features + a 3x3 conv giving a region
map, matchmap similarity (MISA best; SISA, SIMA) and the sampled margin ranking loss. Captions are padded to
the longest of the batch (``target_length: null`` in the data config) and each caption's padding is masked
out of the matchmap.

References: Harwath et al. ECCV 2018, arXiv:1804.01452; IJCV 128:620-641 (2020). Official code:
github.com/dharwath/DAVEnet-pytorch.
"""

from __future__ import annotations

from typing import Any

from .base import RetrievalModule
from .core.losses import RetrievalLoss
from .nets import DAVEnetAudioNet, VGG16ConvImage
from .optim import OptimizerName, ScheduleName


class DAVEnet(RetrievalModule):
    """DAVEnet retrieval model with the official code's training defaults: SGD, momentum 0.9, weight decay
    5e-7, lr 1e-3 x 0.1 every 40 epochs (the paper says every 70), MISA, margin 1.

    Args:
        embedding_dim: channels of both maps (paper: 1024).
        audio_width_mult: scales the audio CNN's hidden widths (CPU presets).
        image_width_mult: scales the VGG16 widths (CPU presets; no ImageNet weights then).
        conv_batchnorm: BatchNorm after each audio conv (not in the paper).
        image_batch_norm: VGG16 with BatchNorm (vgg16_bn layout; not in the paper).
        mask_padding: zero each caption's padding inside the audio net, so that recall does not depend on the
            batch size or the number of GPUs with ``target_length: null``; False is the official function
            (converted official checkpoints). See ``nets/davenet.py``.
        pretrained_image: ImageNet weights for VGG16: True (torchvision download) or a local
            torchvision-format weights file. The official flag defaults to False (from scratch).
        similarity_kind: ``"MISA"`` (paper's best), ``"SISA"`` or ``"SIMA"``.
        loss: defaults to the sampled margin ranking loss (margin 1).
        **kwargs: see ``RetrievalModule`` and ``VGSModule``.
    """

    def __init__(
        self,
        embedding_dim: int = 1024,
        audio_width_mult: float = 1.0,
        image_width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        image_batch_norm: bool = False,
        mask_padding: bool = True,
        pretrained_image: bool | str = False,
        similarity_kind: str = "MISA",
        loss: RetrievalLoss | None = None,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-7,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 40,
        lr_decay: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(
            similarity_kind=similarity_kind, loss=loss, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, lr_schedule=lr_schedule, lr_step_epochs=lr_step_epochs,
            lr_decay=lr_decay, **kwargs,
        )
        self.audio_net = DAVEnetAudioNet(embedding_dim, audio_width_mult, conv_batchnorm, mask_padding=mask_padding)
        self.image_net = VGG16ConvImage(
            embedding_dim, width_mult=image_width_mult, batch_norm=image_batch_norm, pretrained=pretrained_image
        )
