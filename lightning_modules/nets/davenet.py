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

Padding. The official code pads every caption to a fixed 2048 frames (DAVEnet-pytorch `dataloaders/
image_caption_dataset.py`, `target_length` default 2048; `run.py` passes no `audio_conf`) with 0 dB, the
loudest bin, and the temporal convs and pools of the last valid frames read that padding: the same for every
batch, since the length is fixed. With padding to the longest caption of each batch (the paper, and
our `target_length: null`), how much padding follows a caption then depends on its batch-mates, so recall
would move with the batch size and the number of GPUs. `mask_padding=True` (our default) zeroes every frame
past a caption's valid length, at each resolution (`ceil` lengths, as `output_frames` counts them), before
every layer that mixes time: a caption's valid output frames are then exactly those of the caption alone at
its own length, whatever the padding. `mask_padding=False` is the official function (converted official
checkpoints use it).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_lengths, conv_out_len, scaled_width, spectrogram_4d, zero_padding_frames


class DAVEnetAudioNet(nn.Module):
    """Frame-level caption encoder [B, embedding_dim, ceil(T/16)].

    Args:
        embedding_dim: channels of conv5 (official default 1024).
        width_mult: scales the hidden widths 128, 256, 512, 512 (CPU presets); the output keeps `embedding_dim`.
        conv_batchnorm: BatchNorm after each conv, before the ReLU (`norm1..norm5`; off in the paper, where they
            are parameter-free identities; a small CPU model learns much faster with them).
        n_mels: frequency bins of the input (conv1 spans all of them).
        mask_padding: when `nframes` is given, zero the frames past each caption's valid length before every
            temporal conv and pool (see the module docstring), so that the output does not depend on the
            padding. False: the official function, in which the last valid frames see the padding.
    """

    pooled = False

    def __init__(
        self,
        embedding_dim: int = 1024,
        width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        n_mels: int = 40,
        mask_padding: bool = True,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.n_mels = n_mels
        self.mask_padding = mask_padding
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

    def _stage_lengths(self, nframes) -> list[Tensor]:
        """Valid frames at the input resolution and after each of the four pools (ceil(n / 2) each)."""
        lengths = [as_lengths(nframes).clamp(min=1)]
        for _ in range(4):
            lengths.append(conv_out_len(lengths[-1], kernel=3, stride=2, padding=1))
        return lengths

    def output_frames(self, nframes) -> Tensor:
        """Valid output frames: each pool gives ceil(n/2), so ceil(nframes / 16), at least 1.

        The official code crops to `nframes // 16` instead, one frame fewer when nframes is not a multiple of 16
        (its last, partly padded frame is dropped); ours keeps the frame that still covers real speech.
        """
        return self._stage_lengths(nframes)[-1]

    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """The frame map [B, embedding_dim, ceil(T/16)]; with `mask_padding` and `nframes`, independent of the
        padding (and zero past each caption's `output_frames`)."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        n = [None] * 5
        if self.mask_padding and nframes is not None:
            n = [length.clamp(max=x.size(-1)) for length in self._stage_lengths(as_lengths(nframes, x.device))]
        # BatchNorm (per channel in eval), biases and ReLU turn zeros into other values, so the padding is zeroed
        # again after each conv block, before the pool; and after each pool, whose last window may reach back
        # into the caption. After ReLU every value is >= 0, so a zero never wins a max-pool window over a real
        # frame: zero padding there equals the pool's own -inf padding of a caption alone.
        x = self.batchnorm1(x)
        x = zero_padding_frames(F.relu(self.norm1(self.conv1(x))), n[0])
        x = zero_padding_frames(F.relu(self.norm2(self.conv2(x))), n[0])
        x = zero_padding_frames(self.pool(x), n[1])
        x = zero_padding_frames(F.relu(self.norm3(self.conv3(x))), n[1])
        x = zero_padding_frames(self.pool(x), n[2])
        x = zero_padding_frames(F.relu(self.norm4(self.conv4(x))), n[2])
        x = zero_padding_frames(self.pool(x), n[3])
        x = zero_padding_frames(F.relu(self.norm5(self.conv5(x))), n[3])
        x = zero_padding_frames(self.pool(x), n[4])
        return x.squeeze(2)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        return self.frames(audio, nframes)
