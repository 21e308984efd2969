"""The VGS-Lightning command line.

    python cli.py fit --config configs/davenet.yaml
    python cli.py test --config configs/davenet.yaml --ckpt_path runs/.../checkpoints/last.ckpt
    python cli.py fit --config configs/davenet.yaml --ckpt_path last        # resume the newest run
    python cli.py predict --config configs/demo.yaml --ckpt_path best.ckpt \
        --data.predict_manifest data/spokenscenes/test.json --search.output search.json
    python cli.py predict --config configs/resdavenet_vq.yaml --ckpt_path best.ckpt \
        --data.predict_manifest data/spokenscenes/test.json --units.output units.json --units.layer 3

``vgs`` (the console entry point) is the same command. Models are chosen with ``--model=DAVEnet`` (any
subclass of ``VGSModule``: NIPS2016, ACL2017, DAVEnet, ResDAVEnet, ResDAVEnetVQ, PlaceClassifier).
"""

from __future__ import annotations

import glob
import os

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

import lightning_modules
from datamodules import PlacesAudioDataModule
from lightning_modules.base import VGSModule
from lightning_modules.search import SpokenSearchWriter
from lightning_modules.unit_writer import UnitWriter

lightning_modules.load_all()  # registers every model so that --model=DAVEnet resolves


def run_directory(trainer: Trainer) -> str:
    """The folder of this run: where ModelCheckpoint puts its ``checkpoints/`` folder.

    Mirrors ModelCheckpoint's own resolution (its ``dirpath`` if set, else ``save_dir/name/version`` of the
    first logger, else ``default_root_dir``), so that the config sits beside the checkpoints it made.
    """
    cb = trainer.checkpoint_callback
    if isinstance(cb, ModelCheckpoint) and cb.dirpath:
        return os.path.dirname(os.path.normpath(cb.dirpath))
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return os.path.join(save_dir, str(logger.name), version)
    return trainer.default_root_dir


class LatestCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every validation, overwritten: what ``--ckpt_path last`` resumes from.

    Since Lightning 2.6, ``ModelCheckpoint(save_last=True)`` with a monitor writes ``last.ckpt`` only when a
    top-k checkpoint is written in the same step, i.e. only when the score improves; a resumed run would then
    restart from the best epoch, not the latest. This callback has no monitor, so it saves every time.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last", every_n_epochs: int | None = None):
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         enable_version_counter=False, every_n_epochs=every_n_epochs)


class RunConfigSaver(SaveConfigCallback):
    """Saves the full config into the run's own folder and, with a WandbLogger, into the W&B run config.

    Lightning's default writes ``config.yaml`` to ``trainer.log_dir``, which for W&B (and without a logger)
    is shared by every run, so the second run aborts. Here each run writes beside its checkpoints; a resumed
    run adds ``config-resumed-N.yaml`` and a test of the run's checkpoint ``config-test.yaml`` instead of
    overwriting the original.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = False):
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        run_dir = run_directory(trainer)
        os.makedirs(run_dir, exist_ok=True)
        # fit: config.yaml, then config-resumed-N.yaml; validate/test/predict: config-<stage>[-N].yaml
        stage = str(getattr(stage, "value", stage))  # a TrainerFn enum: its str() is "TrainerFn.TESTING"
        stem = "config-resumed" if stage == "fit" else f"config-{stage}"
        path = os.path.join(run_dir, self.config_filename if stage == "fit" else f"{stem}.yaml")
        n = 1
        while os.path.exists(path):
            path = os.path.join(run_dir, f"{stem}-{n}.yaml")
            n += 1
        self.parser.save(self.config, path, skip_unset=False, overwrite=True, multifile=self.multifile)
        rank_zero_info(f"config saved to {path}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": self.config.as_dict()}, allow_val_change=True)


class VGSLightningCLI(LightningCLI):
    """LightningCLI with the project's checkpointing defaults, spoken search and a resumable ``last``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                # The official code keeps the best mean of the two R@10 directions.
                "checkpoint.monitor": "val/mean_R@10",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LatestCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(SpokenSearchWriter, "search")
        parser.add_lightning_class_args(UnitWriter, "units")  # predict --units.output F: VQ codes (ResDAVEnet-VQ)
        # No link for the classifier's n_places: every retrieval module takes **kwargs and would receive it
        # too. PlaceClassifier reads it from the datamodule in setup().

    def before_fit(self) -> None:
        ckpt = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt == "last":
            self._resume_newest_run()

    def _resume_newest_run(self) -> None:
        """Make ``--ckpt_path last`` find the newest run's ``last.ckpt`` and continue in its folder.

        Lightning itself looks for ``last`` only in the new run's (empty) folder and silently starts from
        scratch. Continuing in the old checkpoint folder also keeps ModelCheckpoint's best score, which it
        restores only when the folder is unchanged.
        """
        trainer = self.trainer
        cb = trainer.checkpoint_callback
        if cb is not None and cb.dirpath:
            pattern = os.path.join(cb.dirpath, "last*.ckpt")
        elif trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            pattern = os.path.join(save_dir, str(logger.name), "*", "checkpoints", "last*.ckpt")
        else:
            pattern = os.path.join(trainer.default_root_dir, "checkpoints", "last*.ckpt")
        found = sorted(glob.glob(pattern), key=os.path.getmtime)
        if not found:
            rank_zero_warn(f"--ckpt_path last: no checkpoint matches {pattern}; training from scratch.")
            self.config_init[self.subcommand]["ckpt_path"] = None
            return
        last = found[-1]
        rank_zero_info(f"--ckpt_path last: resuming from {last}")
        self.config_init[self.subcommand]["ckpt_path"] = last
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.dirpath = os.path.dirname(last)


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build (and with ``run=True`` run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests, notebooks)."""
    return VGSLightningCLI(
        VGSModule,
        PlacesAudioDataModule,
        subclass_mode_model=True,
        save_config_callback=RunConfigSaver,
        auto_configure_optimizers=False,  # the modules build the papers' optimisers from their init args
        parser_kwargs={"default_env": True},
        args=args,
        run=run,
    )


def cli_main() -> None:
    """Console entry point ``vgs``."""
    main()


if __name__ == "__main__":
    cli_main()
