"""Word boundaries: predicted against reference boundaries within a tolerance (VG-HuBERT's scores).

Definitions follow jasonppy/word-discovery `unit_analysis.py` (Peng & Harwath, "Word Discovery in Visually Grounded,
Self-Supervised Speech Models", Interspeech 2022):

- reference boundaries of an utterance: the sorted distinct start and end times of its words, without the first
  and the last (the utterance edges are given, not predicted);
- matching (`find_boundary_matches`): one greedy pass over both sorted lists; the current pair matches when
  ``|ref - pred| <= tolerance`` (both pointers advance), else the smaller of the two advances. Each boundary
  matches at most once. Here distances exactly at the tolerance match whatever the float rounding of the times
  (a slack of 1e-9 s: 0.52 - 0.50 is 0.020000000000000018 in floats);
- corpus scores from the summed counts: precision = hits / predicted, recall = hits / reference, F1, over-
  segmentation OS = recall / precision - 1 (computed as predicted / reference - 1, the same number that is also
  defined when nothing matches), and the R-value (Räsänen et al., 2009)
  ``1 - (|sqrt((1 - recall)^2 + OS^2)| + |(-OS + recall - 1) / sqrt(2)|) / 2``.
  With no predicted boundary at all precision is 0 (word-discovery would divide by zero).

Token scores (not in word-discovery; the usual word-token definition): a segmentation is the list of segments
between consecutive boundaries. Reference segments lie between consecutive distinct word starts/ends (a pause
between two words is a segment of its own); predicted segments between consecutive predicted boundaries, with the
reference's first and last boundary added as the edges. A predicted segment is a hit when both its ends lie within
the tolerance of the ends of a reference segment (greedy one-to-one, in time order). Token precision, recall and F1
come from the summed counts.

    reference_boundaries(words) -> [n] times          boundary_scores(refs, preds, tolerance=0.02) -> dict
    code_boundaries(codes, spf) -> times               token_scores(words, preds, tolerance=0.02) -> dict
    peak_boundaries(features, spf) -> times            random_boundaries(words, counts, rng) -> chance predictions

The matching runs over all utterances at once: one step moves every utterance's two pointers (numpy over the
utterances), so a corpus takes as many steps as its longest utterance has boundaries (or segments).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_SLACK = 1e-9


def _as_sorted(times) -> np.ndarray:
    return np.unique(np.asarray(times, dtype=np.float64).reshape(-1))


def reference_boundaries(words: Sequence[tuple[float, float, str]]) -> np.ndarray:
    """Sorted distinct word starts and ends of one utterance, without the first and the last (its edges)."""
    if not len(words):
        return np.zeros(0)
    return _as_sorted([t for s, e, _ in words for t in (s, e)])[1:-1]


def greedy_matches(refs: Sequence[np.ndarray], preds: Sequence[np.ndarray], tolerance: float) -> np.ndarray:
    """Hits per utterance [U] of the greedy matching (`find_boundary_matches`) of sorted lists.

    Each list is [n] boundary times or [n, 2] segments (start, end) sorted by start: a pair of segments matches when
    both ends are within the tolerance, and "smaller" compares (start, end)."""
    u = len(refs)
    if len(preds) != u:
        raise ValueError(f"boundaries: {u} reference lists but {len(preds)} predicted lists")
    refs = [np.asarray(r, dtype=np.float64) for r in refs]
    preds = [np.asarray(p, dtype=np.float64) for p in preds]
    dims = {1 if x.ndim == 1 else x.shape[1] for x in refs + preds if x.size}
    if len(dims) > 1:
        raise ValueError("boundaries: mixing boundary times and segments")
    dim = dims.pop() if dims else 1
    refs = [x.reshape(-1, dim) for x in refs]
    preds = [x.reshape(-1, dim) for x in preds]
    nr = np.array([len(r) for r in refs], dtype=np.int64)
    npred = np.array([len(p) for p in preds], dtype=np.int64)
    R = np.full((u, int(nr.max(initial=0)) + 1, dim), 1e30)  # finite padding: no inf - inf
    P = np.full((u, int(npred.max(initial=0)) + 1, dim), 1e30)
    for k, (r, p) in enumerate(zip(refs, preds)):  # padding the ragged lists, once
        R[k, : len(r)] = r
        P[k, : len(p)] = p
    i = np.zeros(u, dtype=np.int64)
    j = np.zeros(u, dtype=np.int64)
    hits = np.zeros(u, dtype=np.int64)
    rows = np.arange(u)
    active = (i < nr) & (j < npred)
    while active.any():  # one step of every utterance's two pointers
        g, p = R[rows, i], P[rows, j]
        match = active & np.all(np.abs(g - p) <= tolerance + _SLACK, axis=1)
        greater = g[:, 0] > p[:, 0]
        if dim == 2:
            greater |= (g[:, 0] == p[:, 0]) & (g[:, 1] > p[:, 1])
        pred_behind = active & ~match & greater
        ref_behind = active & ~match & ~greater
        hits += match
        i += match | ref_behind
        j += match | pred_behind
        active = (i < nr) & (j < npred)
    return hits


def _scores(hits: int, n_ref: int, n_pred: int) -> dict[str, float]:
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_ref if n_ref else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    os_ = n_pred / n_ref - 1 if n_ref else float("nan")
    r1 = math.sqrt((1 - recall) ** 2 + os_**2)
    r2 = (-os_ + recall - 1) / math.sqrt(2)
    return {"precision": precision, "recall": recall, "f1": f1, "over_segmentation": os_,
            "r_value": 1 - (abs(r1) + abs(r2)) / 2}


def boundary_scores(refs: Sequence, preds: Sequence, tolerance: float = 0.02) -> dict[str, float]:
    """Precision, recall, F1, over-segmentation and R-value of predicted boundaries (seconds), corpus-wide.

    ``refs[u]``: reference boundaries of utterance u (`reference_boundaries`); ``preds[u]``: predicted ones (sorted
    and de-duplicated here). Also returns ``n_reference``, ``n_predicted``, ``n_hits`` and ``tolerance``."""
    refs = [_as_sorted(r) for r in refs]
    preds = [_as_sorted(p) for p in preds]
    hits = int(greedy_matches(refs, preds, tolerance).sum())
    n_ref, n_pred = sum(len(r) for r in refs), sum(len(p) for p in preds)
    return {**_scores(hits, n_ref, n_pred), "n_reference": n_ref, "n_predicted": n_pred, "n_hits": hits,
            "tolerance": tolerance}


def _segments(bounds: np.ndarray) -> np.ndarray:
    return np.stack([bounds[:-1], bounds[1:]], axis=1) if len(bounds) > 1 else np.zeros((0, 2))


def token_scores(words: Sequence[Sequence[tuple[float, float, str]]], preds: Sequence, tolerance: float = 0.02
                 ) -> dict[str, float]:
    """Token precision, recall and F1 (see the module docstring), corpus-wide, plus the counts."""
    if len(words) != len(preds):
        raise ValueError(f"boundaries: {len(words)} word alignments but {len(preds)} predicted lists")
    refs, segs = [], []
    for w, p in zip(words, preds):
        full = _as_sorted([t for s, e, _ in w for t in (s, e)])
        if len(full) < 2:
            continue
        refs.append(_segments(full))
        segs.append(_segments(_as_sorted(np.concatenate([full[[0, -1]], np.asarray(p, np.float64).reshape(-1)]))))
    hits = int(greedy_matches(refs, segs, tolerance).sum())
    n_ref, n_pred = sum(len(r) for r in refs), sum(len(p) for p in segs)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_ref if n_ref else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"token_precision": precision, "token_recall": recall, "token_f1": f1, "n_reference_tokens": n_ref,
            "n_predicted_tokens": n_pred, "n_token_hits": hits}


# ---- predicted boundaries --------------------------------------------------------------------------------------
def code_boundaries(codes, spf: float, offset: float = 0.0) -> np.ndarray:
    """Times where a frame's code differs from the previous frame's: the edge ``offset + t * spf`` between frames
    t - 1 and t (as ResDAVEnet-VQ's `DenseAlignment.get_sparse_ali` cuts code runs)."""
    codes = np.asarray(codes).reshape(-1)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    return offset + change * spf


def peak_boundaries(features, spf: float, offset: float = 0.0, threshold: float | None = None) -> np.ndarray:
    """Boundaries at the peaks of the frame-to-frame dissimilarity ``1 - cos(f_t, f_{t+1})`` of one caption.

    ``features``: [T, D] frames of one caption. A junction between frames t and t + 1 (time ``offset + (t + 1) *
    spf``) is a boundary when its dissimilarity is a local maximum (above the junction before, at least the one
    after) and above ``threshold`` (default: the caption's mean dissimilarity), the simplest reading of the
    self-similarity of a caption: a word boundary is where the frames stop resembling each other."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"peak_boundaries: features must be [T, D], got shape {x.shape}")
    if len(x) < 2:
        return np.zeros(0)
    norm = np.linalg.norm(x, axis=1)
    cos = (x[1:] * x[:-1]).sum(1) / np.maximum(norm[1:] * norm[:-1], 1e-12)
    d = 1 - cos
    padded = np.concatenate([[-np.inf], d, [-np.inf]])
    peak = (d > padded[:-2]) & (d >= padded[2:]) & (d > (d.mean() if threshold is None else threshold))
    return offset + (np.flatnonzero(peak) + 1) * spf


def random_boundaries(words: Sequence[Sequence[tuple[float, float, str]]], counts: Sequence[int],
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Chance predictions: ``counts[u]`` boundaries drawn uniformly between utterance u's first and last word edge."""
    out = []
    for w, n in zip(words, counts):
        if not len(w) or n <= 0:
            out.append(np.zeros(0))
            continue
        lo, hi = min(s for s, _, _ in w), max(e for _, e, _ in w)
        out.append(np.sort(rng.uniform(lo, hi, int(n))))
    return out
