"""The unit analyses of lightning_modules.core against independent brute-force references written from the papers'
and the official code's definitions (loops, one item at a time), on hand-made and random inputs, plus the oracles:
one-hot phone features have ABX 0 and random ones about 50%, the reference segmentation scores P = R = F1 = R-value =
1 against itself, the mask itself has AP 1."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from lightning_modules.core.localization import average_precision, best_iou
from lightning_modules.core.units.abx import (
    AbxItems,
    abx_error_rates,
    discriminable_items,
    dtw_distances,
    item_features,
    read_item_file,
    triphone_items,
    write_item_file,
)
from lightning_modules.core.units.boundaries import (
    boundary_scores,
    code_boundaries,
    peak_boundaries,
    reference_boundaries,
    token_scores,
)
from lightning_modules.core.units.features import (
    assign,
    frame_times,
    kmeans,
    layer_names,
    layer_outputs,
    position_spf,
)
from lightning_modules.core.units.keywords import concept_scores, equal_error_rate, keyword_spotting, precision_at_k
from lightning_modules.core.units.word_detection import STOP_WORDS, frame_grid, word_code_tables, word_detection
from lightning_modules.nets import DAVEnetAudioNet, ResDAVEnetAudioNet


# ---- random alignments -----------------------------------------------------------------------------------------
def _random_words(rng, vocab, n_max=8, step=0.125):
    """A time-ordered word alignment on a grid of `step` s, with gaps, touching words and zero-length words."""
    t, words = float(rng.integers(0, 3)) * step, []
    for _ in range(int(rng.integers(0, n_max + 1))):
        d = float(rng.integers(0, 5)) * step
        words.append((t, t + d, str(rng.choice(vocab))))
        t += d + float(rng.integers(0, 3)) * step
    return words


# ---- word detection --------------------------------------------------------------------------------------------
def _reference_tables(codes_list, spf, words_list, halfwidth, stop_words):
    """ResDAVEnet-VQ's definitions, one frame and one token at a time (two pointers over the time-ordered words)."""
    stop = {w.upper() for w in stop_words}
    frames_of, with_word = defaultdict(int), defaultdict(Counter)
    tokens_of, with_code = defaultdict(int), defaultdict(Counter)
    for codes, words in zip(codes_list, words_list):
        if not words:
            continue
        first = last = 0
        for f, code in enumerate(codes):
            lo, hi = (f + 0.5) * spf - halfwidth, (f + 0.5) * spf + halfwidth
            while first < len(words) and lo > words[first][1]:
                first += 1
            while last < len(words) and hi > words[last][0]:
                last += 1
            found = {w[2] for w in words[first:last]} if last > first else {"<SIL>"}
            frames_of[code] += 1
            with_word[code].update(found)
        for start, end, label in words:
            lo = int(max(np.floor(start / spf), 0))
            hi = int(min(np.ceil(end / spf), len(codes)))
            tokens_of[label] += 1
            with_code[label].update(set(codes[lo:hi]))
    precision = {c: {w: n / frames_of[c] for w, n in cnt.items() if w.upper() not in stop and w != "<SIL>"}
                 for c, cnt in with_word.items()}
    recall = {w: {c: (n / tokens_of[w], n) for c, n in with_code[w].items()} for w in tokens_of}
    return precision, recall


def _reference_detection(precision, recall, min_occ=1, threshold=0.5):
    best = {}
    for word, codes in recall.items():
        f1s = []
        for code, (r, occ) in codes.items():
            if occ >= min_occ:
                p = precision.get(code, {}).get(word, 0.0)
                f1s.append(2 * p * r / (p + r))
        if f1s:
            best[word] = max(f1s)
    return sum(f >= threshold for f in best.values()), best


