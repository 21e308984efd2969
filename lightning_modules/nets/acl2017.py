"""ACL 2017 audio network: the DAVEnet five-conv stack with three max-pools, a mean pool, L2 normalisation.

References: Harwath & Glass, "Learning Word-Like Units from Joint Audio-Visual Analysis", ACL 2017
(arXiv 1701.07481). No code was released. The paper describes five convolutions with ReLU, three max-pools,
a mean pool over time and L2 normalisation; DAVEnet (ECCV 2018) later added BatchNorm at the input, a fourth
pool and dropped the pooling and normalisation. We take DAVEnet's kernels and its 1x3 / stride-2 pools and put
the three pools after conv2, conv3 and conv4, so that conv5 feeds the mean pool (our choice; the paper's pool
positions were not retrieved). There is no input BatchNorm.

    layer   in -> out      kernel (F x T)   pad     then                                        T out
    conv1   1 -> 128       40 x 1           0       ReLU                                        T
    conv2   128 -> 256     1 x 11           (0,5)   ReLU, MaxPool 1x3 stride (1,2) pad (0,1)    ceil(T/2)
    conv3   256 -> 512     1 x 17           (0,8)   ReLU, same pool                             ceil(T/4)
    conv4   512 -> 512     1 x 17           (0,8)   ReLU, same pool                             ceil(T/8)
    conv5   512 -> 1024    1 x 17           (0,8)   ReLU
    mean over the valid frames -> 1024, L2 normalisation

Parameters at paper size: 15,965,568 (DAVEnet's audio net without its 2-parameter input BatchNorm).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import (
    as_lengths,
    check_pooling,
    conv_out_len,
    masked_pool,
    scaled_width,
    spectrogram_4d,
    zero_padding_frames,
)


class ACL2017AudioNet(nn.Module):
    """Pooled, L2-normalised caption embedding [B, embedding_dim].

    Args:
        embedding_dim: channels of conv5 = size of the embedding (paper: 1024).
        pooling: "mean" (paper) or "max" over the valid output frames.
        width_mult: scales the hidden widths 128, 256, 512, 512 (CPU presets); the embedding keeps `embedding_dim`.
        conv_batchnorm: BatchNorm after each conv, before the ReLU (not in the paper; helps small CPU models).
        n_mels: frequency bins of the input (conv1 spans all of them).

    When `nframes` is given, every intermediate map is zeroed beyond its valid length, so the output is exactly
    what the unpadded caption gives (at eval mode): the padding content never matters.
    """

    pooled = True

    def __init__(
        self,
        embedding_dim: int = 1024,
        pooling: str = "mean",
        width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        n_mels: int = 40,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.pooling = check_pooling(pooling)
        self.n_mels = n_mels
        c1, c2, c3, c4 = (scaled_width(c, width_mult) for c in (128, 256, 512, 512))

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if conv_batchnorm else nn.Identity()

        self.conv1 = nn.Conv2d(1, c1, kernel_size=(n_mels, 1))
        self.norm1 = norm(c1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=(1, 11), padding=(0, 5))
        self.norm2 = norm(c2)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=(1, 17), padding=(0, 8))
        self.norm3 = norm(c3)
        self.conv4 = nn.Conv2d(c3, c4, kernel_size=(1, 17), padding=(0, 8))
        self.norm4 = norm(c4)
        self.conv5 = nn.Conv2d(c4, embedding_dim, kernel_size=(1, 17), padding=(0, 8))
        self.norm5 = norm(embedding_dim)
        self.pool = nn.MaxPool2d(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))

    def _stage_lengths(self, nframes) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Valid frames of the input/conv1/conv2 maps and after each of the three pools."""
        n0 = as_lengths(nframes).clamp(min=1)
        n1 = conv_out_len(n0, kernel=3, stride=2, padding=1)
        n2 = conv_out_len(n1, kernel=3, stride=2, padding=1)
        n3 = conv_out_len(n2, kernel=3, stride=2, padding=1)
        return n0, n1, n2, n3

    def output_frames(self, nframes) -> Tensor:
        """Valid frames of the conv5 map: ceil(nframes / 8), at least 1."""
        return self._stage_lengths(nframes)[3]

    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """conv5 frame map [B, embedding_dim, ceil(T/8)] before pooling; padding zeroed when `nframes` is given."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        n0 = n1 = n2 = n3 = None
        if nframes is not None:
            n0, n1, n2, n3 = self._stage_lengths(as_lengths(nframes, x.device))
        # Activations are >= 0 after ReLU, so the zeros left in the padding never win a max-pool window
        # over a real frame, and same-padded convs see the zeros they would see past an unpadded caption.
        # Zero before each pool (a window may reach one frame past the end) and after it (a window past the end
        # may reach back into the caption).
        x = zero_padding_frames(F.relu(self.norm1(self.conv1(x))), n0)
        x = zero_padding_frames(F.relu(self.norm2(self.conv2(x))), n0)
        x = zero_padding_frames(self.pool(x), n1)
        x = zero_padding_frames(F.relu(self.norm3(self.conv3(x))), n1)
        x = zero_padding_frames(self.pool(x), n2)
        x = zero_padding_frames(F.relu(self.norm4(self.conv4(x))), n2)
        x = zero_padding_frames(self.pool(x), n3)
        x = F.relu(self.norm5(self.conv5(x)))
        return x.squeeze(2)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """L2-normalised embedding [B, embedding_dim], pooled over the valid frames (all frames when None)."""
        x = self.frames(audio, nframes)
        valid = None if nframes is None else self.output_frames(as_lengths(nframes, x.device))
        return F.normalize(masked_pool(x, valid, self.pooling), dim=1)
