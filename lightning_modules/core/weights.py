"""One safe reader for every weights file a user passes in: official ``.pth`` state dicts, torchvision ImageNet
weights, ``audio_encoder_ckpt`` and the checkpoints given to tools.

Every file is read with ``torch.load(weights_only=True)``, which restores tensors and plain values (dicts, lists,
strings, numbers) and refuses a pickle that names any other class or function: unpickling such a file runs
whatever code its author chose, so a downloaded ``.pth`` must never be loaded with ``weights_only=False``.
Checkpoints written by ``cli.py`` and ``python -m lightning_modules.convert`` hold plain hyperparameters (a loss
as its ``class_path`` config), so they load here.

Every failure names the file and the reason:

    missing file                           FileNotFoundError
    folder, empty, truncated or corrupt    WeightsFileError
    not a torch file (text, image, ...)    WeightsFileError
    pickled objects weights_only refuses   UnsafeWeightsError (a WeightsFileError): lists what the pickle imports
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

# torch.save writes a zip archive (since torch 1.6); its older format is a pickle that starts with torch's magic
# number (PROTO 2, then a 10-byte LONG1), any other pickle with the PROTO opcode alone.
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a"
PICKLE_PROTO = 0x80


class WeightsFileError(ValueError):
    """A weights file that cannot be read: empty, truncated, corrupt, not a torch file, or refused."""


class UnsafeWeightsError(WeightsFileError):
    """A weights file whose pickle holds Python objects that ``torch.load(weights_only=True)`` refuses."""


def read_weights(
    path: str | os.PathLike, what: str = "weights file", map_location: Any = "cpu", allow_modules: bool = False
) -> Any:
    """The object saved in ``path`` with ``torch.save``, read with ``weights_only=True``.

    Args:
        path: the file.
        what: what the file is for, to start every error message (e.g. ``"audio_encoder_ckpt"``).
        map_location: as in ``torch.load``.
        allow_modules: also allow the pickled audio nets and losses of this project and the ``torch.nn`` layers
            inside them (in a zip archive, as torch.save writes): the hyperparameters of a checkpoint of a module
            built in Python.

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: a folder, an empty, truncated or corrupt file, or not a torch file.
        UnsafeWeightsError: the pickle holds objects other than tensors and plain values (see module docstring).
    """
    path = os.fspath(path)
    name = f"{what} {path}"
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise WeightsFileError(f"{name}: is a folder, not a file")
        raise FileNotFoundError(f"{name}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise WeightsFileError(f"{name}: the file is empty (0 bytes)")
    is_zip = head.startswith(ZIP_MAGIC)
    if not is_zip and head[0] != PICKLE_PROTO:
        raise WeightsFileError(
            f"{name}: not a torch file (it starts with the bytes {head!r}; torch.save writes a zip archive "
            "starting with b'PK\\x03\\x04')"
        )
    if is_zip:
        if not zipfile.is_zipfile(path):
            raise WeightsFileError(f"{name}: truncated or corrupt (the zip archive has no central directory)")
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                raise WeightsFileError(f"{name}: not a torch file (a zip archive without torch.save's data.pkl)")
    allowed = _allowed_modules(path) if allow_modules and is_zip else []
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            # plain pickles of protocol 4 or 5 load fine; torch only notes that it writes protocol 2
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(path, is_zip, str(err))
        if refused:
            raise UnsafeWeightsError(_refusal(name, refused)) from None
        if not is_zip and head != LEGACY_TORCH_MAGIC:
            raise WeightsFileError(f"{name}: not a torch file (a plain pickle, not what torch.save writes)") from None
        raise WeightsFileError(f"{name}: truncated or corrupt ({_first_line(err)})") from None
    except Exception as err:  # zip members cut short, bad CRC, wrong magic number: all mean a damaged file
        raise WeightsFileError(f"{name}: truncated or corrupt ({type(err).__name__}: {_first_line(err)})") from None


def read_state_dict(path: str | os.PathLike, what: str = "weights file") -> dict[str, Tensor]:
    """A state dict (parameter name -> tensor) read by ``read_weights``; a clear error for anything else."""
    return as_state_dict(read_weights(path, what), f"{what} {os.fspath(path)}")


def listing(keys: list[str], limit: int) -> str:
    """The first ``limit`` keys, comma-separated, and how many there are in all when some are left out."""
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def as_state_dict(state: Any, name: str) -> dict[str, Tensor]:
    """``state`` as a dict of parameter name -> tensor, or a WeightsFileError naming ``name`` and what is wrong."""
    if not isinstance(state, Mapping):
        raise WeightsFileError(f"{name}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if not_tensors:
        shown = listing(not_tensors, 8)
        hint = " (a Lightning checkpoint? its weights are under 'state_dict')" if "state_dict" in state else ""
        raise WeightsFileError(
            f"{name}: expected a state dict (parameter name -> tensor), but {shown} "
            f"{'is' if len(not_tensors) == 1 else 'are'} not tensors{hint}"
        )
    return dict(state)


# Where the nn.Module classes that allow_modules lets through are defined: the audio nets and losses a module takes
# as arguments, and torch's layers inside them. Not the image nets, whose `pretrained` reads files or the network.
MODULE_PACKAGES = ("lightning_modules.nets.", "lightning_modules.core.losses.", "torch.nn.modules.")
NOT_ALLOWED = ("lightning_modules.nets.image.",)


class KeyMismatch:
    """How a state dict's keys and shapes differ from a model's (``compare_keys``); false when they fit.

    ``missing``: the model's keys the state dict lacks (model order); ``unexpected``: its keys the model does not
    have (file order); ``misshaped``: ``(key, shape in the file, shape in the model)`` (model order)."""

    def __init__(self, missing: list[str], unexpected: list[str], misshaped: list[tuple[str, tuple, tuple]]):
        self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)


def compare_keys(own: Mapping[str, Tensor], given: Mapping[str, Tensor],
                 may_lack: tuple[str, ...] = ("num_batches_tracked",)) -> KeyMismatch:
    """Compare a state dict (``given``) with a model's (``own``): the one check behind every weights loader
    (official checkpoints, torchvision weights, audio warm starts, seed checkpoints).

    ``may_lack``: suffixes of the model's keys that the file may lack (BatchNorm's ``num_batches_tracked``, absent
    from older files; it then stays 0). ``()`` for a strict comparison."""
    missing = [k for k in own if k not in given and not (may_lack and k.endswith(may_lack))]
    unexpected = [k for k in given if k not in own]
    misshaped = [(k, tuple(given[k].shape), tuple(own[k].shape)) for k in own
                 if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
    return KeyMismatch(missing, unexpected, misshaped)


def _allowed_modules(path: str) -> list[type]:
    """The nn.Module classes of MODULE_PACKAGES that the archive's pickle names (none if it names anything else)."""
    try:  # reads the pickle's opcodes without running them
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return []
    classes = []
    for name in names:
        if not name.startswith(MODULE_PACKAGES) or name.startswith(NOT_ALLOWED):
            return []  # one unknown global and the file is refused as a whole, listing everything it holds
        module_name, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            return []
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            return []
        classes.append(cls)
    return classes


def _refused_globals(path: str, is_zip: bool, message: str) -> list[str]:
    """The classes and functions a refused pickle would import (empty if the error was not a refusal)."""
    names: list[str] = []
    if is_zip:
        try:  # reads the pickle's opcodes without running them
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            names = []
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", message)
    return sorted(set(names))


def _refusal(name: str, refused: list[str]) -> str:
    return (
        f"{name}: refusing to unpickle arbitrary code. Besides tensors and plain values the file holds pickled "
        f"Python objects ({', '.join(refused)}); unpickling them would import and call that code, so "
        f"torch.load(weights_only=True) refuses the file. If you trust the file and where it came from, "
        "load it yourself with torch.load(path, weights_only=False) and save its tensors (e.g. the state_dict) "
        "with torch.save."
    )


def _first_line(err: BaseException) -> str:
    """The reason in one short sentence: torch wraps unpickling errors in a long explanation of weights_only."""
    text = str(err)
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    lines = (reason.group(1) if reason else text).strip().splitlines()
    return lines[0].split(". ")[0] if lines else type(err).__name__
