"""Exact cross-modal retrieval metrics: ``retrieval_metrics``, a pure function over the full similarity matrix
(the DDP-exact torchmetrics ``Metric`` over it is ``lightning_modules.metrics.RetrievalRecallMetric``).

Conventions: S has rows = images and columns = captions. With one caption per image (Places) S is [N, N] and
the partner of row i is column i, as in the official ``calc_recalls``.

| key            | query   | ranks    | official name |
|----------------|---------|----------|---------------|
| ``a2i_R@k``    | caption | images   | ``I_r@k``     |
| ``i2a_R@k``    | image   | captions | ``A_r@k``     |
| ``mean_R@k``   | mean of the two directions; checkpoint selection uses ``mean_R@10`` |
| ``*_mean_rank``, ``*_median_rank`` | 1-based rank of the partner |

Several captions per image (Flickr8k: 5, SpokenCOCO: about 5): S is [unique images x captions] and
``caption_image`` names each caption's row. A caption query ranks the unique images and hits when its own image
is in the top k (averaged over captions); an image query ranks every caption and hits when ANY of its own
captions is in the top k (averaged over unique images). This is the protocol of SpeechCLIP
(``avssl/module/retrieval.py::mutualRetrieval``) and FaST-VGS (``steps/utils.py::calc_recalls_from_S_one_to_many``),
which report Flickr8k and SpokenCOCO numbers. Two others are in use and give different numbers on the same S:

- the official one-positive ``calc_recalls`` (DAVEnet, ResDAVEnet-VQ) ranks an [N, N] matrix with one image row
  per caption, so the other copies of a caption's image compete with it (a2i recall falls) and an image query
  counts only its own pair (i2a recall falls). It equals the grouped protocol when every image has one caption.
- platalea's ``rank_eval.ranking`` scores an image query by the fraction of its captions in the top k (overlap
  / number of correct captions), so image -> caption R@1 is at most 1/5 with 5 captions per image.

Ties are broken by candidate index, as a stable descending sort would order them:

    rank = 1 + #(candidates scoring strictly higher) + #(candidates scoring equal with a lower index).

The median of an even number of ranks is the lower of the two middle ranks (``torch.median``'s convention).

References: Harwath et al., ECCV 2018 (official ``steps/util.py::calc_recalls``); Shih et al., SpeechCLIP, SLT
2022; Peng & Harwath, FaST-VGS, ICASSP 2022; the chunked ranking follows open_clip's evaluation idea (chunked over
queries, ties by index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Default bound on the [queries, candidates] temporaries of one ranking chunk.
_RANK_CHUNK_ELEMENTS = 2**24


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
    caption_image: Tensor | None = None,
) -> dict[str, float]:
    """Recall@k and mean/median rank in both directions from S [I, M] (rows = images, columns = captions).

    Args:
        S: scores. Without ``caption_image`` or ``image_ids`` S is square and the partner of row i is column i.
            NaN is rejected.
        ks: the k of recall@k.
        caption_image: optional [M] row of each caption's image, for S = [unique images x captions] of a split
            with several captions per image (Flickr8k, SpokenCOCO); every row needs at least one caption.
            - a2i: each of the M captions ranks the I images; the positive is its own image.
            - i2a: each image ranks all M captions; its rank is that of its best-ranked own caption, with only
              other images' captions counted ahead of it (so R@k = "any own caption in the top k").
            a2i values are averaged over captions, i2a values over images. This is the convention of SpeechCLIP
            (``mutualRetrieval``) and FaST-VGS. ``caption_image = arange(N)`` on a square S gives exactly the
            numbers of the ungrouped call.
        image_ids: optional [N] group ids for a square S whose row j is caption j's own copy of its image: rows
            with the same id are one image, and the first such row stands for it (S is reduced to those rows and
            ranked as with ``caption_image``).
        chunk_size: queries ranked at once (memory ~ chunk_size x candidates booleans); None picks it so that a
            chunk holds about 2**24 scores. The result does not depend on it.

    Returns:
        dict with ``a2i_R@k``, ``i2a_R@k``, ``mean_R@k`` for each k, and ``a2i_mean_rank``,
        ``a2i_median_rank``, ``i2a_mean_rank``, ``i2a_median_rank`` (ranks are 1-based), as Python floats.
    """
    if S.dim() != 2 or S.numel() == 0:
        raise ValueError(f"S must be a non-empty [images, captions] matrix, got {tuple(S.shape)}")
    if caption_image is None and S.size(0) != S.size(1):
        raise ValueError(f"S must be a square [N, N] matrix unless caption_image is given, got {tuple(S.shape)}")
    if caption_image is not None and image_ids is not None:
        raise ValueError("give caption_image (rectangular S) or image_ids (square S), not both")
    # One min/max pass both rejects NaN (it propagates) and tells whether the fast finite count applies.
    low, high = (float(v) for v in torch.aminmax(S if S.is_floating_point() else S.double()))
    if math.isnan(low) or math.isnan(high):
        raise ValueError("S contains NaN; the model's outputs are not finite")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    finite = S.is_floating_point() and math.isfinite(low) and math.isfinite(high) and max(S.shape) < 2**24
    if finite and S.dtype in (torch.float16, torch.bfloat16):
        S = S.float()  # exact, and the +-1 counts need float32

    if image_ids is not None:
        N = S.size(0)
        image_ids = torch.as_tensor(image_ids, device=S.device).reshape(-1)
        if image_ids.numel() != N:
            raise ValueError(f"image_ids must have N={N} entries, got {image_ids.numel()}")
        unique_ids, caption_image = torch.unique(image_ids, return_inverse=True)  # unique_ids ascending
        first_row = torch.full((unique_ids.numel(),), N, dtype=torch.long, device=S.device)
        first_row.scatter_reduce_(0, caption_image, torch.arange(N, device=S.device), reduce="amin")
        # Order the unique images by their first row, so ties among images break by row index.
        by_row = torch.argsort(first_row)
        S = S[first_row[by_row]]
        caption_image = torch.argsort(by_row)[caption_image]
    elif caption_image is not None:
        caption_image = torch.as_tensor(caption_image, device=S.device).reshape(-1).long()
        if caption_image.numel() != S.size(1):
            raise ValueError(f"caption_image must have one entry per caption (M={S.size(1)}), "
                             f"got {caption_image.numel()}")
        if int(caption_image.min()) < 0 or int(caption_image.max()) >= S.size(0):
            raise ValueError(f"caption_image must hold image rows in [0, {S.size(0)}), got values in "
                             f"[{int(caption_image.min())}, {int(caption_image.max())}]")
        counts = torch.bincount(caption_image, minlength=S.size(0))
        if int(counts.min()) == 0:
            raise ValueError(f"image row {int(torch.argmin(counts))} has no caption: every image of S needs one")
    n_images, n_captions = S.shape

    # Caption queries rank the images: columns of S.
    step = chunk_size or max(1, _RANK_CHUNK_ELEMENTS // n_images)
    own_image = caption_image if caption_image is not None else torch.arange(n_captions, device=S.device)
    a2i = torch.cat([
        _partner_ranks(S[:, q0 : q0 + step].t(), own_image[q0 : q0 + step], finite)
        for q0 in range(0, n_captions, step)
    ])
    # Image queries rank all captions; with groups the partner is the best-ranked own caption.
    step = chunk_size or max(1, _RANK_CHUNK_ELEMENTS // n_captions)
    i2a = []
    for q0 in range(0, n_images, step):
        rows = torch.arange(q0, min(q0 + step, n_images), device=S.device)
        scores = S[rows]
        if caption_image is None:
            partner = rows
        else:
            partner = _best_partner(scores, caption_image[None, :] == rows[:, None])
        i2a.append(_partner_ranks(scores, partner, finite))
    i2a = torch.cat(i2a)

    out = {**_summary(a2i, ks, "a2i"), **_summary(i2a, ks, "i2a")}
    for k in ks:
        out[f"mean_R@{k}"] = 0.5 * (out[f"a2i_R@{k}"] + out[f"i2a_R@{k}"])
    return out
