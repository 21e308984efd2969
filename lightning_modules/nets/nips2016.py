"""NIPS 2016 audio network: three convolutions, two max-pools, pooling over time, L2 normalisation.

References: Harwath, Torralba, Glass, "Unsupervised Learning of Spoken Language with Visual Context", NeurIPS 2016.
No official code was released; the layer table follows the two public reimplementations that agree on it
(DannyMerkx/speech2image in Lasagne, neulab/xnmt `HarwathSpeechEncoder`). The image branch is `image.VGG16FC7Image`.

    layer   out ch   kernel (F x T)   stride   pad            T out (T = input frames)
    conv1   64       40 x 5           1        valid          T - 4                      ReLU
    pool1            1 x 4            2        0              floor((T1 - 4) / 2) + 1
    conv2   512      1 x 25           1        same (12)      T2                         ReLU
    pool2            1 x 4            2        0              floor((T2 - 4) / 2) + 1
    conv3   1024     1 x 25           1        same (12)      T3                         ReLU
    pool    max (default) or mean over the valid frames only  -> 1024
    L2 normalisation

At T = 1024 the frame map has 253 frames. Inputs need at least 14 frames (the valid conv and unpadded pools).
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


class NIPS2016AudioNet(nn.Module):
    """Pooled, L2-normalised caption embedding [B, embedding_dim].

    Args:
        embedding_dim: channels of conv3 = size of the embedding (paper: 1024).
        pooling: "max" (paper default) or "mean" over the valid output frames.
        width_mult: scales the hidden widths 64 and 512 (CPU presets); the embedding keeps `embedding_dim`.
        conv_batchnorm: BatchNorm after each conv, before the ReLU (not in the paper; helps small CPU models).
        n_mels: frequency bins of the input (conv1 spans all of them).

    When `nframes` is given, every intermediate map is zeroed beyond its valid length, so the output is exactly
    what the unpadded caption gives (at eval mode): the padding content never matters.
    """

    pooled = True
    min_frames = 14  # the shortest input with one output frame: 14 -> 10 -> 4 -> 1

    def __init__(
        self,
        embedding_dim: int = 1024,
        pooling: str = "max",
        width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        n_mels: int = 40,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.pooling = check_pooling(pooling)
        self.n_mels = n_mels
        c1, c2 = scaled_width(64, width_mult), scaled_width(512, width_mult)

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if conv_batchnorm else nn.Identity()

        self.conv1 = nn.Conv2d(1, c1, kernel_size=(n_mels, 5))
        self.norm1 = norm(c1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=(1, 25), padding=(0, 12))
        self.norm2 = norm(c2)
        self.conv3 = nn.Conv2d(c2, embedding_dim, kernel_size=(1, 25), padding=(0, 12))
        self.norm3 = norm(embedding_dim)
        self.pool = nn.MaxPool2d(kernel_size=(1, 4), stride=(1, 2))

    def _stage_lengths(self, nframes) -> tuple[Tensor, Tensor, Tensor]:
        """Valid frames after conv1, after pool1 (= conv2), after pool2 (= conv3)."""
        n1 = conv_out_len(as_lengths(nframes), kernel=5)
        n2 = conv_out_len(n1, kernel=4, stride=2)
        n3 = conv_out_len(n2, kernel=4, stride=2)
        return n1, n2, n3

    def output_frames(self, nframes) -> Tensor:
        """Valid frames of the conv3 map for `nframes` valid input frames (at least 1)."""
        return self._stage_lengths(nframes)[2]

    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """conv3 frame map [B, embedding_dim, T'] before pooling; padding zeroed when `nframes` is given."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        if x.size(-1) < self.min_frames:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_frames} input frames, got {x.size(-1)}")
        n1 = n2 = n3 = None
        if nframes is not None:
            n1, n2, n3 = self._stage_lengths(as_lengths(nframes, x.device))
        x = zero_padding_frames(F.relu(self.norm1(self.conv1(x))), n1)
        x = zero_padding_frames(self.pool(x), n2)
        x = zero_padding_frames(F.relu(self.norm2(self.conv2(x))), n2)
        x = zero_padding_frames(self.pool(x), n3)
        x = F.relu(self.norm3(self.conv3(x)))
        return x.squeeze(2)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """L2-normalised embedding [B, embedding_dim], pooled over the valid frames (all frames when None)."""
        x = self.frames(audio, nframes)
        valid = None if nframes is None else self.output_frames(as_lengths(nframes, x.device))
        return F.normalize(masked_pool(x, valid, self.pooling), dim=1)
