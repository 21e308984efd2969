"""Keyword spotting: rank the captions of a corpus for each keyword, and score the ranking.

For each keyword (a scene or object word of SpokenScenes, or any word type) every caption gets a score; the
captions whose transcript holds the keyword are the relevant ones. Scores (means over the keywords that have at
least one relevant and one irrelevant caption):

- ``precision_at_10``: relevant captions among the 10 best-scored ones / 10;
- ``precision_at_n``: the same among the N best, N = the keyword's number of relevant captions (R-precision);
- ``eer``: the equal error rate, where the false-alarm rate equals the miss rate on the ROC curve.

Equal scores are ranked in random order and the metrics are their expectations: at a cut-off inside a run of
equal scores, the run contributes its share of relevant captions; the ROC curve takes one straight step over a
run (so a constant score has P@k = the share of relevant captions and EER = 0.5, the chance values).

Scores from a grounded model (`concept_scores`): a keyword's image-side concept is a vector in the model's
embedding space (the mean region embedding of the image parts the word names, e.g. every red object's pixels for
"red"); a caption's score is the best matchmap evidence for it, ``max_t <concept, audio_t>`` over its valid frames.

    keyword_spotting(scores [K, N], relevant [K, N], keywords) -> dict
    precision_at_k(scores, relevant, k) -> [K];  equal_error_rate(scores, relevant) -> [K]
    concept_scores(concepts [K, D] or [K, N, D], audio [N, D, T], nframes [N]) -> [K, N]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _sorted(scores: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor]:
    if scores.dim() != 2 or scores.shape != relevant.shape:
        raise ValueError(f"keywords: need scores and relevance of shape [keywords, captions], got "
                         f"{tuple(scores.shape)} and {tuple(relevant.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("keywords: scores are not finite")
    s, order = scores.double().sort(dim=1, descending=True)
    return s, relevant.bool().gather(1, order).double()


def precision_at_k(scores: Tensor, relevant: Tensor, k: int | Tensor) -> Tensor:
    """Expected precision [K] of the top ``k`` captions (one k, or one per keyword) under random tie-breaking.

    ``k`` is capped at the number of captions; a keyword with k = 0 gets NaN."""
    s, rel = _sorted(scores, relevant)
    K, N = s.shape
    k = torch.as_tensor(k, dtype=torch.long).expand(K).clamp(max=N)
    at = (k - 1).clamp(min=0)
    v = s.gather(1, at[:, None])  # the k-th best score
    above = s > v
    tied = s == v
    n_above = above.sum(1).double()
    rel_above = (rel * above).sum(1)
    expected = rel_above + (k.double() - n_above) * (rel * tied).sum(1) / tied.sum(1).double()
    return torch.where(k > 0, expected / k.double().clamp(min=1), torch.full_like(expected, float("nan")))


def equal_error_rate(scores: Tensor, relevant: Tensor) -> Tensor:
    """Equal error rate [K] of each keyword's ROC curve (steps over runs of equal scores, see the module doc);
    NaN for a keyword without relevant or without irrelevant captions."""
    s, rel = _sorted(scores, relevant)
    K, N = s.shape
    pos = rel.sum(1, keepdim=True)
    neg = N - pos
    tpr = rel.cumsum(1) / pos.clamp(min=1)
    fpr = (1 - rel).cumsum(1) / neg.clamp(min=1)
    # ROC points: the origin, then the end of every run of equal scores
    last = torch.ones_like(s, dtype=torch.bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    zero = torch.zeros(K, 1, dtype=s.dtype)
    fpr = torch.cat([zero, fpr], 1)
    fnr = torch.cat([zero + 1, 1 - tpr], 1)
    valid = torch.cat([torch.ones(K, 1, dtype=torch.bool), last], 1)
    d = fpr - fnr  # non-decreasing along the curve: -1 at the origin, 1 at the end
    idx = torch.arange(N + 1).expand(K, N + 1)
    b = torch.where(valid & (d >= 0), idx, N + 1).amin(1).clamp(max=N)  # first point at or past the crossing
    a = torch.where(valid & (idx < b[:, None]), idx, -1).amax(1).clamp(min=0)  # the point before it
    fa, fb = fpr.gather(1, a[:, None])[:, 0], fpr.gather(1, b[:, None])[:, 0]
    da, db = d.gather(1, a[:, None])[:, 0], d.gather(1, b[:, None])[:, 0]
    lam = torch.where(db > da, -da / (db - da).clamp(min=1e-300), torch.zeros_like(da))
    eer = fa + lam * (fb - fa)
    ok = (pos[:, 0] > 0) & (neg[:, 0] > 0)
    return torch.where(ok, eer, torch.full_like(eer, float("nan")))


def keyword_spotting(scores: Tensor, relevant: Tensor, keywords: Sequence[str] | None = None) -> dict:
    """P@10, P@N and EER per keyword and their means, with the chance values of a random ranking.

    Means are over the keywords that have both relevant and irrelevant captions (``n_keywords``); chance is the
    expectation under a random ranking: P@k = the keyword's share of relevant captions, EER = 0.5."""
    relevant = relevant.bool()
    K, N = scores.shape
    keywords = [str(i) for i in range(K)] if keywords is None else list(keywords)
    if len(keywords) != K:
        raise ValueError(f"keywords: {len(keywords)} names for {K} keywords")
    n_rel = relevant.sum(1)
    usable = (n_rel > 0) & (n_rel < N)
    p10 = precision_at_k(scores, relevant, 10)
    pn = precision_at_k(scores, relevant, n_rel)
    eer = equal_error_rate(scores, relevant)
    share = n_rel.double() / max(N, 1)

    def mean(x: Tensor) -> float:
        return float(x[usable].mean()) if usable.any() else float("nan")

    rows = [{"keyword": keywords[k], "relevant": int(n_rel[k]), "precision_at_10": float(p10[k]),
             "precision_at_n": float(pn[k]), "eer": float(eer[k])} for k in range(K) if usable[k]]
    return {"precision_at_10": mean(p10), "precision_at_n": mean(pn), "eer": mean(eer),
            "precision_at_10_chance": mean(share), "precision_at_n_chance": mean(share), "eer_chance": 0.5,
            "n_keywords": int(usable.sum()), "n_captions": N, "keywords": rows}


