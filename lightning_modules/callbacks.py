"""Training callbacks the CLI and the configs use: per-epoch seeding and a progress bar over the whole step budget.

- ``EpochSeed`` (installed by ``cli.py``): at the start of every training epoch the Python, NumPy and torch
  random generators are seeded from the run's seed and the epoch number. An epoch's random crops, flips and
  sampled impostors then depend on (seed, epoch) only, not on what ran before, so a run resumed from an
  end-of-epoch checkpoint trains exactly as the uninterrupted run would have (``tests/test_resilience.py``
  kills runs at random moments and checks the final weights).
- ``StepBudgetProgressBar``: one training bar over ``trainer.max_steps`` (or the estimated steps of the run),
  with the epoch, the metrics on the progress bar (``val/mean_R@10``) and tqdm's ETA over the whole run, for
  fixed step budgets such as the demo's.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a fixed mix of the run's seed and the epoch (distinct for every pair in use)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**32)


class EpochSeed(Callback):
    """Seed Python, NumPy and torch from (``seed``, epoch) at the start of every training epoch.

    Args:
        seed: the run's seed; None reads it from ``PL_GLOBAL_SEED`` (set by ``seed_everything``) when training
            starts, and does nothing when the run has no seed.
    """

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed is None and os.environ.get("PL_GLOBAL_SEED", "").strip():
            self.seed = int(os.environ["PL_GLOBAL_SEED"])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed is None:
            return
        s = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # every device's generator too


class StepBudgetProgressBar(TQDMProgressBar):
    """A training bar over the run's whole step budget (not reset each epoch), with an ETA for the run."""

    def _total_steps(self) -> int | None:
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps
        total = trainer.estimated_stepping_batches
        return int(total) if total != float("inf") else None

    def init_train_tqdm(self) -> Tqdm:
        bar = super().init_train_tqdm()
        bar.total = self._total_steps()
        bar.unit = "step"
        return bar

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start()
        bar = self.train_progress_bar
        bar.initial = bar.n = trainer.global_step  # a resumed run starts where it stopped
        bar.refresh()

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch}, step")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
