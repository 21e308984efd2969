"""Word detection by discrete units: which codes fire on which words (ResDAVEnet-VQ's unit analysis).

Definitions of wnhsu/ResDAVEnet-VQ `steps/unit_analysis.py` as `run_unit_analysis.py` calls them (Harwath, Hsu,
Glass, "Learning Hierarchical Discrete Linguistic Units from Visually-Grounded Speech", ICLR 2020, section 4.2):

- Frames. Utterance u has codes ``c_0 .. c_{T-1}`` on a regular grid of ``spf`` seconds per frame; frame f spans
  ``offset + [f, f + 1) * spf`` and its centre is ``offset + (f + 0.5) * spf``.
- Code -> word precision. Each frame looks at ``[centre - 0.04, centre + 0.04]`` (the official code half-width):
  its word set is every word with ``end >= centre - 0.04`` and ``start < centre + 0.04`` (`align_sparse_to_dense`'s
  two pointers over the time-ordered words), or ``{<SIL>}`` when there is none. ``precision(code, word)`` = frames of
  the code whose set holds the word / frames of the code (all of them, ``<SIL>`` ones included). Stop words and
  ``<SIL>`` get no precision.
- Word -> code recall. Each word token covers frames ``floor((start - offset) / spf) .. ceil((end - offset) / spf)
  - 1`` (clipped to the utterance); ``recall(word, code)`` = tokens of the word during which the code occurs /
  tokens of the word; ``occurrences`` is the numerator. Every word counts here, stop words included.
- F1 of a (word, code) pair with ``occurrences >= min_occ`` (default 1): ``2 p r / (p + r)`` (p = 0 when the code
  has no precision for the word, so stop words score 0). A word's detector is its best code; the headline number
  is the count of words whose best F1 is ``>= 0.5`` (`count_high_f1_words`: at or above, though the paper says
  "above"), out of every word type (stop words included, as there); also the mean best F1 over the top 250 words.
- Utterances with an empty alignment are skipped, as the official reader returns None for them.

Labels are compared with the stop words case-insensitively (SpokenScenes writes upper case, as Places does).

    word_code_tables(codes, spf, words, ...) -> (precision, recall)     as the official dicts, for checking
    word_detection(codes, spf, words, ...) -> {"words_detected", "words", "codes", ...}
    frame_grid(times) -> (spf, offset)                                  from the frame centres of a units dump

Per utterance the frames and words are matched with ``searchsorted`` (no loop over frames); the co-occurrence
counts of the whole corpus are one ``np.unique`` over (code, word) keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STOP_WORDS = ("A", "AN", "THE", "AND", "OF", "<SPOKEN_NOISE>", "TO", "ON", "IN", "AT", "ARE", "IS", "IT", "HE",
              "SHE", "YOU", "THERE", "THIS")  # ResDAVEnet-VQ steps/unit_analysis.py
SILENCE = "<SIL>"
CODE_HALFWIDTH = 0.04  # seconds; run_unit_analysis.py passes 0.04


def frame_grid(times, spf: float | None = None) -> tuple[float, float]:
    """(seconds per frame, offset) of a regular grid of frame centres ``offset + (f + 0.5) * spf``.

    ``spf`` defaults to the median spacing of ``times`` (at least two frames needed); both are rounded to 1e-9 s so
    that centres written as decimals give back the grid's exact float (0.08, not 0.08000000000000002)."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if spf is None:
        if len(t) < 2:
            raise ValueError("frame_grid: one frame gives no frame rate; pass spf")
        spf = float(np.median(np.diff(t)))
    spf = round(float(spf), 9)
    if spf <= 0:
        raise ValueError(f"frame_grid: frame times must increase, got a spacing of {spf}")
    offset = round(float(t[0]) - 0.5 * spf, 9) if len(t) else 0.0
    if len(t) > 1 and np.abs(offset + (np.arange(len(t)) + 0.5) * spf - t).max() > 0.25 * spf:
        raise ValueError(f"frame_grid: frame times are not a regular grid of {spf} s")
    return spf, offset


def _check(codes: Sequence, words: Sequence, spf) -> list[float]:
    if len(codes) != len(words):
        raise ValueError(f"word detection: {len(codes)} code sequences but {len(words)} word alignments")
    spfs = [float(spf)] * len(codes) if np.isscalar(spf) else [float(s) for s in spf]
    if len(spfs) != len(codes) or min(spfs, default=1.0) <= 0:
        raise ValueError("word detection: spf must be one positive number or one per utterance")
    return spfs


