"""Exact cross-modal retrieval metrics: ``retrieval_metrics`` (a pure function over the full similarity
matrix) and ``RetrievalRecallMetric`` (a torchmetrics ``Metric`` that gathers a whole split across DDP ranks
and ranks it once, so recall does not depend on the number of GPUs).

Conventions (as the official ``calc_recalls``): S is [N, N] with rows = images and columns = captions, and
the partner of row i is column i.

| key            | query   | ranks    | official name |
|----------------|---------|----------|---------------|
| ``a2i_R@k``    | caption | images   | ``I_r@k``     |
| ``i2a_R@k``    | image   | captions | ``A_r@k``     |
| ``mean_R@k``   | mean of the two directions; checkpoint selection uses ``mean_R@10`` |
| ``*_mean_rank``, ``*_median_rank`` | 1-based rank of the partner |

Ties are broken by candidate index, as a stable descending sort would order them:

    rank = 1 + #(candidates scoring strictly higher) + #(candidates scoring equal with a lower index).

The median of an even number of ranks is the lower of the two middle ranks (``torch.median``'s convention).

References: Harwath et al., ECCV 2018 (official ``steps/util.py::calc_recalls``); the chunked ranking follows
open_clip's evaluation idea (chunked over queries, ties by index).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .similarity import DEFAULT_CHUNK_SIZE, SIMILARITY_KINDS, similarity_matrix

# Default bound on the [queries, candidates] temporaries of one ranking chunk.
_RANK_CHUNK_ELEMENTS = 2**24


# ---- the pure function ------------------------------------------------------------------------------------
def _partner_ranks(scores: Tensor, partner: Tensor, finite: bool = False) -> Tensor:
    """1-based rank of candidate partner[q] in each row q of scores [Q, C], ties broken by candidate index.

    With ``finite`` (the caller checked: floating point, no inf or NaN, C < 2**24) the counts come from one
    float pass, sign(scores - positive), summed twice: float comparisons that write booleans are several
    times slower on CPU. sign(a - b) is sign-exact for finite IEEE floats (a - b == 0 only when a == b,
    thanks to gradual underflow), and integer sums of +-1 are exact in float32 below 2**24. Rows whose
    positive is tied with another candidate (rare for real scores) then get the index tie-break exactly.
    """
    positive = scores.gather(1, partner[:, None])
    candidate = torch.arange(scores.size(1), device=scores.device)
    if not finite:
        ahead = (scores > positive) | ((scores == positive) & (candidate[None, :] < partner[:, None]))
        return 1 + ahead.sum(1)
    sign = (scores - positive).sign_()
    net = sign.sum(1)  # #higher - #lower
    unequal = sign.abs_().sum(1)  # #higher + #lower
    ahead = ((net + unequal) / 2).long()
    tied = torch.nonzero(unequal < scores.size(1) - 1).view(-1)  # more ties than the positive itself
    if tied.numel():
        before = (scores[tied] == positive[tied]) & (candidate[None, :] < partner[tied, None])
        ahead[tied] += before.sum(1)
    return 1 + ahead


def _best_partner(scores: Tensor, is_partner: Tensor) -> Tensor:
    """Index of the first partner in a stable descending sort of each row: the highest-scoring partner,
    the lowest index among equal scores."""
    best = scores.masked_fill(~is_partner, float("-inf")).max(1, keepdim=True).values
    candidate = torch.arange(scores.size(1), device=scores.device).expand_as(scores)
    first = torch.where(is_partner & (scores == best), candidate, scores.size(1))
    return first.min(1).values


def _summary(ranks: Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": (ranks <= k).double().mean().item() for k in ks}
    out[f"{prefix}_mean_rank"] = ranks.double().mean().item()
    out[f"{prefix}_median_rank"] = float(ranks.median().item())
    return out


def retrieval_metrics(
    S: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    image_ids: Tensor | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Recall@k and mean/median rank in both directions from S [N, N] (rows = images, columns = captions).

    Args:
        S: scores; the partner of row i is column i. NaN is rejected.
        ks: the k of recall@k.
        image_ids: optional [N] group ids for sets with several captions per image (Flickr8k, SpokenCOCO):
            rows with the same id are copies of one image, and the first such row stands for it.
            - a2i: each of the N captions ranks the unique images; the positive is its own image.
            - i2a: each unique image ranks all N captions; its rank is that of its best-ranked own caption,
              with only other images' captions counted ahead of it (so R@k = "any own caption in the top k").
            i2a values are then averaged over unique images, a2i values over captions.
        chunk_size: queries ranked at once (memory ~ chunk_size x N booleans); None picks it so that a chunk
            holds about 2**24 scores. The result does not depend on it.

    Returns:
        dict with ``a2i_R@k``, ``i2a_R@k``, ``mean_R@k`` for each k, and ``a2i_mean_rank``,
        ``a2i_median_rank``, ``i2a_mean_rank``, ``i2a_median_rank`` (ranks are 1-based), as Python floats.
    """
    if S.dim() != 2 or S.size(0) != S.size(1) or S.size(0) == 0:
        raise ValueError(f"retrieval.py: S must be a non-empty square [N, N] matrix, got {tuple(S.shape)}")
    # One min/max pass both rejects NaN (it propagates) and tells whether the fast finite count applies.
    low, high = (float(v) for v in torch.aminmax(S if S.is_floating_point() else S.double()))
    if math.isnan(low) or math.isnan(high):
        raise ValueError("retrieval.py: S contains NaN; the model's outputs are not finite")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"retrieval.py: ks must be positive integers, got {ks}")
    N = S.size(0)
    if chunk_size is None:
        chunk_size = max(1, _RANK_CHUNK_ELEMENTS // N)
    if chunk_size < 1:
        raise ValueError(f"retrieval.py: chunk_size must be >= 1, got {chunk_size}")
    finite = S.is_floating_point() and math.isfinite(low) and math.isfinite(high) and N < 2**24
    if finite and S.dtype in (torch.float16, torch.bfloat16):
        S = S.float()  # exact, and the +-1 counts need float32

    if image_ids is None:
        image_rows = torch.arange(N, device=S.device)  # every row is its own image
        caption_image = image_rows  # caption j's image, as a position in image_rows
    else:
        image_ids = torch.as_tensor(image_ids, device=S.device).reshape(-1)
        if image_ids.numel() != N:
            raise ValueError(f"retrieval.py: image_ids must have N={N} entries, got {image_ids.numel()}")
        unique_ids, caption_image = torch.unique(image_ids, return_inverse=True)  # unique_ids ascending
        first_row = torch.full((unique_ids.numel(),), N, dtype=torch.long, device=S.device)
        first_row.scatter_reduce_(0, caption_image, torch.arange(N, device=S.device), reduce="amin")
        # Order the unique images by their first row, so ties among images break by row index.
        by_row = torch.argsort(first_row)
        image_rows = first_row[by_row]
        caption_image = torch.argsort(by_row)[caption_image]

    # Caption queries rank the unique images (columns of S restricted to image_rows).
    gallery = S if image_ids is None else S[image_rows]
    a2i = torch.cat([
        _partner_ranks(gallery[:, q0 : q0 + chunk_size].t(), caption_image[q0 : q0 + chunk_size], finite)
        for q0 in range(0, N, chunk_size)
    ])
    # Image queries rank all captions; the partner is the best-ranked own caption.
    i2a = []
    for q0 in range(0, image_rows.numel(), chunk_size):
        rows = image_rows[q0 : q0 + chunk_size]
        scores = S[rows]
        if image_ids is None:
            partner = rows
        else:
            partner = _best_partner(scores, image_ids[None, :] == image_ids[rows][:, None])
        i2a.append(_partner_ranks(scores, partner, finite))
    i2a = torch.cat(i2a)

    out = {**_summary(a2i, ks, "a2i"), **_summary(i2a, ks, "i2a")}
    for k in ks:
        out[f"mean_R@{k}"] = 0.5 * (out[f"a2i_R@{k}"] + out[f"i2a_R@{k}"])
    return out


# ---- the DDP-exact metric ---------------------------------------------------------------------------------
def _unpack_frames(packed: Tensor, nframes: Tensor, select: Tensor) -> Tensor:
    """Items ``select`` of packed frames [sum(nframes), D] (item after item) as a zero-padded [len(select), D, T]."""
    start = torch.cumsum(nframes, 0) - nframes
    lengths = nframes[select]
    T = int(lengths.max())
    t = torch.arange(T, device=packed.device)
    valid = t[None, :] < lengths[:, None]
    source = (start[select][:, None] + t[None, :]).clamp(max=packed.size(0) - 1)
    frames = packed[source] * valid[..., None].to(packed.dtype)  # [M, T, D]
    return frames.transpose(1, 2).contiguous()


class RetrievalRecallMetric(Metric):
    """Recall@k and ranks over a whole evaluation split, exact under DDP.

    ``update`` stores the model outputs of each batch with their dataset indices; ``compute`` gathers every
    rank's outputs, drops the copies that ``DistributedSampler`` pads with (keeping one per dataset index),
    sorts by dataset index, builds S with ``similarity_matrix`` (in chunks, in float32, autocast off) and
    returns ``retrieval_metrics(S)``. The values are the same on every rank and the same as a 1-process run,
    whatever the world size. ``compute`` is collective: call it on every rank.

    Audio frame maps are stored packed, only their valid frames ([sum T_valid, D] plus nframes), because
    batches pad to their own longest caption and so differ in T'. Half-precision outputs are stored as
    float32 so that ranking does not suffer from bfloat16 ties. Memory: 1000 full-size DAVEnet images
    (1024 x 14 x 14, float32) take 0.8 GB; pass ``compute_on_cpu=True`` to keep the states in host memory.

    Args:
        similarity_kind: "dot", "SISA", "MISA" or "SIMA" (see ``similarity_matrix``).
        ks: the k of recall@k.
        chunk_size: bound on the matchmap elements one GEMM builds while scoring.
        group_by_image: rank with ``image_ids`` (several captions per image); needs ``image_id`` in update.
        **kwargs: torchmetrics ``Metric`` options (``compute_on_cpu``, ``process_group``, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    last_similarity: Tensor | None = None
    last_indices: Tensor | None = None

    def __init__(
        self,
        similarity_kind: str = "MISA",
        ks: Sequence[int] = (1, 5, 10),
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        group_by_image: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if similarity_kind not in SIMILARITY_KINDS:
            raise ValueError(
                f"retrieval.py: similarity_kind must be one of {SIMILARITY_KINDS}, got {similarity_kind!r}"
            )
        self.similarity_kind = similarity_kind
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = chunk_size
        self.group_by_image = group_by_image
        # Every state gets a tensor in every update, so all ranks take part in the same gathers.
        for name in ("image", "audio", "nframes", "index", "image_id"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @staticmethod
    def _store(x: Tensor) -> Tensor:
        x = x.detach()
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

    def update(self, image_out: Tensor, audio_out: Tensor, nframes=None, index=None, image_id=None) -> None:
        """Add a batch: image_out [B, D, H, W] / [B, D, R] / [B, D], audio_out [B, D, T'] / [B, D], nframes [B]
        valid output frames (None: all T' valid; ignored for pooled outputs), index [B] dataset positions,
        image_id [B] image group ids (needed when ``group_by_image``)."""
        if index is None:
            raise ValueError("retrieval.py: RetrievalRecallMetric.update needs the dataset `index` of each item")
        B = image_out.size(0)
        index = torch.as_tensor(index, device=image_out.device).reshape(-1).long()
        if audio_out.size(0) != B or index.numel() != B:
            raise ValueError(f"retrieval.py: update got {B} images, {audio_out.size(0)} captions and "
                             f"{index.numel()} indices")
        pooled = self.similarity_kind == "dot"
        if pooled:
            if image_out.dim() != 2 or audio_out.dim() != 2:
                raise ValueError(f"retrieval.py: kind 'dot' stores pooled [B, D] outputs, got "
                                 f"{tuple(image_out.shape)} and {tuple(audio_out.shape)}")
            lengths = torch.ones(B, dtype=torch.long, device=audio_out.device)
            packed = audio_out
        else:
            if image_out.dim() not in (3, 4) or audio_out.dim() != 3:
                raise ValueError(f"retrieval.py: kind {self.similarity_kind!r} stores image maps [B, D, H, W] "
                                 f"and audio maps [B, D, T'], got {tuple(image_out.shape)} and "
                                 f"{tuple(audio_out.shape)}")
            T = audio_out.size(-1)
            if nframes is None:
                lengths = torch.full((B,), T, dtype=torch.long, device=audio_out.device)
            else:
                lengths = torch.as_tensor(nframes, device=audio_out.device).reshape(-1).long()
                if lengths.numel() != B or int(lengths.min()) < 1 or int(lengths.max()) > T:
                    raise ValueError(f"retrieval.py: nframes must be {B} counts in [1, T'={T}], got {lengths.tolist()}")
            valid = torch.arange(T, device=audio_out.device)[None, :] < lengths[:, None]
            packed = audio_out.transpose(1, 2)[valid]  # [sum(lengths), D], item after item
        if image_id is None:
            if self.group_by_image:
                raise ValueError("retrieval.py: group_by_image=True needs image_id in update")
            image_id = torch.full((B,), -1, dtype=torch.long, device=image_out.device)
        image_id = torch.as_tensor(image_id, device=image_out.device).reshape(-1).long()
        self.image.append(self._store(image_out))
        self.audio.append(self._store(packed))
        self.nframes.append(lengths)
        self.index.append(index)
        self.image_id.append(image_id)

    def compute(self) -> dict[str, Tensor]:
        if (self.index.numel() == 0) if isinstance(self.index, Tensor) else not self.index:
            raise RuntimeError("retrieval.py: RetrievalRecallMetric.compute() called before any update()")
        image, audio = dim_zero_cat(self.image), dim_zero_cat(self.audio)
        nframes, index, image_id = dim_zero_cat(self.nframes), dim_zero_cat(self.index), dim_zero_cat(self.image_id)
        # One copy per dataset index (DistributedSampler repeats the first items), in dataset order.
        order = torch.argsort(index, stable=True)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = index[order][1:] != index[order][:-1]
        select = order[keep]
        frames = _unpack_frames(audio, nframes, select)  # [M, D, T]
        if self.similarity_kind == "dot":
            audio_sel, nframes_sel = frames[..., 0], None
        else:
            audio_sel, nframes_sel = frames, nframes[select]
        with torch.autocast(device_type=image.device.type, enabled=False):
            S = similarity_matrix(image[select], audio_sel, nframes_sel, self.similarity_kind, self.chunk_size)
        ids = image_id[select] if self.group_by_image else None
        values = retrieval_metrics(S, self.ks, image_ids=ids)
        # Kept for dashboards and analysis (retrieval tables, error analysis): row/column i is dataset item
        # last_indices[i]. Not a metric state: never synced, never checkpointed.
        self.last_similarity, self.last_indices = S.detach(), index[select].detach()
        return {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in values.items()}
