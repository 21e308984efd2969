"""Reading VGS-Lightning checkpoints outside ``fit``: a whole retrieval module for tools and notebooks
(``load_retrieval_checkpoint``), only an audio net's weights for a warm start (``load_audio_encoder``), or every
matching weight of an earlier run to seed an incremental schedule (``load_matching_weights``).

All read the file once, with ``core.weights.read_weights`` (``torch.load(weights_only=True)``): checkpoints written
by ``cli.py`` and by the converter hold tensors and plain hyperparameters only; those of a module built in Python
may also hold its audio net or loss (``allow_modules``). A file that holds anything else is refused with an error
naming it. (``--ckpt_path`` of ``cli.py`` keeps Lightning's own loader.)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .core.weights import WeightsFileError, compare_keys, listing, read_weights

# How LightningCLI marks a checkpoint's hyperparameters (pytorch_lightning.cli._InstantiatorFn), and the converter
# too: `load_from_checkpoint` and `cli.py --ckpt_path` then rebuild the class named by `_class_path` from its init
# args with jsonargparse, nested class_path configs (a loss) included.
CLI_INSTANTIATOR = "pytorch_lightning.cli.instantiate_module"


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """A Lightning checkpoint (a dict with ``state_dict``) read safely; a clear error naming the file otherwise."""
    ckpt = read_weights(path, "checkpoint", map_location, allow_modules=True)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise WeightsFileError(f"checkpoint {os.fspath(path)}: not a Lightning checkpoint (no 'state_dict')")
    return dict(ckpt)


def load_audio_encoder(audio_net: nn.Module, ckpt_path: str | os.PathLike) -> None:
    """Load the audio-net weights of a checkpoint (strict) into ``audio_net``.

    Accepts a Lightning checkpoint of any VGS-Lightning module (keys ``audio_net.*`` or, from the place-classifier
    warm-up, ``model.audio_net.*`` under ``state_dict``) or a bare state dict of the audio net itself.
    """
    name = f"audio_encoder_ckpt {os.fspath(ckpt_path)}"
    ckpt = read_weights(ckpt_path, "audio_encoder_ckpt", allow_modules=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise WeightsFileError(f"{name}: holds no state dict")
    # The audio net sits at "audio_net." in the retrieval modules and at "model.audio_net." in the classifier.
    prefixes = {k[: k.index("audio_net.") + len("audio_net.")] for k in state if "audio_net." in k}
    if len(prefixes) > 1:
        raise ValueError(f"{name}: several audio nets in one checkpoint: {sorted(prefixes)}")
    if prefixes:
        prefix = prefixes.pop()
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    diff = compare_keys(audio_net.state_dict(), state, may_lack=())
    missing, unexpected = sorted(diff.missing), sorted(diff.unexpected)
    mismatched = sorted(f"{k}: checkpoint {theirs} vs model {ours}" for k, theirs, ours in diff.misshaped)
    if diff:
        lines = [f"{name} does not fit this model's audio net ({type(audio_net).__name__}):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title}: {listing(keys, 10)}")
        raise ValueError("\n".join(lines))
    audio_net.load_state_dict(state, strict=True)


def load_matching_weights(module: nn.Module, ckpt_path: str | os.PathLike) -> dict:
    """Load every tensor of a checkpoint whose key and shape exist in ``module`` (the official ``--seed-dir``).

    For incremental schedules such as ResDAVEnet-VQ's ``{}->{3}``: the seed run's nets load, the new run's extra
    tensors (e.g. the codebooks of newly enabled VQ layers) keep their fresh initialisation. A tensor of the same
    name but another shape means another architecture and is an error (rather than silently starting fresh).

    Returns ``{"path", "loaded", "fresh", "ignored"}``: the module's keys loaded and left fresh, and the
    checkpoint's keys the module does not have.
    """
    name = f"seed_ckpt {os.fspath(ckpt_path)}"
    ckpt = read_weights(ckpt_path, "seed_ckpt", allow_modules=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsFileError(f"{name}: holds no state dict")
    own = module.state_dict()
    diff = compare_keys(own, state, may_lack=())
    mismatched = sorted(f"{k}: checkpoint {theirs} vs model {ours}" for k, theirs, ours in diff.misshaped)
    if mismatched:
        raise ValueError(f"{name} has another architecture than this {type(module).__name__}: "
                         f"{listing(mismatched, 10)}")
    loaded = sorted(k for k in own if k in state)
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return {"path": os.fspath(ckpt_path), "loaded": loaded, "fresh": sorted(diff.missing),
            "ignored": sorted(diff.unexpected)}


def format_seed_report(report: dict) -> str:
    """The seed report of ``load_matching_weights`` for people: counts per top-level module, fresh keys in full."""
    def by_module(keys: list[str]) -> str:
        counts: dict[str, int] = {}
        for k in keys:
            counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
        return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"

    lines = [f"seed_ckpt {report['path']}: loaded {len(report['loaded'])} tensors ({by_module(report['loaded'])})"]
    lines.append("  fresh (not in the seed): " + (", ".join(report["fresh"]) or "none"))
    if report["ignored"]:
        lines.append("  ignored (not in this model): " + ", ".join(report["ignored"]))
    return "\n".join(lines)


def load_retrieval_checkpoint(checkpoint: str | os.PathLike | Mapping, model_class: type | None = None,
                              map_location: str | torch.device = "cpu") -> nn.Module:
    """A VGS-Lightning module from a Lightning checkpoint, in eval mode.

    Args:
        checkpoint: the checkpoint file, or the dict ``read_checkpoint`` returned (so that a tool that also needs
            e.g. ``datamodule_hyper_parameters`` reads the file once).
        model_class: the module class; None takes the ``_class_path`` that checkpoints written under LightningCLI
            (and by the converter) record, which must name a ``VGSModule`` of ``lightning_modules``.
        map_location: where the tensors go when ``checkpoint`` is a path.
    """
    from .base import VGSModule  # base imports this module for load_audio_encoder

    if isinstance(checkpoint, Mapping):
        ckpt, name = checkpoint, "checkpoint"
    else:
        ckpt, name = read_checkpoint(checkpoint, map_location), f"checkpoint {os.fspath(checkpoint)}"
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if model_class is None:
        model_class = _recorded_class(hparams.get("_class_path"), name, VGSModule)
    instantiator = hparams.pop("_instantiator", None)
    if instantiator is None:  # saved from Python: the init args themselves
        model = model_class(**{k: v for k, v in hparams.items() if k != "_class_path"})
    elif instantiator == CLI_INSTANTIATOR:
        from pytorch_lightning.cli import instantiate_module

        model = instantiate_module(model_class, hparams)
    else:
        raise ValueError(f"{name}: unknown instantiator {instantiator!r} (expected {CLI_INSTANTIATOR})")
    model.on_load_checkpoint(dict(ckpt))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _recorded_class(class_path: Any, name: str, base: type) -> type:
    """The class a checkpoint names; only VGS-Lightning modules are imported, never a module the file chooses."""
    if not isinstance(class_path, str) or not class_path:
        raise ValueError(f"{name} names no model class (_class_path); pass model_class "
                         "(e.g. lightning_modules.DAVEnet)")
    module_name, _, class_name = class_path.rpartition(".")
    if module_name.split(".")[0] != "lightning_modules":
        raise ValueError(f"{name} names the class {class_path!r}, which is not a VGS-Lightning module; pass "
                         "model_class to load it")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{name} names {class_path!r}, which is not a {base.__name__} subclass")
    return cls