def test_word_detection_hand_made():
    # frames of 0.25 s, centres 0.125, 0.375, ...; windows +- 0.04 s
    codes = [[7, 7, 3, 3, 9, 9]]
    words = [[(0.0, 0.5, "RED"), (0.5, 1.0, "STAR"), (1.25, 1.5, "the")]]
    precision, recall = word_code_tables(codes, 0.25, words)
    assert precision == {7: {"RED": 1.0}, 3: {"STAR": 1.0}, 9: {}}  # "the" is a stop word (case-insensitive)
    assert recall == {"RED": {7: (1.0, 1)}, "STAR": {3: (1.0, 1)}, "the": {9: (1.0, 1)}}
    result = word_detection(codes, 0.25, words)
    assert result["words_detected"] == 2 and result["n_words"] == 3 and result["n_content_words"] == 2
    assert [(r["word"], r["code"], r["f1"]) for r in result["words"]] == [("RED", 7, 1.0), ("STAR", 3, 1.0),
                                                                          ("the", 9, 0.0)]
    # a code that also fires in silence and on another word loses precision
    codes = [[7, 7, 7, 3, 7, 9]]
    precision, recall = word_code_tables(codes, 0.25, words)
    assert precision[7] == {"RED": 0.5, "STAR": 0.25}  # 4 frames: 2 in RED, 1 in STAR, 1 in silence
    assert recall["STAR"] == {7: (1.0, 1), 3: (1.0, 1)}
    result = word_detection(codes, 0.25, words)
    star = next(r for r in result["words"] if r["word"] == "STAR")
    assert star["code"] == 3 and star["f1"] == 1.0
    red = next(r for r in result["words"] if r["word"] == "RED")
    assert red["f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert result["words_detected"] == 2  # 0.667 >= 0.5
    # empty alignments are skipped, like the official reader's None
    assert word_detection(codes + [[1, 2]], 0.25, words + [[]])["n_utterances"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_word_detection_equals_the_reference_on_random_corpora(seed):
    rng = np.random.default_rng(seed)
    vocab = ["RED", "STAR", "BLUE", "BOX", "A", "THE", "In", "KITCHEN"]
    words = [_random_words(rng, vocab) for _ in range(40)]
    spf = [0.08, 0.04, 0.125][seed]
    codes = []
    for w in words:
        n = int(math.ceil((w[-1][1] if w else 0.5) / spf)) + int(rng.integers(0, 4))
        runs = rng.integers(1, 4, size=n)
        codes.append(np.repeat(rng.integers(0, 12, size=n), runs)[:n].tolist())
    precision, recall = word_code_tables(codes, spf, words)
    ref_p, ref_r = _reference_tables(codes, spf, words, 0.04, STOP_WORDS)
    assert precision == ref_p and recall == ref_r  # the same counts divided the same way: equal floats
    for min_occ in (1, 2):
        result = word_detection(codes, spf, words, min_occ=min_occ)
        count, best = _reference_detection(ref_p, ref_r, min_occ)
        assert result["words_detected"] == count
        assert {r["word"]: r["f1"] for r in result["words"]} == pytest.approx(best, abs=1e-12)
        assert result["mean_f1"] == pytest.approx(np.mean(list(best.values())), abs=1e-12)


def test_frame_grid_reads_back_the_official_grid():
    spf, offset = frame_grid([(f + 0.5) * 0.08 for f in range(50)])
    assert spf == 0.08 and offset == 0.0
    assert frame_grid([0.1, 0.3, 0.5]) == (0.2, 0.0)
    assert frame_grid([0.35], spf=0.16) == (0.16, 0.27)
    with pytest.raises(ValueError, match="pass spf"):
        frame_grid([0.04])
    with pytest.raises(ValueError, match="regular grid"):
        frame_grid([0.04, 0.12, 0.5, 0.58])


# ---- boundaries ------------------------------------------------------------------------------------------------
def _reference_matches(ref, pred, tolerance):
    """find_boundary_matches, with distances at the tolerance counted in spite of float rounding."""
    i = j = hits = 0
    while i < len(ref) and j < len(pred):
        if abs(ref[i] - pred[j]) <= tolerance + 1e-9:
            hits, i, j = hits + 1, i + 1, j + 1
        elif ref[i] > pred[j]:
            j += 1
        else:
            i += 1
    return hits


def _reference_boundary_scores(refs, preds, tolerance):
    hits = sum(_reference_matches(sorted(set(r)), sorted(set(p)), tolerance) for r, p in zip(refs, preds))
    n_ref, n_pred = sum(len(set(r)) for r in refs), sum(len(set(p)) for p in preds)
    p = hits / n_pred if n_pred else 0.0
    r = hits / n_ref
    os_ = r / p - 1 if p else n_pred / n_ref - 1
    r1, r2 = math.sqrt((1 - r) ** 2 + os_**2), (-os_ + r - 1) / math.sqrt(2)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "over_segmentation": os_,
            "r_value": 1 - (abs(r1) + abs(r2)) / 2}


def test_boundaries_hand_made_tolerance_edges_and_empty_predictions():
    words = [(0.10, 0.50, "A"), (0.50, 0.90, "RED"), (1.00, 1.40, "STAR")]
    ref = reference_boundaries(words)
    assert ref.tolist() == [0.5, 0.9, 1.0]  # the utterance edges 0.10 and 1.40 are given, not scored
    exact = boundary_scores([ref], [[0.52, 0.88, 1.03]])  # 20 ms, 20 ms and 30 ms away
    assert (exact["n_hits"], exact["precision"], exact["recall"]) == (2, 2 / 3, 2 / 3)
    assert boundary_scores([ref], [[0.521]])["n_hits"] == 0
    assert boundary_scores([ref], [[0.521]], tolerance=0.03)["n_hits"] == 1
    # greedy: one predicted boundary matches one reference boundary at most
    assert boundary_scores([[0.50, 0.51]], [[0.505]])["n_hits"] == 1
    empty = boundary_scores([ref], [[]])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["over_segmentation"]) == (0.0, 0.0, 0.0, -1.0)
    assert empty["r_value"] == pytest.approx(1 - (math.sqrt(2) + 0) / 2)
    self_score = boundary_scores([ref], [ref])
    assert {k: self_score[k] for k in ("precision", "recall", "f1", "over_segmentation", "r_value")} == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "over_segmentation": 0.0, "r_value": 1.0}
    # tokens: reference segments [0.1, 0.5], [0.5, 0.9], [0.9, 1.0] (the pause), [1.0, 1.4]
    tokens = token_scores([words], [[0.51, 0.9, 1.0]])
    assert (tokens["n_reference_tokens"], tokens["n_predicted_tokens"], tokens["n_token_hits"]) == (4, 4, 4)
    tokens = token_scores([words], [[0.55, 0.9]])  # [0.1, 0.55] misses; [0.9, 1.4] spans the pause and STAR
    assert (tokens["n_token_hits"], tokens["token_precision"], tokens["token_recall"]) == (0, 0.0, 0.0)
    assert token_scores([words], [reference_boundaries(words)])["token_f1"] == 1.0
    assert token_scores([words], [[]])["n_predicted_tokens"] == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_boundaries_equal_the_reference_on_random_corpora(seed):
    rng = np.random.default_rng(seed)
    words = [_random_words(rng, ["A", "B"], step=0.01 * int(rng.integers(3, 9))) for _ in range(60)]
    refs = [reference_boundaries(w) for w in words]
    preds = [np.round(np.sort(rng.uniform(0, 3, int(rng.integers(0, 12)))), 2) for _ in words]
    preds[3] = refs[3] + 0.02  # exactly at the tolerance
    keep = [k for k, r in enumerate(refs) if len(r)]
    refs, preds, words = [refs[k] for k in keep], [preds[k] for k in keep], [words[k] for k in keep]
    for tolerance in (0.02, 0.05):
        got = boundary_scores(refs, preds, tolerance)
        expected = _reference_boundary_scores(refs, preds, tolerance)
        assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    # tokens against a loop over segments
    hits = n_ref = n_pred = 0
    for w, p in zip(words, preds):
        full = sorted({t for s, e, _ in w for t in (s, e)})
        ref_seg = list(zip(full[:-1], full[1:]))
        cuts = sorted({full[0], full[-1], *p})
        pred_seg = list(zip(cuts[:-1], cuts[1:]))
        n_ref, n_pred = n_ref + len(ref_seg), n_pred + len(pred_seg)
        i = j = 0
        while i < len(ref_seg) and j < len(pred_seg):
            if all(abs(a - b) <= 0.02 + 1e-9 for a, b in zip(ref_seg[i], pred_seg[j])):
                hits, i, j = hits + 1, i + 1, j + 1
            elif ref_seg[i] > pred_seg[j]:
                j += 1
            else:
                i += 1
    got = token_scores(words, preds)
    assert (got["n_token_hits"], got["n_reference_tokens"], got["n_predicted_tokens"]) == (hits, n_ref, n_pred)


