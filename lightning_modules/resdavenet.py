"""ResDAVEnet: Hsu, Harwath & Glass, "Transfer Learning from Audio-Visual Grounding to Speech Recognition".

A residual audio net of 1x9 basic blocks (4 stages, 16x temporal downsampling), a ResNet-50 image branch +
1x1 conv, mean-pooled dot product ("pooldot", which equals SISA) and the sum of sampled and semi-hard
triplet losses in both directions. This is also ResDAVEnet-VQ (ICLR 2020) with every VQ layer off.

References: Hsu, Harwath, Glass. Interspeech 2019, arXiv:1907.04355; Harwath, Hsu, Glass. ICLR 2020,
arXiv:1911.09602. Official code: github.com/wnhsu/ResDAVEnet-VQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import RetrievalModule
from .core.losses import ResDAVEnetTripletLoss, RetrievalLoss
from .nets import RESDAVENET_DEFAULT_WIDTHS, ResDAVEnetAudioNet, ResNet50Image
from .optim import OptimizerName, ScheduleName


class ResDAVEnet(RetrievalModule):
    """ResDAVEnet retrieval model with the official training defaults: Adam, lr 2e-4 x 0.95 every 3 epochs,
    weight decay 5e-7, SISA (pooldot), sampled + semi-hard triplets with the official mask.

    Args:
        layer_widths: stem and stage widths. The default [128, 128, 256, 512, 1024] is the official ``ResDavenet``
            class default (``RESDAVENET_DEFAULT_WIDTHS``); the released checkpoints use [128, 256, 256, 512, 1024]
            (``RESDAVENET_RELEASED_WIDTHS``).
        layer_depths: basic blocks per stage.
        convsize: temporal kernel of the blocks.
        embedding_dim: output channels of both branches; None keeps ``layer_widths[-1]``.
        audio_width_mult: scales the audio net's hidden widths (CPU presets).
        image_arch: ``"resnet50"`` (paper) or a smaller torchvision ResNet for CPU presets. The image
            embedder's channels follow the audio net's output width.
        image_width_mult: scales the ResNet widths (CPU presets; no ImageNet weights then).
        pretrained_image: ImageNet weights (the official default): True or a local weights file.
        similarity_kind: ``"SISA"`` (= the official pooldot).
        loss: defaults to ``ResDAVEnetTripletLoss(margin=1, semihard_mask="official")``.
        **kwargs: see ``RetrievalModule`` and ``VGSModule``.
    """

    def __init__(
        self,
        layer_widths: Sequence[int] = RESDAVENET_DEFAULT_WIDTHS,
        layer_depths: Sequence[int] = (2, 2, 2, 2),
        convsize: int = 9,
        embedding_dim: int | None = None,
        audio_width_mult: float = 1.0,
        image_arch: str = "resnet50",
        image_width_mult: float = 1.0,
        pretrained_image: bool | str = False,
        similarity_kind: str = "SISA",
        loss: RetrievalLoss | None = None,
        optimizer: OptimizerName = "adam",
        lr: float = 2e-4,
        weight_decay: float = 5e-7,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 3,
        lr_decay: float = 0.95,
        **kwargs: Any,
    ):
        super().__init__(
            similarity_kind=similarity_kind,
            loss=loss if loss is not None else ResDAVEnetTripletLoss(margin=1.0, semihard_mask="official"),
            optimizer=optimizer, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
            lr_step_epochs=lr_step_epochs, lr_decay=lr_decay, **kwargs,
        )
        self.audio_net = ResDAVEnetAudioNet(
            layer_widths=list(layer_widths), layer_depths=list(layer_depths), convsize=convsize,
            width_mult=audio_width_mult, embedding_dim=embedding_dim,
        )
        self.image_net = ResNet50Image(
            self.audio_net.embedding_dim, pretrained=pretrained_image, arch=image_arch, width_mult=image_width_mult
        )
