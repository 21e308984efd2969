"""``core.losses``: expectations of the sampled losses, loop references of the deterministic ones."""

import math

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
from lightning_modules.core.similarity import similarity_matrix


def frame_inputs(B=5, D=6, R=4, T=8, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, D, 2, R // 2, generator=g, dtype=torch.float64) * 0.5
    audio = torch.randn(B, D, T, generator=g, dtype=torch.float64) * 0.5
    nframes = torch.randint(1, T + 1, (B,), generator=g)
    return image.requires_grad_(requires_grad), audio.requires_grad_(requires_grad), nframes


def expected_sampled_margin_loss(S, margin):
    """E[loss] with impostors uniform over the other B-1 items: average each hinge over all of them."""
    B = S.shape[0]
    total = 0.0
    for j in range(B):
        for k in range(B):
            if k != j:
                total += F.relu(margin + S[k, j] - S[j, j]) / (B - 1)  # impostor image k for caption j
                total += F.relu(margin + S[j, k] - S[j, j]) / (B - 1)  # impostor caption k for image j
    return total / B


@pytest.mark.parametrize("kind", ["MISA", "SIMA", "SISA"])
def test_sampled_margin_loss_mean_matches_its_expectation(kind):
    image, audio, nframes = frame_inputs(B=4)
    S = similarity_matrix(image, audio, nframes, kind)
    expected = expected_sampled_margin_loss(S, margin=1.0)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sampled_margin_rank_loss(image, audio, nframes, kind, 1.0, generator=g) for _ in range(3000)])
    stderr = draws.std() / math.sqrt(draws.numel())
    assert draws.std() > 0  # impostors really vary
    assert abs(draws.mean() - expected) < 4 * stderr + 1e-12


