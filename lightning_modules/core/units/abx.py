"""ABX phone discriminability of frame-level features, as the ZeroSpeech 2017/2019 evaluation computes it.

Items are triphones cut from phone alignments: a centre phone with the phone before and after it (the item spans
all three), written as a ZeroSpeech ``.item`` file::

    #file onset offset #phone prev-phone next-phone speaker
    en-us+f2-ss_test_000007 0.118 0.262 I k tS en-us+f2

A triplet (A, B, X) asks whether X is closer to A (same centre phone) than to B (another centre phone), all three
with the same context (prev, next); A and B come from the same speaker. Within-speaker: X from that speaker too
(X != A). Across-speaker: X from another speaker. The distance of two items is dynamic time warping over the
frame-wise angular distance ``arccos(cos(a, b)) / pi`` (ABXpy's `cosine_distance`: 1 between a zero and a non-zero
frame, 0 between two zero frames), normalised by the length of the warping path (ABXpy's `dtw(..., normalized=True)`:
its backtrace prefers the diagonal, then the step along the second item, on ties; here the same choice is made
going forward, which gives the same path). A triplet scores 1 when d(A, X) < d(B, X), 0.5 on a tie, 0 otherwise.

Averaging (ABXpy `analyze` then ZeroSpeech's `abx_average`, the same for 2017 and 2019): the mean score of each
cell (context, speaker, phone of A, phone of B) for within, (context, speaker of A and B, speaker of X, phone of
A, phone of B) for across; then the mean over the contexts; then over the speakers (pairs); then over the ordered
phone pairs. The error rate is 1 - that mean (ZeroSpeech prints it in percent).

    items = triphone_items([(file, speaker, phones), ...]);  write_item_file(path, items)
    items = discriminable_items(items, max_per_group=10)     items that can be in a triplet, capped per group
    abx_error_rates(features, items) -> {"abx_within", "abx_across", ...}
    dtw_distances(seqs, pairs) -> [P]   batched DTW, any number of pairs

Speed: items are grouped by context (only items of one context meet in a triplet, so only those pairs are ever
compared); the DTW of every needed ordered pair runs in batches, one anti-diagonal of all cost matrices per step;
triplets are scored per context group with broadcasting over (A, B, X).

References: Schatz et al., "Evaluating speech features with the minimal-pair ABX task", Interspeech 2013; ABXpy
(bootphon/ABXpy `distances/metrics/cosine.py`, `distances/metrics/dtw`, `score.py`, `analyze.py`); the ZeroSpeech
2019 evaluation (Dunbar et al., "The Zero Resource Speech Challenge 2019: TTS without T", Interspeech 2019).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"


@dataclass
class AbxItems:
    """Triphone items, one entry per item in every list (the columns of a ZeroSpeech .item file)."""

    file: list[str]
    onset: np.ndarray  # seconds, float64
    offset: np.ndarray
    phone: list[str]
    prev: list[str]
    next: list[str]
    speaker: list[str]

    def __len__(self) -> int:
        return len(self.file)

    def subset(self, index) -> AbxItems:
        index = np.asarray(index, dtype=np.int64)
        pick = [int(i) for i in index]
        return AbxItems([self.file[i] for i in pick], self.onset[index], self.offset[index],
                        [self.phone[i] for i in pick], [self.prev[i] for i in pick], [self.next[i] for i in pick],
                        [self.speaker[i] for i in pick])


def triphone_items(utterances: Sequence[tuple[str, str, Sequence[tuple[float, float, str]]]],
                   max_gap: float = 0.02) -> AbxItems:
    """Every triphone of every utterance ``(file, speaker, phones)``, phones as parsed alignments in time order.

    A triphone is skipped when more than ``max_gap`` seconds separate two of its phones (a pause inside it)."""
    cols: dict[str, list] = {k: [] for k in ("file", "onset", "offset", "phone", "prev", "next", "speaker")}
    for file, speaker, phones in utterances:
        for k in range(1, len(phones) - 1):
            (s0, e0, p0), (s1, e1, p1), (s2, e2, p2) = phones[k - 1], phones[k], phones[k + 1]
            if s1 - e0 > max_gap or s2 - e1 > max_gap:
                continue
            for key, value in zip(cols, (file, s0, e2, p1, p0, p2, speaker)):
                cols[key].append(value)
    for name in ("file", "phone", "prev", "next", "speaker"):
        bad = [v for v in cols[name] if not v or any(c.isspace() for c in str(v))]
        if bad:
            raise ValueError(f"abx items: {name} {bad[0]!r} is empty or contains whitespace (an .item column)")
    return AbxItems(cols["file"], np.array(cols["onset"], dtype=np.float64),
                    np.array(cols["offset"], dtype=np.float64), cols["phone"], cols["prev"], cols["next"],
                    cols["speaker"])


def discriminable_items(items: AbxItems, max_per_group: int | None = None, seed: int = 0) -> AbxItems:
    """The items that can be in a triplet (their context has two or more centre phones), at most ``max_per_group``
    of each (context, centre phone) group, drawn at random (seeded). The cap bounds the DTW pairs of the common
    contexts, as ZeroSpeech 2021's ``max_size_group`` does; every phone pair of every context stays."""
    keys = [(p, n) for p, n in zip(items.prev, items.next)]
    centres: dict[tuple[str, str], set[str]] = {}
    for k, c in zip(keys, items.phone):
        centres.setdefault(k, set()).add(c)
    groups: dict[tuple, list[int]] = {}
    for i, (k, c) in enumerate(zip(keys, items.phone)):
        if len(centres[k]) > 1:
            groups.setdefault((*k, c), []).append(i)
    rng = np.random.default_rng(seed)
    keep = []
    for members in groups.values():
        if max_per_group is not None and len(members) > max_per_group:
            members = sorted(rng.choice(members, max_per_group, replace=False).tolist())
        keep += members
    return items.subset(np.sort(np.array(keep, dtype=np.int64)))


