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
inf included) changes neither a score nor a gradient. ``paired_similarity`` (S(I_k, A_k) for the sampled
losses) and SISA's masked pooling have hand-written backward passes, for speed and memory (see their classes).

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
# Audio elements whose padding is zeroed at once when pooling (SISA): 4 MiB of float32.
POOL_CHUNK_ELEMENTS = 2**20


# ---- input checks ------------------------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"kind must be one of {SIMILARITY_KINDS}, got {kind!r}")


def _pooled_inputs(image: Tensor, audio: Tensor) -> None:
    if image.dim() != 2 or audio.dim() != 2:
        raise ValueError(
            "kind 'dot' takes pooled image [N, D] and audio [M, D], got "
            f"{tuple(image.shape)} and {tuple(audio.shape)}; frame maps need kind SISA, MISA or SIMA"
        )
    if image.size(1) != audio.size(1):
        raise ValueError(f"embedding sizes differ: image D={image.size(1)}, audio D={audio.size(1)}")


def _matchmap_inputs(image: Tensor, audio: Tensor, nframes, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """Validate frame-level inputs; return image [N, D, R], audio [M, D, T] and lengths [M] (int64)."""
    if image.dim() not in (3, 4) or audio.dim() != 3:
        raise ValueError(
            f"kind {kind!r} takes image [N, D, H, W] or [N, D, R] and audio [M, D, T], got "
            f"{tuple(image.shape)} and {tuple(audio.shape)}; pooled vectors need kind 'dot'"
        )
    image = image.flatten(2)
    if image.size(1) != audio.size(1):
        raise ValueError(f"embedding sizes differ: image D={image.size(1)}, audio D={audio.size(1)}")
    M, _, T = audio.shape
    if nframes is None:
        lengths = torch.full((M,), T, dtype=torch.long, device=audio.device)
    else:
        lengths = torch.as_tensor(nframes, device=audio.device)
        if lengths.is_floating_point() or lengths.dim() != 1 or lengths.numel() != M:
            raise ValueError(f"nframes must be {M} integer frame counts, got {tuple(lengths.shape)} "
                             f"of {lengths.dtype}")
        lengths = lengths.long()
        if M and (int(lengths.min()) < 1 or int(lengths.max()) > T):
            raise ValueError(
                f"nframes must lie in [1, T={T}] (valid *output* frames of the audio map), got "
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
    pooled_audio = _valid_frame_sum(audio, lengths, acc) / lengths[:, None].to(acc)
    return pooled_image.to(image.dtype), pooled_audio.to(audio.dtype)


def _valid_frame_sum(audio: Tensor, lengths: Tensor, acc: torch.dtype) -> Tensor:
    """Sum over each caption's valid frames: audio [M, D, T] -> [M, D] in dtype acc (NaN-safe padding)."""
    if audio.size(0) == 0:
        return audio.new_zeros(0, audio.size(1), dtype=acc)
    return _ValidFrameSum.apply(audio, lengths, acc)


class _ValidFrameSum(torch.autograd.Function):
    """sum_t<nframes audio[m, :, t] with a hand-written backward pass.

    Why: masking then summing through autograd writes the full-size [M, D, T] tensor three times (the
    masked copy, its gradient, the chunks' concatenation), and on CPU every fresh full-size tensor pays a page
    fault per 4 KiB. Here the forward pass zeroes the padding a few captions at a time (small temporaries the
    allocator reuses) and the backward pass writes the gradient once: g on valid frames, 0 on padding.
    """

    @staticmethod
    def forward(ctx, audio: Tensor, lengths: Tensor, acc: torch.dtype) -> Tensor:
        M, D, T = audio.shape
        valid = _frame_mask(lengths, T)
        step = max(1, POOL_CHUNK_ELEMENTS // (D * T))
        sums = torch.cat([
            _zero_padding(chunk, chunk_valid).sum(-1, dtype=acc)  # where(), not a multiply: NaN-safe
            for chunk, chunk_valid in zip(audio.split(step), valid.split(step))
        ])
        ctx.save_for_backward(valid)
        ctx.audio_dtype = audio.dtype
        return sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (valid,) = ctx.saved_tensors
        grad = grad.to(ctx.audio_dtype)[:, :, None]
        return torch.where(valid[:, None, :], grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None, None


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
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
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

    Shapes as in ``similarity_matrix`` with N = M = B. MISA and SIMA build the matchmaps of a few
    length-sorted pairs at a time (about ``FRAMES_PER_BLOCK`` x R elements) and keep only the index of each
    max for the backward pass, which gathers / scatters D-vectors instead of running matchmap GEMMs.
    """
    _check_kind(kind)
    if image.size(0) != audio.size(0):
        raise ValueError(f"paired_similarity needs as many images as captions, got "
                         f"{image.size(0)} and {audio.size(0)}")
    if kind == "dot":
        _pooled_inputs(image, audio)
        return torch.bmm(image.unsqueeze(1), audio.unsqueeze(2)).view(-1)
    image, audio, lengths = _matchmap_inputs(image, audio, nframes, kind)
    if kind == "SISA":
        pooled_image, pooled_audio = _pooled_frames(image, audio, lengths)
        return torch.bmm(pooled_image.unsqueeze(1), pooled_audio.unsqueeze(2)).view(-1)
    if image.size(0) == 0:
        return image.new_zeros(0)
    # The GEMM's dtype: the inputs', or autocast's. The Function below runs with autocast off, on inputs
    # already cast, so that autograd handles the cast's backward.
    gemm_dtype = torch.bmm(audio[:1, :, :1].transpose(1, 2), image[:1, :, :1]).dtype
    with torch.autocast(device_type=image.device.type, enabled=False):
        return _PairedMatchmapScores.apply(image.to(gemm_dtype), audio.to(gemm_dtype), lengths, kind)


class _PairedMatchmapScores(torch.autograd.Function):
    """MISA / SIMA scores of aligned pairs, image [B, D, R] x audio [B, D, T] -> [B], with a hand-written
    backward pass.

    Why: autograd through one padded [B, T, R] matchmap runs three GEMMs at the batch's longest caption and
    keeps the matchmaps for the backward pass. Here pairs are sorted by length and cut into blocks trimmed to
    their own longest caption (as in ``similarity_matrix``), the forward pass keeps only each max's winner
    index, and the backward pass uses that the gradient of a max-reduced matchmap is sparse: MISA puts
    g / nframes on each valid frame's best region, SIMA g / R on each region's best frame. So each input's
    gradient is a gather or a scatter-add of D-vectors of the other input, exactly what autograd's two GEMMs
    would compute, without multiplying the zeros. On CUDA the scatter-add is deterministic under
    ``torch.use_deterministic_algorithms``. The pass is not differentiable twice.
    """

    @staticmethod
    def _blocks(lengths: Tensor, R: int):
        """(pair indices, trimmed T, valid [b, T]) per block of length-sorted pairs."""
        order = torch.argsort(lengths, stable=True)
        T_max = int(lengths.max())
        per_block = max(1, min(lengths.numel(), FRAMES_PER_BLOCK // T_max, DEFAULT_CHUNK_SIZE // (R * T_max)))
        for b0 in range(0, lengths.numel(), per_block):
            idx = order[b0 : b0 + per_block]
            T = int(lengths[idx].max())
            yield idx, T, _frame_mask(lengths[idx], T)

    @staticmethod
    def _audio_block(audio: Tensor, idx: Tensor, T: int, valid: Tensor) -> Tensor:
        """Captions idx trimmed to T frames, padding zeroed (a fresh copy, so in place; NaN-safe)."""
        return audio[idx, :, :T].masked_fill_(~valid[:, None, :], 0)

    @staticmethod
    def forward(ctx, image: Tensor, audio: Tensor, lengths: Tensor, kind: str) -> Tensor:
        B, D, R = image.shape
        acc = _accumulation_dtype(image.dtype)
        scores = torch.empty(B, dtype=image.dtype, device=image.device)
        winners = torch.zeros(B, int(lengths.max()) if kind == "MISA" else R, dtype=torch.long, device=image.device)
        for idx, T, valid in _PairedMatchmapScores._blocks(lengths, R):
            mm = torch.bmm(_PairedMatchmapScores._audio_block(audio, idx, T, valid).transpose(1, 2), image[idx])
            # The same reductions as _reduce_matchmaps ([b, T, R] here), keeping the winners' indices.
            if kind == "MISA":
                best, winners[idx, :T] = mm.max(dim=2)  # [b, T]; exactly 0 at padding frames
                weights = valid.to(acc) / valid.sum(-1, keepdim=True).to(acc)
                scores[idx] = (best.to(acc) * weights).sum(-1).to(mm.dtype)
            else:
                best, winners[idx] = mm.masked_fill_(~valid[..., None], float("-inf")).max(dim=1)  # [b, R]
                scores[idx] = best.to(acc).mean(dim=-1).to(mm.dtype)
        ctx.kind = kind
        ctx.save_for_backward(image, audio, lengths, winners)
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        image, audio, lengths, winners = ctx.saved_tensors
        B, D, R = image.shape
        acc = _accumulation_dtype(image.dtype)
        # Every pair lies in exactly one block, so the blocks' gradients are written, not accumulated.
        grad_image = torch.empty_like(image) if ctx.needs_input_grad[0] else None
        grad_audio = torch.empty_like(audio) if ctx.needs_input_grad[1] else None
        channels = torch.arange(D, device=image.device)[None, :, None]
        for idx, T, valid in _PairedMatchmapScores._blocks(lengths, R):
            b = idx.numel()
            g = grad[idx].to(acc)
            pairs = idx[:, None, None]
            if grad_audio is not None:
                grad_audio[:, :, T:].index_fill_(0, idx, 0)  # frames past the block's longest caption
            if ctx.kind == "MISA":
                weights = (g[:, None] * valid.to(acc) / valid.sum(-1, keepdim=True).to(acc)).to(image.dtype)
                weights = weights[:, None, :]  # [b, 1, T]; 0 at padding frames
                where = winners[idx, None, :T].expand(b, D, T)  # frame t's best region
                if grad_audio is not None:
                    grad_audio[:, :, :T].index_copy_(0, idx, image[pairs, channels, where] * weights)
                if grad_image is not None:
                    audio_block = _PairedMatchmapScores._audio_block(audio, idx, T, valid)
                    scattered = image.new_zeros(b, D, R).scatter_add_(2, where, audio_block * weights)
                    grad_image.index_copy_(0, idx, scattered)
            else:
                weight = (g / R).to(image.dtype)[:, None, None]
                where = winners[idx, None, :].expand(b, D, R)  # region r's best frame (always a valid one)
                if grad_image is not None:
                    grad_image.index_copy_(0, idx, audio[pairs, channels, where] * weight)
                if grad_audio is not None:
                    scattered = audio.new_zeros(b, D, T).scatter_add_(2, where, image[idx] * weight)
                    grad_audio[:, :, :T].index_copy_(0, idx, scattered)
        return grad_image, grad_audio, None, None


def matchmap(image: Tensor, audio: Tensor, nframes: int | None = None) -> Tensor:
    """The matchmap of one pair, for visualisation: image [D, H, W] (or [D, R]), audio [D, T] -> [H, W, T']
    (or [R, T']), where T' = nframes (default T) drops the caption's padding frames."""
    if image.dim() not in (2, 3) or audio.dim() != 2 or image.size(0) != audio.size(0):
        raise ValueError(f"matchmap takes image [D, H, W] or [D, R] and audio [D, T] with the same "
                         f"D, got {tuple(image.shape)} and {tuple(audio.shape)}")
    if nframes is not None:
        if not 1 <= int(nframes) <= audio.size(1):
            raise ValueError(f"nframes must lie in [1, {audio.size(1)}], got {int(nframes)}")
        audio = audio[:, : int(nframes)]
    return torch.einsum("dr,dt->rt", image.flatten(1), audio).view(*image.shape[1:], audio.size(1))