def test_sampled_margin_loss_never_draws_the_anchor():
    # S = 1 - I and margin 0: every real impostor's hinge is relu(1 - 0) = 1, the anchor's own would be 0,
    # so the loss is exactly 2 on every draw unless some anchor is drawn as its own impostor.
    B = 6
    image = torch.eye(B, dtype=torch.float64) * -1.0 + 1.0  # S = image @ audio.T = 1 - I
    audio = torch.eye(B, dtype=torch.float64)
    S = similarity_matrix(image, audio, None, "dot")
    assert torch.equal(S, 1 - torch.eye(B, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        # every impostor: relu(0 + 1 - 0) = 1 per hinge, so exactly 2 unless the anchor was drawn
        assert sampled_margin_rank_loss(image, audio, None, "dot", margin=0.0, generator=g).item() == 2.0


def test_sampled_margin_loss_is_reproducible_and_differentiable():
    image, audio, nframes = frame_inputs(requires_grad=True)
    a = sampled_margin_rank_loss(image, audio, nframes, "MISA", generator=torch.Generator().manual_seed(7))
    b = sampled_margin_rank_loss(image, audio, nframes, "MISA", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    torch.manual_seed(3)
    c = SampledMarginRankLoss(margin=1.0)(image, audio, nframes, "MISA")
    torch.manual_seed(3)
    d = SampledMarginRankLoss(margin=1.0)(image, audio, nframes, "MISA")
    assert torch.equal(c, d)
    gi, ga = torch.autograd.grad(a, (image, audio))
    for grad in (gi, ga):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sampled_margin_loss_computes_only_3b_similarities(monkeypatch):
    pairs = []
    real = losses.paired_similarity

    def counting(image, audio, nframes=None, kind="MISA"):
        pairs.append(image.shape[0])
        return real(image, audio, nframes, kind)

    def forbidden(*args, **kwargs):
        raise AssertionError("the sampled loss must not build the B x B matrix")

    monkeypatch.setattr(losses, "paired_similarity", counting)
    monkeypatch.setattr(losses, "similarity_matrix", forbidden)
    image, audio, nframes = frame_inputs(B=7)
    SampledMarginRankLoss()(image, audio, nframes, "MISA")
    assert sum(pairs) == 3 * 7


def test_sampled_losses_need_two_items():
    image, audio, nframes = frame_inputs(B=1)
    with pytest.raises(ValueError, match="at least 2"):
        sampled_margin_rank_loss(image, audio, nframes)
    with pytest.raises(ValueError, match="at least 2"):
        triplet_sampled(torch.zeros(1, 1))


def test_triplet_sampled_mean_matches_its_expectation():
    g = torch.Generator().manual_seed(2)
    S = torch.randn(5, 5, generator=g, dtype=torch.float64)
    B = 5
    expected = sum(F.relu(S[i, j] - S[i, i] + 1.0) for i in range(B) for j in range(B) if j != i) / (B * (B - 1))
    draws = torch.stack([triplet_sampled(S, 1.0, generator=g) for _ in range(4000)])
    assert abs(draws.mean() - expected) < 4 * draws.std() / math.sqrt(draws.numel())


def loop_semihard(S, margin, mask):
    total = 0.0
    for i in range(S.shape[0]):
        candidates = [S[i, j] for j in range(S.shape[1]) if S[i, j] - S[i, i] < 0]
        if mask == "official":
            # the released code: max over S * mask, so masked entries are 0
            imp = max([0.0] + [float(c) for c in candidates])
        else:
            imp = max([float(c) for c in candidates], default=float("-inf"))
        total += max(0.0, imp - float(S[i, i]) + margin)
    return total / S.shape[0]


@pytest.mark.parametrize("mask", ["official", "strict"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semihard_matches_loop(mask, seed):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.3
    S[2] -= 5.0  # an all-negative row (official and strict differ there)
    S[4, 4] = S[4].min() - 1  # a row without any valid semi-hard negative
    for matrix in (S, S.t()):
        assert triplet_semihard(matrix, 1.0, mask).item() == pytest.approx(loop_semihard(matrix, 1.0, mask), abs=1e-12)


def test_semihard_official_vs_strict_on_an_all_negative_matrix():
    # Official: the impostor is max(0, best valid negative) = 0 on an all-negative S, so each row costs
    # relu(1 - S_ii): (1.5 + 1.7) / 2 = 1.60. Strict (-inf masking): relu(b - a + 1) = 0.3 and
    # relu(c - d + 1) = 0.12, mean 0.21.
    S = torch.tensor([[-0.5, -1.2], [-1.58, -0.7]], dtype=torch.float64)
    assert triplet_semihard(S, 1.0, "official").item() == pytest.approx(1.60, abs=1e-12)
    assert triplet_semihard(S, 1.0, "strict").item() == pytest.approx(0.21, abs=1e-12)
    with pytest.raises(ValueError, match="official' or 'strict"):
        triplet_semihard(S, 1.0, "hard")


def test_resdavenet_loss_is_the_sum_of_its_four_terms():
    image, audio, nframes = frame_inputs(B=6, requires_grad=True)
    for mask in ("official", "strict"):
        torch.manual_seed(11)
        loss = ResDAVEnetTripletLoss(margin=1.0, semihard_mask=mask)(image, audio, nframes, "SISA")
        torch.manual_seed(11)
        S = similarity_matrix(image, audio, nframes, "SISA")
        expected = (triplet_sampled(S, 1.0) + triplet_sampled(S.t(), 1.0)
                    + triplet_semihard(S, 1.0, mask) + triplet_semihard(S.t(), 1.0, mask))
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)
        grads = torch.autograd.grad(loss, (image, audio))
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_info_nce_matches_loop_cross_entropy():
    g = torch.Generator().manual_seed(3)
    S = torch.randn(5, 5, generator=g, dtype=torch.float64)
    scale = 7.0
    ce_rows = -sum(torch.log_softmax(S[i] * scale, 0)[i] for i in range(5)) / 5
    ce_cols = -sum(torch.log_softmax(S[:, j] * scale, 0)[j] for j in range(5)) / 5
    assert info_nce(S, scale).item() == pytest.approx(((ce_rows + ce_cols) / 2).item(), abs=1e-12)


def test_info_nce_module_with_learnable_scale():
    image, audio, nframes = frame_inputs(B=4, requires_grad=True)
    fixed = InfoNCELoss(scale=10.0)
    learn = InfoNCELoss(scale=10.0, learnable_scale=True)
    S = similarity_matrix(image, audio, nframes, "MISA")
    torch.testing.assert_close(fixed(image, audio, nframes, "MISA"), info_nce(S, 10.0))
    loss = learn(image, audio, nframes, "MISA")
    torch.testing.assert_close(loss, info_nce(S, 10.0))
    loss.backward()
    assert learn.log_scale.grad is not None and learn.log_scale.grad != 0
    with torch.no_grad():
        learn.log_scale.fill_(math.log(1e4))
    assert float(learn.current_scale().detach()) == pytest.approx(100.0)


def test_all_negatives_triplet_matches_loop():
    g = torch.Generator().manual_seed(4)
    S = torch.randn(4, 4, generator=g, dtype=torch.float64)
    B, m = 4, 0.5
    rows = sum(F.relu(S[i, j] - S[i, i] + m) for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
    cols = sum(F.relu(S[i, j] - S[j, j] + m) for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
    assert all_negatives_triplet(S, m).item() == pytest.approx((rows + cols).item(), abs=1e-12)
    image, audio, nframes = frame_inputs(B=4)
    torch.testing.assert_close(AllNegativesTripletLoss(m)(image, audio, nframes, "SIMA"),
                               all_negatives_triplet(similarity_matrix(image, audio, nframes, "SIMA"), m))


@pytest.mark.parametrize("module", [SampledMarginRankLoss(), ResDAVEnetTripletLoss(), InfoNCELoss(),
                                    InfoNCELoss(learnable_scale=True), AllNegativesTripletLoss()])
def test_no_batch_size_dependent_state(module):
    shapes = []
    for B in (3, 5):
        image, audio, nframes = frame_inputs(B=B)
        module(image.float(), audio.float(), nframes, "MISA")
        shapes.append({k: tuple(v.shape) for k, v in module.state_dict().items()})
    assert shapes[0] == shapes[1]
    assert all(len(s) == 0 for s in shapes[0].values())  # at most scalars (the learnable log-scale)
    assert list(module.buffers()) == []
