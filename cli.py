"""The VGS-Lightning command line.

    python cli.py fit --config configs/davenet.yaml
    python cli.py fit --config configs/davenet.yaml --ckpt_path last     # resume this model and config's newest run
    python cli.py fit --config configs/davenet.yaml --ckpt_path last:runs/davenet/vgs-lightning/3kq9x2ab
    python cli.py test --config configs/davenet.yaml --ckpt_path last    # or best, a path, or none (untrained)
    python cli.py predict --config configs/demo.yaml --ckpt_path best.ckpt \
        --data.predict_manifest data/spokenscenes/test.json --search.output search.json
    python cli.py predict --config configs/resdavenet_vq.yaml --ckpt_path best.ckpt \
        --data.predict_manifest data/spokenscenes/test.json --units.output units.json --units.layer 3

``vgs`` (the console entry point) is the same command. Models are chosen with ``--model=DAVEnet`` (any
subclass of ``VGSModule``: NIPS2016, ACL2017, DAVEnet, ResDAVEnet, ResDAVEnetVQ, PlaceClassifier).

``--ckpt_path`` (``lightning_modules/runs.py`` has the run-folder layout):

- ``last`` / ``best``: the newest run of the *same model and config* (equal ``model:`` sections) under the
  config's run folder, its ``last.ckpt`` / best checkpoint. Runs of other models or settings in the same folder
  are never picked. An unreadable ``last.ckpt`` falls back to the newest readable checkpoint of that run.
- ``last:<run folder or W&B run id>`` / ``best:<...>``: that run; refused if it is another experiment.
- a path: that checkpoint (its hyperparameters take precedence over the command line, Lightning's rule).
- ``none`` (test, validate, predict): evaluate the model's initial weights. Without ``--ckpt_path`` these
  commands stop instead of silently scoring a random model.

A resumed ``fit`` continues in the run's own folder (checkpoints, config-resumed-N.yaml) and W&B run. Every
checkpoint is written atomically (``lightning_modules/checkpoint_io.py``); unreadable checkpoints, bad
manifests, samples and caches stop the console command with one line naming the file and the reason.
"""

from __future__ import annotations

import os
import sys

import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

import lightning_modules
from datamodules import PlacesAudioDataModule
from datamodules.errors import BadSampleError, FeatureCacheError, ManifestError
from lightning_modules.base import NonFiniteLossError, VGSModule
from lightning_modules.callbacks import RestoreLoaderPosition, StepSeed
from lightning_modules.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointReadError,
    CheckpointWriteError,
    read_run_checkpoint,
)
from lightning_modules.runs import (
    CHECKPOINTS,
    RUN_CONFIG,
    Run,
    RunResolutionError,
    explicit_checkpoint_dir,
    find_runs,
    is_wandb,
    model_differences,
    next_version_folder,
    runs_root,
    summarize,
    write_run_info,
)
from lightning_modules.search import SpokenSearchWriter
from lightning_modules.unit_writer import UnitWriter

lightning_modules.load_all()  # registers every model so that --model=DAVEnet resolves

# What the console command prints as one line instead of a traceback.
USER_ERRORS = (ManifestError, BadSampleError, FeatureCacheError, CheckpointReadError, CheckpointWriteError,
               RunResolutionError, NonFiniteLossError)


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


def model_names() -> list[str]:
    """The short names ``--model`` accepts: every concrete VGSModule subclass."""
    found, todo = [], [VGSModule]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("lightning_modules") and sub.__name__ != "RetrievalModule":
                found.append(sub.__name__)
    return sorted(set(found))


class LatestCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every validation, overwritten: what ``--ckpt_path last`` resumes from.

    Since Lightning 2.6, ``ModelCheckpoint(save_last=True)`` with a monitor writes ``last.ckpt`` only when a
    top-k checkpoint is written in the same step, i.e. only when the score improves; a resumed run would then
    restart from the best epoch, not the latest. This callback has no monitor, so it saves every time.

    Args:
        every_n_train_steps: also write ``last.ckpt`` every this many optimiser steps, inside the epoch (long
            Places epochs, preemptible nodes). A run resumed from such a checkpoint continues the epoch with the
            batches it had not seen (``PlacesAudioDataLoader`` keeps its position); its random crops and impostors
            after the resume differ from an uninterrupted run's, which stays exact only at epoch ends.
        every_n_epochs: epochs between the end-of-validation saves.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last", every_n_epochs: int | None = None,
                 every_n_train_steps: int | None = None):
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         enable_version_counter=False, every_n_epochs=None if every_n_train_steps else every_n_epochs,
                         every_n_train_steps=every_n_train_steps)
        if every_n_train_steps:
            # ModelCheckpoint takes one trigger; keep the end-of-validation save as well (a step save at the
            # same global step makes it skip that one).
            self._every_n_epochs = every_n_epochs or 1


