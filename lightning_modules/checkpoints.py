"""Reading VGS-Lightning checkpoints outside ``fit``: a whole retrieval module for tools and notebooks
(``load_retrieval_checkpoint``), only an audio net's weights for a warm start (``load_audio_encoder``), or every
matching weight of an earlier run to seed an incremental schedule (``load_matching_weights``).
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import warnings

import torch
from torch import nn


def load_audio_encoder(audio_net: nn.Module, ckpt_path: str) -> None:
    """Load the audio-net weights of a checkpoint (strict) into ``audio_net``.

    Accepts a Lightning checkpoint of any VGS-Lightning module (keys ``audio_net.*`` or, from the place-classifier
    warm-up, ``model.audio_net.*`` under ``state_dict``) or a bare state dict of the audio net itself.
    """
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"audio_encoder_ckpt: no such file: {ckpt_path}") from None
    except Exception as err:  # corrupt or not a torch file
        raise ValueError(f"audio_encoder_ckpt: cannot read {ckpt_path}: {err}") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"audio_encoder_ckpt: {ckpt_path} holds no state dict")
    # The audio net sits at "audio_net." in the retrieval modules and at "model.audio_net." in the classifier.
    prefixes = {k[: k.index("audio_net.") + len("audio_net.")] for k in state if "audio_net." in k}
    if len(prefixes) > 1:
        raise ValueError(f"audio_encoder_ckpt {ckpt_path}: several audio nets in one checkpoint: {sorted(prefixes)}")
    if prefixes:
        prefix = prefixes.pop()
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = audio_net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"audio_encoder_ckpt {ckpt_path} does not fit this model's audio net ({type(audio_net).__name__}):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                lines.append(f"  {title}: {shown}")
        raise ValueError("\n".join(lines))
    audio_net.load_state_dict(state, strict=True)


def load_matching_weights(module: nn.Module, ckpt_path: str) -> dict:
    """Load every tensor of a checkpoint whose key and shape exist in ``module`` (the official ``--seed-dir``).

    For incremental schedules such as ResDAVEnet-VQ's ``{}->{3}``: the seed run's nets load, the new run's extra
    tensors (e.g. the codebooks of newly enabled VQ layers) keep their fresh initialisation. A tensor of the same
    name but another shape means another architecture and is an error (rather than silently starting fresh).

    Returns ``{"path", "loaded", "fresh", "ignored"}``: the module's keys loaded and left fresh, and the
    checkpoint's keys the module does not have.
    """
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"seed_ckpt: no such file: {ckpt_path}") from None
    except Exception as err:  # corrupt or not a torch file
        raise ValueError(f"seed_ckpt: cannot read {ckpt_path}: {err}") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"seed_ckpt: {ckpt_path} holds no state dict")
    own = module.state_dict()
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state) if state[k].shape != own[k].shape
    )
    if mismatched:
        shown = ", ".join(mismatched[:10]) + (f", ... ({len(mismatched)} in all)" if len(mismatched) > 10 else "")
        raise ValueError(f"seed_ckpt {ckpt_path} has another architecture than this {type(module).__name__}: {shown}")
    loaded = sorted(k for k in own if k in state)
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return {"path": str(ckpt_path), "loaded": loaded, "fresh": sorted(set(own) - set(state)),
            "ignored": sorted(set(state) - set(own))}


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


def load_retrieval_checkpoint(path: str | os.PathLike, model_class: type | None = None,
                              map_location: str | torch.device = "cpu") -> nn.Module:
    """A VGS-Lightning module from a Lightning checkpoint, in eval mode.

    The class is ``model_class`` or, for checkpoints written under LightningCLI, the ``_class_path`` in their
    hyperparameters. Hyperparameters the class does not take are dropped with a warning (checkpoints written
    while ``cli.py`` linked ``data.n_places`` into every model carry an ``n_places`` that retrieval modules
    reject, so that ``load_from_checkpoint`` alone fails on them).
    """
    from .base import VGSModule  # base imports this module for load_audio_encoder

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoints.py: no checkpoint file {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if model_class is None:
        class_path = hparams.get("_class_path")
        if not class_path:
            raise ValueError(f"checkpoints.py: checkpoint {path} names no model class (_class_path); pass "
                             "model_class (e.g. lightning_modules.DAVEnet)")
        module_name, _, name = class_path.rpartition(".")
        model_class = getattr(importlib.import_module(module_name), name)
    accepted = set()
    for cls in model_class.__mro__:
        if isinstance(cls, type) and issubclass(cls, VGSModule) and "__init__" in vars(cls):
            accepted |= set(inspect.signature(cls.__init__).parameters)
    extra = sorted(k for k in hparams if not k.startswith("_") and k not in accepted)
    if not extra:
        model = model_class.load_from_checkpoint(path, map_location=map_location)
    else:
        warnings.warn(f"{path}: ignoring hyperparameters that {model_class.__name__} does not take: {extra}",
                      stacklevel=2)
        ckpt["hyper_parameters"] = {k: v for k, v in hparams.items() if k not in extra}
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
        buffer.seek(0)
        model = model_class.load_from_checkpoint(buffer, map_location=map_location)
    return model.eval()
