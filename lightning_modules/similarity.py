"""Image-caption similarity: pooled dot product and the matchmap similarities SISA, MISA and SIMA.

A matchmap compares every image region r with every audio frame t of one caption,

    M[r, t] = <image[:, r], audio[:, t]>,        t < nframes (the caption's valid output frames),

and is reduced to one score (DAVEnet, ECCV 2018):

| kind | score                               | note                                              |
|------|-------------------------------------|---------------------------------------------------|
| SISA | mean over r, t of M                 | = pooled image . pooled audio (bilinearity); this |
|      |                                     | is also ResDAVEnet's "pooldot"                    |
| MISA | mean over t of (max over r of M)    | DAVEnet's best                                    |
| SIMA | mean over r of (max over t of M)    |                                                   |
| dot  | image . audio of pooled [D] vectors | NIPS2016, ACL2017                                 |

``similarity_matrix`` scores every image against every caption with one batched GEMM per chunk, never a loop
over pairs. Captions are sorted by length and cut into small blocks, each trimmed to its own longest caption,
so short captions do not pay for long ones (the GEMMs do hardly more work than cropping each pair). Padding
frames (t >= nframes) are zeroed before the GEMM and masked in the reductions, so whatever they hold (NaN and
inf included) changes neither a score nor a gradient.

Precision: the GEMM runs in the inputs' dtype (under autocast, in autocast's dtype); the means over r and t
are accumulated in float32 for float16/bfloat16 inputs, and the scores are returned in the GEMM's dtype.

References: Harwath, Recasens, Surís, Chuang, Torralba, Glass. "Jointly Discovering Visual Objects and Spoken
Words from Raw Sensory Input", ECCV 2018, arXiv:1804.01452 (matchmaps, SISA/MISA/SIMA);
Harwath, Hsu, Glass. ICLR 2020, arXiv:1911.09602 (pooldot).
"""

from __future__ import annotations

import torch
from torch import Tensor

SIMILARITY_KINDS = ("dot", "SISA", "MISA", "SIMA")

# Default bound on the matchmap elements one GEMM builds (2**26 float32 = 256 MiB).
DEFAULT_CHUNK_SIZE = 2**26
# Caption frames per block (m captions x the longest one's T): few enough captions that length-sorted blocks
# trim nearly all padding, enough columns for an efficient GEMM.
FRAMES_PER_BLOCK = 1024


# ---- input checks ------------------------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"similarity.py: kind must be one of {SIMILARITY_KINDS}, got {kind!r}")


def _pooled_inputs(image: Tensor, audio: Tensor) -> None:
    if image.dim() != 2 or audio.dim() != 2:
        raise ValueError(
            "similarity.py: kind 'dot' takes pooled image [N, D] and audio [M, D], got "
            f"{tuple(image.shape)} and {tuple(audio.shape)}; frame maps need kind SISA, MISA or SIMA"
        )
    if image.size(1) != audio.size(1):
        raise ValueError(f"similarity.py: embedding sizes differ: image D={image.size(1)}, audio D={audio.size(1)}")


