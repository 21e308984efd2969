"""Reading VGS-Lightning checkpoints outside ``fit``: a whole retrieval module for tools and notebooks
(``load_retrieval_checkpoint``), or only an audio net's weights for a warm start (``load_audio_encoder``).
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
