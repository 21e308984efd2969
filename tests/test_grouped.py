"""Several captions per image: the grouped recall over unique images against brute force, one caption per image
equal to the ungrouped numbers bit for bit, the evaluation step's image de-duplication, and the loss masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.core import losses
from lightning_modules.core.losses import (
    AllNegativesTripletLoss,
    InfoNCELoss,
    ResDAVEnetTripletLoss,
    SampledMarginRankLoss,
    all_negatives_triplet,
    info_nce,
    sampled_margin_rank_loss,
    triplet_sampled,
    triplet_semihard,
)
from lightning_modules.core.retrieval_metrics import retrieval_metrics
from lightning_modules.core.similarity import similarity_matrix
from lightning_modules.metrics import RetrievalRecallMetric, first_of_each

KS = (1, 2, 5)


# ---- grouped recall against brute force ------------------------------------------------------------------
def brute_force(S: torch.Tensor, caption_image: torch.Tensor, ks=KS) -> dict:
    """SpeechCLIP-style any-hit recall from stable descending sorts, and ranks by walking the sorted lists."""
    G, M = S.shape
    own = caption_image.tolist()
    a2i, i2a, out = [], [], {}
    for j in range(M):
        order = torch.sort(S[:, j], descending=True, stable=True).indices.tolist()
        a2i.append(order.index(own[j]) + 1)
    for r in range(G):
        order = torch.sort(S[r], descending=True, stable=True).indices.tolist()
        i2a.append(next(p for p, c in enumerate(order) if own[c] == r) + 1)
        for k in ks:  # the any-hit definition itself, independent of the rank
            out.setdefault(f"hits{k}", []).append(any(own[c] == r for c in order[:k]))
    for name, ranks in (("a2i", a2i), ("i2a", i2a)):
        r = torch.tensor(ranks, dtype=torch.float64)
        for k in ks:
            out[f"{name}_R@{k}"] = (r <= k).double().mean().item()
        out[f"{name}_mean_rank"] = r.mean().item()
        out[f"{name}_median_rank"] = float(sorted(ranks)[(len(ranks) - 1) // 2])
    for k in ks:
        assert out[f"i2a_R@{k}"] == pytest.approx(sum(out.pop(f"hits{k}")) / G)
        out[f"mean_R@{k}"] = (out[f"a2i_R@{k}"] + out[f"i2a_R@{k}"]) / 2
    return out


def random_groups(G: int, M: int, g: torch.Generator) -> torch.Tensor:
    """caption_image [M] with every one of the G images holding at least one caption, in shuffled order."""
    caption_image = torch.cat([torch.arange(G), torch.randint(0, G, (M - G,), generator=g)])
    return caption_image[torch.randperm(M, generator=g)]


@pytest.mark.parametrize("G, M, ties", [(1, 1, False), (1, 4, False), (3, 3, True), (5, 23, False), (6, 30, True),
                                        (40, 200, False)])
def test_grouped_recall_matches_brute_force(G, M, ties):
    g = torch.Generator().manual_seed(G * 100 + M)
    S = torch.randn(G, M, generator=g)
    if ties:
        S = (S * 2).round()
    caption_image = random_groups(G, M, g)
    got = retrieval_metrics(S, KS, caption_image=caption_image)
    expected = brute_force(S, caption_image)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert retrieval_metrics(S, KS, caption_image=caption_image, chunk_size=2) == got


def test_one_image_ranks_first_in_both_directions():
    got = retrieval_metrics(torch.randn(1, 5), KS, caption_image=torch.zeros(5, dtype=torch.long))
    assert got["a2i_R@1"] == got["i2a_R@1"] == 1.0 and got["a2i_mean_rank"] == 1.0


def test_caption_image_errors():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_metrics(torch.zeros(2, 3), caption_image=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="image row 1 has no caption"):
        retrieval_metrics(torch.zeros(2, 3), caption_image=torch.tensor([0, 0, 0]))


def test_one_caption_per_image_equals_ungrouped_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(50, 50, generator=g)
    S[::3] = S[::3].round()  # ties too
    plain = retrieval_metrics(S)
    assert retrieval_metrics(S, caption_image=torch.arange(50)) == plain
    assert retrieval_metrics(S, image_ids=torch.randperm(50, generator=g)) == plain

    # The Metric, fed one batch at a time with distinct image ids (grouped, the default), gives the numbers of
    # the old per-caption path exactly: the same S, the same ranks.
    image, audio = torch.randn(13, 4, 3, 2, generator=g), torch.randn(13, 4, 9, generator=g)
    nframes = torch.randint(1, 10, (13,), generator=g)
    ids = torch.randperm(13, generator=g) * 7
    expected = retrieval_metrics(similarity_matrix(image, audio, nframes, "MISA", 40))
    for group_by_image in (True, False):
        metric = RetrievalRecallMetric("MISA", chunk_size=40, group_by_image=group_by_image)
        for idx in torch.arange(13).split(5):
            metric.update(image[idx], audio[idx], nframes[idx], idx, ids[idx])
        assert {k: float(v) for k, v in metric.compute().items()} == expected
        assert metric.last_similarity.shape == (13, 13)


def test_metric_builds_unique_images_by_captions():
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([4, 4, 4, 9, 2, 2, 9, 7, 7, 7, 7])  # 4 images, 11 captions
    base = {i: torch.randn(4, 3, 2, generator=g) for i in set(ids.tolist())}
    image = torch.stack([base[i] for i in ids.tolist()])
    audio, nframes = torch.randn(11, 4, 6, generator=g), torch.randint(1, 7, (11,), generator=g)
    metric = RetrievalRecallMetric("SIMA", chunk_size=30)
    order = torch.tensor([5, 0, 9, 3, 10, 1, 7, 2, 8, 4, 6])  # shuffled batches
    for idx in order.split(4):
        first, rows = first_of_each(ids[idx])
        metric.update(image[idx][first], audio[idx], nframes[idx], idx, ids[idx], image_rows=rows)
    got = metric.compute()
    # rows: the images in order of their first caption (ids 4, 9, 2, 7); columns: captions in dataset order
    assert metric.last_similarity.shape == (4, 11)
    assert metric.last_image_indices.tolist() == [0, 3, 4, 7]
    assert metric.last_caption_image.tolist() == [0, 0, 0, 1, 2, 2, 1, 3, 3, 3, 3]
    unique = torch.stack([base[i] for i in (4, 9, 2, 7)])
    S = similarity_matrix(unique, audio, nframes, "SIMA", 30)
    assert torch.equal(metric.last_similarity, S)
    expected = brute_force(S, metric.last_caption_image, ks=(1, 5, 10))
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, abs=1e-12), key


# ---- the evaluation step runs the image net once per distinct image -------------------------------------
def test_eval_step_runs_the_image_net_once_per_image():
    from lightning_modules import DAVEnet

    torch.manual_seed(0)
    model = DAVEnet(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06, pretrained_image=False).eval()
    seen = []
    model.image_net.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[0]))
    ids = torch.tensor([3, 3, 5, 8, 8, 8])
    images = torch.randn(9, 3, 32, 32)[ids]  # captions of one image carry the same image tensor
    batch = {"image": images, "audio": torch.randn(6, 40, 64), "nframes": torch.tensor([64, 50, 40, 64, 30, 20]),
             "index": torch.arange(6), "image_id": ids}
    with torch.no_grad():
        model._eval_step(batch, model.val_recall)
        grouped = model.val_recall.compute()
        assert seen == [3] and model.val_recall.last_similarity.shape == (3, 6)
        # the same numbers as running the image net on every caption and grouping afterwards
        image_out, audio_out, out_nframes = model(batch["image"], batch["audio"], batch["nframes"])
        per_caption = RetrievalRecallMetric("MISA", chunk_size=model.hparams.eval_chunk_size)
        per_caption.update(image_out, audio_out, out_nframes, batch["index"], ids)
        assert {k: float(v) for k, v in per_caption.compute().items()} == pytest.approx(
            {k: float(v) for k, v in grouped.items()}, abs=1e-12)


# ---- loss masks ------------------------------------------------------------------------------------------
def designed_scores(ids: list[int]) -> torch.Tensor:
    """S with 0 on the diagonal, -5 between captions of one image, 1 between different images: with margin 0
    every other-image impostor costs exactly 1 per hinge and a same-image one 0."""
    ids_t = torch.tensor(ids)
    same = ids_t[:, None] == ids_t[None, :]
    S = torch.where(same, torch.tensor(-5.0), torch.tensor(1.0)).double()
    S.fill_diagonal_(0.0)
    return S


def test_sampled_impostors_never_share_the_anchors_image():
    ids = [0, 0, 1, 2, 2, 2]
    S = designed_scores(ids)
    image, audio = S.clone(), torch.eye(6, dtype=torch.float64)  # dot: image @ audio.T = S
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        value = sampled_margin_rank_loss(image, audio, None, "dot", margin=0.0, generator=g, image_ids=ids)
        assert value.item() == 2.0  # a same-image impostor anywhere would lower it
        assert triplet_sampled(S, margin=0.0, generator=g, image_ids=ids).item() == 1.0
        assert triplet_sampled(S.t(), margin=0.0, generator=g, image_ids=ids).item() == 1.0
    # Without ids, same-image impostors do get drawn (this is what the mask prevents).
    draws = [sampled_margin_rank_loss(image, audio, None, "dot", margin=0.0, generator=g).item() for _ in range(50)]
    assert min(draws) < 2.0


def test_masked_impostors_are_uniform_over_other_images():
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    same = losses.same_image_mask(ids, 6, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(6, 6)
    for _ in range(3000):
        index, has = losses._impostor_index(6, torch.device("cpu"), g, same)
        counts[torch.arange(6), index] += 1
    assert has.all() and not (counts * same).any()
    frequency = counts / counts.sum(1, keepdim=True)
    expected = (~same).double() / (~same).sum(1, keepdim=True)
    assert (frequency - expected).abs().max() < 0.04  # 3000 draws: standard error <= 0.009


def test_distinct_ids_give_todays_losses_and_draws():
    g = torch.Generator().manual_seed(0)
    image, audio = torch.randn(5, 6, 2, 2, generator=g).double(), torch.randn(5, 6, 8, generator=g).double()
    nframes = torch.randint(1, 9, (5,), generator=g)
    ids = torch.tensor([10, 3, 7, 1, 4])
    a_gen, b_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sampled_margin_rank_loss(image, audio, nframes, "MISA", generator=a_gen)
    b = sampled_margin_rank_loss(image, audio, nframes, "MISA", generator=b_gen, image_ids=ids)
    assert torch.equal(a, b) and torch.equal(a_gen.get_state(), b_gen.get_state())  # same draws, no extra ones
    S = similarity_matrix(image, audio, nframes, "MISA")
    assert torch.equal(triplet_semihard(S, image_ids=ids), triplet_semihard(S))
    assert torch.equal(info_nce(S, 10.0, ids), info_nce(S, 10.0))
    assert torch.equal(all_negatives_triplet(S, 0.5, ids), all_negatives_triplet(S, 0.5))
    for module in (SampledMarginRankLoss(), ResDAVEnetTripletLoss(), InfoNCELoss(), AllNegativesTripletLoss()):
        torch.manual_seed(2)
        plain = module(image, audio, nframes, "MISA")
        torch.manual_seed(2)
        assert torch.equal(module(image, audio, nframes, "MISA", image_ids=ids), plain), type(module).__name__


def loop_masked_references(S: torch.Tensor, ids: list[int], margin: float, scale: float):
    """Loop references with same-image pairs left out: semi-hard (strict and official), InfoNCE, all-negatives."""
    B = S.shape[0]
    semi_strict, semi_official, nce_rows, nce_cols, hinge_i, hinge_c = [], [], [], [], [], []
    for i in range(B):
        others = [j for j in range(B) if ids[j] != ids[i]]
        below = [S[i, j] for j in others if S[i, j] < S[i, i]]
        semi_strict.append(F.relu(max(below) - S[i, i] + margin) if below else torch.tensor(0.0).double())
        semi_official.append(F.relu(max([0.0] + [float(v) for v in below]) - S[i, i] + margin))
        row = torch.stack([S[i, i]] + [S[i, j] for j in others]) * scale
        col = torch.stack([S[i, i]] + [S[j, i] for j in others]) * scale
        nce_rows.append(-torch.log_softmax(row, 0)[0])
        nce_cols.append(-torch.log_softmax(col, 0)[0])
        hinge_i += [F.relu(S[i, j] - S[i, i] + margin) for j in others]
        hinge_c += [F.relu(S[j, i] - S[i, i] + margin) for j in others]
    mean = lambda xs: torch.stack([torch.as_tensor(x).double() for x in xs]).mean()
    return {"strict": mean(semi_strict), "official": mean(semi_official),
            "info_nce": 0.5 * (mean(nce_rows) + mean(nce_cols)), "all_negatives": mean(hinge_i) + mean(hinge_c)}


@pytest.mark.parametrize("seed", range(3))
def test_masked_losses_match_loops(seed):
    g = torch.Generator().manual_seed(seed)
    ids = [0, 1, 0, 2, 1, 1, 3]
    S = torch.randn(7, 7, generator=g, dtype=torch.float64)
    ref = loop_masked_references(S, ids, margin=0.5, scale=3.0)
    assert triplet_semihard(S, 0.5, "strict", ids).item() == pytest.approx(ref["strict"].item(), abs=1e-12)
    assert triplet_semihard(S, 0.5, "official", ids).item() == pytest.approx(ref["official"].item(), abs=1e-12)
    assert info_nce(S, 3.0, ids).item() == pytest.approx(ref["info_nce"].item(), abs=1e-12)
    assert all_negatives_triplet(S, 0.5, ids).item() == pytest.approx(ref["all_negatives"].item(), abs=1e-12)


def test_a_batch_of_one_image_has_no_negatives_and_a_zero_loss():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 6, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    audio = torch.randn(3, 6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([4, 4, 4])
    for module in (SampledMarginRankLoss(), ResDAVEnetTripletLoss(), InfoNCELoss(), AllNegativesTripletLoss()):
        loss = module(image, audio, None, "MISA", image_ids=ids)
        assert loss.item() == 0.0, type(module).__name__
        grads = torch.autograd.grad(loss, (image, audio), allow_unused=True)
        assert all(gr is None or not gr.any() for gr in grads)


def test_spoken_search_ranks_follow_the_metric():
    from lightning_modules.search import SpokenSearchWriter

    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    base = torch.randn(3, 4, generator=g).round()  # ties
    audio = torch.randn(7, 4, generator=g).round()
    first, rows = first_of_each(ids[:4])  # two predict batches, images de-duplicated in each
    first2, rows2 = first_of_each(ids[4:])
    preds = [{"image_out": base[ids[:4]][first], "image_rows": rows, "audio_out": audio[:4], "nframes": None,
              "index": torch.arange(4), "image_id": ids[:4]},
             {"image_out": base[ids[4:]][first2], "image_rows": rows2, "audio_out": audio[4:], "nframes": None,
              "index": torch.arange(4, 7), "image_id": ids[4:]}]
    result = SpokenSearchWriter(top_k=2, direction="both")._retrieval(preds, None, "dot")
    S = base @ audio.t()
    expected_a2i = [torch.sort(S[:, j], descending=True, stable=True).indices.tolist().index(int(ids[j])) + 1
                    for j in range(7)]
    assert [q["own_image_rank"] for q in result["a2i"]] == expected_a2i
    expected_i2a = []
    for r in range(3):
        order = torch.sort(S[r], descending=True, stable=True).indices.tolist()
        expected_i2a.append(next(p for p, c in enumerate(order) if int(ids[c]) == r) + 1)
    assert [q["own_caption_rank"] for q in result["i2a"]] == expected_i2a
    assert len(result["i2a"]) == 3 and [q["query"]["index"] for q in result["i2a"]] == [0, 2, 5]


def test_an_image_split_across_two_batches_is_one_row():
    # captions A A A B | B, in order: B is stored by both batches and must stay one image row
    g = torch.Generator().manual_seed(4)
    ids = torch.tensor([7, 7, 7, 9, 9])
    base = torch.randn(2, 4, 3, 2, generator=g)
    image = base[(ids == 9).long()]
    audio, nframes = torch.randn(5, 4, 6, generator=g), torch.randint(1, 7, (5,), generator=g)
    for caption_block in (8192, 2):  # one similarity_matrix call, or blocks of 2 captions
        metric = RetrievalRecallMetric("MISA", caption_block=caption_block)
        for idx in (torch.arange(4), torch.tensor([4])):
            first, rows = first_of_each(ids[idx])
            metric.update(image[idx][first], audio[idx], nframes[idx], idx, ids[idx], image_rows=rows)
        got = metric.compute()
        assert metric.last_similarity.shape == (2, 5) and metric.last_caption_image.tolist() == [0, 0, 0, 1, 1]
        S = similarity_matrix(base, audio, nframes, "MISA")
        assert torch.allclose(metric.last_similarity, S, atol=1e-6)
        expected = brute_force(metric.last_similarity, metric.last_caption_image, ks=(1, 5, 10))
        assert {k: float(v) for k, v in got.items()} == pytest.approx(expected, abs=1e-12)
