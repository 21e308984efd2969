"""Training callbacks the CLI and the configs use: reproducible randomness per batch, a progress bar over the run.

- ``StepSeed`` (installed by ``cli.py``): before each training batch is loaded (at the start of an epoch and
  after every batch) the Python, NumPy and torch random generators are seeded from (the run's seed, the epoch,
  the batch index). A batch's random crops and flips (loaded in the main process) and its sampled impostors
  then depend on those three numbers only, not on what ran before, so a run resumed from a checkpoint trains
  exactly as the uninterrupted run would have, at an epoch end and, with ``num_workers: 0``, inside an epoch
  (worker processes draw from their own generators, seeded once per epoch). ``tests/test_resilience.py`` kills
  runs at random moments and compares the final weights.
- ``RestoreLoaderPosition`` (installed by ``cli.py``): hands the train loader its saved position on a resume
  inside an epoch. Lightning 2.6 drops it when ``configure_optimizers`` reads
  ``trainer.estimated_stepping_batches`` (our cosine schedule does): that sets the train loader up before the
  checkpoint is restored, and the state is then never loaded (Lightning-AI/pytorch-lightning#20550).
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


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of one training batch: a fixed mix of the run's seed, the epoch and the batch index."""
    return (int(seed) * 1_000_003 + int(epoch) * 1_299_709 + int(batch) * 7_919 + 17) % (2**32)


class StepSeed(Callback):
    """Seed Python, NumPy and torch from (``seed``, epoch, batch index) before each training batch is loaded.

    The position of the next batch is kept in the checkpoint (``state_dict``). A resumed run seeds that batch
    when training starts: Lightning does not call ``on_train_epoch_start`` for an epoch it resumes.

    Args:
        seed: the run's seed; None reads ``PL_GLOBAL_SEED`` (set by ``seed_everything``) when training starts,
            and does nothing when the run has no seed.
    """

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._next: list[int] | None = None  # [epoch, batch] of the next batch to load
        self._restored: list[int] | None = None

    def state_dict(self) -> dict:
        return {"next": self._next}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict.get("next")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed is None and os.environ.get("PL_GLOBAL_SEED", "").strip():
            self.seed = int(os.environ["PL_GLOBAL_SEED"])
        if self._restored is not None:
            epoch, batch = self._restored
            self._restored = None
            if batch >= trainer.num_training_batches:  # saved after the last batch: the next epoch is next
                epoch, batch = epoch + 1, 0
            self._reseed(epoch, batch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reseed(trainer.current_epoch, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._reseed(trainer.current_epoch, batch_idx + 1)

    def _reseed(self, epoch: int, batch: int) -> None:
        self._next = [int(epoch), int(batch)]
        if self.seed is None:
            return
        s = batch_seed(self.seed, epoch, batch)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # every device's generator too


class RestoreLoaderPosition(Callback):
    """Load the train loader's checkpointed state when Lightning skipped it (see the module docstring)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if fit_loop.restarting and getattr(fit_loop, "_combined_loader_states_to_load", None):
            fit_loop._load_combined_loader_states()  # a no-op once Lightning loads them itself


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
