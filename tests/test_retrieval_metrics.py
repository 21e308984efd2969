"""``core.retrieval_metrics``: ``retrieval_metrics`` against a stable-sort loop; the Metric against direct computation,
including a 2-process DDP run with DistributedSampler padding."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from lightning_modules.core.retrieval_metrics import retrieval_metrics
from lightning_modules.core.similarity import similarity_matrix
from lightning_modules.metrics import RetrievalRecallMetric, first_of_each

KS = (1, 5, 10)


# ---- loop references ---------------------------------------------------------------------------------------
def stable_rank(scores, target):
    """1-based position of `target` when scores are sorted descending, equal scores kept in index order."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    return order.index(target) + 1


def summarise(a2i, i2a, ks):
    a2i, i2a = torch.tensor(a2i, dtype=torch.float64), torch.tensor(i2a, dtype=torch.float64)
    out = {}
    for name, r in (("a2i", a2i), ("i2a", i2a)):
        for k in ks:
            out[f"{name}_R@{k}"] = (r <= k).double().mean().item()
        out[f"{name}_mean_rank"] = r.mean().item()
        out[f"{name}_median_rank"] = sorted(r.tolist())[(len(r) - 1) // 2]  # lower median
    for k in ks:
        out[f"mean_R@{k}"] = (out[f"a2i_R@{k}"] + out[f"i2a_R@{k}"]) / 2
    return out


def loop_metrics(S, ks=KS):
    N = S.shape[0]
    a2i = [stable_rank(S[:, j], j) for j in range(N)]
    i2a = [stable_rank(S[i, :], i) for i in range(N)]
    return summarise(a2i, i2a, ks)


def loop_grouped_metrics(S, image_ids, ks=KS):
    ids = image_ids.tolist()
    first_rows = []
    for row, i in enumerate(ids):
        if all(ids[r] != i for r in first_rows):
            first_rows.append(row)
    a2i = []
    for j in range(len(ids)):
        own = next(g for g, r in enumerate(first_rows) if ids[r] == ids[j])
        a2i.append(stable_rank(S[first_rows, j], own))
    i2a = []
    for r in first_rows:
        order = torch.sort(S[r], descending=True, stable=True).indices.tolist()
        negatives_ahead = 0
        for c in order:
            if ids[c] == ids[r]:
                break
            negatives_ahead += 1
        i2a.append(negatives_ahead + 1)
    return summarise(a2i, i2a, ks)


def assert_same(got, expected):
    assert got.keys() == expected.keys()
    for k in expected:
        assert float(got[k]) == pytest.approx(expected[k], abs=1e-12), k


# ---- retrieval_metrics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 3, 13, 64])
def test_random_matrices_match_loop(N):
    S = torch.randn(N, N, generator=torch.Generator().manual_seed(N))
    assert_same(retrieval_metrics(S, KS), loop_metrics(S))


def test_hand_made_matrix():
    S = torch.tensor([[0.9, 0.1, 0.5],
                      [0.8, 0.2, 0.7],
                      [0.0, 0.3, 0.4]])
    # a2i (columns): caption 0 ranks image 0 first; caption 1: images 2 > 1 > 0 -> rank 2; caption 2: 1 > 0 > 2 -> 3
    # i2a (rows): image 0: caption 0 first; image 1: 0 > 2 > 1 -> 3; image 2: 2 first
    m = retrieval_metrics(S, ks=(1, 2))
    assert m["a2i_R@1"] == pytest.approx(1 / 3) and m["a2i_R@2"] == pytest.approx(2 / 3)
    assert m["i2a_R@1"] == pytest.approx(2 / 3) and m["i2a_R@2"] == pytest.approx(2 / 3)
    assert m["a2i_mean_rank"] == pytest.approx(2.0) and m["a2i_median_rank"] == 2
    assert m["i2a_mean_rank"] == pytest.approx(5 / 3) and m["i2a_median_rank"] == 1
    assert m["mean_R@1"] == pytest.approx(0.5)


def test_ties_break_by_candidate_index():
    # All scores equal: the partner of query q has q candidates of lower index ahead of it.
    N = 4
    m = retrieval_metrics(torch.zeros(N, N), ks=(1, 2))
    assert m["a2i_R@1"] == m["i2a_R@1"] == 0.25
    assert m["a2i_mean_rank"] == m["i2a_mean_rank"] == 2.5
    assert m["a2i_median_rank"] == m["i2a_median_rank"] == 2  # lower median of ranks 1, 2, 3, 4
    # Many ties: integer scores.
    for seed in range(5):
        S = torch.randint(0, 3, (9, 9), generator=torch.Generator().manual_seed(seed)).float()
        assert_same(retrieval_metrics(S, KS), loop_metrics(S))


def test_n1000_is_exact_and_fast():
    S = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(0))
    S += 3 * torch.eye(1000)  # realistic recall values, not all near zero
    S[::7] = S[::7].round()  # and some ties
    start = time.perf_counter()
    got = retrieval_metrics(S, KS)
    elapsed = time.perf_counter() - start
    assert_same(got, loop_metrics(S))
    assert 0.05 < got["mean_R@1"] < 0.95
    assert elapsed < 2.0