def test_predicted_boundaries_from_codes_and_from_self_similarity():
    assert code_boundaries([4, 4, 1, 1, 1, 7], spf=0.08).tolist() == pytest.approx([0.16, 0.40])
    assert code_boundaries([4], spf=0.08).tolist() == []
    x = np.zeros((6, 3))
    x[:2, 0], x[2:5, 1], x[5, 2] = 1, 1, 1  # three segments of orthogonal frames
    x += 0.01 * np.random.default_rng(0).standard_normal(x.shape)
    assert peak_boundaries(x, spf=0.1).tolist() == pytest.approx([0.2, 0.5])
    assert peak_boundaries(x[:1], spf=0.1).tolist() == []


# ---- keywords --------------------------------------------------------------------------------------------------
def _reference_precision_at_k(scores, relevant, k):
    """Mean over every order of the tied captions (uniform random tie-breaking)."""
    n = len(scores)
    k = min(k, n)
    total = count = 0
    for perm in itertools.permutations(range(n)):
        order = sorted(range(n), key=lambda i: (-scores[i], perm[i]))
        total += sum(relevant[i] for i in order[:k]) / k
        count += 1
    return total / count


def _reference_eer(scores, relevant):
    pos, neg = sum(relevant), len(relevant) - sum(relevant)
    points = [(0.0, 1.0)]  # (false-alarm rate, miss rate) at each threshold, from the highest score down
    for t in sorted(set(scores), reverse=True):
        tp = sum(r for s, r in zip(scores, relevant) if s >= t)
        fp = sum(1 - r for s, r in zip(scores, relevant) if s >= t)
        points.append((fp / neg, 1 - tp / pos))
    for (fa, ma), (fb, mb) in zip(points[:-1], points[1:]):
        if fb - mb >= 0 > fa - ma:
            lam = (ma - fa) / ((fb - fa) - (mb - ma))
            return fa + lam * (fb - fa)
    raise AssertionError("no crossing")