class RunConfigSaver(SaveConfigCallback):
    """Saves the full config into the run's own folder and, with a WandbLogger, into the W&B run config.

    Lightning's default writes ``config.yaml`` to ``trainer.log_dir``, which for W&B (and without a logger) is
    shared by every run, so the second run aborts. Here a fit writes ``config.yaml`` beside its checkpoints (the
    file ``--ckpt_path last`` compares the model against) and ``run.json`` with its W&B run id; a resumed fit adds
    ``config-resumed-N.yaml``; a validate, test or predict run of a run's checkpoint writes
    ``config-<stage>[-N].yaml`` into that run's folder (``run_dir``, set by the CLI), else into its own.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = False):
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)
        self.run_dir: str | None = None

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))  # a TrainerFn enum: its str() is "TrainerFn.TESTING"
        run_dir = self.run_dir if self.run_dir and stage != "fit" else run_directory(trainer)
        os.makedirs(run_dir, exist_ok=True)
        # fit: config.yaml, then config-resumed-N.yaml; validate/test/predict: config-<stage>[-N].yaml
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
                if stage == "fit":
                    write_run_info(run_dir, wandb_run_id=logger.version)


class VGSLightningCLI(LightningCLI):
    """LightningCLI with the project's checkpointing defaults, spoken search and run-aware ``--ckpt_path``."""

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

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        _check_model_name(parser, sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    # ---- --ckpt_path --------------------------------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path`` before the classes are built (this is where LightningCLI reads the
        checkpoint's hyperparameters): special values, readable files, the run to continue."""
        self._eval_run_dir: str | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        value = config.get("ckpt_path")
        as_dict = config.as_dict()
        model = _dump_section(self._parser(subcommand), config, "model")
        class_path = (model or {}).get("class_path") or ""
        if value is None:
            if subcommand != "fit":
                raise RunResolutionError(
                    f"{subcommand} needs weights: pass --ckpt_path with a checkpoint file, 'last' or 'best' (the "
                    "newest run of this model and config), 'last:<run folder or W&B run id>', or 'none' to "
                    f"{subcommand} the model's initial (untrained) weights"
                )
            self._fresh_run(config, as_dict)
            return
        value = os.fspath(value)
        if value.lower() == "none":
            if subcommand == "fit":
                self._fresh_run(config, as_dict)
            else:
                rank_zero_warn(f"--ckpt_path none: {subcommand} with the model's initial (untrained) weights")
            config.ckpt_path = None
            return
        kind, _, which = value.partition(":")
        if kind in ("last", "best") and (which or value in ("last", "best")):
            path = self._resolve_run_checkpoint(subcommand, config, as_dict, model, kind, which)
            config.ckpt_path = path
            if path is None:
                self._fresh_run(config, as_dict)
            return
        try:
            read_run_checkpoint(value, model_class_path=class_path)
        except CheckpointReadError as err:
            raise CheckpointReadError(err.path, err.reason + _readable_sibling_hint(value, class_path)) from None
        folder = os.path.dirname(os.path.dirname(os.path.abspath(value)))
        if subcommand != "fit" and os.path.basename(os.path.dirname(os.path.abspath(value))) == CHECKPOINTS and \
                os.path.exists(os.path.join(folder, RUN_CONFIG)):
            self._evaluate_run(config, Run(folder))
        super()._parse_ckpt_path()  # the checkpoint's hyperparameters take precedence (Lightning's rule)

    def _resolve_run_checkpoint(self, subcommand: str, config, as_dict: dict, model: dict | None, kind: str,
                                which: str) -> str | None:
        runs = find_runs(as_dict)
        where = explicit_checkpoint_dir(as_dict) or runs_root(as_dict.get("trainer") or {})
        label = f"--ckpt_path {kind}{':' + which if which else ''}"
        class_path = (model or {}).get("class_path") or ""
        if which:
            run = _locate_run(which, runs, label, where)
            saved = run.config()
            if saved is None:
                rank_zero_warn(f"{label}: {run.folder} has no {RUN_CONFIG}; cannot check that it is the same "
                               "experiment (the checkpoint's model class is still checked)")
            else:
                differences = model_differences(model, saved.get("model"))
                if differences:
                    raise RunResolutionError(
                        f"{label}: {run.describe()} is another experiment than this command line "
                        f"({summarize(differences)}); run it with its own config "
                        f"({os.path.join(run.folder, RUN_CONFIG)}) or pick another run"
                    )
        else:
            same, others = [], []
            for run in runs:
                saved = run.config()
                differences = model_differences(model, saved.get("model")) if saved else ["no config.yaml"]
                (others if differences else same).append((run, differences))
            if not same:
                seen = ""
                if others:
                    run, differences = min(others, key=lambda o: len(o[1]))  # the closest one
                    seen = (f"; {len(others)} run(s) of other models or settings there were left alone, e.g. "
                            f"{run.folder} ({summarize(differences, 2)})")
                message = f"{label}: no earlier run of this model and config under {where}{seen}"
                if subcommand == "fit" and kind == "last":
                    rank_zero_warn(message + "; training from scratch")
                    return None
                raise RunResolutionError(message)
            run = same[0][0]
        path = _usable_checkpoint(run, kind, class_path, label)
        if subcommand == "fit":
            self._continue_run(config, run)
        else:
            self._evaluate_run(config, run)
        return path

    def _evaluate_run(self, config, run: Run) -> None:
        """A validate/test/predict of a run's checkpoint: its config-<stage>.yaml goes into that run's folder,
        and the (idle) checkpoint callbacks point there too, so that Lightning does not warn that the folder of
        the checkpoint it restores has changed."""
        self._eval_run_dir = run.folder
        _point_checkpoints(config, run.checkpoint_dir)

    def _continue_run(self, config, run: Run) -> None:
        """Continue ``run`` in its own folder and W&B run: the checkpoint callbacks write into its
        ``checkpoints/`` (which also keeps ModelCheckpoint's best score), the W&B logger reuses its id."""
        _point_checkpoints(config, run.checkpoint_dir)
        wandb_id = run.wandb_run_id
        if wandb_id:
            for logger in _logger_entries(config.get("trainer.logger")):
                init_args = logger.get("init_args")
                if is_wandb(_plain(logger)) and init_args is not None and not init_args.get("id") and \
                        not init_args.get("version"):
                    init_args["id"] = wandb_id

    def _fresh_run(self, config, as_dict: dict) -> None:
        """Without a logger every run would write ``<default_root_dir>/checkpoints``: give each its own
        ``<default_root_dir>/version_N`` (loggers version their folders themselves)."""
        trainer = as_dict.get("trainer") or {}
        if trainer.get("logger") is not False or explicit_checkpoint_dir(as_dict):
            return
        folder = next_version_folder(trainer.get("default_root_dir") or os.getcwd())
        _point_checkpoints(config, os.path.join(folder, CHECKPOINTS))

    # ---- the trainer --------------------------------------------------------------------------------------
    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        plugins = kwargs.get("plugins", trainer_config.get("plugins"))
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        trainer = super().instantiate_trainer(**kwargs, plugins=plugins)
        trainer.callbacks.insert(0, RestoreLoaderPosition())
        if self._get(self.config, "seed_everything") is not False:
            trainer.callbacks.insert(0, StepSeed())
        for callback in trainer.callbacks:
            if isinstance(callback, RunConfigSaver):
                callback.run_dir = getattr(self, "_eval_run_dir", None)
        return trainer


# ---- helpers --------------------------------------------------------------------------------------------------
def _plain(value):
    return value.as_dict() if hasattr(value, "as_dict") else value


def _point_checkpoints(config, folder: str) -> None:
    """Both checkpoint callbacks write into ``folder``, unless the user gave them a ``dirpath``."""
    for key in ("checkpoint", "last_checkpoint"):
        if config.get(f"{key}.dirpath") is None:
            config[f"{key}.dirpath"] = folder


def _logger_entries(logger) -> list:
    if logger is None or isinstance(logger, bool):
        return []
    return list(logger) if isinstance(logger, (list, tuple)) else [logger]


def _dump_section(parser, config, key: str) -> dict | None:
    """One section of the config as ``RunConfigSaver`` writes it (so that saved and current compare equal)."""
    try:
        dumped = yaml.safe_load(parser.dump(config, skip_unset=False, skip_validation=True))
    except Exception:  # a config that does not dump cannot be compared; the callers then see None
        return None
    return (dumped or {}).get(key)


def _locate_run(which: str, runs: list[Run], label: str, where: str) -> Run:
    """The run ``which`` names: a run folder (or its checkpoints folder), or a W&B run id / folder name."""
    if os.path.isdir(which):
        folder = os.path.normpath(os.path.abspath(which))
        if os.path.basename(folder) == CHECKPOINTS:
            folder = os.path.dirname(folder)
        run = Run(folder)
        if not run.checkpoints():
            raise RunResolutionError(f"{label}: {folder} holds no checkpoints ({run.checkpoint_dir}/*.ckpt)")
        return run
    matches = [r for r in runs if os.path.basename(r.folder) == which or r.wandb_run_id == which]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{os.path.basename(r.folder)}" + (f" (W&B {r.wandb_run_id})" if r.wandb_run_id else "")
                      for r in runs[:8]) or "none"
    if not matches:
        raise RunResolutionError(f"{label}: no run folder or W&B run id {which!r} under {where} (runs there: {known})")
    raise RunResolutionError(f"{label}: {len(matches)} runs match {which!r} under {where}: pass the run folder")


