"""Checkpoint files that survive kills and full disks, and errors that name the file when one is unreadable.

- ``AtomicCheckpointIO``: the Trainer's CheckpointIO plugin (``cli.py`` installs it). Each checkpoint is written
  to ``<name>.tmp`` in its own folder, flushed and fsync'ed, then renamed over ``<name>`` with ``os.replace``,
  so a reader sees the old file or the new one, never half of one. Lightning's own writer
  (``lightning_fabric.utilities.cloud_io._atomic_save``) stages the file in ``$TMPDIR`` through an fsspec
  transaction and then *moves* it; when ``$TMPDIR`` is on another file system (the usual cluster and container
  layout) the move is a copy into place, and a kill or a full disk during it leaves a truncated ``last.ckpt``,
  while a small ``/tmp`` fails with an ``OSError`` that names neither path. A full disk here raises
  ``CheckpointWriteError`` naming the folder and its free space, and the previous checkpoint stays as it was.
- ``read_run_checkpoint(path)``: load a checkpoint for resuming or evaluating (through the project's safe
  reader, ``checkpoints.read_checkpoint``), or raise ``CheckpointReadError`` saying which file and whether it is
  truncated, not a checkpoint, or from another model. ``AtomicCheckpointIO`` loads resumed checkpoints with it.
"""

from __future__ import annotations

import errno
import glob
import importlib
import os
import shutil
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol

from .checkpoints import read_checkpoint
from .core.weights import UnsafeWeightsError, WeightsFileError

TMP_SUFFIX = ".tmp"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CheckpointReadError(ValueError):
    """A checkpoint that cannot be used; the message names the file and says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"checkpoint {path}: {reason}")
        self.path, self.reason = path, reason


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, no permission); the previous one is unchanged."""


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _open_for_write(path: str):
    """The file a checkpoint is written into (a hook for the fault-injection tests)."""
    return open(path, "wb")


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` only once the new file is complete and on disk.

    Raises CheckpointWriteError (an OSError) naming the file, its folder and the free space when the write fails;
    the temporary file is removed and ``path`` keeps its previous content.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = path + TMP_SUFFIX
    written = 0
    try:
        with _open_for_write(tmp) as f:
            torch.save(obj, f)
            f.flush()
            written = f.tell()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        err = _os_error_in(exc)
        if err is not None:
            kept = f"the previous {os.path.basename(path)} is unchanged" if os.path.exists(path) else \
                f"no {os.path.basename(path)} was written"
            if err.errno in _NO_SPACE:
                free = shutil.disk_usage(folder).free
                raise CheckpointWriteError(
                    err.errno,
                    f"cannot write checkpoint {path}: no space left in {folder} ({_megabytes(free)} free"
                    f"{f', {_megabytes(written)} written before the failure' if written else ''}); {kept}. Free "
                    "some space or point the run elsewhere (--trainer.default_root_dir, the logger's save_dir)",
                ) from err
            raise CheckpointWriteError(
                err.errno, f"cannot write checkpoint {path}: {err.strerror or err}; {kept}"
            ) from err
        raise
    _fsync_folder(folder)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch's zip writer reports a failed ``write`` as a RuntimeError raised while
    handling it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are atomic in the checkpoint's own folder (see the module docstring).

    Remote paths (``s3://``, ...) keep Lightning's fsspec writer. The first save into a folder removes the
    ``*.ckpt.tmp`` files an earlier, killed writer left there.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cleaned: set[str] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(path)
        if folder not in self._cleaned:
            for stale in glob.glob(os.path.join(glob.escape(folder), f"*.ckpt{TMP_SUFFIX}")):
                try:
                    os.remove(stale)
                except OSError:
                    pass
            self._cleaned.add(folder)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local_file_protocol(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_run_checkpoint(path, map_location=map_location)  # the safe reader: weights_only=True


def _class_of(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def same_class(class_path_a: str, class_path_b: str) -> bool:
    """Whether two import paths name the same class (``lightning_modules.DAVEnet`` is
    ``lightning_modules.davenet.DAVEnet``)."""
    if class_path_a == class_path_b:
        return True
    a, b = _class_of(class_path_a), _class_of(class_path_b)
    return a is not None and a is b


_INTERRUPTED = "a write interrupted by a kill or a full disk?"


def read_run_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", model_class_path: str | None = None
                        ) -> dict[str, Any]:
    """A checkpoint to resume or evaluate, or CheckpointReadError saying which file and why it cannot be used.

    Read by ``checkpoints.read_checkpoint`` (the project's one safe reader, ``core.weights``). The reason is one
    of "no such file", "truncated" (an interrupted write), "not a checkpoint" (not a torch file, one without
    Lightning's ``state_dict`` (official weights go through ``python -m lightning_modules.convert``), or one
    holding code the safe reader refuses) and "from another model" (its ``_class_path`` hyperparameter names
    another class than ``model_class_path``).
    """
    path = os.fspath(path)
    try:
        ckpt = read_checkpoint(path, map_location)
    except FileNotFoundError:
        raise CheckpointReadError(path, "no such file") from None
    except WeightsFileError as err:
        reason = str(err).removeprefix(f"checkpoint {path}: ")
        if "empty" in reason:
            reason = f"truncated (0 bytes: {_INTERRUPTED})"
        elif reason.startswith("truncated"):
            reason = f"{reason}, {os.path.getsize(path):,} bytes: {_INTERRUPTED}"
        elif isinstance(err, UnsafeWeightsError):
            reason = f"not a checkpoint this project reads: {reason}"
        elif "state_dict" in reason:
            reason = ("not a checkpoint (a torch file without Lightning's 'state_dict'); official DAVEnet or "
                      "ResDAVEnet weights are converted with python -m lightning_modules.convert")
        else:
            reason = f"not a checkpoint ({reason})"
        raise CheckpointReadError(path, reason) from None
    if model_class_path:
        saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
        if saved and not same_class(saved, model_class_path):
            raise CheckpointReadError(
                path, f"from another model: it holds a {saved.rsplit('.', 1)[-1]} ({saved}), this command builds "
                      f"a {model_class_path.rsplit('.', 1)[-1]} ({model_class_path}); use that model's config or "
                      "another checkpoint")
    return ckpt