def test_keyword_metrics_equal_the_references_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(6):
        scores = rng.integers(0, 3, size=(3, 6)).astype(float)  # many ties
        relevant = rng.random((3, 6)) < 0.4
        relevant[:, 0], relevant[:, 1] = True, False
        s, r = torch.tensor(scores), torch.tensor(relevant)
        for k in (1, 3, 10):
            got = precision_at_k(s, r, k)
            for row in range(3):
                assert float(got[row]) == pytest.approx(_reference_precision_at_k(scores[row], relevant[row], k))
        eer = equal_error_rate(s, r)
        for row in range(3):
            assert float(eer[row]) == pytest.approx(_reference_eer(scores[row].tolist(), relevant[row].tolist()))
    # chance: a constant score; perfect and inverted rankings
    relevant = torch.tensor([[True, False, True, False, False]])
    assert float(precision_at_k(torch.zeros(1, 5), relevant, 2)) == pytest.approx(0.4)
    assert float(equal_error_rate(torch.zeros(1, 5), relevant)) == pytest.approx(0.5)
    good = relevant.double()
    assert float(equal_error_rate(good, relevant)) == 0.0 and float(equal_error_rate(-good, relevant)) == 1.0
    result = keyword_spotting(good.repeat(2, 1), torch.cat([relevant, torch.ones(1, 5, dtype=torch.bool)]),
                              ["red", "always"])
    assert result["n_keywords"] == 1 and [r["keyword"] for r in result["keywords"]] == ["red"]  # "always": no negatives
    assert result["precision_at_n"] == 1.0 and result["eer"] == 0.0
    assert result["precision_at_10"] == pytest.approx(0.4)  # 10 > 5 captions: the top 5
    assert result["precision_at_10_chance"] == pytest.approx(0.4) and result["eer_chance"] == 0.5


def test_concept_scores_are_the_best_frame_of_each_caption():
    g = torch.Generator().manual_seed(0)
    concepts, audio = torch.randn(4, 3, generator=g), torch.randn(5, 3, 7, generator=g)
    nframes = torch.tensor([7, 3, 1, 5, 7])
    got = concept_scores(concepts, audio, nframes, chunk_size=2)
    for k in range(4):
        for n in range(5):
            assert float(got[k, n]) == pytest.approx(float((concepts[k] @ audio[n, :, : nframes[n]]).max()))


# ---- localisation AP and IoU -----------------------------------------------------------------------------------
def _reference_ap(scores, labels):
    pos = sum(labels)
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        tp = sum(y for s, y in zip(scores, labels) if s >= t)
        n = sum(1 for s in scores if s >= t)
        ap += (tp / pos - last_recall) * (tp / n)
        last_recall = tp / pos
    return ap


