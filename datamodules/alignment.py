"""Time alignments of spoken captions: one parser for every corpus, the writer, and a quality check.

The aligned Places manifests (`text_alignment`, read by ResDAVEnet-VQ `run_unit_analysis.py::get_word_ali`) and
VG-HuBERT's SpokenCOCO release store an alignment as whitespace-separated tokens `start__LABEL__end`, times in
seconds; SpokenScenes writes its words (`text_alignment`) and phones (`phone_alignment`) the same way:

    "0.40__PHOTOS__0.81 0.81__OF__0.92 0.92__A__1.01"

    parse_alignment(s, item=None) -> [(start, end, label), ...]       every corpus goes through this one parser
    item_alignment(item, key="text_alignment", index=None) -> [...] | None   the item's (or its caption's) string
    format_alignment(segments, decimals=3) -> str
    check_alignments(words, phones) -> dict                          phones inside words, gaps, durations
    python -m datamodules.alignment --manifest M [--phones phone_alignment]   prints the check

The official reader silently drops tokens that do not split into three parts; this parser refuses them, with the
item and the token in the message, because a skipped word shifts every word-level score computed from it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence

import numpy as np

Segment = tuple[float, float, str]

# slack for comparing times that went through decimal strings (0.81 written twice reads back equal anyway)
_EPS = 1e-6
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _where(item: str | None) -> str:
    return f"alignment of {item}" if item else "alignment"


def parse_alignment(s: str, item: str | None = None) -> list[Segment]:
    """``"start__LABEL__end ..."`` -> ``[(start, end, label), ...]``, seconds as floats, in the string's order.

    Tokens are separated by whitespace; in each, the label is everything between the first and the last ``__``
    (so ``<SPOKEN_NOISE>`` and labels with single underscores pass). An empty string is an empty alignment.
    Every token must have a label and two finite times ``0 <= start <= end``, and the segments must be in time
    order without overlap (each starts at or after the end of the one before). Anything else raises ValueError
    naming ``item`` (e.g. the uttid), the token's position and the token.
    """
    if not isinstance(s, str):
        raise ValueError(f"{_where(item)}: expected a string like '0.40__PHOTOS__0.81 ...', got {type(s).__name__}")
    segments: list[Segment] = []
    for k, token in enumerate(s.split()):
        first, last = token.find("__"), token.rfind("__")
        if first < 0 or last == first:
            raise ValueError(f"{_where(item)}: token {k} {token!r} is not start__LABEL__end")
        start_s, label, end_s = token[:first], token[first + 2: last], token[last + 2:]
        if not label:
            raise ValueError(f"{_where(item)}: token {k} {token!r} has an empty label")
        if not (_NUMBER.fullmatch(start_s) and _NUMBER.fullmatch(end_s)):
            raise ValueError(f"{_where(item)}: token {k} {token!r}: times must be numbers in seconds")
        start, end = float(start_s), float(end_s)
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise ValueError(f"{_where(item)}: token {k} {token!r}: times must be finite and >= 0")
        if end < start:
            raise ValueError(f"{_where(item)}: token {k} {token!r} ends before it starts")
        if segments and start < segments[-1][1] - _EPS:
            raise ValueError(f"{_where(item)}: token {k} {token!r} starts before the previous token "
                             f"{segments[-1][2]!r} ends at {segments[-1][1]} (segments must be in time order, "
                             "without overlap)")
        segments.append((start, end, label))
    return segments


def item_id(item: dict, index: int | None = None) -> str:
    """A name for a manifest item in messages: its uttid (or its caption's, SpokenCOCO unrolled), else its wav."""
    caption = item.get("caption") if isinstance(item.get("caption"), dict) else {}
    name = item.get("uttid") or caption.get("uttid") or item.get("wav") or caption.get("wav")
    where = f"item {index}" if index is not None else "item"
    return f"{where} ({name})" if name else where


def item_alignment(item: dict, key: str = "text_alignment", index: int | None = None) -> list[Segment] | None:
    """The parsed alignment ``key`` of one manifest item, None when the item has none.

    The string sits on the item itself (Places aligned JSON, SpokenScenes, VG-HuBERT's unrolled SpokenCOCO) or on
    its ``caption`` dict; errors name the item by position and uttid."""
    if not isinstance(item, dict):
        raise ValueError(f"item {index}: a manifest item must be a JSON object, got {type(item).__name__}")
    value = item.get(key)
    if value is None and isinstance(item.get("caption"), dict):
        value = item["caption"].get(key)
    return None if value is None else parse_alignment(value, item_id(item, index))


def format_alignment(segments: Sequence[tuple[float, float, str]], decimals: int = 3) -> str:
    """The inverse of `parse_alignment`: ``[(start, end, label)] -> "start__LABEL__end ..."``.

    Labels must be non-empty and free of whitespace (the token separator); times are written with ``decimals``
    digits (3: milliseconds, the resolution of SpokenScenes' timings)."""
    tokens = []
    for start, end, label in segments:
        label = str(label)
        if not label or any(c.isspace() for c in label):
            raise ValueError(f"alignment label {label!r} is empty or contains whitespace")
        tokens.append(f"{start:.{decimals}f}__{label}__{end:.{decimals}f}")
    return " ".join(tokens)


# ---- quality of a phone alignment against its word alignment ---------------------------------------------------
def check_alignments(words: Sequence[Sequence[Segment]], phones: Sequence[Sequence[Segment]],
                     tolerance: float = 0.0015) -> dict:
    """How well the phones of many utterances fit their words, and whether their durations look like speech.

    ``words[u]`` and ``phones[u]`` are the parsed alignments of utterance u. A phone belongs to the word that holds
    its midpoint. Counted (with ``tolerance`` seconds of slack, for times rounded to ms):

    - ``phones_outside_words``: phones whose midpoint lies in no word;
    - ``phones_crossing_word_edges``: phones that start before or end after their word;
    - ``gaps_inside_words`` / ``overlaps_inside_words``: consecutive phones of one word that leave a gap or overlap;
    - ``words_without_phones``, and ``words_not_covered``: words whose phones start after the word's start or end
      before its end;
    - ``zero_duration_phones``.

    ``ok`` is True when all of these are 0 except ``words_without_phones`` (fillers may be silent). Durations
    (``duration_ms``: percentiles over all phones; ``by_phone``: count and median of the 12 most frequent phones)
    and the phone rate (``phones_per_second`` of speech, i.e. summed word durations) describe the timing: read
    speech has median phone durations of about 60-90 ms and 10-15 phones per second.
    """
    if len(words) != len(phones):
        raise ValueError(f"check_alignments: {len(words)} word alignments but {len(phones)} phone alignments")
    counts = dict.fromkeys(("phones_outside_words", "phones_crossing_word_edges", "gaps_inside_words",
                            "overlaps_inside_words", "words_without_phones", "words_not_covered",
                            "zero_duration_phones"), 0)
    durations, labels = [], []
    n_words = n_phones = 0
    speech = 0.0
    for w, p in zip(words, phones):
        n_words += len(w)
        n_phones += len(p)
        speech += sum(e - s for s, e, _ in w)
        if not p:
            counts["words_without_phones"] += len(w)
            continue
        ps = np.array([x[0] for x in p])
        pe = np.array([x[1] for x in p])
        durations.append(pe - ps)
        labels += [x[2] for x in p]
        counts["zero_duration_phones"] += int((pe - ps <= 0).sum())
        if not w:
            counts["phones_outside_words"] += len(p)
            continue
        ws = np.array([x[0] for x in w])
        we = np.array([x[1] for x in w])
        mid = (ps + pe) / 2
        owner = np.searchsorted(ws, mid, side="right") - 1  # the last word starting at or before the midpoint
        inside = (owner >= 0) & (mid <= we[owner.clip(0)])
        counts["phones_outside_words"] += int((~inside).sum())
        o = owner[inside]
        s_in, e_in = ps[inside], pe[inside]
        counts["phones_crossing_word_edges"] += int(((s_in < ws[o] - tolerance) | (e_in > we[o] + tolerance)).sum())
        same = o[1:] == o[:-1]
        step = s_in[1:] - e_in[:-1]
        counts["gaps_inside_words"] += int((same & (step > tolerance)).sum())
        counts["overlaps_inside_words"] += int((same & (step < -tolerance)).sum())
        has = np.zeros(len(w), bool)
        has[o] = True
        counts["words_without_phones"] += int((~has).sum())
        first = np.full(len(w), np.inf)
        last = np.full(len(w), -np.inf)
        np.minimum.at(first, o, s_in)
        np.maximum.at(last, o, e_in)
        counts["words_not_covered"] += int((has & ((first > ws + tolerance) | (last < we - tolerance))).sum())
    d_ms = np.concatenate(durations) * 1000 if durations else np.zeros(0)
    by_phone = {}
    if labels:
        names, inverse, freq = np.unique(np.array(labels), return_inverse=True, return_counts=True)
        for k in np.argsort(-freq, kind="stable")[:12]:
            by_phone[str(names[k])] = {"n": int(freq[k]), "median_ms": float(np.median(d_ms[inverse == k]))}
    pct = (1, 5, 25, 50, 75, 95, 99)
    structural = {k: v for k, v in counts.items() if k != "words_without_phones"}
    return {
        "utterances": len(words), "words": n_words, "phones": n_phones, **counts,
        "ok": all(v == 0 for v in structural.values()),
        "duration_ms": {"mean": float(d_ms.mean()) if d_ms.size else float("nan"),
                        **{f"p{q}": float(np.percentile(d_ms, q)) if d_ms.size else float("nan") for q in pct}},
        "phones_per_second": n_phones / speech if speech > 0 else float("nan"),
        "distinct_phones": len(set(labels)),
        "by_phone": by_phone,
    }


def format_check(report: dict) -> str:
    d = report["duration_ms"]
    lines = [f"{report['utterances']} utterances, {report['words']} words, {report['phones']} phones "
             f"({report['distinct_phones']} distinct): {'OK' if report['ok'] else 'PROBLEMS'}"]
    for key in ("phones_outside_words", "phones_crossing_word_edges", "gaps_inside_words", "overlaps_inside_words",
                "words_not_covered", "zero_duration_phones", "words_without_phones"):
        lines.append(f"  {key.replace('_', ' '):<28} {report[key]}")
    lines.append("  phone duration ms: " + "  ".join(f"{k} {v:.0f}" for k, v in d.items()))
    lines.append(f"  phones per second of speech: {report['phones_per_second']:.1f}")
    lines.append("  most frequent: " + ", ".join(f"{p} {v['n']}x {v['median_ms']:.0f} ms"
                                                 for p, v in report["by_phone"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m datamodules.alignment",
                                     description="Parse a manifest's alignments and check its phones against its "
                                                 "words (inside their word, no gaps or overlaps, durations).")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--words", default="text_alignment", help="item key of the word alignment")
    parser.add_argument("--phones", default="phone_alignment", help="item key of the phone alignment")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    with open(args.manifest, encoding="utf-8") as f:
        data = json.load(f)["data"]
    words, phones = [], []
    for i, item in enumerate(data):
        w, p = item_alignment(item, args.words, i), item_alignment(item, args.phones, i)
        if w is None or p is None:
            raise SystemExit(f"{args.manifest}: {item_id(item, i)} has no {args.words if w is None else args.phones}")
        words.append(w)
        phones.append(p)
    report = check_alignments(words, phones)
    print(format_check(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