@pytest.mark.parametrize("seed", range(6))
def test_chunked_equals_full(seed):
    # open_clip's test idea: 11-13 items, chunk sizes 3-4, plus ties and groups.
    g = torch.Generator().manual_seed(seed)
    N = 11 + seed % 3
    S = torch.randn(N, N, generator=g)
    if seed % 2:
        S = S.round()
    ids = torch.randint(0, 6, (N,), generator=g)
    for image_ids in (None, ids):
        full = retrieval_metrics(S, KS, image_ids=image_ids, chunk_size=N)
        for chunk_size in (3, 4):
            assert retrieval_metrics(S, KS, image_ids=image_ids, chunk_size=chunk_size) == full


@pytest.mark.parametrize("seed", range(5))
def test_group_ids_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    N = 15
    image_ids = torch.randint(100, 106, (N,), generator=g)  # several captions per image, ids not 0..G-1
    S = torch.randn(N, N, generator=g)
    # Rows of one image are the same image: make them identical, as a model's outputs would be.
    first = {}
    for r, i in enumerate(image_ids.tolist()):
        first.setdefault(i, r)
        S[r] = S[first[i]]
    if seed % 2:
        S = S.round()
    assert_same(retrieval_metrics(S, KS, image_ids=image_ids), loop_grouped_metrics(S, image_ids))


def test_unique_group_ids_equal_no_groups():
    S = torch.randn(12, 12, generator=torch.Generator().manual_seed(3)).round()
    assert retrieval_metrics(S, KS, image_ids=torch.arange(12).flip(0) * 5) == retrieval_metrics(S, KS)


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="image_ids must have N=3"):
        retrieval_metrics(torch.zeros(3, 3), image_ids=torch.zeros(2))


