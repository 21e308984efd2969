"""Place-classifier warm-up: the audio branch learns to predict the image's scene class from the caption.

Embedding models are hard to train from scratch; the seed notebook's practice is to pre-train the audio
branch on this simpler task, then warm-start retrieval from it:

    python cli.py fit --config configs/place_warmup.yaml
    python cli.py fit --config configs/davenet.yaml --model.audio_encoder_ckpt <best place checkpoint>

Not in the papers or the official code (see the reference notes, section 10): a project addition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import VGSModule
from .metrics import PlaceAccuracyMetric
from .nets import ACL2017AudioNet, AudioPlaceClassifier, DAVEnetAudioNet, NIPS2016AudioNet, ResDAVEnetAudioNet
from .optim import OptimizerName, ScheduleName

AudioNetName = Literal["davenet", "resdavenet", "acl2017", "nips2016"]


def build_audio_net(
    name: AudioNetName,
    embedding_dim: int | None = None,
    width_mult: float = 1.0,
    conv_batchnorm: bool = False,
    layer_widths: Sequence[int] | None = None,
) -> nn.Module:
    """The audio net ``name`` with the same arguments the retrieval modules give it, so that its weights
    load into them unchanged. ``embedding_dim=None`` keeps each net's default (ResDAVEnet: its last width)."""
    if name == "resdavenet":
        widths = list(layer_widths) if layer_widths else [128, 128, 256, 512, 1024]
        return ResDAVEnetAudioNet(layer_widths=widths, width_mult=width_mult, embedding_dim=embedding_dim)
    embedding_dim = embedding_dim or 1024
    if name == "davenet":
        return DAVEnetAudioNet(embedding_dim, width_mult, conv_batchnorm)
    if name == "acl2017":
        return ACL2017AudioNet(embedding_dim, "mean", width_mult, conv_batchnorm)
    if name == "nips2016":
        return NIPS2016AudioNet(embedding_dim, "max", width_mult, conv_batchnorm)
    raise ValueError(f"unknown audio net {name!r}; choose davenet, resdavenet, acl2017 or nips2016")


class PlaceClassifier(VGSModule):
    """Audio net + masked temporal pooling + linear head over ``n_places`` scene classes.

    Args:
        n_places: number of scene classes; None takes it from the datamodule's label map when training starts
            (205 for Places-205), and the checkpoint then records it.
        audio_net: which audio net: ``"davenet"`` (default), ``"resdavenet"``, ``"acl2017"``, ``"nips2016"``.
        embedding_dim: channels of the audio net's output; None keeps the net's default (1024).
        audio_width_mult: scales the audio widths (CPU presets); must match the retrieval model to warm-start.
        conv_batchnorm: BatchNorm after each audio conv (must match the retrieval model).
        layer_widths: ResDAVEnet widths.
        pooling: ``"mean"`` or ``"max"`` over each caption's valid output frames.
        dropout: dropout before the linear head.
        label_smoothing: cross-entropy label smoothing.
        **kwargs: optimiser and schedule args of ``VGSModule``.
    """

    def __init__(
        self,
        n_places: int | None = None,
        audio_net: AudioNetName = "davenet",
        embedding_dim: int | None = None,
        audio_width_mult: float = 1.0,
        conv_batchnorm: bool = False,
        layer_widths: Sequence[int] | None = None,
        pooling: Literal["mean", "max"] = "mean",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-3,
        lr_schedule: ScheduleName = "step",
        **kwargs: Any,
    ):
        super().__init__(optimizer=optimizer, lr=lr, lr_schedule=lr_schedule, **kwargs)
        self.model: AudioPlaceClassifier | None = None
        if n_places is not None:
            self._build(n_places)

    def _build(self, n_places: int) -> None:
        hp = self.hparams
        net = build_audio_net(hp.audio_net, hp.embedding_dim, hp.audio_width_mult, hp.conv_batchnorm, hp.layer_widths)
        self.model = AudioPlaceClassifier(net, n_places, pooling=hp.pooling, dropout=hp.dropout)
        self.val_acc = PlaceAccuracyMetric(n_places)
        self.test_acc = PlaceAccuracyMetric(n_places)
        self.hparams.n_places = n_places  # so that the checkpoint rebuilds the same head

    def setup(self, stage: str) -> None:
        # The class count comes from the data: the datamodule's label map (built from the train manifest).
        # A LightningCLI link cannot do this, because every retrieval module would be handed n_places too.
        # Outside fit a model restored from a checkpoint knows its classes; the train manifest is not read.
        if stage != "fit" and self.model is not None:
            super().setup(stage)
            return
        data_places = int(getattr(self.trainer.datamodule, "n_places", 0) or 0) if self.trainer else 0
        if self.model is None:
            if not data_places:
                raise ValueError(
                    "PlaceClassifier: n_places is unknown; set data.place_labels=true with a train_manifest "
                    "(the label map gives it) or pass model.n_places"
                )
            self._build(data_places)
        elif data_places and data_places != self.hparams.n_places:
            raise ValueError(
                f"PlaceClassifier has n_places={self.hparams.n_places} but the data has {data_places} place "
                "classes (the train manifest's label map)"
            )
        super().setup(stage)

    @property
    def audio_net(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("PlaceClassifier is built when training starts (n_places comes from the data)")
        return self.model.audio_net

    def forward(self, audio: torch.Tensor, nframes: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(audio, nframes)

    def _targets(self, batch: dict) -> torch.Tensor:
        if "place" not in batch:
            raise KeyError(
                "the place classifier needs place labels in the batch: set data.place_labels=true"
            )
        return batch["place"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["audio"], batch["nframes"])
        target = self._targets(batch)
        loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        self.check_finite(loss)
        bs = target.shape[0]
        acc = (logits.argmax(dim=1) == target).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        self.log("train/acc_top1", acc, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["audio"], batch["nframes"])
        target = self._targets(batch)
        self.val_acc.update(logits, target, batch["index"])
        self.log("val/loss", F.cross_entropy(logits, target), sync_dist=True, batch_size=target.shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["audio"], batch["nframes"])
        self.test_acc.update(logits, self._targets(batch), batch["index"])

    def _log_accuracy(self, metric: PlaceAccuracyMetric, prefix: str) -> dict:
        values = metric.compute()  # collective; identical on every rank
        metric.reset()
        self.last_confusion = values.pop("confusion").cpu()
        values.pop("count")
        logged = {f"{prefix}/{k}": float(v) for k, v in values.items()}
        shown = {k: v for k, v in logged.items() if k == "val/acc_top1"}  # the selection score, on the bar
        self.log_dict({k: v for k, v in logged.items() if k not in shown}, rank_zero_only=False, sync_dist=False)
        self.log_dict(shown, prog_bar=True, rank_zero_only=False, sync_dist=False)
        return logged

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.last_val_metrics = self._log_accuracy(self.val_acc, "val")

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self._log_accuracy(self.test_acc, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"logits": self(batch["audio"], batch["nframes"]), "index": batch["index"]}
