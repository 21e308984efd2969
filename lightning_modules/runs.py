"""Run folders: where the runs of a config live, which of them is the same experiment, and their checkpoints.

A run folder holds ``config.yaml`` (the full config of its ``fit``, written by ``cli.RunConfigSaver``),
``run.json`` (its W&B run id, when it had a W&B logger) and ``checkpoints/`` (``last.ckpt``,
``best-epochNNN.ckpt``). Runs live where the config's first logger puts them (``<save_dir>/<name or
project>/<version or W&B id>/``) or, without a logger, in ``<default_root_dir>/version_N/``.

Two runs are *the same experiment* when their ``model`` sections are equal (the model class and every init
argument, the loss included); trainer and data settings may differ (a resume may raise ``max_epochs``).
``--ckpt_path last`` picks the newest ``last.ckpt`` among those runs only, so a second experiment in the same
folder never continues the first one's weights.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any

import yaml

from .checkpoint_io import same_class

RUN_CONFIG = "config.yaml"
RUN_INFO = "run.json"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
DEFAULT_LOGGER_NAME = "lightning_logs"


class RunResolutionError(ValueError):
    """``--ckpt_path`` names no usable run or checkpoint; the message says what was found and what to pass."""


@dataclass
class Run:
    """One run folder and what it holds."""

    folder: str

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.folder, CHECKPOINTS)

    @property
    def last(self) -> str:
        return os.path.join(self.checkpoint_dir, LAST)

    def config(self) -> dict | None:
        """The saved config of the run's fit (None when it has none or it does not parse)."""
        try:
            with open(os.path.join(self.folder, RUN_CONFIG), encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            return None
        return config if isinstance(config, dict) else None

    def info(self) -> dict:
        try:
            with open(os.path.join(self.folder, RUN_INFO), encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @property
    def wandb_run_id(self) -> str | None:
        return self.info().get("wandb_run_id")

    def checkpoints(self) -> list[str]:
        """Every ``*.ckpt`` of the run, newest first (by modification time)."""
        found = glob.glob(os.path.join(glob.escape(self.checkpoint_dir), "*.ckpt"))
        return sorted(found, key=lambda p: (os.path.getmtime(p), p), reverse=True)

    def newest(self) -> float:
        """Modification time of the run's newest checkpoint (0 when it has none)."""
        ckpts = self.checkpoints()
        return os.path.getmtime(ckpts[0]) if ckpts else 0.0

    def describe(self) -> str:
        wandb_id = self.wandb_run_id
        return f"run {self.folder}" + (f" (W&B run {wandb_id})" if wandb_id else "")


def write_run_info(folder: str, **values: Any) -> None:
    """Merge ``values`` into the run's ``run.json``."""
    info = Run(folder).info()
    info.update({k: v for k, v in values.items() if v is not None})
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, RUN_INFO + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, os.path.join(folder, RUN_INFO))


# ---- where a config's runs live ---------------------------------------------------------------------------
def _as_list(logger) -> list:
    if logger is None or logger is True:
        return [True]  # Lightning's default logger (TensorBoard, or CSV without tensorboard)
    if logger is False:
        return []
    return list(logger) if isinstance(logger, (list, tuple)) else [logger]


def _logger_parts(logger) -> tuple[str, dict]:
    if logger is True:
        return "default", {}
    if isinstance(logger, str):
        return logger, {}
    if isinstance(logger, dict):
        return str(logger.get("class_path", "")), dict(logger.get("init_args") or {})
    return type(logger).__name__, {}  # an instance (e.g. from Python code)


def is_wandb(logger) -> bool:
    return _logger_parts(logger)[0].rsplit(".", 1)[-1] == "WandbLogger"


def runs_root(trainer: dict) -> str:
    """The folder whose sub-folders are this config's runs: ``<save_dir>/<name>`` of the first logger, or
    ``default_root_dir`` without a logger (mirrors ModelCheckpoint's own choice)."""
    default_root = trainer.get("default_root_dir") or os.getcwd()
    loggers = _as_list(trainer.get("logger"))
    if not loggers:
        return default_root
    class_path, init = _logger_parts(loggers[0])
    save_dir = init.get("save_dir") or init.get("dir") or default_root
    if class_path.rsplit(".", 1)[-1] == "WandbLogger":
        name = init.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_LOGGER_NAME
    else:
        name = init.get("name") or DEFAULT_LOGGER_NAME
    return os.path.join(save_dir, str(name))


def explicit_checkpoint_dir(config: dict) -> str | None:
    """``checkpoint.dirpath`` when the user set one (every run of the config then shares it)."""
    return (config.get("checkpoint") or {}).get("dirpath")


def find_runs(config: dict) -> list[Run]:
    """The run folders of this config (whatever their model), newest checkpoint first."""
    dirpath = explicit_checkpoint_dir(config)
    if dirpath:
        folders = [os.path.dirname(os.path.normpath(dirpath))]
    else:
        root = runs_root(config.get("trainer") or {})
        # <root>/<version>/checkpoints, and <root>/checkpoints: runs written before each got its own folder
        folders = [os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(root), "*", CHECKPOINTS))]
        folders.append(root)
    runs = [Run(os.path.normpath(f)) for f in dict.fromkeys(folders)]
    runs = [r for r in runs if r.checkpoints()]
    return sorted(runs, key=Run.newest, reverse=True)


def next_version_folder(root: str) -> str:
    """``<root>/version_N`` with N one past the highest existing version (a fresh run's own folder)."""
    taken = []
    for p in glob.glob(os.path.join(glob.escape(root), "version_*")):
        suffix = os.path.basename(p)[len("version_"):]
        if suffix.isdigit():
            taken.append(int(suffix))
    return os.path.join(root, f"version_{max(taken) + 1 if taken else 0}")


# ---- the same experiment? ---------------------------------------------------------------------------------
def model_differences(ours: dict, theirs: dict, prefix: str = "model") -> list[str]:
    """``key: theirs -> ours`` for every leaf where two ``model`` sections differ (empty when equal)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs), key=str):
            out += model_differences(ours.get(key), theirs.get(key), f"{prefix}.{key}")
        return out
    if prefix.endswith(".class_path") and isinstance(ours, str) and isinstance(theirs, str):
        equal = same_class(ours, theirs)  # lightning_modules.DAVEnet is lightning_modules.davenet.DAVEnet
    else:
        equal = ours == theirs
    return [] if equal else [f"{prefix}: {theirs!r} in the run, {ours!r} here"]


def summarize(differences: list[str], limit: int = 3) -> str:
    shown = "; ".join(differences[:limit])
    return shown + (f"; ... ({len(differences)} in all)" if len(differences) > limit else "")