def _matchmap_inputs(image: Tensor, audio: Tensor, nframes, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """Validate frame-level inputs; return image [N, D, R], audio [M, D, T] and lengths [M] (int64)."""
    if image.dim() not in (3, 4) or audio.dim() != 3:
        raise ValueError(
            f"similarity.py: kind {kind!r} takes image [N, D, H, W] or [N, D, R] and audio [M, D, T], got "
            f"{tuple(image.shape)} and {tuple(audio.shape)}; pooled vectors need kind 'dot'"
        )
    image = image.flatten(2)
    if image.size(1) != audio.size(1):
        raise ValueError(f"similarity.py: embedding sizes differ: image D={image.size(1)}, audio D={audio.size(1)}")
    M, _, T = audio.shape
    if nframes is None:
        lengths = torch.full((M,), T, dtype=torch.long, device=audio.device)
    else:
        lengths = torch.as_tensor(nframes, device=audio.device)
        if lengths.is_floating_point() or lengths.dim() != 1 or lengths.numel() != M:
            raise ValueError(f"similarity.py: nframes must be {M} integer frame counts, got {tuple(lengths.shape)} "
                             f"of {lengths.dtype}")
        lengths = lengths.long()
        if M and (int(lengths.min()) < 1 or int(lengths.max()) > T):
            raise ValueError(
                f"similarity.py: nframes must lie in [1, T={T}] (valid *output* frames of the audio map), got "
                f"min {int(lengths.min())}, max {int(lengths.max())}"
            )
    return image, audio, lengths


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _frame_mask(lengths: Tensor, T: int) -> Tensor:
    """Boolean [M, T]: True for the valid frames of each caption."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def _zero_padding(audio: Tensor, valid: Tensor) -> Tensor:
    # where() rather than a multiply: padding holding inf/NaN must become 0, not 0 * inf = NaN, and its
    # gradient must be 0 too.
    return torch.where(valid[:, None, :], audio, torch.zeros((), dtype=audio.dtype, device=audio.device))


# ---- the pieces every kind shares ---------------------------------------------------------------------------
def _matchmap_gemm(audio_rows: Tensor, images: Tensor) -> Tensor:
    """[m*T, D] x [n, D, R] -> [n, m*T, R]: every matchmap of a chunk in one batched GEMM, reading the images
    in place (tests instrument this)."""
    return torch.matmul(audio_rows, images)


def _reduce_matchmaps(mm: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Scores [n, m] from matchmaps mm [n, m, T, R] whose padding frames are 0; valid [m, T] marks real frames.

    mm may be modified in place (SIMA) to avoid a second full-size tensor.
    """
    acc = _accumulation_dtype(mm.dtype)
    if kind == "MISA":
        # max(dim) rather than amax: its backward keeps only the indices, not the whole matchmap.
        best_region = mm.max(dim=-1).values  # [n, m, T]; exactly 0 at padding frames
        weights = valid.to(acc) / valid.sum(-1, keepdim=True).to(acc)  # 1/nframes on valid frames, 0 elsewhere
        return (best_region.to(acc) * weights).sum(-1).to(mm.dtype)
    if kind == "SIMA":
        best_frame = mm.masked_fill_(~valid[..., None], float("-inf")).max(dim=2).values  # [n, m, R]
        return best_frame.to(acc).mean(dim=-1).to(mm.dtype)
    raise AssertionError(kind)


def _pooled_frames(image: Tensor, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Region-mean of image [N, D, R] and valid-frame mean of audio [M, D, T], both [*, D] in the input dtype."""
    acc = _accumulation_dtype(image.dtype)
    pooled_image = image.sum(-1, dtype=acc) / image.size(-1)
    valid = _frame_mask(lengths, audio.size(-1))
    pooled_audio = _zero_padding(audio, valid).sum(-1, dtype=acc) / lengths[:, None].to(acc)
    return pooled_image.to(image.dtype), pooled_audio.to(audio.dtype)


# ---- public API ---------------------------------------------------------------------------------------------
def similarity_matrix(
    image: Tensor,
    audio: Tensor,
    nframes=None,
    kind: str = "MISA",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Score every image against every caption: S [N, M], rows = images, columns = captions.

    Args:
        image: [N, D, H, W] or [N, D, R] region maps (SISA/MISA/SIMA), or [N, D] vectors ("dot").
        audio: [M, D, T] frame maps (SISA/MISA/SIMA), or [M, D] vectors ("dot").
        nframes: [M] valid output frames of each caption, in [1, T]; None = all T frames valid. Ignored by "dot".
        kind: "dot", "SISA", "MISA" or "SIMA".
        chunk_size: the most matchmap elements (image regions x caption frames, summed over the pairs of a
            chunk) built by one GEMM; peak memory is about chunk_size x element size (twice that in the
            backward pass). A single image-caption pair is never split, so the bound is
            max(chunk_size, R x T). Only MISA and SIMA build matchmaps; "dot" and SISA are one small GEMM.

    Differentiable with respect to image and audio.
    """
    _check_kind(kind)
    if kind == "dot":
        _pooled_inputs(image, audio)
        return image @ audio.t()
    image, audio, lengths = _matchmap_inputs(image, audio, nframes, kind)
    if kind == "SISA":
        pooled_image, pooled_audio = _pooled_frames(image, audio, lengths)
        return pooled_image @ pooled_audio.t()
    if chunk_size < 1:
        raise ValueError(f"similarity.py: chunk_size must be >= 1, got {chunk_size}")
    N, D, R = image.shape
    M = audio.size(0)
    if N == 0 or M == 0:
        return image.new_zeros(N, M)

    # Length-sorted caption blocks, each trimmed to its longest caption.
    order = torch.argsort(lengths, stable=True)
    T_max = int(lengths.max())
    captions_per_block = max(1, min(M, FRAMES_PER_BLOCK // T_max, chunk_size // (R * T_max)))
    blocks = []
    for c0 in range(0, M, captions_per_block):
        idx = order[c0 : c0 + captions_per_block]
        m = idx.numel()
        T = int(lengths[idx].max())
        valid = _frame_mask(lengths[idx], T)  # [m, T]
        audio_rows = _zero_padding(audio[idx, :, :T], valid).transpose(1, 2).reshape(m * T, D)
        images_per_chunk = max(1, chunk_size // (R * m * T))
        rows = []
        for i0 in range(0, N, images_per_chunk):
            chunk = image[i0 : i0 + images_per_chunk]
            mm = _matchmap_gemm(audio_rows, chunk).view(chunk.size(0), m, T, R)
            rows.append(_reduce_matchmaps(mm, valid, kind))
        blocks.append(torch.cat(rows, dim=0))
    return torch.cat(blocks, dim=1)[:, torch.argsort(order)]


def paired_similarity(image: Tensor, audio: Tensor, nframes=None, kind: str = "MISA") -> Tensor:
    """S(image_k, audio_k) for B aligned pairs -> [B] (the diagonal of ``similarity_matrix``, at O(B) cost).

    Shapes as in ``similarity_matrix`` with N = M = B. Memory is one matchmap per pair (B x R x T).
    """
    _check_kind(kind)
    if image.size(0) != audio.size(0):
        raise ValueError(f"similarity.py: paired_similarity needs as many images as captions, got "
                         f"{image.size(0)} and {audio.size(0)}")
    if kind == "dot":
        _pooled_inputs(image, audio)
        return torch.bmm(image.unsqueeze(1), audio.unsqueeze(2)).view(-1)
    image, audio, lengths = _matchmap_inputs(image, audio, nframes, kind)
    if kind == "SISA":
        pooled_image, pooled_audio = _pooled_frames(image, audio, lengths)
        return torch.bmm(pooled_image.unsqueeze(1), pooled_audio.unsqueeze(2)).view(-1)
    T = int(lengths.max()) if lengths.numel() else audio.size(-1)
    valid = _frame_mask(lengths, T)  # [B, T]
    mm = torch.bmm(_zero_padding(audio[..., :T], valid).transpose(1, 2), image)  # [B, T, R]
    # Pair k sits at position (0, k) of a 1 x B "matrix" of matchmaps [1, B, T, R].
    return _reduce_matchmaps(mm.unsqueeze(0), valid, kind).view(-1)


def matchmap(image: Tensor, audio: Tensor, nframes: int | None = None) -> Tensor:
    """The matchmap of one pair, for visualisation: image [D, H, W] (or [D, R]), audio [D, T] -> [H, W, T']
    (or [R, T']), where T' = nframes (default T) drops the caption's padding frames."""
    if image.dim() not in (2, 3) or audio.dim() != 2 or image.size(0) != audio.size(0):
        raise ValueError(f"similarity.py: matchmap takes image [D, H, W] or [D, R] and audio [D, T] with the same "
                         f"D, got {tuple(image.shape)} and {tuple(audio.shape)}")
    if nframes is not None:
        if not 1 <= int(nframes) <= audio.size(1):
            raise ValueError(f"similarity.py: nframes must lie in [1, {audio.size(1)}], got {int(nframes)}")
        audio = audio[:, : int(nframes)]
    return torch.einsum("dr,dt->rt", image.flatten(1), audio).view(*image.shape[1:], audio.size(1))
