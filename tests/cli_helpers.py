"""Callbacks that tests put into CLI runs by class_path (this folder is on sys.path under pytest)."""

from __future__ import annotations

import json

from pytorch_lightning.callbacks import Callback


class Crash(RuntimeError):
    """Stands in for a killed job."""


class CrashAtBatch(Callback):
    """Records the training state at the first batch it sees into ``record`` (JSON), then crashes at
    ``batch_idx`` of epoch ``epoch``."""

    def __init__(self, record: str, epoch: int, batch_idx: int):
        self.record, self.epoch, self.batch_idx = record, epoch, batch_idx
        self.written = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.written:
            opt = trainer.optimizers[0]
            best = trainer.checkpoint_callback.best_model_score
            state = {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "lr": opt.param_groups[0]["lr"],
                "optimizer_state_entries": len(opt.state),
                "best_model_score": None if best is None else float(best),
                "checkpoint_dir": trainer.checkpoint_callback.dirpath,
            }
            with open(self.record, "w") as f:
                json.dump(state, f)
            self.written = True
        if trainer.current_epoch == self.epoch and batch_idx == self.batch_idx:
            raise Crash(f"crash at epoch {self.epoch}, batch {batch_idx}")


class RecordValidation(Callback):
    """Writes every rank's logged validation metrics to ``<folder>/rank<k>.json`` after each validation."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        with open(f"{self.folder}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"world_size": trainer.world_size, "metrics": values}, f)
