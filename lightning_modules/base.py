"""The shared LightningModules: ``VGSModule`` (optimiser, schedule, warm start, safety checks) and
``RetrievalModule`` (training with the variant's loss, exact recall@k in validation and test, spoken search
in predict).

The paper variants (``NIPS2016``, ``ACL2017``, ``DAVEnet``, ``ResDAVEnet``) subclass ``RetrievalModule``
and only choose their nets, similarity kind, loss and defaults; everything a training run does lives here
once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from torch import nn

from .checkpoints import load_audio_encoder
from .core.losses import RetrievalLoss, SampledMarginRankLoss
from .core.similarity import SIMILARITY_KINDS
from .metrics import RetrievalRecallMetric, first_of_each
from .optim import OptimizerName, ScheduleName, build_optimizer, build_scheduler

# The loss is an nn.Module init arg on purpose (configs pick it by class_path); under LightningCLI its
# hparams entry is the config, outside the CLI the module itself. Lightning's advice to ignore it does not apply.
warnings.filterwarnings("ignore", message=r"Attribute 'loss' is an instance of `nn.Module`")


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite; no optimiser step is taken with it."""


class VGSModule(pl.LightningModule):
    """Common root of every VGS-Lightning module; the CLI's model base class.

    Holds what every model trains with: the optimiser and schedule (built from plain init args, see
    ``lightning_modules.optim``), a warm start of the audio net from another checkpoint, a NaN guard and
    gradient-norm logging. Subclasses must set ``self.audio_net``.

    Args:
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for AdamW); 5e-7 is the DAVEnet and ResDAVEnet code's value.
        betas: Adam/AdamW betas.
        lr_schedule: ``"constant"``, ``"step"`` (x ``lr_decay`` every ``lr_step_epochs``), ``"cosine"`` (over
            the run's optimiser steps) or ``"cosine_time"`` (over ``trainer.max_time``).
        lr_step_epochs: epochs between decays of the step schedule.
        lr_decay: factor of the step schedule.
        lr_floor: final lr of the cosine schedules, as a fraction of ``lr``.
        warmup_steps: linear warm-up steps (cosine and constant schedules).
        audio_encoder_ckpt: checkpoint whose audio-net weights are loaded (strictly) before training, e.g.
            the best place-classifier warm-up. Unlike ``--ckpt_path`` it restores weights only, not hparams.
        freeze_audio_epochs: train everything but the audio net for this many first epochs.
        channels_last: keep conv weights and images in channels-last memory format. About 2x faster for the
            small CPU presets (oneDNN), and the usual choice for tensor cores on GPUs.
    """

    def __init__(
        self,
        optimizer: OptimizerName = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-7,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 40,
        lr_decay: float = 0.1,
        lr_floor: float = 0.0,
        warmup_steps: int = 0,
        audio_encoder_ckpt: str | None = None,
        freeze_audio_epochs: int = 0,
        channels_last: bool = False,
    ):
        super().__init__()
        # Collects the init args of the whole subclass chain (or, under LightningCLI, its config).
        self.save_hyperparameters()
        self._audio_encoder_loaded = False

    # ---- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.momentum, hp.weight_decay, tuple(hp.betas))
        timer = self._timer()
        sched = build_scheduler(
            opt,
            hp.lr_schedule,
            step_epochs=hp.lr_step_epochs,
            decay=hp.lr_decay,
            warmup_steps=hp.warmup_steps,
            total_steps=self.trainer.estimated_stepping_batches if hp.lr_schedule == "cosine" else None,
            time_budget_s=timer.time_elapsed("train") + timer.time_remaining("train") if timer else None,
            clock=(lambda: timer.time_elapsed("train")) if timer else None,
            floor=hp.lr_floor,
        )
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def _timer(self) -> Timer | None:
        """The Trainer's ``max_time`` Timer, if it has a budget."""
        timer = self._timer_any()
        return timer if timer is not None and timer.time_remaining("train") is not None else None

    # ---- warm start and freezing --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams.get("channels_last"):
            self.to(memory_format=torch.channels_last)
        ckpt = self.hparams.get("audio_encoder_ckpt")
        if stage == "fit" and ckpt and not self._audio_encoder_loaded:
            load_audio_encoder(self.audio_net, ckpt)
            self._audio_encoder_loaded = True

    @property
    def audio_frozen(self) -> bool:
        # self._trainer: the trainer property raises outside a Trainer
        return self._trainer is not None and self.current_epoch < self.hparams.get("freeze_audio_epochs", 0)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen audio net keeps its BatchNorm statistics too.
        if mode and self.audio_frozen:
            self.audio_net.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.train(True)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.audio_frozen:
            # Dropping the gradients (rather than requires_grad=False) keeps DDP's reducer happy.
            for p in self.audio_net.parameters():
                p.grad = None
        if self.trainer.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            # After DDP's all-reduce the gradients are the same on every rank: no sync needed.
            norms = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
            if norms:
                self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack(norms)), on_step=True)
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True)

    def on_train_start(self) -> None:
        self._train_started = time.monotonic()

    def on_validation_epoch_end(self) -> None:
        # Training wall time of this validation, for learning curves against time (CPU budgets, warm-up): the
        # max_time Timer's (which a resumed run continues), else the minutes since this process began training.
        if self.trainer.sanity_checking:
            return
        timer = self._timer_any()
        started = getattr(self, "_train_started", None)
        if timer is not None:
            self.log("train/elapsed_min", timer.time_elapsed("train") / 60.0, sync_dist=False)
        elif started is not None:
            self.log("train/elapsed_min", (time.monotonic() - started) / 60.0, sync_dist=False)

    def _timer_any(self) -> Timer | None:
        return next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)

    # ---- safety -------------------------------------------------------------------------------------
    def check_finite(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).float()
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank must stop together: one rank raising alone would leave the others waiting forever
            # in the gradient all-reduce.
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if bad > 0:
            raise NonFiniteLossError(
                f"training loss is {loss.item()} (on this rank) at epoch {self.current_epoch}, global step "
                f"{self.global_step}; stopped before the optimiser step, so the weights and every checkpoint "
                "saved so far are the last good ones. Lower the learning rate or check the input data."
            )


