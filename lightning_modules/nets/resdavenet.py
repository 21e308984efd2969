"""ResDAVEnet audio network: a 40 x 1 stem and four stages of 1-d residual blocks, a frame-level map.

References: Hsu, Harwath, Glass, "Transfer Learning from Audio-Visual Grounding to Speech Recognition",
Interspeech 2019 (arXiv 1907.04355); the same backbone (VQ layers off) in Harwath, Hsu, Glass, "Learning
Hierarchical Discrete Linguistic Units from Visually-Grounded Speech", ICLR 2020. Official code:
wnhsu/ResDAVEnet-VQ `models/AudioModels.py::ResDavenet`. The image branch is `image.ResNet50Image`.

    stage    op                                                 out ch (class default / released)   T out
    conv1    Conv2d 40 x 1, no bias -> bn1 -> ReLU              128 / 128                           T
    layer1   2 basic blocks, the first with stride 2            128 / 256                           ceil(T/2)
    layer2   2 basic blocks, stride 2                           256 / 256                           ceil(T/4)
    layer3   2 basic blocks, stride 2                           512 / 512                           ceil(T/8)
    layer4   2 basic blocks, stride 2                           1024 / 1024                         ceil(T/16)

    basic block: conv 1x9 (pad 4, no bias) -> BN -> ReLU -> conv 1x9 -> BN -> + shortcut -> ReLU
    shortcut of a stage's first block: conv 1x1 stride 2, no bias -> BN

The official class default widths are 128,128,256,512,1024 (44,670,976 parameters); the released checkpoints were
trained with 128,256,256,512,1024 (46,490,880 parameters), available as `RESDAVENET_RELEASED_WIDTHS` or
`ResDAVEnetAudioNet.released()`. Weights start as in the official code: conv ~ N(0, sqrt(2 / (kh*kw*out))),
BatchNorm gamma = 1, beta = 0. The official class also defines a `batchnorm1` on the input that its forward never
calls; it is left out here (a converter drops its keys), all other keys match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_lengths, conv_out_len, scaled_width, spectrogram_4d

RESDAVENET_DEFAULT_WIDTHS = (128, 128, 256, 512, 1024)
RESDAVENET_RELEASED_WIDTHS = (128, 256, 256, 512, 1024)


class SpeechBasicBlock(nn.Module):
    """Residual block over time: two 1 x k convs with BatchNorm, an optional projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, convsize: int = 9):
        super().__init__()
        pad = (0, convsize // 2)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(1, convsize), stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(1, convsize), padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


class ResDAVEnetAudioNet(nn.Module):
    """Frame-level caption encoder [B, embedding_dim, ceil(T/16)] (for four stages).

    Args:
        layer_widths: stem width then one width per stage (default: the official class default).
        layer_depths: blocks per stage.
        convsize: temporal kernel of the block convs (odd, so that stride-1 convs keep the length).
        width_mult: scales every width but the last (CPU presets).
        embedding_dim: width of the last stage = output channels; default `layer_widths[-1]`.
        n_mels: frequency bins of the input (the stem spans all of them).

    As in the official code, the receptive fields of the last valid output frames see the padding of a short
    caption; `nframes` is accepted for the common interface but does not change the output.
    """

    pooled = False

    def __init__(
        self,
        layer_widths: Sequence[int] = RESDAVENET_DEFAULT_WIDTHS,
        layer_depths: Sequence[int] = (2, 2, 2, 2),
        convsize: int = 9,
        width_mult: float = 1.0,
        embedding_dim: int | None = None,
        n_mels: int = 40,
    ):
        super().__init__()
        layer_widths, layer_depths = list(layer_widths), list(layer_depths)
        if len(layer_widths) != len(layer_depths) + 1:
            raise ValueError(
                f"layer_widths needs one width for the stem plus one per stage: got {len(layer_widths)} widths "
                f"for {len(layer_depths)} stages"
            )
        if convsize % 2 != 1:
            raise ValueError(f"convsize must be odd so that the blocks keep the frame count, got {convsize}")
        self.embedding_dim = layer_widths[-1] if embedding_dim is None else embedding_dim
        widths = [scaled_width(w, width_mult) for w in layer_widths[:-1]] + [self.embedding_dim]
        self.layer_widths = widths
        self.n_mels = n_mels
        self.num_stages = len(layer_depths)

        self.conv1 = nn.Conv2d(1, widths[0], kernel_size=(n_mels, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for i, depth in enumerate(layer_depths):
            blocks = [SpeechBasicBlock(widths[i], widths[i + 1], stride=2, convsize=convsize)]
            blocks += [SpeechBasicBlock(widths[i + 1], widths[i + 1], convsize=convsize) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (kh * kw * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def released(cls, **kwargs) -> ResDAVEnetAudioNet:
        """The configuration of the released ResDAVEnet-VQ checkpoints (widths 128,256,256,512,1024)."""
        return cls(layer_widths=RESDAVENET_RELEASED_WIDTHS, **kwargs)

    def output_frames(self, nframes) -> Tensor:
        """Valid output frames: every stage halves with ceil, so ceil(nframes / 2**stages), at least 1.

        The official code crops to `nframes // 16`, one frame fewer when nframes is not a multiple of 16.
        """
        n = as_lengths(nframes).clamp(min=1)
        for _ in range(self.num_stages):
            n = conv_out_len(n, kernel=1, stride=2)  # the 1x1 shortcut; the 1 x k conv gives the same length
        return n

    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """The frame map [B, embedding_dim, T'] (`nframes` is unused; see the class docstring)."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.squeeze(2)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        return self.frames(audio, nframes)
