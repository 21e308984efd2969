"""The LightningModules: forward contract, training for each paper variant, warm start, freezing, NaN guard."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from datamodules import PlacesAudioDataModule
from lightning_modules import ACL2017, NIPS2016, DAVEnet, PlaceClassifier, ResDAVEnet
from lightning_modules.base import NonFiniteLossError, load_audio_encoder
from lightning_modules.core.losses import InfoNCELoss
from lightning_modules.core.similarity import paired_similarity, similarity_matrix
from lightning_modules.nets import DAVEnetAudioNet

# Tiny versions of every paper model; the real sizes are checked in test_nets.py.
TINY = {
    "NIPS2016": lambda **kw: NIPS2016(embedding_dim=16, audio_width_mult=0.05, image_width_mult=0.02, **kw),
    "ACL2017": lambda **kw: ACL2017(embedding_dim=16, audio_width_mult=0.05, image_width_mult=0.02, **kw),
    "DAVEnet": lambda **kw: DAVEnet(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06, **kw),
    # jitter off: on 16 pairs its random frame shifts make two epochs' mean losses a coin toss (tests/test_vq.py
    # tests the jitter itself)
    "ResDAVEnet": lambda **kw: ResDAVEnet(
        layer_widths=[8, 8, 16, 16, 16], image_arch="resnet18", image_width_mult=0.125, jitter=0.0, **kw
    ),
}


class Recorder(Callback):
    """Keeps every epoch's logged metrics.

    Lightning runs callbacks' epoch-end hooks before the module's and aggregates epoch metrics after both, so
    validation values are read in ``on_validation_end`` and a training epoch's values when the next one starts.
    """

    def __init__(self):
        self.train, self.val = [], []

    def _train_metrics(self, trainer):
        self.train.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self._train_metrics(trainer)

    def on_train_end(self, trainer, pl_module):
        self._train_metrics(trainer)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


def _trainer(tmp_path, **kw) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, log_every_n_steps=1,
    )
    defaults.update(kw)
    return pl.Trainer(**defaults)


@pytest.fixture
def tiny_data(make_manifest, tmp_path):
    train = make_manifest(n=16, name="train", seed=1)
    val = make_manifest(n=7, name="val", seed=2)

    def make(**kw):
        args = dict(train_manifest=str(train), val_manifest=str(val), test_manifest=str(val), batch_size=4,
                    num_workers=0, image_size=32, image_transform="resize", target_length=None, seed=0)
        args.update(kw)
        return PlacesAudioDataModule(**args)

    return make


@pytest.mark.parametrize("name", list(TINY))
def test_forward_contract_feeds_similarity_matrix(name):
    torch.manual_seed(0)
    model = TINY[name]().eval()
    image, audio = torch.randn(3, 3, 32, 32), torch.randn(3, 40, 61)
    nframes = torch.tensor([61, 40, 23])
    image_out, audio_out, out_nframes = model(image, audio, nframes)
    if model.audio_net.pooled:
        assert out_nframes is None and audio_out.dim() == 2 and image_out.dim() == 2
    else:
        assert out_nframes.tolist() == [math.ceil(n / 16) for n in nframes.tolist()]
    S = similarity_matrix(image_out, audio_out, out_nframes, kind=model.similarity_kind)
    assert S.shape == (3, 3) and torch.isfinite(S).all()
    # the outputs are aligned pairs: S's diagonal is each pair's own score
    paired = paired_similarity(image_out, audio_out, out_nframes, model.similarity_kind)
    torch.testing.assert_close(S.diagonal(), paired)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_fit_two_epochs_decreases_loss_and_logs_recall(name, tiny_data, tmp_path):
    pl.seed_everything(0)
    # Adam at a high rate on cosine similarities, so that two short epochs fit 16 pairs on every variant.
    model = TINY[name](optimizer="adam", lr=3e-3, lr_schedule="constant", loss=InfoNCELoss(scale=10.0),
                       normalize_outputs=True)
    rec = Recorder()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[rec])
    trainer.fit(model, datamodule=tiny_data(drop_last=True))
    assert len(rec.train) == 2 and len(rec.val) == 2
    assert rec.train[1]["train/loss_epoch"] < rec.train[0]["train/loss_epoch"]
    val = rec.val[-1]
    for key in ("val/a2i_R@1", "val/i2a_R@10", "val/mean_R@10", "val/a2i_median_rank"):
        assert key in val
    # recall over the whole 7-pair split (not a mean of per-batch values): multiples of 1/7, nested in k, and
    # R@10 = 1 with fewer than 10 candidates; the mean is the mean of the two directions
    for d in ("a2i", "i2a"):
        r = [val[f"val/{d}_R@{k}"] for k in (1, 5, 10)]
        assert all(v * 7 == pytest.approx(round(v * 7), abs=1e-5) for v in r) and r[0] <= r[1] <= r[2] == 1.0
        assert 1 <= val[f"val/{d}_median_rank"] <= 7
    assert val["val/mean_R@1"] == pytest.approx((val["val/a2i_R@1"] + val["val/i2a_R@1"]) / 2)
    assert "train/lr" in trainer.logged_metrics and "train/grad_norm" in trainer.logged_metrics


@pytest.mark.slow
def test_paper_loss_trains_davenet(tiny_data, tmp_path):
    """DAVEnet's own sampled margin loss (its default) runs through fit and produces finite losses."""
    pl.seed_everything(0)
    model = TINY["DAVEnet"](lr=1e-2)
    rec = Recorder()
    _trainer(tmp_path, max_epochs=1, callbacks=[rec]).fit(model, datamodule=tiny_data(drop_last=True))
    assert type(model.loss).__name__ == "SampledMarginRankLoss"
    assert math.isfinite(rec.train[0]["train/loss_epoch"])