class RetrievalModule(VGSModule):
    """Image-caption retrieval: training with the variant's loss, exact recall@k in validation and test.

    ``forward(image, audio, nframes)`` returns ``(image_out, audio_out, out_nframes)``, exactly what
    ``similarity_matrix(image_out, audio_out, out_nframes, kind=self.similarity_kind)`` takes
    (``out_nframes`` is None for pooled models). Evaluation, predict and the notebooks use these two and
    nothing else.

    Validation and test gather every rank's outputs in a ``RetrievalRecallMetric``, drop the duplicates that
    DistributedSampler adds, and rank the whole split at once, so the logged recall is the same on 1 or 8
    GPUs. A split with several captions per image is ranked over its unique images (SpeechCLIP / FaST-VGS
    protocol, see ``RetrievalRecallMetric``), and the image net runs once per distinct image of each batch.
    ``val/mean_R@10`` (the mean of both directions) is what checkpoints are selected on, as in the
    official code.

    Args:
        similarity_kind: ``"dot"`` for pooled models; ``"SISA"``, ``"MISA"`` or ``"SIMA"`` for matchmaps.
        loss: an ``nn.Module`` with ``forward(image_out, audio_out, nframes, kind, image_ids=None)`` (captions with
            the same image id are never each other's negatives); None gives DAVEnet's sampled margin ranking loss
            with margin 1.
        normalize_outputs: L2-normalise image and audio outputs along the channel axis (per region and per
            frame for matchmap models). Off in the papers; small models learn much faster with it.
        recall_ks: the k of recall@k.
        eval_chunk_size: bound on the matchmap elements built at once in evaluation (memory vs speed).
        **kwargs: optimiser, schedule and warm-start args of ``VGSModule``.
    """

    def __init__(
        self,
        similarity_kind: str = "MISA",
        loss: RetrievalLoss | None = None,
        normalize_outputs: bool = False,
        recall_ks: Sequence[int] = (1, 5, 10),
        eval_chunk_size: int = 2**26,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if similarity_kind not in SIMILARITY_KINDS:
            raise ValueError(f"similarity_kind must be one of {SIMILARITY_KINDS}, got {similarity_kind!r}")
        self.similarity_kind = similarity_kind
        self.loss = loss if loss is not None else SampledMarginRankLoss(margin=1.0)
        self.normalize_outputs = normalize_outputs
        metric_args = dict(similarity_kind=similarity_kind, ks=tuple(recall_ks), chunk_size=eval_chunk_size)
        self.val_recall = RetrievalRecallMetric(**metric_args)
        self.test_recall = RetrievalRecallMetric(**metric_args)

    # ---- the one forward every consumer uses --------------------------------------------------------
    def forward(self, image: torch.Tensor, audio: torch.Tensor, nframes: torch.Tensor | None = None):
        if self.hparams.get("channels_last"):
            image = image.contiguous(memory_format=torch.channels_last)
        image_out = self.image_net(image)
        audio_out = self.audio_net(audio, nframes)
        out_nframes = None
        if not self.audio_net.pooled:
            if nframes is None:
                nframes = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
            out_nframes = self.audio_net.output_frames(nframes)
        if self.normalize_outputs:
            image_out = nn.functional.normalize(image_out, dim=1)
            audio_out = nn.functional.normalize(audio_out, dim=1)
        return image_out, audio_out, out_nframes

    # ---- training -----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image_out, audio_out, out_nframes = self(batch["image"], batch["audio"], batch["nframes"])
        # Captions of one image are never each other's negatives (the losses mask by image id).
        loss = self.loss(image_out, audio_out, out_nframes, self.similarity_kind, image_ids=batch.get("image_id"))
        bs = batch["audio"].shape[0]
        loss = self.add_auxiliary_losses(loss, bs)
        self.check_finite(loss)
        # Per-step value of this rank for the progress bar; the epoch mean is averaged over ranks.
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        return loss

    def add_auxiliary_losses(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``loss`` plus the terms the nets recorded in this step's forward, logged as ``train/<name>``.

        A net may hold ``aux_losses`` (name -> scalar added to the training loss, e.g. a VQ commitment loss) and
        ``aux_metrics`` (name -> scalar only logged, e.g. a code perplexity) after its forward.
        """
        for net in (self.audio_net, getattr(self, "image_net", None)):
            aux_losses, aux_metrics = getattr(net, "aux_losses", {}), getattr(net, "aux_metrics", {})
            for name, value in {**aux_losses, **aux_metrics}.items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)
            for value in aux_losses.values():
                loss = loss + value
        return loss

    # ---- evaluation: outputs are gathered once per epoch, ranked over the whole split ---------------
    def _unique_images(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's distinct images (by ``image_id``; captions of one image are neighbours in manifest order)
        and the row of each caption's image among them, so the image net runs once per image."""
        if batch.get("image_id") is None:
            return batch["image"], None
        first, rows = first_of_each(batch["image_id"])
        return (batch["image"] if first.numel() == rows.numel() else batch["image"][first]), rows

    def _eval_step(self, batch: dict, metric: RetrievalRecallMetric) -> None:
        images, image_rows = self._unique_images(batch)
        image_out, audio_out, out_nframes = self(images, batch["audio"], batch["nframes"])
        metric.update(image_out, audio_out, out_nframes, batch["index"], batch.get("image_id"), image_rows)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_recall)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_recall)

    def _log_recall(self, metric: RetrievalRecallMetric, prefix: str) -> dict[str, float]:
        # compute() is collective: every rank gathers, de-duplicates and ranks the same matrix, so the
        # values are already global and must not be averaged again (no sync_dist).
        values = {f"{prefix}/{k}": float(v) for k, v in metric.compute().items()}
        metric.reset()
        shown = {k: v for k, v in values.items() if k == "val/mean_R@10"}  # the selection score, on the bar
        self.log_dict({k: v for k, v in values.items() if k not in shown}, rank_zero_only=False, sync_dist=False)
        self.log_dict(shown, prog_bar=True, rank_zero_only=False, sync_dist=False)
        return values

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_recall(self.val_recall, "val")

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self._log_recall(self.test_recall, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        images, image_rows = self._unique_images(batch)
        image_out, audio_out, out_nframes = self(images, batch["audio"], batch["nframes"])
        return {"image_out": image_out, "image_rows": image_rows, "audio_out": audio_out, "nframes": out_nframes,
                "index": batch["index"], "image_id": batch.get("image_id")}
