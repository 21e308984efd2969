"""Place-classifier warm-up: the audio branch learns to predict the image's scene class from the caption.

Embedding models are hard to train from scratch; a common practice is to pre-train the audio branch on this
simpler task, then warm-start retrieval from it:

    python cli.py fit --config configs/place_warmup.yaml
    python cli.py fit --config configs/davenet.yaml --model.audio_encoder_ckpt <best place checkpoint>

Not in the papers or the official code, a project addition (docs/provenance.md says where it comes from).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import VGSModule
from .metrics import PlaceAccuracyMetric
from .nets import AudioPlaceClassifier, DAVEnetAudioNet
from .optim import OptimizerName, ScheduleName

# The audio net is an nn.Module init arg on purpose, chosen by class_path as the retrieval loss is (see base.py).
warnings.filterwarnings("ignore", message=r"Attribute 'audio_net' is an instance of `nn.Module`")


class PlaceClassifier(VGSModule):
    """Audio net + masked temporal pooling + linear head over ``n_places`` scene classes.

    Args:
        audio_net: any audio net of ``lightning_modules.nets``, given by ``class_path`` in a config. Give it the
            arguments the retrieval model gives its own (``DAVEnet(embedding_dim=128, audio_width_mult=0.25,
            conv_batchnorm=True)`` -> ``DAVEnetAudioNet(embedding_dim=128, width_mult=0.25, conv_batchnorm=true)``),
            so that its weights load into it with ``audio_encoder_ckpt``. None: ``DAVEnetAudioNet()`` at paper size.
        n_places: number of scene classes; None takes it from the datamodule's label map when training starts
            (205 for Places-205), and the checkpoint then records it.
        pooling: ``"mean"`` or ``"max"`` over each caption's valid output frames.
        dropout: dropout before the linear head.
        label_smoothing: cross-entropy label smoothing.
        **kwargs: optimiser and schedule args of ``VGSModule``; the defaults are DAVEnet's code (SGD, lr 1e-3,
            momentum 0.9, weight decay 5e-7), decayed x0.1 every 10 epochs for a 30-epoch warm-up.
    """

    def __init__(
        self,
        audio_net: nn.Module | None = None,
        n_places: int | None = None,
        pooling: Literal["mean", "max"] = "mean",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-3,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 10,
        **kwargs: Any,
    ):
        super().__init__(optimizer=optimizer, lr=lr, lr_schedule=lr_schedule, lr_step_epochs=lr_step_epochs, **kwargs)
        # Until n_places is known the net waits outside the module tree (a tuple), so that its weights have one
        # name in every state dict, model.audio_net.*, as the head's are model.classifier.*.
        self._unbuilt_audio_net = (audio_net if audio_net is not None else DAVEnetAudioNet(),)
        self.model: AudioPlaceClassifier | None = None
        if n_places is not None:
            self._build(n_places)

    def _build(self, n_places: int) -> None:
        hp = self.hparams
        self.model = AudioPlaceClassifier(self._unbuilt_audio_net[0], n_places, pooling=hp.pooling, dropout=hp.dropout)
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
        data_places = int(getattr(self.trainer.datamodule, "n_places", 0) or 0) if self._trainer is not None else 0
        if self.model is None:
            if not data_places:
                raise ValueError(
                    "the place classifier's n_places is unknown; set data.place_labels=true with a train_manifest "
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
        return self._unbuilt_audio_net[0] if self.model is None else self.model.audio_net

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
        self._log_accuracy(self.val_acc, "val")

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self._log_accuracy(self.test_acc, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"logits": self(batch["audio"], batch["nframes"]), "index": batch["index"]}