def test_validation_recall_equals_direct_computation(tiny_data, tmp_path):
    """The logged recall is retrieval_metrics over the whole split, not an average of per-batch recalls."""
    from lightning_modules.core.retrieval_metrics import retrieval_metrics

    pl.seed_everything(0)
    model = TINY["DAVEnet"]()
    dm = tiny_data(target_length=64)
    logged = _trainer(tmp_path).validate(model, datamodule=dm, verbose=False)[0]
    dm.setup("validate")
    model.eval()
    outs = [model(b["image"], b["audio"], b["nframes"]) for b in dm.val_dataloader()]
    with torch.no_grad():
        image = torch.cat([o[0] for o in outs])
        audio = torch.cat([o[1] for o in outs])
        nframes = torch.cat([o[2] for o in outs])
        expected = retrieval_metrics(similarity_matrix(image, audio, nframes, kind="MISA"))
    for k, v in expected.items():
        assert logged[f"val/{k}"] == pytest.approx(v, abs=1e-6), k


class _NaNAfter(torch.nn.Module):
    """A loss that turns NaN at the given call."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, image_out, audio_out, nframes, kind, image_ids=None):
        self.calls += 1
        loss = InfoNCELoss(10.0)(image_out, audio_out, nframes, kind, image_ids)
        return loss * float("nan") if self.calls > self.after else loss


def test_nan_loss_stops_before_the_optimiser_step_and_keeps_the_checkpoints(tiny_data, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    pl.seed_everything(0)
    model = TINY["DAVEnet"](loss=_NaNAfter(after=5))  # 4 batches per epoch: NaN in the second epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, monitor="val/mean_R@10", mode="max")
    seen = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["params"] = {k: p.detach().clone() for k, p in pl_module.named_parameters()}

    trainer = _trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[ckpt, Snapshot()])
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan \(on this rank\) at epoch 1"):
        trainer.fit(model, datamodule=tiny_data())
    # No optimiser step was taken with the NaN loss: the parameters are those from before the bad batch.
    for k, p in model.named_parameters():
        assert torch.equal(p, seen["params"][k]), k
    # The checkpoint of the last good epoch is still there and holds finite weights.
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v.float()).all() for v in saved["state_dict"].values())


def test_audio_encoder_warm_start_loads_weights_and_rejects_mismatch(tmp_path):
    torch.manual_seed(0)
    warm = PlaceClassifier(DAVEnetAudioNet(embedding_dim=16, width_mult=0.06), n_places=3)
    ckpt = tmp_path / "warm.ckpt"
    torch.save({"state_dict": warm.state_dict()}, ckpt)
    target = TINY["DAVEnet"](audio_encoder_ckpt=str(ckpt))
    target.setup("fit")
    for k, v in warm.audio_net.state_dict().items():
        assert torch.equal(target.audio_net.state_dict()[k], v), k
    # a different width cannot load: the error names the shapes
    wrong = DAVEnet(embedding_dim=16, audio_width_mult=0.12, image_width_mult=0.06)
    mismatch = r"shape mismatch: .*conv1.weight: checkpoint \(8, 1, 40, 1\) vs model \(15, 1, 40, 1\)"
    with pytest.raises(ValueError, match=mismatch):
        load_audio_encoder(wrong.audio_net, str(ckpt))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_audio_encoder(wrong.audio_net, str(tmp_path / "missing.ckpt"))


def test_freeze_audio_epochs_keeps_the_audio_net_fixed(tiny_data, tmp_path):
    pl.seed_everything(0)
    model = TINY["DAVEnet"](freeze_audio_epochs=1, optimizer="adam", lr=1e-2, lr_schedule="constant",
                            conv_batchnorm=True)
    before_audio = {k: v.clone() for k, v in model.audio_net.state_dict().items()}
    before_image = {k: v.clone() for k, v in model.image_net.state_dict().items()}
    _trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(model, datamodule=tiny_data())
    for k, v in model.audio_net.state_dict().items():
        assert torch.equal(v, before_audio[k]), f"audio {k} changed while frozen"  # BN statistics too
    assert any(not torch.equal(v, before_image[k]) for k, v in model.image_net.state_dict().items())
    # a second epoch unfreezes it
    model.hparams.freeze_audio_epochs = 1
    _trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(model, datamodule=tiny_data())
    assert any(not torch.equal(v, before_audio[k]) for k, v in model.audio_net.state_dict().items())


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    a = TINY["DAVEnet"]().eval()
    b = TINY["DAVEnet"](channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    b.setup("validate")
    assert b.image_net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y, n = torch.randn(2, 3, 32, 32), torch.randn(2, 40, 50), torch.tensor([50, 33])
    for out_a, out_b in zip(a(x, y, n)[:2], b(x, y, n)[:2]):
        torch.testing.assert_close(out_a, out_b, rtol=1e-4, atol=1e-5)


def test_place_classifier_trains_and_reports_deduplicated_accuracy(tiny_data, tmp_path):
    from torch.utils.data import DataLoader, Subset

    pl.seed_everything(0)
    dm = tiny_data(place_labels=True, load_images=False)
    model = PlaceClassifier(DAVEnetAudioNet(embedding_dim=16, width_mult=0.06), optimizer="adam", lr=1e-2,
                            lr_schedule="constant")
    rec = Recorder()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[rec])
    trainer.fit(model, datamodule=dm)
    assert dm.n_places == 3 and model.hparams.n_places == 3  # from the data's label map
    assert rec.train[-1]["train/loss_epoch"] < rec.train[0]["train/loss_epoch"]  # it trains
    acc = rec.val[-1]["val/acc_top1"]
    # 7 validation items: accuracy is a multiple of 1/7, and the confusion matrix counts each item once
    assert round(acc * 7) == pytest.approx(acc * 7, abs=1e-6)
    assert model.last_confusion.sum() == 7 and model.last_confusion.trace() / 7 == pytest.approx(acc)
    # items repeated with their dataset index (as DistributedSampler pads a split) count once
    loader = dm.val_dataloader()
    repeated = DataLoader(Subset(loader.dataset, [*range(7), 0, 0, 1]), batch_size=4, collate_fn=loader.collate_fn)
    again = trainer.validate(model, dataloaders=repeated, verbose=False)[0]
    assert again["val/acc_top1"] == pytest.approx(acc) and model.last_confusion.sum() == 7


def test_place_accuracy_metric_drops_sampler_duplicates():
    from lightning_modules.metrics import PlaceAccuracyMetric

    metric = PlaceAccuracyMetric(n_places=3, ks=(1,))
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    metric.update(logits, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    # DistributedSampler repeats item 0 (right) twice more: a plain mean would say 4/5
    metric.update(logits[:1].repeat(2, 1), torch.tensor([0, 0]), torch.tensor([0, 0]))
    out = metric.compute()
    assert out["acc_top1"] == pytest.approx(2 / 3)
    # rows: true class, columns: predicted
    assert out["confusion"].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert int(out["count"]) == 3