def _best_of(run: Run) -> list[str]:
    """The run's best checkpoint as its ModelCheckpoint recorded it (in last.ckpt), then best-*.ckpt by time."""
    found = []
    try:
        state = read_run_checkpoint(run.last).get("callbacks", {})
    except CheckpointReadError:
        state = {}
    for key, value in state.items():
        path = value.get("best_model_path") if isinstance(value, dict) and key.startswith("ModelCheckpoint") else None
        if path and os.path.basename(path) != "last.ckpt":
            local = os.path.join(run.checkpoint_dir, os.path.basename(path))  # the folder may have moved
            found.append(local if os.path.exists(local) else path)
    return found + [p for p in run.checkpoints() if os.path.basename(p).startswith("best")]


def _usable_checkpoint(run: Run, kind: str, class_path: str, label: str) -> str:
    """The run's last (or best) checkpoint, or the newest readable one when that one is unreadable."""
    preferred = [run.last] if kind == "last" else _best_of(run)
    candidates = list(dict.fromkeys(preferred + run.checkpoints()))
    problems = []
    for path in candidates:
        try:
            ckpt = read_run_checkpoint(path, model_class_path=class_path)
        except CheckpointReadError as err:
            if err.reason.startswith("from another model"):
                raise
            problems.append(err)
            continue
        if problems:
            rank_zero_warn(f"{label}: {problems[0]}; using {path} instead, the newest readable checkpoint of "
                           f"that run")
        rank_zero_info(f"{label}: {run.describe()}, checkpoint {os.path.basename(path)} (epoch "
                       f"{ckpt.get('epoch')}, step {ckpt.get('global_step')})")
        return path
    shown = "; ".join(str(p) for p in problems[:3]) or f"no checkpoints in {run.checkpoint_dir}"
    raise RunResolutionError(f"{label}: {run.describe()} has no readable checkpoint: {shown}")