def test_average_precision_and_iou_equal_the_references():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 6, 40).astype(float)  # ties
        labels = rng.random(40) < 0.3
        labels[0] = True
        got = average_precision(torch.tensor(scores), torch.tensor(labels))
        assert got == pytest.approx(_reference_ap(scores.tolist(), labels.tolist()))  # = sklearn's, as checked once
        thresholds = np.linspace(scores.min(), scores.max(), 20)
        ious = [((scores > t) & labels).sum() / max(((scores > t) | labels).sum(), 1) for t in thresholds]
        assert best_iou(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(max(ious))
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:9, 2:7] = True
    assert average_precision(mask.float(), mask) == 1.0 and best_iou(mask.float() * 3 - 1, mask) == 1.0
    assert average_precision(torch.ones(256), mask) == pytest.approx(25 / 256)  # a uniform map: the mask's share
    assert math.isnan(average_precision(torch.ones(4), torch.zeros(4, dtype=torch.bool)))


# ---- ABX -------------------------------------------------------------------------------------------------------
def _abxpy_dtw(x, y):
    """ABXpy's dtw with cosine_distance and normalized=True: cost matrix loops, then the backtrace's path length."""
    def angle(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return 0.0 if na == nb == 0 else 1.0
        return float(np.arccos(np.clip(a @ b / (na * nb), -1, 1)) / np.pi)

    n, m = len(x), len(y)
    d = np.array([[angle(x[i], y[j]) for j in range(m)] for i in range(n)])
    cost = np.zeros((n, m))
    cost[0, 0] = d[0, 0]
    for i in range(1, n):
        cost[i, 0] = d[i, 0] + cost[i - 1, 0]
    for j in range(1, m):
        cost[0, j] = d[0, j] + cost[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            cost[i, j] = d[i, j] + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    i, j, length = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    length += i + j
    return cost[n - 1, m - 1] / length


def _reference_abx(feats, items):
    """Every triplet enumerated, then ZeroSpeech's averages (context, then speaker, then phone pair)."""
    n = len(items)
    dist = {}

    def d(a, b):
        if (a, b) not in dist:
            dist[a, b] = _abxpy_dtw(feats[a].numpy(), feats[b].numpy())
        return dist[a, b]

    cells = {"within": defaultdict(list), "across": defaultdict(list)}
    for a, b, x in itertools.product(range(n), repeat=3):
        ctx = (items.prev[a], items.next[a])
        if not (ctx == (items.prev[b], items.next[b]) == (items.prev[x], items.next[x])):
            continue
        if items.phone[a] != items.phone[x] or items.phone[b] == items.phone[a] or a == x:
            continue
        if items.speaker[a] != items.speaker[b]:
            continue
        score = 1.0 if d(a, x) < d(b, x) else 0.5 if d(a, x) == d(b, x) else 0.0
        if items.speaker[x] == items.speaker[a]:
            cells["within"][(ctx, items.speaker[a], items.phone[a], items.phone[b])].append(score)
        else:
            cells["across"][(ctx, items.speaker[a], items.speaker[x], items.phone[a], items.phone[b])].append(score)
    out = {}
    for task, table in cells.items():
        by_speaker = defaultdict(list)
        for key, scores in table.items():
            by_speaker[key[1:]].append(np.mean(scores))  # averaged over contexts
        by_pair = defaultdict(list)
        for key, scores in by_speaker.items():
            by_pair[key[-2:]].append(np.mean(scores))  # over speakers
        out[f"abx_{task}"] = 1 - np.mean([np.mean(v) for v in by_pair.values()])
    return out


def _random_items(rng, n, phones=("a", "e", "i"), contexts=(("k", "t"), ("p", "s")), speakers=("s1", "s2", "s3")):
    ctx = [contexts[int(c)] for c in rng.integers(0, len(contexts), n)]
    return AbxItems([f"u{k}" for k in range(n)], np.zeros(n), np.ones(n),
                    [str(p) for p in rng.choice(phones, n)], [c[0] for c in ctx], [c[1] for c in ctx],
                    [str(s) for s in rng.choice(speakers, n)])


def test_dtw_equals_abxpy_loops():
    rng = np.random.default_rng(0)
    seqs = [torch.tensor(rng.standard_normal((int(rng.integers(1, 7)), 3))) for _ in range(12)]
    seqs[3][1] = 0.0  # a zero frame
    seqs[5] = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])  # ties between warping paths
    seqs[6] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    pairs = torch.tensor([(a, b) for a in range(12) for b in range(12)])
    got = dtw_distances(seqs, pairs, batch_cells=200)  # several batches
    for (a, b), value in zip(pairs.tolist(), got.tolist()):
        # arccos near 1 amplifies the rounding of the dot product: 1e-16 in cos is 1e-8 in angle
        assert value == pytest.approx(_abxpy_dtw(seqs[a].numpy(), seqs[b].numpy()), abs=1e-7), (a, b)


