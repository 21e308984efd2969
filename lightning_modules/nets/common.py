"""Small helpers shared by the nets: input checks, output lengths, frame masks, masked pooling.

Pure functions over tensors; nothing here knows which paper a net comes from.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scaled_width(channels: int, width_mult: float) -> int:
    """`channels * width_mult` rounded to the nearest integer, at least 1 (the CPU presets shrink nets this way)."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return max(1, int(round(channels * width_mult)))


def spectrogram_4d(audio: Tensor, n_mels: int, net: str) -> Tensor:
    """Accept log-mel input as [B, n_mels, T] or [B, 1, n_mels, T]; return [B, 1, n_mels, T]."""
    if audio.dim() == 3:
        audio = audio.unsqueeze(1)
    if audio.dim() != 4 or audio.size(1) != 1 or audio.size(2) != n_mels:
        raise ValueError(
            f"{net}: expected audio of shape [B, {n_mels}, T] or [B, 1, {n_mels}, T], got {tuple(audio.shape)}"
        )
    return audio


def as_lengths(nframes, device: torch.device | None = None) -> Tensor:
    """Frame counts as a 1-d int64 tensor (accepts a tensor, a list or an int)."""
    lengths = torch.as_tensor(nframes, dtype=torch.long, device=device)
    return lengths.reshape(-1)


def conv_out_len(length: Tensor, kernel: int, stride: int = 1, padding: int = 0) -> Tensor:
    """Output length of a conv / max-pool along time, floored exactly as PyTorch floors it.

    The result is clamped at 1 so that every caption keeps at least one output frame, even a caption
    shorter than a layer's receptive field.
    """
    return torch.clamp(torch.div(length + 2 * padding - kernel, stride, rounding_mode="floor") + 1, min=1)


def frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean [B, max_len]: True for the first `lengths[b]` frames of item b."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def zero_padding_frames(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero the frames of a [B, C, 1, T] or [B, C, T] map that lie beyond `lengths[b]` (no-op for None).

    Zeros are exactly what a same-padded conv would see past the end of the unpadded caption, so a pooled net that
    zeroes its padding after every layer gives the same result whatever the padding held.
    """
    if lengths is None:
        return x
    mask = frame_mask(lengths.to(x.device), x.size(-1))
    # where() rather than multiply: padding that turned into inf/nan must not survive as 0 * inf.
    return torch.where(mask.view(x.size(0), *([1] * (x.dim() - 2)), x.size(-1)), x, x.new_zeros(()))


def _valid_lengths(valid, batch: int, max_len: int, device: torch.device) -> Tensor:
    if valid is None:
        return torch.full((batch,), max_len, dtype=torch.long, device=device)
    lengths = as_lengths(valid, device)
    if lengths.numel() != batch:
        raise ValueError(f"expected {batch} frame counts, got {lengths.numel()}")
    return lengths.clamp(1, max_len)


def masked_mean(x: Tensor, valid=None) -> Tensor:
    """Mean over the last (time) axis of x [B, D, T], using only the first `valid[b]` frames of each item.

    `valid` is clamped to [1, T]; None means all frames are valid. Returns [B, D].
    """
    lengths = _valid_lengths(valid, x.size(0), x.size(-1), x.device)
    mask = frame_mask(lengths, x.size(-1)).unsqueeze(1)
    # where() rather than multiply: padding that holds inf/nan must not leak in as 0 * inf.
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(-1)
    return total / lengths.unsqueeze(1).to(x.dtype)


def masked_max(x: Tensor, valid=None) -> Tensor:
    """Max over the last (time) axis of x [B, D, T] restricted to the first `valid[b]` frames. Returns [B, D]."""
    lengths = _valid_lengths(valid, x.size(0), x.size(-1), x.device)
    mask = frame_mask(lengths, x.size(-1)).unsqueeze(1)
    return torch.where(mask, x, torch.full((), float("-inf"), dtype=x.dtype, device=x.device)).amax(-1)


def masked_pool(x: Tensor, valid=None, pooling: str = "mean") -> Tensor:
    """`masked_mean` or `masked_max` by name."""
    if pooling == "mean":
        return masked_mean(x, valid)
    if pooling == "max":
        return masked_max(x, valid)
    raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")


def check_pooling(pooling: str) -> str:
    if pooling not in ("mean", "max"):
        raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
    return pooling
