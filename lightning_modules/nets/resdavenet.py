"""ResDAVEnet(-VQ) audio network: a 40 x 1 stem and four stages of 1-d residual blocks, a frame-level map, with
optional vector-quantisation layers and temporal jitter between them.

References: Hsu, Harwath, Glass, "Transfer Learning from Audio-Visual Grounding to Speech Recognition",
Interspeech 2019 (arXiv 1907.04355); Harwath, Hsu, Glass, "Learning Hierarchical Discrete Linguistic Units from
Visually-Grounded Speech", ICLR 2020 (arXiv 1911.09602). Official code: wnhsu/ResDAVEnet-VQ
`models/AudioModels.py::ResDavenetVQ`, `models/quantizers.py`. The image branch is `image.ResNet50Image`.

    stage    op                                                 out ch (class default / released)   T out
    conv1    Conv2d 40 x 1, no bias -> bn1 -> ReLU              128 / 128                           T
             [VQ position 1: quant1] -> jitter
    layer1   2 basic blocks, the first with stride 2            128 / 256                           ceil(T/2)
             [VQ position 2: quant2] -> jitter
    layer2   2 basic blocks, stride 2                           256 / 256                           ceil(T/4)
             [VQ position 3: quant3]
    layer3   2 basic blocks, stride 2                           512 / 512                           ceil(T/8)
             [VQ position 4: quant4]
    layer4   2 basic blocks, stride 2                           1024 / 1024                         ceil(T/16)
             [VQ position 5: quant5]

    basic block: conv 1x9 (pad 4, no bias) -> BN -> ReLU -> conv 1x9 -> BN -> + shortcut -> ReLU
    shortcut of a stage's first block: conv 1x1 stride 2, no bias -> BN

VQ positions are numbered 1-5 as the paper's `{2}`, `{3}`, `{2,3}` and the official keys `quant1`..`quant5`; a code
is as wide as its position's channels (`nets.quantizers.VectorQuantizerEMA`: nearest code, straight-through in
training, commitment loss, EMA codebook). Temporal jitter (`nets.quantizers.TemporalJitter`, training only) follows
positions 1 and 2 whether or not they quantise, as the official forward applies it; its default offsets are the
official uncentred {0, +1, +2}, `jitter_centered=True` gives {-1, 0, +1}.

Padding. With `mask_padding=True` (default) and `nframes` given, every frame beyond a caption's valid length at
each resolution (ceil per stride-2 stage, as `output_frames`) is zeroed before every layer that mixes time (each
block's input, which feeds its first 1x9 conv and its strided shortcut; the input of its second 1x9 conv, after
BatchNorm) and in the output, and jitter never reads past a caption's end: a caption's output on its valid frames
is then the output of that caption alone, whatever padding the batch adds (exactly so in eval; in training
BatchNorm's batch statistics still mix the batch). `mask_padding=False` is the official function: the receptive
fields of the last valid frames see the padding. The VQ layers count, for their commitment loss and EMA update,
the first `nframes // 2**(position - 1)` frames of each caption (floor, as the official `nframes / pooling ratio`
on integer tensors; one frame fewer than the ceil count when the division is not exact).

The official class default widths are 128,128,256,512,1024 (44,670,976 parameters); the released checkpoints were
trained with 128,256,256,512,1024 (46,490,880 parameters), available as `RESDAVENET_RELEASED_WIDTHS` or
`ResDAVEnetAudioNet.released()`. Weights start as in the official code: conv ~ N(0, sqrt(2 / (kh*kw*out))),
BatchNorm gamma = 1, beta = 0. The official class also defines a `batchnorm1` on the input that its forward never
calls; it is left out here (a converter drops its keys), all other keys match; the VQ layers' buffers are
`quant<k>.codebook`, `quant<k>.ema_count`, `quant<k>.ema_sum` (official `_embedding.weight`, `_ema_cluster_size`,
`_ema_w`). With `vq_layers=()` and `jitter=0` this is the ResDAVEnet of Interspeech 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_lengths, conv_out_len, frame_mask, scaled_width, spectrogram_4d, zero_padding_frames
from .quantizers import TemporalJitter, VectorQuantizerEMA

RESDAVENET_DEFAULT_WIDTHS = (128, 128, 256, 512, 1024)
RESDAVENET_RELEASED_WIDTHS = (128, 256, 256, 512, 1024)
JITTER_POSITIONS = (1, 2)  # the official forward jitters after the stem and after layer1


class SpeechBasicBlock(nn.Module):
    """Residual block over time: two 1 x k convs with BatchNorm, an optional projection shortcut.

    `forward(x, lengths=None)`: with `lengths` (valid frames of x per item), padding frames are zeroed before each
    time-mixing conv; returns the block output (its padding frames are not zeroed).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, convsize: int = 9):
        super().__init__()
        pad = (0, convsize // 2)
        self.stride = stride
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

    def out_lengths(self, lengths: Tensor) -> Tensor:
        return conv_out_len(lengths, kernel=1, stride=self.stride)  # the 1 x k conv (pad k // 2) gives the same

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = zero_padding_frames(x, lengths)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = zero_padding_frames(out, None if lengths is None else self.out_lengths(lengths))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


def _per_position(value: int | Sequence[int], positions: int, name: str) -> list[int]:
    """An int for every position, or one value per position 1..positions."""
    if isinstance(value, int):
        return [value] * positions
    values = [int(v) for v in value]
    if len(values) != positions:
        raise ValueError(f"{name} needs one value per VQ position 1..{positions}, got {len(values)}: {values}")
    return values


class ResDAVEnetAudioNet(nn.Module):
    """Frame-level caption encoder [B, embedding_dim, ceil(T/16)] (for four stages), optionally vector-quantised.

    Args:
        layer_widths: stem width then one width per stage (default: the official class default).
        layer_depths: blocks per stage.
        convsize: temporal kernel of the block convs (odd, so that stride-1 convs keep the length).
        width_mult: scales every width but the last (CPU presets).
        embedding_dim: width of the last stage = output channels; default `layer_widths[-1]`.
        n_mels: frequency bins of the input (the stem spans all of them).
        vq_layers: VQ positions that quantise (1 = after the stem, k + 1 = after stage k), e.g. `(3,)` for `{3}`.
        codebook_size: codes per VQ layer: an int, or one per position 1..stages+1 (as the official `--VQ-sizes`).
        commitment_cost, ema_decay, init_std, init_ema_mass, nonneg_init: of every VQ layer (official run defaults).
        jitter: temporal jitter probability p (official run default 0.12; 0 turns it off).
        jitter_centered: offsets {-1, 0, +1} instead of the official {0, +1, +2}.
        mask_padding: zero the padding at every resolution when `nframes` is given (see the module docstring);
            False is the official function.

    After every training-mode forward, `aux_losses` holds each VQ layer's commitment loss (`vq<k>_commitment`, to
    be added to the training loss) and `aux_metrics` its code perplexity and share of codes used over the batch
    (`vq<k>_perplexity`, `vq<k>_codes_used`; over every rank under DDP); both are empty after an eval forward.
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
        vq_layers: Sequence[int] = (),
        codebook_size: int | Sequence[int] = 1024,
        commitment_cost: float = 1.0,
        ema_decay: float = 0.99,
        init_std: float = 1.0,
        init_ema_mass: float = 1.0,
        nonneg_init: bool = False,
        jitter: float = 0.12,
        jitter_centered: bool = False,
        mask_padding: bool = True,
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
        self.mask_padding = mask_padding

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

        # VQ layers after the convs, as officially, so that the conv weights draw the same random numbers.
        positions = self.num_stages + 1
        self.vq_layers = tuple(sorted({int(k) for k in vq_layers}))
        if len(self.vq_layers) != len(list(vq_layers)) or any(not 1 <= k <= positions for k in self.vq_layers):
            raise ValueError(f"vq_layers must be distinct positions in 1..{positions}, got {list(vq_layers)}")
        sizes = _per_position(codebook_size, positions, "codebook_size")
        for k in self.vq_layers:
            self.add_module(f"quant{k}", VectorQuantizerEMA(
                sizes[k - 1], widths[k - 1], commitment_cost=commitment_cost, decay=ema_decay, init_std=init_std,
                init_ema_mass=init_ema_mass, nonneg_init=nonneg_init,
            ))
        self.jitter = TemporalJitter(jitter, centered=jitter_centered)
        self.aux_losses: dict[str, Tensor] = {}
        self.aux_metrics: dict[str, Tensor] = {}

    @classmethod
    def released(cls, **kwargs) -> ResDAVEnetAudioNet:
        """The configuration of the released ResDAVEnet-VQ checkpoints (widths 128,256,256,512,1024)."""
        return cls(layer_widths=RESDAVENET_RELEASED_WIDTHS, **kwargs)

    def output_frames(self, nframes) -> Tensor:
        """Valid output frames: every stage halves with ceil, so ceil(nframes / 2**stages), at least 1.

        The official code crops to `nframes // 16`, one frame fewer when nframes is not a multiple of 16.
        """
        return self.position_frames(nframes, self.num_stages + 1)

    def position_frames(self, nframes, position: int) -> Tensor:
        """Valid frames at VQ position `position` (1: the input rate; k + 1: after stage k), ceil per stage."""
        n = as_lengths(nframes).clamp(min=1)
        for _ in range(position - 1):
            n = conv_out_len(n, kernel=1, stride=2)  # the 1x1 shortcut; the 1 x k conv gives the same length
        return n

    # ---- the network, top to bottom -------------------------------------------------------------------------
    def frames(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        """The frame map [B, embedding_dim, T'] (padding zeroed with `mask_padding` and `nframes`)."""
        return self._run(audio, nframes)[0]

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        return self.frames(audio, nframes)

    def _run(self, audio: Tensor, nframes: Tensor | None, stop_at: int | None = None) -> tuple[Tensor, Tensor]:
        """(map, codes): the map after position `stop_at` (None: the output [B, D, T']) and, when `stop_at` is a VQ
        position, its codes [B, T_position] (else an empty tensor)."""
        x = spectrogram_4d(audio, self.n_mels, type(self).__name__)
        counted = None if nframes is None else as_lengths(nframes, x.device)  # official VQ mask: input frames
        lengths = None
        if nframes is not None and self.mask_padding:
            lengths = counted.clamp(1, x.shape[-1])
        self.aux_losses, self.aux_metrics = {}, {}

        x = F.relu(self.bn1(self.conv1(x)))  # no time mixing: the padding needs no zeroing yet
        x, codes = self._position(x, 1, counted, lengths)
        for k in range(1, self.num_stages + 1):
            if stop_at is not None and stop_at < k + 1:
                break
            for block in getattr(self, f"layer{k}"):
                x = block(x, lengths)
                lengths = None if lengths is None else block.out_lengths(lengths)
            x, codes = self._position(x, k + 1, counted, lengths)
        return zero_padding_frames(x, lengths).squeeze(2), codes

    def _position(self, x: Tensor, k: int, counted: Tensor | None, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """What follows stage k - 1 (the stem for k = 1): the VQ layer at position k, if on, then the jitter."""
        codes = x.new_zeros(0, dtype=torch.long)
        if k in self.vq_layers:
            x, codes = self._quantize(x, k, counted)
        if k in JITTER_POSITIONS:
            x = self.jitter(x, lengths)
        return x, codes

    def _quantize(self, x: Tensor, k: int, counted: Tensor | None) -> tuple[Tensor, Tensor]:
        B, C, _, T = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(B * T, C)  # frames in (caption, time) order
        mask = None if counted is None else frame_mask(counted // 2 ** (k - 1), T).reshape(-1)
        vq = getattr(self, f"quant{k}")
        out = vq(flat, mask)
        if self.training:
            self.aux_losses[f"vq{k}_commitment"] = out.loss
            self.aux_metrics[f"vq{k}_perplexity"] = out.perplexity
            self.aux_metrics[f"vq{k}_codes_used"] = out.codes_used
        # back in the input's memory layout (channels-last presets stay so; the rest gets its usual gradient strides)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        quantized = out.quantized.reshape(B, 1, T, C).permute(0, 3, 1, 2).contiguous(memory_format=layout)
        return quantized, out.codes.reshape(B, T)

    # ---- discrete units ---------------------------------------------------------------------------------------
    def codebook(self, layer: int) -> Tensor:
        """The codebook [K, D] of VQ position `layer` (a detached copy)."""
        return self._quantizer(layer).codebook.detach().clone()

    @torch.no_grad()
    def encode_units(self, audio: Tensor, nframes: Tensor | None = None, layer: int = 3) -> tuple[Tensor, Tensor]:
        """(codes [B, T_layer] int64, valid [B] int64): the code of every frame at VQ position `layer`, in eval
        semantics (running BatchNorm statistics, no jitter, no EMA update), and the valid frames per caption there
        (ceil per stage, as `position_frames`; every frame when `nframes` is None). Codes beyond `valid` are padding.
        """
        self._quantizer(layer)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            codes = self._run(audio, nframes, stop_at=layer)[1]
        finally:
            for m, mode in modes:
                m.training = mode
        n = torch.full((codes.shape[0],), audio.shape[-1]) if nframes is None else nframes
        return codes, self.position_frames(n, layer).clamp(max=codes.shape[1]).to(codes.device)

    def _quantizer(self, layer: int) -> VectorQuantizerEMA:
        if layer not in self.vq_layers:
            raise ValueError(f"VQ position {layer} is off in this model (vq_layers={list(self.vq_layers)})")
        return getattr(self, f"quant{layer}")