def _pairs(codes: Sequence, spf, words: Sequence, halfwidth: float, offsets):
    """Corpus-wide (code, word id) co-occurrences of the frames and (word id, code) ones of the word tokens."""
    spfs = _check(codes, words, spf)
    offsets = [0.0] * len(codes) if offsets is None else [float(o) for o in offsets]
    vocab: dict[str, int] = {SILENCE: 0}
    frame_index, frame_word, token_index, token_code = [], [], [], []
    n_frames = n_tokens = n_utts = 0
    frame_codes, token_words = [], []
    for c, w, s, off in zip(codes, words, spfs, offsets):
        if not len(w):
            continue
        c = np.asarray(c, dtype=np.int64).reshape(-1)
        ids = np.array([vocab.setdefault(label, len(vocab)) for _, _, label in w], dtype=np.int64)
        ws = np.array([x[0] for x in w], dtype=np.float64)
        we = np.array([x[1] for x in w], dtype=np.float64)
        n_utts += 1
        # precision: the words in each frame's window (pointer semantics = searchsorted on time-ordered words)
        centre = (np.arange(len(c)) + 0.5) * s + off
        lo = np.searchsorted(we, centre - halfwidth, side="left")
        hi = np.searchsorted(ws, centre + halfwidth, side="left")
        count = np.maximum(hi - lo, 0)
        frame = np.repeat(np.arange(len(c)), count)
        word = ids[np.repeat(lo, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)]
        silent = np.flatnonzero(count == 0)
        frame = np.concatenate([frame, silent]) + n_frames
        word = np.concatenate([word, np.zeros(len(silent), np.int64)])
        frame_codes.append(c)
        frame_index.append(frame)  # corpus-wide frame index, resolved to its code by the caller
        frame_word.append(word)
        n_frames += len(c)
        # recall: the frames under each word token
        fs = np.maximum(np.floor((ws - off) / s), 0).astype(np.int64)
        fe = np.minimum(np.ceil((we - off) / s), len(c)).astype(np.int64)
        span = np.maximum(fe - fs, 0)
        tok = np.repeat(np.arange(len(w)), span)
        pos = np.repeat(fs, span) + np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
        token_index.append(tok + n_tokens)
        token_code.append(c[pos])
        token_words.append(ids)
        n_tokens += len(w)
    def cat(parts):
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    labels = np.array(list(vocab), dtype=object)
    return (labels, cat(frame_codes), cat(frame_index), cat(frame_word), cat(token_words), cat(token_index),
            cat(token_code), n_utts)


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unique(np.stack([a, b], 1), axis=0) if len(a) else np.zeros((0, 2), np.int64)


def _tables(codes, spf, words, halfwidth, stop_words, offsets):
    labels, all_codes, f_idx, f_word, tok_ids, tok_idx, tok_code, n_utts = _pairs(codes, spf, words, halfwidth,
                                                                                  offsets)
    stop = {s.upper() for s in stop_words} | {SILENCE}
    content = np.array([str(x).upper() not in stop for x in labels], dtype=bool)
    # precision: each frame's set counts a word once
    fw = _unique_pairs(f_idx, f_word)
    code_of_frame = all_codes[fw[:, 0]] if len(fw) else np.zeros(0, np.int64)
    frames_per_code = dict(zip(*np.unique(all_codes, return_counts=True)))
    cw, cw_count = (np.unique(np.stack([code_of_frame, fw[:, 1]], 1), axis=0, return_counts=True) if len(fw)
                    else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))
    # recall: each token counts a code once
    tc = _unique_pairs(tok_idx, tok_code)
    word_of_token = tok_ids[tc[:, 0]] if len(tc) else np.zeros(0, np.int64)
    tokens_per_word = dict(zip(*np.unique(tok_ids, return_counts=True)))
    wc, wc_count = (np.unique(np.stack([word_of_token, tc[:, 1]], 1), axis=0, return_counts=True) if len(tc)
                    else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))
    return labels, content, frames_per_code, cw, cw_count, tokens_per_word, wc, wc_count, n_utts, len(all_codes)


def word_code_tables(codes: Sequence, spf, words: Sequence, halfwidth: float = CODE_HALFWIDTH,
                     stop_words: Sequence[str] = STOP_WORDS, offsets: Sequence[float] | None = None):
    """The two official tables, as dicts: ``precision[code][word]`` (content words only) and
    ``recall[word][code] = (recall, occurrences)`` (every word).

    Args:
        codes: per utterance, the code of every frame ([T_u] ints).
        spf: seconds per frame, one for all or one per utterance.
        words: per utterance, its parsed word alignment ``[(start, end, label)]`` in time order.
        halfwidth: seconds either side of a frame's centre for its word set (0.04).
        offsets: per utterance, the time of the first frame's start (default 0).
    """
    labels, content, frames_per_code, cw, cw_count, tokens_per_word, wc, wc_count, *_ = _tables(
        codes, spf, words, halfwidth, stop_words, offsets)
    precision: dict[int, dict[str, float]] = {int(c): {} for c in frames_per_code}
    for (c, w), n in zip(cw.tolist(), cw_count.tolist()):
        if content[w]:
            precision[c][str(labels[w])] = n / frames_per_code[c]
    recall: dict[str, dict[int, tuple[float, int]]] = {str(labels[w]): {} for w in tokens_per_word}
    for (w, c), n in zip(wc.tolist(), wc_count.tolist()):
        recall[str(labels[w])][c] = (n / tokens_per_word[w], n)
    return precision, recall