def test_abx_equals_the_triplet_enumeration():
    rng = np.random.default_rng(1)
    items = _random_items(rng, 36)
    feats = [torch.tensor(rng.standard_normal((int(rng.integers(1, 5)), 4))) for _ in range(len(items))]
    # one-hot frames from a few codes: many equal distances, so ties (score 0.5) matter
    codes = [torch.nn.functional.one_hot(torch.tensor(rng.integers(0, 3, int(rng.integers(1, 4)))), 3).double()
             for _ in range(len(items))]
    for f in (feats, codes):
        got = abx_error_rates(f, items)
        expected = _reference_abx(f, items)
        assert got["abx_within"] == pytest.approx(expected["abx_within"], abs=1e-12)
        assert got["abx_across"] == pytest.approx(expected["abx_across"], abs=1e-12)
        assert got["n_within_triplets"] > 0 and got["n_across_triplets"] > 0


def test_abx_oracles_one_hot_phones_score_zero_random_features_about_half():
    rng = np.random.default_rng(2)
    phones = ["a", "e", "i", "o"]
    # utterances of phones with one-hot phone-label frames (10 ms): the features carry exactly the phone identity
    utterances, features = [], {}
    for u in range(36):
        labels = [str(rng.choice(phones))]
        while len(labels) < 8:  # no phone twice in a row: "a a e" and "a e e" would be the same frames
            labels.append(str(rng.choice([p for p in phones if p != labels[-1]])))
        durations = rng.integers(3, 9, size=8) / 100
        ends = np.cumsum(durations)
        phones_u = [(float(e - d), float(e), p) for e, d, p in zip(ends, durations, labels)]
        file, speaker = f"utt{u}", f"spk{u % 3}"
        utterances.append((file, speaker, phones_u))
        times = frame_times(int(round(ends[-1] * 100)), 0.01)
        label_of = [labels[int(np.searchsorted(ends, float(t)))] for t in times]
        features[file] = (torch.nn.functional.one_hot(torch.tensor([phones.index(p) for p in label_of]), 4).double(),
                          times)
    items = triphone_items(utterances)
    assert len(items) == 36 * 6
    oracle = abx_error_rates(item_features(features, items), items)
    assert oracle["abx_within"] == 0.0 and oracle["abx_across"] == 0.0
    assert oracle["n_within_triplets"] > 100 and oracle["n_across_triplets"] > 1000
    noise = {f: (torch.randn(len(t), 16, generator=torch.Generator().manual_seed(k)), t)
             for k, (f, (_, t)) in enumerate(features.items())}
    chance = abx_error_rates(item_features(noise, items), items)
    assert abs(chance["abx_within"] - 0.5) < 0.1 and abs(chance["abx_across"] - 0.5) < 0.06


def test_discriminable_items_keep_contexts_with_two_phones_capped_per_group():
    phones = ["a"] * 6 + ["e"] * 2 + ["o"] * 3
    contexts = [("k", "t")] * 8 + [("p", "s")] * 3  # (p, s) has only "o": no B for it
    items = AbxItems([f"u{i}" for i in range(11)], np.zeros(11), np.ones(11), phones, [c[0] for c in contexts],
                     [c[1] for c in contexts], ["s"] * 11)
    assert discriminable_items(items).file == [f"u{i}" for i in range(8)]
    capped = discriminable_items(items, max_per_group=3, seed=1)
    assert Counter(capped.phone) == {"a": 3, "e": 2} and capped.file == sorted(capped.file, key=lambda f: int(f[1:]))
    assert discriminable_items(items, max_per_group=3, seed=1).file == capped.file


