"""Grounding with matchmaps: where in the image does a caption, or one of its words, look?

The matchmap ``M[r, c, t] = <image[:, r, c], audio[:, t]>`` of a trained DAVEnet-style model aligns image
regions with audio frames. Slicing it over a word's frames gives that word's heat map over the image
(speech-prompted localisation, DAVEnet section 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .similarity import matchmap


def word_heatmap(mm: torch.Tensor, start_frame: int, end_frame: int, reduce: str = "mean") -> torch.Tensor:
    """Heat map [H, W] of the output frames ``start_frame <= t < end_frame`` of a matchmap [H, W, T].

    ``reduce`` is ``"mean"`` or ``"max"`` over those frames. At least one frame is always used.
    """
    t = mm.shape[-1]
    start = min(max(int(start_frame), 0), t - 1)
    end = min(max(int(end_frame), start + 1), t)
    span = mm[..., start:end]
    return span.mean(dim=-1) if reduce == "mean" else span.amax(dim=-1)


def caption_heatmap(image_out: torch.Tensor, audio_out: torch.Tensor, nframes: int | None = None) -> torch.Tensor:
    """The caption's attention over the image [H, W]: each region's best match over the valid frames."""
    mm = matchmap(image_out, audio_out[:, : nframes or audio_out.shape[-1]])
    return mm.amax(dim=-1)


def blend_heatmap(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend a heat map into an RGB image.

    Args:
        image: [3, H, W] in [0, 1].
        heat: [h, w], any range; min-max normalised and bilinearly resized to H x W.
        alpha: weight of the heat colour.

    Returns:
        uint8 [H, W, 3] (ready for PIL, matplotlib or ``wandb.Image``), the heat shown in a black-red-yellow
        "hot" colour map.
    """
    h = heat.detach().float()
    h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-8)
    h = F.interpolate(h[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    out = (1 - alpha) * image.detach().float().cpu().clamp(0, 1) + alpha * _hot(h.cpu())
    return (out.permute(1, 2, 0) * 255).round().to(torch.uint8)


def _hot(x: torch.Tensor) -> torch.Tensor:
    """[H, W] in [0, 1] -> [3, H, W] black-red-yellow-white colours."""
    return torch.stack([(3 * x).clamp(0, 1), (3 * x - 1).clamp(0, 1), (3 * x - 2).clamp(0, 1)])


def hot_colors(x: torch.Tensor) -> torch.Tensor:
    """[H, W] values in [0, 1] as uint8 [H, W, 3] "hot" colours (for confusion matrices and the like)."""
    return (_hot(x.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0) * 255).round().to(torch.uint8)


def word_frame_spans(
    start_s, end_s, output_frames, frames_per_second: float = 100.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output-frame spans ``[start, end)`` of words timed in seconds, for any audio net.

    Input frame i covers ``[i, i + 1) / frames_per_second`` seconds (the 10 ms hop). A word from s to e seconds
    covers input frames ``floor(s * fps) .. ceil(e * fps) - 1``; the net's own ``output_frames(n)`` (valid output
    frames of n input frames, e.g. ``ceil(n / 16)`` for DAVEnet) maps them to the output frames that hold them:
    ``start = output_frames(first + 1) - 1`` (the output frame of the first input frame) and
    ``end = output_frames(last + 1)``. Every span has at least one frame.

    Args:
        start_s, end_s: word start and end times, floats or [K] tensors.
        output_frames: the audio net's ``output_frames`` (input frames -> valid output frames, rounded as the
            layers round).
        frames_per_second: input frames per second.

    Returns:
        (start, end): [K] int64 output frames.
    """
    start_s = torch.as_tensor(start_s, dtype=torch.float64).reshape(-1)
    end_s = torch.as_tensor(end_s, dtype=torch.float64).reshape(-1)
    # The 1e-6 keeps times like 1.89 s (188.99999... frames) on the frame they name.
    first = torch.floor(start_s * frames_per_second + 1e-6).long().clamp(min=0)
    last = torch.maximum(torch.ceil(end_s * frames_per_second - 1e-6).long() - 1, first)
    start = torch.as_tensor(output_frames(first + 1)).long().reshape(-1) - 1
    end = torch.maximum(torch.as_tensor(output_frames(last + 1)).long().reshape(-1), start + 1)
    return start, end