def write_item_file(path: str | os.PathLike, items: AbxItems, decimals: int = 4) -> None:
    """The items as a ZeroSpeech .item file (space-separated, the ZeroSpeech 2017/2019 header)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(ITEM_HEADER + "\n")
        for i in range(len(items)):
            f.write(f"{items.file[i]} {items.onset[i]:.{decimals}f} {items.offset[i]:.{decimals}f} {items.phone[i]} "
                    f"{items.prev[i]} {items.next[i]} {items.speaker[i]}\n")


def read_item_file(path: str | os.PathLike) -> AbxItems:
    """A ZeroSpeech .item file (any column order, found by the header names) as `AbxItems`."""
    with open(path, encoding="utf-8") as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty .item file")
    header = [h.lstrip("#") for h in lines[0]]
    names = {"file": "file", "onset": "onset", "offset": "offset", "phone": "phone", "prev-phone": "prev",
             "next-phone": "next", "speaker": "speaker"}
    missing = [n for n in names if n not in header]
    if missing:
        raise ValueError(f"{path}: the header {' '.join(lines[0])!r} lacks {missing}")
    at = {names[n]: header.index(n) for n in names}
    rows = lines[1:]
    for k, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {k + 2} has {len(row)} columns, the header {len(header)}")
    return AbxItems([r[at["file"]] for r in rows], np.array([float(r[at["onset"]]) for r in rows]),
                    np.array([float(r[at["offset"]]) for r in rows]), [r[at["phone"]] for r in rows],
                    [r[at["prev"]] for r in rows], [r[at["next"]] for r in rows], [r[at["speaker"]] for r in rows])


def item_features(features: dict[str, tuple[Tensor, Tensor]], items: AbxItems) -> list[Tensor]:
    """The frames of every item: ``features[file] = (frames [T, D], centre times [T])``; an item takes the frames
    whose centre lies in [onset, offset], or the one frame nearest its midpoint when none does (a coarse layer)."""
    out = []
    for i in range(len(items)):
        if items.file[i] not in features:
            raise ValueError(f"abx: no features for file {items.file[i]!r} of item {i}")
        frames, times = features[items.file[i]]
        times = torch.as_tensor(times, dtype=torch.float64)
        inside = torch.nonzero((times >= items.onset[i] - 1e-9) & (times <= items.offset[i] + 1e-9)).view(-1)
        if inside.numel() == 0:
            inside = (times - (items.onset[i] + items.offset[i]) / 2).abs().argmin().view(1)
        out.append(frames[inside[0]: inside[-1] + 1])
    return out


# ---- batched dynamic time warping ----------------------------------------------------------------------------
def frame_distances(a: Tensor, b: Tensor, kind: str = "angular") -> Tensor:
    """Frame-wise distances [B, La, Lb] of two batches of sequences [B, La, D] and [B, Lb, D] (float64).

    ``"angular"``: ``arccos(cos) / pi`` with ABXpy's rule for zero frames (1 against a non-zero frame, 0 between
    two); ``"cosine"``: ``1 - cos`` with the same rule (0.5 scaled to 1); ``"euclidean"``."""
    a, b = a.double(), b.double()
    if kind == "euclidean":
        return torch.cdist(a, b)
    if kind not in ("angular", "cosine"):
        raise ValueError(f"abx: distance must be 'angular', 'cosine' or 'euclidean', got {kind!r}")
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    cos = torch.bmm(a / na.clamp(min=1e-300)[..., None], (b / nb.clamp(min=1e-300)[..., None]).transpose(1, 2))
    cos = cos.clamp(-1.0, 1.0)
    d = torch.arccos(cos) / math.pi if kind == "angular" else 1.0 - cos
    za, zb = (na == 0)[:, :, None], (nb == 0)[:, None, :]
    d = torch.where(za ^ zb, torch.ones_like(d), d)
    return torch.where(za & zb, torch.zeros_like(d), d)


def dtw(dist: Tensor, len_a: Tensor, len_b: Tensor, normalized: bool = True) -> Tensor:
    """DTW costs [B] of frame-distance matrices [B, La, Lb] whose valid parts are ``len_a`` x ``len_b``.

    Steps (1, 0), (0, 1), (1, 1); the cost of (0, 0) is its distance. With ``normalized``, each cost is divided by
    its path's length (ties between predecessors go to the diagonal, then to the (0, 1) step, then (1, 0), as
    ABXpy's backtrace decides, so the forward choice gives its path). The dynamic programme runs over the
    anti-diagonals i + j = k: each is a [B, La + 1] tensor over i (shifted by one, column 0 a fixed inf), so its
    three predecessors are slices of the two diagonals before it and one step updates a diagonal of every matrix."""
    B, La, Lb = dist.shape
    K = La + Lb - 1
    i = torch.arange(La)
    k = torch.arange(K)[:, None]
    j = k - i  # [K, La]
    on = (j >= 0) & (j < Lb)
    # every diagonal's distances in one gather: skew[b, k, i] = dist[b, i, k - i] (inf off the matrix)
    flat = (i * Lb + j.clamp(0, Lb - 1)).reshape(-1)
    skew = dist.double().reshape(B, La * Lb)[:, flat].reshape(B, K, La)
    skew.masked_fill_(~on, float("inf"))
    la, lb = torch.as_tensor(len_a).long(), torch.as_tensor(len_b).long()
    last = la + lb - 2  # the diagonal of each matrix's end cell (la - 1, lb - 1)
    out_cost = torch.zeros(B, dtype=torch.float64)
    out_steps = torch.ones(B, dtype=torch.int32)
    inf = torch.full((B, La + 1), float("inf"), dtype=torch.float64)
    prev2, prev, cur = inf.clone(), inf.clone(), inf.clone()  # diagonals k - 2, k - 1, k
    s2, s1, s0 = (torch.zeros((B, La + 1), dtype=torch.int32) for _ in range(3))
    lu = torch.empty((B, La), dtype=torch.float64)
    for step in range(K):
        d = skew[:, step]
        if step == 0:
            cur[:, 1:] = d
            s0[:, 1:] = 1
        else:
            up, left, diag = prev[:, :-1], prev[:, 1:], prev2[:, :-1]
            torch.minimum(left, up, out=lu)
            take_diag = diag <= lu  # diag <= left and diag <= up
            torch.add(d, torch.where(take_diag, diag, lu), out=cur[:, 1:])
            if normalized:
                s_lu = torch.where(left <= up, s1[:, 1:], s1[:, :-1])
                torch.add(torch.where(take_diag, s2[:, :-1], s_lu), 1, out=s0[:, 1:])
        done = torch.nonzero(last == step).view(-1)
        if len(done):
            out_cost[done] = cur[done, la[done]]  # column la = cell i = la - 1
            out_steps[done] = s0[done, la[done]]
        prev2, prev, cur = prev, cur, prev2
        s2, s1, s0 = s1, s0, s2
    return out_cost / out_steps if normalized else out_cost


def dtw_distances(seqs: Sequence[Tensor], pairs: Tensor, distance: str = "angular", normalized: bool = True,
                  batch_cells: int = 4_000_000, progress: Callable | None = None) -> Tensor:
    """DTW distance [P] of every ordered pair ``(a, b)`` of ``pairs`` [P, 2] (indices into ``seqs``, each [n, D]).

    Pairs are sorted by length and run in batches of at most ``batch_cells`` cost-matrix cells and at most
    ``4 * batch_cells`` padded feature values per side (wide features, e.g. one-hot codes of a 1024-code VQ layer,
    would otherwise take gigabytes); ``progress`` (e.g. a tqdm bar's ``update``) is called with the number of pairs
    done after each batch."""
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if (lengths == 0).any():
        raise ValueError("abx: an item has no frames")
    out = torch.empty(len(pairs), dtype=torch.float64)
    if not len(pairs):
        return out
    la, lb = lengths[pairs[:, 0]], lengths[pairs[:, 1]]
    order = torch.argsort(torch.maximum(la, lb) * (lengths.max() + 1) + torch.minimum(la, lb))
    width = max(int(seqs[0].shape[-1]) if seqs[0].dim() > 1 else 1, 1)
    start = 0
    while start < len(order):
        top = int(torch.maximum(la[order[start]], lb[order[start]]))
        size = max(1, min(batch_cells // max(top * top, 1), 4 * batch_cells // (top * width)))
        idx = order[start: start + size]
        ma, mb = int(la[idx].max()), int(lb[idx].max())
        while len(idx) > 1 and (len(idx) * ma * mb > batch_cells or len(idx) * max(ma, mb) * width > 4 * batch_cells):
            # longer pairs further on: shrink the batch
            idx = idx[: max(1, len(idx) // 2)]
            ma, mb = int(la[idx].max()), int(lb[idx].max())
        a = torch.nn.utils.rnn.pad_sequence([seqs[int(p)] for p in pairs[idx, 0]], batch_first=True)
        b = torch.nn.utils.rnn.pad_sequence([seqs[int(p)] for p in pairs[idx, 1]], batch_first=True)
        out[idx] = dtw(frame_distances(a, b, distance), la[idx], lb[idx], normalized)
        start += len(idx)
        if progress is not None:
            progress(len(idx))
    return out


# ---- triplets and the ZeroSpeech averages ------------------------------------------------------------------------
def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    names, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), [str(n) for n in names]


def _mean_by(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per distinct row of ``keys`` [R, m]: (distinct keys, means)."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return uniq, np.bincount(inverse, weights=values) / np.bincount(inverse)


def _cell_scores(D: Tensor, phone: Tensor, speaker: Tensor, chunk_cells: int = 8_000_000):
    """Per context group: summed scores and counts of its within and across cells.

    D[i, j] = d(item i, item j) (i: A or B, j: X). Returns two lists of rows (pA, pB, sA, sX, sum, count), local
    phone / speaker ids."""
    n = D.size(0)
    a = torch.arange(n)
    same_spk = speaker[:, None] == speaker[None, :]
    within, across = [], []
    k = max(1, chunk_cells // max(n * n, 1))
    for x0 in range(0, n, k):
        xs = a[x0: x0 + k]
        dAX = D[:, xs][:, None, :]  # [A, 1, X]
        dBX = D[:, xs][None, :, :]  # [1, B, X]
        score = (dAX < dBX).double() + 0.5 * (dAX == dBX).double()  # [A, B, X]
        pa, pb, px = phone[:, None, None], phone[None, :, None], phone[xs][None, None, :]
        base = (pa == px) & (pb != pa) & same_spk[:, :, None]  # A and X share the phone, B not; A, B one speaker
        sx_same = same_spk[:, xs][:, None, :]
        not_a = a[:, None, None] != xs[None, None, :]
        for rows, mask in ((within, base & sx_same & not_a), (across, base & ~sx_same)):
            A, Bi, Xi = torch.nonzero(mask, as_tuple=True)
            if not len(A):
                continue
            keys = torch.stack([phone[A], phone[Bi], speaker[A], speaker[xs[Xi]]], 1).numpy()
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            sums = np.bincount(inverse, weights=score[A, Bi, Xi].numpy(), minlength=len(uniq))
            counts = np.bincount(inverse, minlength=len(uniq))
            rows.append(np.concatenate([uniq, sums[:, None], counts[:, None]], 1))

    def merge(rows):
        if not rows:
            return np.zeros((0, 6))
        r = np.concatenate(rows)
        uniq, inverse = np.unique(r[:, :4].astype(np.int64), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return np.concatenate([uniq, np.bincount(inverse, weights=r[:, 4])[:, None],
                               np.bincount(inverse, weights=r[:, 5])[:, None]], 1)
    return merge(within), merge(across)


def abx_error_rates(features: Sequence[Tensor], items: AbxItems, distance: str = "angular", normalized: bool = True,
                    progress: bool = False) -> dict:
    """Within- and across-speaker ABX error rates (0-1) of item features (see the module docstring).

    Args:
        features: per item, its frames [n_i, D] (e.g. from `item_features`).
        items: the items (phone, context and speaker columns are used).
        distance: frame distance of the DTW (``"angular"``, the ZeroSpeech default).
        normalized: divide each DTW cost by its path length (the ZeroSpeech setting).
        progress: show a progress bar over the DTW pairs.

    Returns ``abx_within``, ``abx_across`` (NaN when no triplet exists), ``n_items``, ``n_contexts`` (contexts with
    two or more centre phones), ``n_pairs`` (DTW distances computed), ``n_within_triplets``,
    ``n_across_triplets``, ``n_within_phone_pairs``, ``n_across_phone_pairs`` and ``seconds``.
    """
    t0 = time.perf_counter()
    if len(features) != len(items):
        raise ValueError(f"abx: {len(features)} feature sequences for {len(items)} items")
    phone, _ = _codes(items.phone)
    speaker, _ = _codes(items.speaker)
    context, _ = _codes([f"{p} {n}" for p, n in zip(items.prev, items.next)])
    groups = []
    for c in np.unique(context):
        idx = np.flatnonzero(context == c)
        if len(np.unique(phone[idx])) > 1:  # no B without a second centre phone
            groups.append(idx)
    # every ordered pair inside a context group
    pair_list = []
    for idx in groups:
        ii, jj = np.meshgrid(idx, idx, indexing="ij")
        keep = ii != jj
        pair_list.append(np.stack([ii[keep], jj[keep]], 1))
    pairs = torch.from_numpy(np.concatenate(pair_list)) if pair_list else torch.zeros((0, 2), dtype=torch.long)
    seqs = [f.detach().cpu().double() for f in features]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="ABX DTW", unit="pair")
    dist = dtw_distances(seqs, pairs, distance, normalized, progress=bar.update if bar else None)
    if bar:
        bar.close()
    within_rows, across_rows = [], []
    start = 0
    for c_id, idx in enumerate(groups):
        n = len(idx)
        D = torch.zeros(n, n, dtype=torch.float64)
        off = ~torch.eye(n, dtype=torch.bool)
        D[off] = dist[start: start + n * (n - 1)]
        start += n * (n - 1)
        w, a = _cell_scores(D, torch.from_numpy(phone[idx]), torch.from_numpy(speaker[idx]))
        within_rows.append(np.concatenate([np.full((len(w), 1), c_id), w], 1))
        across_rows.append(np.concatenate([np.full((len(a), 1), c_id), a], 1))
    within = np.concatenate(within_rows) if within_rows else np.zeros((0, 7))
    across = np.concatenate(across_rows) if across_rows else np.zeros((0, 7))

    def zerospeech_average(rows: np.ndarray, speaker_cols: list[int]) -> tuple[float, int]:
        # columns: context, pA, pB, sA, sX, sum, count
        if not len(rows):
            return float("nan"), 0
        score = rows[:, 5] / rows[:, 6]
        keys = rows[:, [1, 2, *speaker_cols]].astype(np.int64)  # the context averaged out
        keys, score = _mean_by(keys, score)
        keys, score = _mean_by(keys[:, :2], score)  # then the speakers
        return float(1.0 - score.mean()), len(keys)  # then the phone pairs

    abx_within, n_wp = zerospeech_average(within, [3])
    abx_across, n_ap = zerospeech_average(across, [3, 4])
    return {"abx_within": abx_within, "abx_across": abx_across, "n_items": len(items), "n_contexts": len(groups),
            "n_pairs": len(pairs), "n_within_triplets": int(within[:, 6].sum()),
            "n_across_triplets": int(across[:, 6].sum()), "n_within_phone_pairs": n_wp,
            "n_across_phone_pairs": n_ap, "distance": distance, "normalized": normalized,
            "seconds": round(time.perf_counter() - t0, 3)}