def test_triphone_items_and_item_files(tmp_path):
    phones = [(0.0, 0.1, "D"), (0.1, 0.2, "@"), (0.2, 0.3, "k"), (0.5, 0.6, "I"), (0.6, 0.7, "n")]
    items = triphone_items([("utt1", "spk", phones)])
    # D-@-k is a triphone; @-k-I and k-I-n hold the 0.2 s pause and are skipped
    assert (items.phone, items.prev, items.next, items.onset.tolist(), items.offset.tolist()) == (
        ["@"], ["D"], ["k"], [0.0], [0.3])
    path = tmp_path / "test.item"
    more = triphone_items([("utt1", "spk", phones), ("utt2", "f2", phones[:3])], max_gap=0.25)
    write_item_file(path, more)
    lines = path.read_text().splitlines()
    assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
    assert lines[1] == "utt1 0.0000 0.3000 @ D k spk" and len(lines) == 1 + len(more) == 5
    back = read_item_file(path)
    assert back.phone == more.phone and back.speaker == more.speaker and np.allclose(back.onset, more.onset)
    # frames of an item: centres inside [onset, offset], else the nearest one
    feats = {"utt1": (torch.arange(10.0)[:, None], frame_times(10, 0.16))}  # centres 0.08, 0.24, ...
    one = triphone_items([("utt1", "spk", [(0.0, 0.03, "a"), (0.03, 0.06, "b"), (0.06, 0.1, "c")])])
    assert item_features(feats, one)[0].tolist() == [[0.0]]  # no centre inside 0-0.1 s: the nearest (0.08)
    assert item_features(feats, items)[0].tolist() == [[0.0], [1.0]]  # centres 0.08 and 0.24 in 0-0.3 s
    with pytest.raises(ValueError, match="no features for file 'utt2'"):
        item_features(feats, more)


# ---- layer features and k-means --------------------------------------------------------------------------------
def test_layer_outputs_of_both_nets():
    torch.manual_seed(0)
    audio, nframes = torch.randn(2, 40, 100), torch.tensor([100, 37])
    net = DAVEnetAudioNet(embedding_dim=8, width_mult=0.05, conv_batchnorm=True).eval()
    out = layer_outputs(net, audio, nframes)
    assert list(out) == layer_names(net) == ["input", "conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [out[k].frames.shape[-1] for k in out] == [100, 100, 50, 25, 13, 7]
    # each layer's stride, not round(T / T_k) (100 / 7 frames would give 0.14 s at conv5)
    assert [round(out[k].spf, 3) for k in out] == [0.01, 0.01, 0.02, 0.04, 0.08, 0.16]
    assert torch.equal(out["input"].frames, audio) and torch.equal(out["conv5"].frames, net(audio, nframes))
    assert out["conv5"].valid.tolist() == net.output_frames(nframes).tolist() == [7, 3]
    assert (out["conv1"].frames >= 0).all()
    res = ResDAVEnetAudioNet(layer_widths=[4, 4, 4, 8], layer_depths=[1, 1, 1]).eval()
    out = layer_outputs(res, audio, nframes, ["conv1", "layer3"])
    assert list(out) == ["conv1", "layer3"] and out["layer3"].frames.shape == (2, 8, 13)
    assert out["layer3"].valid.tolist() == [13, 5]
    for b, v in enumerate(out["layer3"].valid.tolist()):  # the hooked stage output is the net's on valid frames
        assert torch.equal(out["layer3"].frames[b, :, :v], res(audio, nframes)[b, :, :v])
    # every stage at its stride, valid frames as the net counts them, for captions of any length
    res = ResDAVEnetAudioNet(layer_widths=[4, 4, 4, 4, 8], vq_layers=[3], codebook_size=8).eval()
    for T in (200, 211, 37):
        lengths = torch.tensor([T, T // 2 + 1])
        out = layer_outputs(res, torch.randn(2, 40, T), lengths)
        assert [out[k].spf for k in out] == [0.01, 0.01, 0.02, 0.04, 0.08, 0.16]
        for k in range(1, 5):
            assert out[f"layer{k}"].valid.tolist() == res.position_frames(lengths, k + 1).tolist()
    assert position_spf(3) == out["layer2"].spf == 0.04
    with pytest.raises(ValueError, match="unknown layers"):
        layer_outputs(res, audio, nframes, ["conv5"])


def test_kmeans_finds_separated_clusters_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    c = kmeans(x, 3, seed=1)
    codes = assign(x, c)
    assert torch.equal(kmeans(x, 3, seed=1), c)
    assert all(len(set(codes[k * 50:(k + 1) * 50].tolist())) == 1 for k in range(3)) and len(set(codes.tolist())) == 3
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(x, 1000)