def _readable_sibling_hint(path: str, class_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    for other in Run(os.path.dirname(folder)).checkpoints() if os.path.basename(folder) == CHECKPOINTS else []:
        if os.path.abspath(other) != os.path.abspath(path):
            try:
                read_run_checkpoint(other, model_class_path=class_path)
            except CheckpointReadError:
                continue
            return f" (the newest readable checkpoint beside it is {other}; --ckpt_path last falls back to it)"
    return ""


def _check_model_name(parser: LightningArgumentParser, args) -> None:
    """``--model=X`` with an X that names no model: list the names instead of jsonargparse's union error."""
    if not isinstance(args, (list, tuple)):
        return
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        value = None
        if arg.startswith("--model="):
            value = arg.split("=", 1)[1]
        elif arg == "--model" and i + 1 < len(args):
            value = args[i + 1]
        if not value or value.startswith(("{", "[")) or os.path.exists(value) or "." in value:
            continue  # a JSON/YAML value, a config file or a class path: jsonargparse checks those
        names = model_names()
        if value not in names:
            parser.error(f"--model={value} is not a model; choose one of {', '.join(names)} (or give the class "
                         "path of a VGSModule subclass)")


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


def cli_main(args: list[str] | None = None) -> None:
    """Console entry point ``vgs``: the errors a user can fix print as one line (``error: ...``), exit status 1."""
    try:
        main(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli_main()
