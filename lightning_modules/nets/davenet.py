"""DAVEnet audio network: BatchNorm on the spectrogram, five convolutions, four max-pools, a frame-level map.

References: Harwath, Recasens, Surís, Chuang, Torralba, Glass, "Jointly Discovering Visual Objects and Spoken
Words from Raw Sensory Input", ECCV 2018 (arXiv 1804.01452); IJCV 128:620-641 (2020). Official code:
dharwath/DAVEnet-pytorch `models/AudioModels.py::Davenet`. The image branch is `image.VGG16ConvImage`.

    layer        in -> out      kernel (F x T)   pad     then                                        T out
    batchnorm1   1 -> 1         BatchNorm2d(1) on the 1 x 40 x T input
    conv1        1 -> 128       40 x 1           0       ReLU                                        T
    conv2        128 -> 256     1 x 11           (0,5)   ReLU, MaxPool 1x3 stride (1,2) pad (0,1)    ceil(T/2)
    conv3        256 -> 512     1 x 17           (0,8)   ReLU, same pool                             ceil(T/4)
    conv4        512 -> 512     1 x 17           (0,8)   ReLU, same pool                             ceil(T/8)
    conv5        512 -> 1024    1 x 17           (0,8)   ReLU, same pool                             ceil(T/16)

All convs have a bias. No pooling over time and no normalisation: the output is the frame map
[B, 1024, ceil(T/16)] (128 frames of 160 ms at T = 2048), compared with image maps by matchmap similarity.
Parameters at paper size: 15,965,570, state_dict keys `batchnorm1.*`, `conv1..conv5.*` as the official class,
so official checkpoints load directly (after stripping DataParallel's `module.` prefix).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_lengths, conv_out_len, scaled_width, spectrogram_4d


class DAVEnetAudioNet(nn.Module):
    """Frame-level caption encoder [B, embedding_dim, ceil(T/16)].

    Args:
        embedding_dim: channels of conv5 (official default 1024).
        width_mult: scales the hidden widths 128, 256, 512, 512 (CPU presets); the output keeps `embedding_dim`.
        conv_batchnorm: BatchNorm after each conv, before the ReLU (`norm1..norm5`; off in the paper, where they
            are parameter-free identities; a small CPU model learns much faster with them).
        n_mels: frequency bins of the input (conv1 spans all of them).

    As in the official code, the padding of a short caption is seen by the receptive fields of its last valid
    output frames; `nframes` is accepted for the common interface but does not change the output.
    """

    pooled = False

    def __init__(
        self,
        embedding_dim: int = 1024,
        width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        n_mels: int = 40,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.n_mels = n_mels
        c1, c2, c3, c4 = (scaled_width(c, width_mult) for c in (128, 256, 512, 512))

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if conv_batchnorm else nn.Identity()

        # The input BatchNorm stands in for per-utterance spectrogram normalisation.
        self.batchnorm1 = nn.BatchNorm2d(1)
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

    def output_frames(self, nframes) -> Tensor:
        """Valid output frames: each pool gives ceil(n/2), so ceil(nframes / 16), at least 1.

        The official code crops to `nframes // 16` instead, one frame fewer when nframes is not a multiple of 16
        (its last, partly padded frame is dropped); ours keeps the frame that still covers real speech.
        """
        n = as_lengths(nframes).clamp(min=1)
        for _ in range(4):
            n = conv_out_len(n, kernel=3, stride=2, padding=1)
        return n

    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """The frame map [B, embedding_dim, ceil(T/16)] (`nframes` is unused; see the class docstring)."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        x = self.batchnorm1(x)
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.pool(F.relu(self.norm2(self.conv2(x))))
        x = self.pool(F.relu(self.norm3(self.conv3(x))))
        x = self.pool(F.relu(self.norm4(self.conv4(x))))
        x = self.pool(F.relu(self.norm5(self.conv5(x))))
        return x.squeeze(2)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        return self.frames(audio, nframes)