# ---- the Metric --------------------------------------------------------------------------------------------
def make_split(N=11, D=4, H=3, W=2, T=10, seed=0, kind="MISA", consistent=False):
    """Model outputs of N captions; `consistent`: captions with the same image_id have the same image output,
    as a real image net gives them."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(N, D, H, W, generator=g)
    audio = torch.randn(N, D, T, generator=g)
    nframes = torch.randint(1, T + 1, (N,), generator=g)
    image_id = torch.randint(0, max(1, N // 2), (N,), generator=g)
    if consistent:
        image = image[image_id]
    if kind == "dot":
        return image.mean((2, 3)), audio.mean(-1), None, image_id
    return image, audio, nframes, image_id


def batch_of(split, idx, extra_pad, garbage=1e4):
    """The model outputs of items idx as a batch padded (with garbage) to its own longest caption + extra."""
    image, audio, nframes, image_id = split
    if nframes is None:
        return image[idx], audio[idx], None, idx, image_id[idx]
    T = int(nframes[idx].max()) + extra_pad
    a = torch.full((len(idx), audio.shape[1], T), garbage)
    for b, i in enumerate(idx.tolist()):
        n = int(nframes[i])
        a[b, :, :n] = audio[i, :, :n]
    return image[idx], a, nframes[idx], idx, image_id[idx]


def direct(split, kind, chunk_size, group_by_image=False):
    image, audio, nframes, image_id = split
    S = similarity_matrix(image, audio, nframes, kind, chunk_size)
    return retrieval_metrics(S, KS, image_ids=image_id if group_by_image else None)


@pytest.mark.parametrize("kind", ["MISA", "SIMA", "SISA", "dot"])
@pytest.mark.parametrize("group_by_image", [False, True])
def test_metric_in_shuffled_batches_equals_direct(kind, group_by_image):
    split = make_split(kind=kind)
    metric = RetrievalRecallMetric(similarity_kind=kind, ks=KS, chunk_size=40, group_by_image=group_by_image)
    order = torch.randperm(11, generator=torch.Generator().manual_seed(1))
    for b, idx in enumerate(order.split(3)):
        metric.update(*batch_of(split, idx, extra_pad=b % 3))
    got = metric.compute()
    assert all(isinstance(v, torch.Tensor) for v in got.values())
    assert_same(got, direct(split, kind, 40, group_by_image))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_metric_drops_duplicate_indices_and_resets():
    split = make_split()
    metric = RetrievalRecallMetric("MISA", ks=KS, chunk_size=40)  # grouped by image_id, the default
    expected = direct(split, "MISA", 40, group_by_image=True)
    for idx in (torch.tensor([3, 0, 1, 2]), torch.tensor([4, 5, 6, 7, 8]), torch.tensor([9, 10, 0, 1])):
        metric.update(*batch_of(split, idx, extra_pad=1))
    assert_same(metric.compute(), expected)
    # Next epoch: other outputs, no leftovers from the last one.
    metric.reset()
    other = make_split(seed=5)
    metric.update(*batch_of(other, torch.arange(11), extra_pad=0))
    assert_same(metric.compute(), direct(other, "MISA", 40, group_by_image=True))
    metric.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()


def test_metric_sorts_by_dataset_index():
    # Images 0 and 1 are the same, so captions 0 and 1 see them tie, and index order decides the ranks:
    # caption 0 ranks image 0 first; caption 1 has image 2 and (tied, lower index) image 0 ahead of image 1.
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]])
    expected = retrieval_metrics(image @ audio.t(), ks=(1,))
    assert expected["a2i_R@1"] == pytest.approx(2 / 3)
    swap = torch.tensor([1, 0, 2])
    assert retrieval_metrics(image[swap] @ audio[swap].t(), ks=(1,)) != expected  # order matters here
    metric = RetrievalRecallMetric("dot", ks=(1,))
    for i in (1, 2, 0):
        metric.update(image[i : i + 1], audio[i : i + 1], None, torch.tensor([i]))
    assert_same(metric.compute(), expected)


def test_metric_stores_packed_frames_and_float32():
    split = make_split()
    metric = RetrievalRecallMetric("MISA", ks=KS)
    image, audio, nframes, index, image_id = batch_of(split, torch.arange(4), extra_pad=3)
    metric.update(image.bfloat16(), audio.bfloat16(), nframes, index, image_id)
    assert metric.audio[0].shape == (int(nframes.sum()), 4)
    assert metric.audio[0].dtype == metric.image[0].dtype == torch.float32
    with pytest.raises(ValueError, match="must give image_id, or none"):
        metric.update(image, audio, nframes, index)  # the first update had image ids
    with pytest.raises(ValueError, match="nframes must be 4 counts"):
        metric.update(image, audio, nframes + 100, index)


# ---- 2-process DDP -----------------------------------------------------------------------------------------
WORLD = 2


# (kind, protocol): "pairs" = one image row per caption (official calc_recalls), "grouped" = unique images from
# per-caption image outputs, "rows" = unique images from the batch's distinct images only (what the evaluation
# step passes: image_rows).
DDP_CASES = (("MISA", "pairs"), ("dot", "grouped"), ("SISA", "rows"))


def _update(metric, split, idx, extra_pad, protocol):
    image, audio, nframes, index, image_id = batch_of(split, idx, extra_pad)
    if protocol == "rows":
        first, rows = first_of_each(image_id)
        metric.update(image[first], audio, nframes, index, image_id, image_rows=rows)
    else:
        metric.update(image, audio, nframes, index, image_id)


def _ddp_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        # Exactly what Lightning's DistributedSampler gives this rank: a shuffled list padded with repeats.
        sampler = DistributedSampler(list(range(11)), num_replicas=WORLD, rank=rank, shuffle=True, seed=3)
        indices = torch.tensor(list(sampler))
        results = {}
        for kind, protocol in DDP_CASES:
            split = make_split(kind=kind, consistent=protocol == "rows")
            metric = RetrievalRecallMetric(kind, ks=KS, chunk_size=40, group_by_image=protocol != "pairs")
            for b, idx in enumerate(indices.split(4)):
                _update(metric, split, idx, (b + rank) % 3, protocol)
            results[kind] = {k: float(v) for k, v in metric.compute().items()}
        torch.save({"results": results, "indices": indices.tolist()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    outs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    # The sampler really padded: 12 items over 2 ranks, one dataset index twice.
    seen = outs[0]["indices"] + outs[1]["indices"]
    assert len(seen) == 12 and sorted(set(seen)) == list(range(11))
    for kind, protocol in DDP_CASES:
        expected = direct(make_split(kind=kind, consistent=protocol == "rows"), kind, 40, protocol != "pairs")
        for out in outs:
            assert out["results"][kind] == expected  # exactly, on both ranks