def concept_scores(concepts: Tensor, audio: Tensor, nframes: Tensor | None = None, chunk_size: int = 256) -> Tensor:
    """Best matchmap evidence [K, N]: ``max_t <concepts[k], audio[n, :, t]>`` over caption n's valid frames.

    Args:
        concepts: [K, D] image-side concept vectors, or [K, N, D], one per caption (e.g. leaving the caption's own
            image out of the concept).
        audio: [N, D, T] frame maps of the captions.
        nframes: [N] valid frames (default: all T).
    """
    per_caption = concepts.dim() == 3
    if concepts.dim() not in (2, 3) or audio.dim() != 3 or concepts.size(-1) != audio.size(1) or (
            per_caption and concepts.size(1) != audio.size(0)):
        raise ValueError(f"concept_scores: need concepts [K, D] or [K, N, D] and audio [N, D, T], got "
                         f"{tuple(concepts.shape)} and {tuple(audio.shape)}")
    N, _, T = audio.shape
    valid = torch.ones(N, T, dtype=torch.bool) if nframes is None else (
        torch.arange(T)[None, :] < torch.as_tensor(nframes).long().cpu().clamp(1, T)[:, None])
    out = []
    for start in range(0, N, chunk_size):
        a, m = audio[start: start + chunk_size], valid[start: start + chunk_size]
        if per_caption:
            mm = torch.einsum("knd,ndt->knt", concepts[:, start: start + chunk_size].to(a.dtype), a)
        else:
            mm = torch.einsum("kd,ndt->knt", concepts.to(a.dtype), a)
        out.append(mm.masked_fill(~m.to(mm.device)[None], float("-inf")).amax(-1))
    return torch.cat(out, 1)
