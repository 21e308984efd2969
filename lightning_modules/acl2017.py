"""ACL2017: Harwath & Glass, "Learning Word-Like Units from Joint Audio-Visual Analysis".

The NIPS2016 recipe with a deeper audio CNN (the DAVEnet 5-conv stack with 3 max-pools) mean-pooled to one
L2-normalised vector, frozen VGG16 fc7 + Linear, dot product, 1024-frame input (set in the data config).
Training as NIPS2016 ("the same as NIPS" in the comparison the project started from: docs/provenance.md).

References: Harwath & Glass. ACL 2017. arXiv:1701.07481.
"""

from __future__ import annotations

from typing import Any, Literal

from .nets import ACL2017AudioNet
from .nips2016 import NIPS2016


class ACL2017(NIPS2016):
    """ACL2017 retrieval model: ``NIPS2016`` with the ACL2017 audio net and mean pooling over valid frames.

    Args:
        pooling: temporal pooling over valid frames, ``"mean"`` (paper) or ``"max"``.
        **kwargs: every other argument of ``NIPS2016`` (embedding size, widths, frozen VGG16, optimiser).
    """

    audio_net_class = ACL2017AudioNet

    def __init__(self, pooling: Literal["max", "mean"] = "mean", **kwargs: Any):
        super().__init__(pooling=pooling, **kwargs)
