"""benchmarks/: the loop baselines compute what the library computes (so the benchmark's equality checks mean
something), the harness's checks and FLOP count are right, and ``python -m benchmarks`` runs end to end."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package
from benchmarks import baselines, harness, training  # noqa: E402
from benchmarks.__main__ import main, selected_rows  # noqa: E402
from lightning_modules.core.losses import ResDAVEnetTripletLoss, sampled_margin_rank_loss  # noqa: E402
from lightning_modules.core.retrieval_metrics import retrieval_metrics  # noqa: E402
from lightning_modules.core.similarity import paired_similarity, similarity_matrix  # noqa: E402

KINDS = ("SISA", "MISA", "SIMA")


def maps(n=5, D=6, H=3, W=2, T=9, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, D, H, W, generator=g, dtype=dtype)
    audio = torch.randn(n, D, T, generator=g, dtype=dtype)
    nframes = torch.randint(1, T + 1, (n,), generator=g)
    nframes[0], nframes[-1] = T, 1
    return image, audio, nframes


def grads(loss_fn, image, audio):
    image, audio = image.detach().requires_grad_(), audio.detach().requires_grad_()
    loss = loss_fn(image, audio)
    loss.backward()
    return loss.detach(), image.grad, audio.grad


# ---- similarity and losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_matchmap_loop_equals_similarity_matrix(kind):
    image, audio, nframes = maps()
    torch.testing.assert_close(baselines.matchmap_similarity_matrix(image, audio, nframes, kind),
                               similarity_matrix(image, audio, nframes, kind), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_davenet_loop_loss_equals_library_loss_and_gradients(kind):
    image, audio, nframes = maps(n=6, seed=1)
    image_imp, audio_imp = baselines.davenet_impostors(6, seed=11)
    assert all(i != j for j, i in enumerate(image_imp)) and all(a != j for j, a in enumerate(audio_imp))
    ours = grads(lambda i, a: sampled_margin_rank_loss(
        i, a, nframes, kind, margin=1.0, generator=torch.Generator().manual_seed(11)), image, audio)
    loop = grads(lambda i, a: baselines.davenet_sampled_margin_loss(i, a, nframes, image_imp, audio_imp, kind),
                 image, audio)
    for got, expected in zip(ours, loop):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # other draws give another loss: the equality above is not a coincidence of the inputs
    other = baselines.davenet_sampled_margin_loss(image, audio, nframes, *baselines.davenet_impostors(6, 12), kind)
    assert not torch.isclose(other, ours[0])


def test_pooldot_loop_equals_sisa():
    image, audio, nframes = maps(seed=2)
    torch.testing.assert_close(baselines.pooldot_similarity_matrix(image, audio, nframes),
                               similarity_matrix(image, audio, nframes, "SISA"), rtol=1e-12, atol=1e-12)


def test_resdavenet_loop_loss_equals_library_loss_and_gradients():
    image, audio, nframes = maps(n=7, H=2, W=2, seed=3)
    image, audio = image * 3, audio * 3  # some hinges active, some not
    rows, cols = baselines.resdavenet_impostors(7, seed=5)
    assert all(0 <= r <= 5 for r in rows + cols)  # raw draws in [0, B-2], as the official code draws them

    def ours_fn(i, a):
        torch.manual_seed(5)
        return ResDAVEnetTripletLoss(margin=1.0, semihard_mask="official")(i, a, nframes, "SISA")

    ours = grads(ours_fn, image, audio)
    loop = grads(lambda i, a: baselines.resdavenet_loss(i, a, nframes, rows, cols), image, audio)
    for got, expected in zip(ours, loop):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_sampled_triplet_fix_up_never_picks_the_positive():
    S = torch.eye(4) * 10  # a positive as impostor would give relu(10 - 10 + 1) = 1 instead of relu(0 - 10 + 1) = 0
    for raw in ([0, 0, 0, 0], [2, 2, 2, 2], [0, 1, 2, 2]):
        assert baselines.sampled_triplet_loss(S, raw).item() == 0.0


# ---- retrieval ----------------------------------------------------------------------------------------------
def test_calc_recalls_equals_retrieval_metrics():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(50, 50, generator=g) + 2 * torch.eye(50)
    S[:, 3] += 5  # caption 3 scores high with every image: the two directions differ
    ours, loop = retrieval_metrics(S), baselines.calc_recalls(S)
    for k in (1, 5, 10):
        assert ours[f"a2i_R@{k}"] == loop[f"I_r{k}"]
        assert ours[f"i2a_R@{k}"] == loop[f"A_r{k}"]
    assert ours["a2i_R@1"] != ours["i2a_R@1"]


def stable_rank(scores, target):
    return torch.sort(scores, descending=True, stable=True).indices.tolist().index(target) + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_retrieval_metrics_fast_count_is_exact_with_ties_and_infinities(dtype):
    """The sign-count path (finite scores) and the comparison path (inf present) against a stable sort."""
    g = torch.Generator().manual_seed(1)
    for with_inf in (False, True):
        S = torch.randint(-3, 4, (12, 12), generator=g).to(dtype)  # many ties, diagonal ones included
        tiny = 1e-44 if dtype != torch.bfloat16 else 0.5  # float32 subnormals: sign(a - b) must stay exact
        S[2, 2], S[2, 5], S[7, 2], S[5, 5] = tiny, 2 * tiny, tiny, -tiny
        if with_inf:
            S[0, 0] = S[0, 1] = float("inf")
            S[4, 0] = S[3, 3] = float("-inf")
        S32 = S.float()
        a2i = [stable_rank(S32[:, j], j) for j in range(12)]
        i2a = [stable_rank(S32[i], i) for i in range(12)]
        got = retrieval_metrics(S, ks=(1, 5))
        assert got["a2i_mean_rank"] == pytest.approx(sum(a2i) / 12)
        assert got["i2a_mean_rank"] == pytest.approx(sum(i2a) / 12)
        assert got["a2i_R@1"] == pytest.approx(sum(r <= 1 for r in a2i) / 12)
        assert got["i2a_R@5"] == pytest.approx(sum(r <= 5 for r in i2a) / 12)


# ---- the hand-written backward passes of similarity.py --------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_paired_gradients_equal_the_matrix_diagonal_gradients(kind):
    image, audio, nframes = maps(n=6, seed=6)
    weights = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    paired = grads(lambda i, a: (paired_similarity(i, a, nframes, kind) * weights).sum(), image, audio)
    matrix = grads(lambda i, a: (similarity_matrix(i, a, nframes, kind).diagonal() * weights).sum(), image, audio)
    for got, expected in zip(paired, matrix):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ("MISA", "SIMA"))
def test_paired_similarity_under_autocast(kind):
    image, audio, nframes = maps(n=5, D=16, seed=7, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        paired = paired_similarity(image, audio, nframes, kind)
        diagonal = similarity_matrix(image, audio, nframes, kind).diagonal()
    assert paired.dtype == diagonal.dtype == torch.bfloat16
    torch.testing.assert_close(paired, diagonal, rtol=0.02, atol=0.02)


# ---- librosa loading path -----------------------------------------------------------------------------------
def test_librosa_path_matches_our_features(tmp_path):
    pytest.importorskip("librosa")
    from benchmarks.data import write_captions
    from datamodules.features import pad_or_truncate, wav_log_mel
    from datamodules.manifest import load_manifest

    manifest = load_manifest(write_captions(str(tmp_path), 2, seconds=1.5))
    for path in manifest.wav_paths():
        theirs, n = baselines.librosa_log_mel(path, target_length=200)
        ours, m = pad_or_truncate(wav_log_mel(path), 200)
        assert n == m == 151
        assert theirs.shape == (40, 200)
        assert np.abs(ours.numpy() - theirs).max() < 0.01
        assert (theirs[:, n:] == 0).all()


# ---- harness, FLOPs, the command --------------------------------------------------------------------------------
def test_check_catches_a_difference_in_any_tensor():
    a = [torch.ones(3), torch.full((2,), 1e-3)]
    assert harness.check(a, [x.clone() for x in a], rtol=1e-6)["passed"]
    # a relative error of 10% in the small tensor must fail even though the large one sets a larger scale
    result = harness.check(a, [torch.ones(3), torch.full((2,), 1.1e-3)], rtol=1e-3)
    assert not result["passed"] and result["max_abs_diff"] == pytest.approx(1e-4)


def test_model_flops_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_modules import DAVEnet

    module = DAVEnet(embedding_dim=16, audio_width_mult=0.125, image_width_mult=0.0625)
    image, audio, nframes = training.training_batch(2, 64, 32, torch.device("cpu"))
    counted = training.model_flops(module, image, audio, nframes)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(image, audio, nframes)
    assert counted["forward"] == counter.get_total_flops()
    assert counted["train"] == 3 * counted["forward"]  # every layer trains
    # conv2 of the audio net by hand: 2 x out elements x (in channels x kernel)
    conv2 = module.audio_net.conv2
    assert conv2.out_channels * 64 * conv2.in_channels * 11 * 2 * 2 < counted["forward"]


def test_row_selection():
    from benchmarks.__main__ import TRAIN_MODELS

    assert TRAIN_MODELS == tuple(training.MODELS)  # the command lists them without importing Lightning
    assert selected_rows("sim,recall") == ["sim_MISA", "sim_SIMA", "sim_SISA", "recall"]
    assert selected_rows("loss_davenet,loss") == ["loss_davenet", "loss_resdavenet"]
    with pytest.raises(SystemExit, match="unknown row"):
        selected_rows("sim,nope")


def test_command_writes_results(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--quick", "--rows", "recall", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["row"] == "recall" and row["check"]["passed"]
    assert row["ratio_min"] > 1 and math.isfinite(row["ours"]["median_s"])
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cores"] >= 1
    assert "| recall |" in capsys.readouterr().out


def test_full_validation_benchmark_runs_the_full_size_model_and_writes_json(tmp_path):
    from benchmarks import full_validation

    out = tmp_path / "full_validation.json"
    result = full_validation.main(["--pairs", "7", "--frames", "64", "--image-size", "32", "--batch-size", "3",
                                   "--json", str(out)])
    assert json.loads(out.read_text())["pairs"] == 7
    assert result["wall_s"] > 0 and result["peak_rss_gb"] > 0
    assert 0.0 <= result["val_mean_R@10"] <= 1.0