def word_detection(codes: Sequence, spf, words: Sequence, halfwidth: float = CODE_HALFWIDTH,
                   stop_words: Sequence[str] = STOP_WORDS, min_occ: int = 1, f1_threshold: float = 0.5,
                   top_k: int = 250, offsets: Sequence[float] | None = None) -> dict:
    """Word detection scores of discrete units against word alignments (see the module docstring).

    Returns ``words_detected`` (words whose best code has F1 >= ``f1_threshold``), ``n_words`` (word types,
    stop words included: the official denominator), ``n_content_words``, ``mean_f1_top{top_k}`` and ``mean_f1``
    (best F1 per word, over the top ``top_k`` words and over all), ``n_codes`` (distinct codes), ``n_utterances``,
    ``n_frames``; ``words``: one row per word with its best code (``word``, ``code``, ``f1``, ``precision``,
    ``recall``, ``occurrences``, ``tokens``), best first; ``codes``: one row per code with its best content word
    (``code``, ``word``, ``f1``, ``precision``, ``recall``, ``frames``), best first.
    """
    labels, content, frames_per_code, cw, cw_count, tokens_per_word, wc, wc_count, n_utts, n_frames = _tables(
        codes, spf, words, halfwidth, stop_words, offsets)
    n_labels = len(labels)
    code_ids = np.array(sorted(frames_per_code), dtype=np.int64)
    code_frames = np.array([frames_per_code[c] for c in code_ids], dtype=np.float64)
    # precision of every (code, content word) pair, looked up by key code * n_labels + word
    keep = content[cw[:, 1]] if len(cw) else np.zeros(0, bool)
    p_key = cw[keep, 0] * n_labels + cw[keep, 1]
    p_val = cw_count[keep] / code_frames[np.searchsorted(code_ids, cw[keep, 0])]
    order = np.argsort(p_key)
    p_key, p_val = p_key[order], p_val[order]
    # F1 of every (word, code) pair with enough occurrences
    ok = wc_count >= min_occ
    w_of, c_of, occ = wc[ok, 0], wc[ok, 1], wc_count[ok]
    word_tokens = np.array([tokens_per_word.get(w, 0) for w in range(n_labels)], dtype=np.float64)
    rec = occ / word_tokens[w_of] if len(occ) else np.zeros(0)
    key = c_of * n_labels + w_of
    found = np.zeros(len(key), dtype=bool)
    prec = np.zeros(len(key))
    if len(p_key):
        at = np.minimum(np.searchsorted(p_key, key), len(p_key) - 1)
        found = p_key[at] == key
        prec = np.where(found, p_val[at], 0.0)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)

    rows = []
    for w in np.unique(w_of):  # one row per word type: its best code (first of equal F1s: the most frequent)
        sel = np.flatnonzero(w_of == w)
        best = sel[np.lexsort((-occ[sel], -f1[sel]))[0]]
        rows.append({"word": str(labels[w]), "code": int(c_of[best]), "f1": float(f1[best]),
                     "precision": float(prec[best]), "recall": float(rec[best]), "occurrences": int(occ[best]),
                     "tokens": int(word_tokens[w])})
    rows.sort(key=lambda r: -r["f1"])
    best_f1 = np.array([r["f1"] for r in rows])
    code_rows = []
    for c in np.unique(c_of[found]) if len(c_of) else []:  # one row per code: its best content word
        sel = np.flatnonzero(found & (c_of == c))
        best = sel[np.lexsort((-prec[sel], -f1[sel]))[0]]
        code_rows.append({"code": int(c), "word": str(labels[w_of[best]]), "f1": float(f1[best]),
                          "precision": float(prec[best]), "recall": float(rec[best]),
                          "frames": int(frames_per_code[int(c)])})
    code_rows.sort(key=lambda r: -r["f1"])
    n_words = len(tokens_per_word)
    return {
        "words_detected": int((best_f1 >= f1_threshold).sum()),
        "f1_threshold": f1_threshold,
        "n_words": n_words,
        "n_content_words": int(sum(bool(content[w]) for w in tokens_per_word)),
        f"mean_f1_top{top_k}": float(np.sort(best_f1)[::-1][:top_k].mean()) if len(best_f1) else 0.0,
        "mean_f1": float(best_f1.mean()) if len(best_f1) else 0.0,
        "n_codes": len(code_ids),
        "n_utterances": n_utts,
        "n_frames": n_frames,
        "halfwidth": halfwidth,
        "min_occ": min_occ,
        "words": rows,
        "codes": code_rows,
    }
