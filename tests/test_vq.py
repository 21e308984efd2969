"""ResDAVEnet-VQ: the VQ layer against loop references written from the official formulas, temporal jitter, the
padding-invariant ResDAVEnet forward, discrete units, and the EMA codebooks under 2-process DDP (gloo)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_cli import _latest, _run, _tiny_args
from torch import nn
from vq_helpers import ddp_worker, randomise_batchnorm, tiny_net, train_steps, vq_net

from datamodules import PlacesAudioDataset
from lightning_modules.nets import TemporalJitter, VectorQuantizerEMA
from lightning_modules.resdavenet import ResDAVEnet, ResDAVEnetVQ
from lightning_modules.unit_writer import UnitWriter


# ---- loop references of the official VectorQuantizerEMA -----------------------------------------------------------
def loop_codes(x: torch.Tensor, codebook: torch.Tensor) -> list[int]:
    """Nearest code of every frame, first index on ties (a strict < keeps the first minimum)."""
    codes = []
    for frame in x.double():
        best, best_d = 0, math.inf
        for k, code in enumerate(codebook.double()):
            d = float(((frame - code) ** 2).sum())
            if d < best_d:
                best, best_d = k, d
        codes.append(best)
    return codes


def loop_ema(count, ema_sum, x, codes, counted, decay=0.99, eps=1e-8):
    """One official ema_update on the counted frames: returns (cluster sizes, EMA sums, codebook)."""
    K = len(count)
    counts = [0.0] * K
    sums = [torch.zeros(x.shape[1], dtype=torch.float64) for _ in range(K)]
    for frame, code, keep in zip(x.double(), codes, counted):
        if keep:
            counts[code] += 1
            sums[code] = sums[code] + frame
    size = [decay * float(count[k]) + (1 - decay) * counts[k] for k in range(K)]
    n = sum(size)
    size = [(s + eps) / (n + K * eps) * n for s in size]
    new_sum = [decay * ema_sum[k].double() + (1 - decay) * sums[k] for k in range(K)]
    codebook = torch.stack([new_sum[k] / size[k] for k in range(K)])
    return torch.tensor(size), torch.stack(new_sum), codebook


def test_vq_codes_gradients_loss_and_one_ema_update_equal_loops():
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(6, 3, commitment_cost=0.7, init_ema_mass=2.0).train()
    vq.codebook[4] = vq.codebook[1]  # an exact tie: the first index wins
    vq.ema_sum[4] = vq.ema_sum[1]
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    x = torch.randn(20, 3)
    x[7] = before["codebook"][1]  # sits on the tied codes
    counted = torch.rand(20) > 0.3
    x_in = x.clone().requires_grad_(True)
    out = vq(x_in, counted)

    codes = loop_codes(x, before["codebook"])
    assert out.codes.tolist() == codes and codes[7] == 1
    # commitment loss: cost x mean over counted frames and channels of (code - x)^2
    sq = [float(((before["codebook"][c].double() - f.double()) ** 2).sum()) for f, c, k in zip(x, codes, counted) if k]
    assert out.loss.item() == pytest.approx(0.7 * sum(sq) / (len(sq) * 3), rel=1e-6)
    # straight-through: the value is the code (up to x + (e - x) rounding), the input's gradient the identity
    torch.testing.assert_close(out.quantized, before["codebook"][codes])
    w = torch.randn(20, 3)
    (out.quantized * w).sum().backward()
    torch.testing.assert_close(x_in.grad, w)
    assert not any(b.requires_grad for b in vq.buffers()) and list(vq.parameters()) == []
    x_in.grad = None
    out.loss.backward()  # the commitment loss reaches the counted inputs only, the codebook never
    expected = torch.stack([
        0.7 * 2 * (f - before["codebook"][c]) / (counted.sum() * 3) if k else torch.zeros(3)
        for f, c, k in zip(x, codes, counted)
    ])
    torch.testing.assert_close(x_in.grad, expected)
    # one EMA update, from the codes chosen with the old codebook
    size, ema_sum, codebook = loop_ema(before["ema_count"], before["ema_sum"], x, codes, counted.tolist())
    torch.testing.assert_close(vq.ema_count, size.float())
    torch.testing.assert_close(vq.ema_sum, ema_sum.float())
    torch.testing.assert_close(vq.codebook, codebook.float())
    counts = torch.bincount(torch.tensor(codes)[counted], minlength=6).float()
    torch.testing.assert_close(out.counts, counts)
    probs = counts / counts.sum()
    assert out.perplexity.item() == pytest.approx(math.exp(-sum(p * math.log(p + 1e-10) for p in probs.tolist())))
    assert out.codes_used.item() == pytest.approx((counts > 0).float().mean().item())


def test_vq_eval_gives_codes_and_leaves_the_codebook_alone():
    torch.manual_seed(1)
    vq = VectorQuantizerEMA(8, 4, nonneg_init=True).eval()
    assert (vq.codebook >= 0).all() and torch.equal(vq.ema_sum, vq.codebook) and (vq.ema_count == 1).all()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    x = torch.randn(30, 4)
    out = vq(x)
    assert torch.equal(out.quantized, vq.codebook[out.codes])  # exactly the code vectors
    assert out.codes.tolist() == loop_codes(x, vq.codebook)
    assert all(torch.equal(v, before[k]) for k, v in vq.state_dict().items())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # distances stay float32 under autocast
        assert torch.equal(vq(x).codes, out.codes)


def test_vq_uncounted_frames_change_neither_loss_nor_ema():
    torch.manual_seed(2)
    x = torch.randn(12, 5)
    counted = torch.tensor([True] * 7 + [False] * 5)
    garbage = x.clone()
    garbage[7:] = torch.tensor([1e6, -1e6, float("inf"), 3.0, 0.0])
    results = []
    for frames, mask in ((x[:7], None), (x, counted), (garbage, counted)):
        torch.manual_seed(3)
        vq = VectorQuantizerEMA(4, 5).train()
        out = vq(frames, mask)
        results.append((out.loss, out.counts, vq.codebook.clone(), vq.ema_count.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b)
    vq = VectorQuantizerEMA(4, 5).train()
    out = vq(x, torch.zeros(12, dtype=torch.bool))  # nothing counted: a zero loss, the EMA only decays
    assert out.loss.item() == 0.0 and out.counts.sum().item() == 0 and torch.isfinite(vq.codebook).all()


# ---- temporal jitter -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("centered", [False, True])
def test_jitter_offsets_follow_the_official_distribution(centered):
    torch.manual_seed(4)
    jitter = TemporalJitter(0.12, centered=centered).train()
    T = 40_000
    x = torch.arange(T, dtype=torch.float64).view(1, 1, 1, T)
    offsets = (jitter(x) - x).flatten()[2:-2].long()  # the clamped ends aside
    values = [-1, 0, 1] if centered else [0, 1, 2]
    assert sorted(offsets.unique().tolist()) == values
    sigma = math.sqrt(0.12 * 0.88 / len(offsets))
    for value, p in zip(values, (0.12, 0.76, 0.12)):
        assert abs((offsets == value).double().mean().item() - p) < 5 * sigma
    # one offset per frame, shared by every item and channel
    y = jitter(torch.arange(50.0).repeat(3, 2, 1, 1))
    assert all(torch.equal(y[b, c], y[0, 0]) for b in range(3) for c in range(2))
    assert torch.equal(jitter.eval()(x), x)


def test_jitter_reads_no_padding_with_lengths():
    torch.manual_seed(5)
    jitter = TemporalJitter(0.5).train()
    x = torch.arange(20.0).repeat(3, 1, 1, 1)  # [3, 1, 1, 20]
    lengths = torch.tensor([20, 9, 1])
    for _ in range(20):
        y = jitter(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            assert y[b, ..., :n].max() <= n - 1
    with pytest.raises(ValueError, match="jitter probability"):
        TemporalJitter(0.6)


# ---- the net ---------------------------------------------------------------------------------------------------
def test_vq_layers_off_is_the_plain_net_and_on_keeps_its_weights():
    plain = tiny_net(jitter=0.0)
    assert not any("quant" in k for k in plain.state_dict())
    vq = tiny_net(vq_layers=[3, 2], codebook_size=[7, 9, 11, 5, 3])
    assert vq.vq_layers == (2, 3)
    shared = plain.state_dict()
    own = vq.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in shared.items())  # the codebooks draw their numbers last
    assert own["quant2.codebook"].shape == (9, 8) and own["quant3.ema_sum"].shape == (11, 8)
    assert sum(p.numel() for p in vq.parameters()) == sum(p.numel() for p in plain.parameters())
    with pytest.raises(ValueError, match=r"positions in 1\.\.5"):
        tiny_net(vq_layers=[6])
    with pytest.raises(ValueError, match="one value per VQ position"):
        tiny_net(vq_layers=[2], codebook_size=[8, 8])


def test_net_records_vq_terms_in_training_only_and_jitters_in_training_only():
    net = tiny_net(vq_layers=[2, 3], codebook_size=16).train()
    x, nframes = torch.randn(2, 40, 64), torch.tensor([64, 40])
    net(x, nframes)
    assert sorted(net.aux_losses) == ["vq2_commitment", "vq3_commitment"]
    assert sorted(net.aux_metrics) == ["vq2_codes_used", "vq2_perplexity", "vq3_codes_used", "vq3_perplexity"]
    assert 1.0 <= net.aux_metrics["vq3_perplexity"] <= 16 and net.aux_losses["vq2_commitment"].requires_grad
    net.eval()
    net(x, nframes)
    assert net.aux_losses == {} and net.aux_metrics == {}
    # jitter: two training forwards differ (BatchNorm alone is deterministic), eval forwards never jitter
    for p, differ in ((0.12, True), (0.0, False)):
        net = randomise_batchnorm(tiny_net(jitter=p)).train()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        a, b = net(x, nframes), net(x, nframes)
        assert (not torch.equal(a, b)) == differ
        net.eval()
        assert torch.equal(net(x, nframes), net(x, nframes))


@pytest.mark.parametrize("vq_layers", [(), (2, 3)])
def test_masked_padding_gives_each_caption_its_own_output(vq_layers):
    net = randomise_batchnorm(tiny_net(vq_layers=vq_layers, codebook_size=32)).eval()
    torch.manual_seed(6)
    lengths = [57, 23, 40, 9]
    captions = [torch.randn(40, n) for n in lengths]
    nframes = torch.tensor(lengths)

    def batch(T, pad):
        return torch.stack([torch.cat([c, torch.full((40, T - c.shape[1]), pad)], 1) for c in captions])

    out_nframes = net.output_frames(nframes).tolist()
    with torch.no_grad():
        alone = [net(c[None])[0] for c in captions]
        for T, pad in ((57, 0.0), (96, -80.0)):  # padded to the longest, and longer with another pad value
            out = net(batch(T, pad), nframes)
            assert out.shape[-1] == math.ceil(T / 16)
            for b, n in enumerate(out_nframes):
                assert alone[b].shape[-1] == n
                torch.testing.assert_close(out[b, :, :n], alone[b], atol=1e-5, rtol=1e-5)
                assert (out[b, :, n:] == 0).all()
            for k in vq_layers:
                codes, valid = net.encode_units(batch(T, pad), nframes, layer=k)
                for b, n in enumerate(valid.tolist()):
                    assert torch.equal(codes[b, :n], net.encode_units(captions[b][None], layer=k)[0][0])
        # mask_padding=False is the official function: the padding reaches the last valid frames
        net.mask_padding = False
        out = net(batch(96, -80.0), nframes)
        assert not torch.allclose(out[1, :, : out_nframes[1]], alone[1], atol=1e-3)


def test_vq_counts_the_official_floor_of_frames():
    # quant3 sits at 1/4 of the input rate: a 41-frame caption has ceil(41/4) = 11 frames there, the official
    # VQ mask counts 41 // 4 = 10 of them; the padded batch counts exactly what the caption alone counts.
    net = randomise_batchnorm(tiny_net(vq_layers=[3], codebook_size=8, jitter=0.0)).train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(7)
    caption = torch.randn(1, 40, 41)
    padded = torch.cat([caption, torch.randn(1, 40, 23) * 50], -1)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net(caption, torch.tensor([41]))
    alone = (net.aux_losses["vq3_commitment"].detach(), net.quant3.codebook.clone())
    counts_alone = net.aux_metrics["vq3_codes_used"]
    net.load_state_dict(state)
    net(padded, torch.tensor([41]))
    torch.testing.assert_close(net.aux_losses["vq3_commitment"].detach(), alone[0])
    torch.testing.assert_close(net.quant3.codebook, alone[1])
    assert net.aux_metrics["vq3_codes_used"] == counts_alone
    mass = net.quant3.ema_count.sum() - 0.99 * state["quant3.ema_count"].sum()
    assert mass.item() == pytest.approx(0.01 * 10, abs=1e-4)  # 10 counted frames, not 11


def test_encode_units_is_eval_and_restores_the_mode():
    net = randomise_batchnorm(tiny_net(vq_layers=[2], codebook_size=16)).train()
    net.layer1.eval()  # a mixed state survives
    before = net.quant2.codebook.clone()
    x = torch.randn(3, 40, 30)
    codes, valid = net.encode_units(x, torch.tensor([30, 17, 2]), layer=2)
    assert codes.shape == (3, 15) and codes.dtype == torch.int64 and valid.tolist() == [15, 9, 1]
    assert net.training and not net.layer1.training and net.layer2.training
    assert torch.equal(net.quant2.codebook, before)  # no EMA update
    assert torch.equal(net.codebook(2), before) and net.codebook(2).data_ptr() != net.quant2.codebook.data_ptr()
    assert net.encode_units(x, layer=2)[1].tolist() == [15, 15, 15]
    with pytest.raises(ValueError, match=r"VQ position 3 is off in this model \(vq_layers=\[2\]\)"):
        net.encode_units(x, layer=3)


# ---- DDP: codebooks identical on every rank and equal to one process on the union batch ----------------------------
@pytest.mark.slow
def test_ddp_codebooks_agree_and_equal_one_process_on_the_union_batch(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    net = vq_net()
    initial = net.quant3.codebook.clone()
    train_steps(net, net, slice(0, 4))
    single = {k: v for k, v in net.state_dict().items() if k.startswith("quant")}
    assert sorted(ranks[0]) == sorted(single) and len(single) == 6
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # identical on both ranks
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)  # = 1 process, union batch
    assert not torch.allclose(single["quant3.codebook"], initial)  # the codebook did move


# ---- the incremental schedule through the command line -----------------------------------------------------------
@pytest.mark.slow
def test_vq_schedule_seeded_from_a_plain_run_fits_tests_and_dumps_units(spokenscenes, tmp_path):
    """{} -> {3}: configs/resdavenet_vq.yaml seeded from a {} checkpoint fits, tests and predicts units."""
    configs = Path(__file__).parent.parent / "configs"
    short = ["--data.target_length=null"]  # pad to the longest caption, not to the official 2048 frames: 8x faster
    # The {} run's checkpoint (test_cli's round trip fits configs/resdavenet.yaml itself): its tiny net's weights.
    torch.manual_seed(9)
    plain = ResDAVEnet(layer_widths=[8, 8, 16, 16, 16], image_arch="resnet18", image_width_mult=0.125)
    seed_state = plain.state_dict()
    seed = tmp_path / "plain.ckpt"
    torch.save({"state_dict": seed_state, "hyper_parameters": dict(plain.hparams)}, seed)

    vq_config = configs / "resdavenet_vq.yaml"
    extra = [*short, f"--model.seed_ckpt={seed}", "--model.codebook_size=32", "--trainer.log_every_n_steps=1"]
    fit = _run("fit", _tiny_args(vq_config, spokenscenes, tmp_path / "vq", extra))
    report = fit.model.seed_report
    fresh = ["audio_net.quant3.codebook", "audio_net.quant3.ema_count", "audio_net.quant3.ema_sum"]
    assert report["fresh"] == fresh and report["ignored"] == []
    assert report["loaded"] == sorted(seed_state) and len(report["loaded"]) == len(fit.model.state_dict()) - 3
    assert type(fit.model) is ResDAVEnetVQ and fit.model.audio_net.vq_layers == (3,)
    assert fit.model.audio_net.jitter.p == 0.12 and fit.model.audio_net.mask_padding
    assert not torch.equal(fit.model.audio_net.quant3.codebook, VectorQuantizerEMA(32, 16).codebook)
    # what was loaded: the seed's weights (before the 3 training steps moved them a little)
    moved = fit.model.image_net.embedder.weight.detach().cpu() - seed_state["image_net.embedder.weight"]
    assert moved.abs().max() < 0.05 * seed_state["image_net.embedder.weight"].abs().max()
    # per-layer VQ terms reach the logger at every step
    rows = list(csv.DictReader(open(next((tmp_path / "vq").rglob("metrics.csv")))))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/vq3_commitment", "train/vq3_perplexity", "train/vq3_codes_used"} <= logged
    perplexity = [float(r["train/vq3_perplexity"]) for r in rows if r.get("train/vq3_perplexity")]
    assert len(perplexity) == 3 and all(1.0 <= p <= 32.0 for p in perplexity)

    best = _latest(fit.trainer)
    tested = _run("test", _tiny_args(vq_config, spokenscenes, tmp_path / "test", [*short, "--ckpt_path", best]))
    assert 0.0 <= float(tested.trainer.callback_metrics["test/mean_R@10"]) <= 1.0
    assert torch.equal(tested.model.audio_net.quant3.codebook.cpu(),
                       torch.load(best, weights_only=False)["state_dict"]["audio_net.quant3.codebook"])

    out = tmp_path / "units.json"
    manifest = spokenscenes / "test.json"
    _run("predict", _tiny_args(vq_config, spokenscenes, tmp_path / "predict", [
        *short, "--ckpt_path", best, f"--data.predict_manifest={manifest}", f"--units.output={out}", "--units.layer=3",
        f"--search.output={tmp_path / 'search.json'}"]))
    units = json.loads(out.read_text())
    dataset = PlacesAudioDataset(manifest, target_length=None)
    uttids = [dataset.describe(i)["uttid"] for i in range(len(dataset))]
    assert list(units) == uttids
    for uttid, n in zip(uttids, dataset.lengths().tolist()):
        codes, times = units[uttid]["codes"], units[uttid]["times"]
        assert len(codes) == len(times) == math.ceil(n / 4)
        assert all(isinstance(c, int) and 0 <= c < 32 for c in codes)
        assert times[:2] == [0.02, 0.06] and times[-1] == pytest.approx(0.04 * len(codes) - 0.02)
    with pytest.raises(ValueError, match=r"units\.layer=2: the model \(ResDAVEnetVQ\) has VQ layers \[3\]"):
        UnitWriter(output=str(out), layer=2).on_predict_start(tested.trainer, tested.model)
    with pytest.raises(ValueError, match=r"has VQ layers \[\]"):
        UnitWriter(output=str(out)).on_predict_start(tested.trainer, plain)
    with pytest.raises(ValueError, match=r"\(Module\) has no VQ layers"):
        UnitWriter(output=str(out)).on_predict_start(tested.trainer, torch.nn.Module())
