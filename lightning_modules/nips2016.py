"""NIPS2016: Harwath, Torralba & Glass, "Unsupervised Learning of Spoken Language with Visual Context".

A small audio CNN max-pooled to one L2-normalised 1024-d vector, frozen VGG16 fc7 projected to 1024-d,
dot-product similarity, 2048-frame input (set in the data config). No official code exists; the audio net follows
the reimplementations cited in ``lightning_modules/nets/nips2016.py``.

References: Harwath, Torralba, Glass. NeurIPS 2016.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from .base import RetrievalModule
from .core.losses import RetrievalLoss
from .nets import NIPS2016AudioNet, VGG16FC7Image
from .optim import OptimizerName, ScheduleName


class NIPS2016(RetrievalModule):
    """NIPS2016 retrieval model. The optimiser defaults are the paper's: SGD, momentum 0.9, lr 1e-5 with
    geometric decay (the paper gives a range, /2-/5 every 5-10 epochs; we take /2 every 5), no weight decay.

    ``ACL2017`` is this model with another audio net (``audio_net_class``) and mean pooling.

    Args:
        embedding_dim: size of both embeddings (paper: 1024).
        pooling: temporal pooling of the audio map over valid frames, ``"max"`` (paper) or ``"mean"``.
        audio_width_mult: scales the audio CNN's hidden widths (CPU presets).
        image_width_mult: scales the VGG16 widths, fc6/fc7 included (CPU presets; no ImageNet weights then).
        conv_batchnorm: BatchNorm after each audio conv (not in the paper).
        pretrained_image: ImageNet weights for the frozen VGG16: True (torchvision download) or a local
            torchvision-format weights file. The paper uses ImageNet VGG16.
        similarity_kind: ``"dot"``.
        loss: defaults to the sampled margin ranking loss (margin 1).
        weight_decay: 0.0. Neither NIPS2016 nor ACL2017 reports a weight decay and neither has official code, so
            none is added; the 5e-7 that ``VGSModule`` defaults to is the DAVEnet and ResDAVEnet code's value.
        **kwargs: see ``RetrievalModule`` and ``VGSModule``.
    """

    audio_net_class: type[nn.Module] = NIPS2016AudioNet

    def __init__(
        self,
        embedding_dim: int = 1024,
        pooling: Literal["max", "mean"] = "max",
        audio_width_mult: float = 1.0,
        image_width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        pretrained_image: bool | str = False,
        similarity_kind: str = "dot",
        loss: RetrievalLoss | None = None,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-5,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 5,
        lr_decay: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(
            similarity_kind=similarity_kind, loss=loss, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, lr_schedule=lr_schedule, lr_step_epochs=lr_step_epochs, lr_decay=lr_decay,
            **kwargs,
        )
        self.audio_net = self.audio_net_class(embedding_dim, pooling, audio_width_mult, conv_batchnorm)
        self.image_net = VGG16FC7Image(embedding_dim, pretrained=pretrained_image, width_mult=image_width_mult)
