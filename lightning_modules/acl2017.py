"""ACL2017: Harwath & Glass, "Learning Word-Like Units from Joint Audio-Visual Analysis".

The NIPS2016 recipe with a deeper audio CNN (the DAVEnet 5-conv stack with 3 max-pools) mean-pooled to one
L2-normalised vector, frozen VGG16 fc7 + Linear, dot product, 1024-frame input (set in the data config).

References: Harwath & Glass. ACL 2017. arXiv:1701.07481.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from torch import nn

from .base import RetrievalModule
from .nets import ACL2017AudioNet, VGG16FC7Image
from .optim import OptimizerName, ScheduleName


class ACL2017(RetrievalModule):
    """ACL2017 retrieval model; training parameters as NIPS2016 (the seed's table: "the same as NIPS").

    Args:
        embedding_dim: size of both embeddings (paper: 1024).
        pooling: temporal pooling over valid frames, ``"mean"`` (paper) or ``"max"``.
        audio_width_mult: scales the audio CNN's hidden widths (CPU presets).
        image_width_mult: scales the VGG16 widths, fc6/fc7 included (CPU presets; no ImageNet weights then).
        conv_batchnorm: BatchNorm after each audio conv (not in the paper).
        pretrained_image: ImageNet weights for the frozen VGG16 (True or a local weights file).
        similarity_kind: ``"dot"``.
        loss: defaults to the sampled margin ranking loss (margin 1).
        **kwargs: see ``RetrievalModule`` and ``VGSModule``.
    """

    def __init__(
        self,
        embedding_dim: int = 1024,
        pooling: Literal["max", "mean"] = "mean",
        audio_width_mult: float = 1.0,
        image_width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        pretrained_image: Union[bool, str] = False,
        similarity_kind: str = "dot",
        loss: Optional[nn.Module] = None,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-5,
        momentum: float = 0.9,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 5,
        lr_decay: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(
            similarity_kind=similarity_kind, loss=loss, optimizer=optimizer, lr=lr, momentum=momentum,
            lr_schedule=lr_schedule, lr_step_epochs=lr_step_epochs, lr_decay=lr_decay, **kwargs,
        )
        self.audio_net = ACL2017AudioNet(embedding_dim, pooling, audio_width_mult, conv_batchnorm)
        self.image_net = VGG16FC7Image(embedding_dim, pretrained=pretrained_image, width_mult=image_width_mult)
