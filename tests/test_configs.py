"""One truth for every default: what a paper config sets, its class defaults to, so that the Python API
(``NIPS2016()``) and the command line (``cli.py fit --config configs/nips2016.yaml``) train the same model."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

import cli

# Every paper config in configs/ (configs/trainer/ holds trainer presets). The demo configs are CPU presets that
# change sizes, loss and schedule on purpose, each with its reason in a comment.
CONFIGS = Path(__file__).parents[1] / "configs"
PAPER_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("demo"))

# Values a config may set differently from its class default, and why.
ALLOWED = {
    # The configs ask for ImageNet weights, as the papers (and ResDAVEnet's code) do; the classes default to False
    # so that building a model never downloads anything (tests, meta-device probes, the converter).
    "pretrained_image",
}


def parsed_model_config(config: Path, monkeypatch) -> Mapping:
    """``model`` of ``config`` as LightningCLI parses it (every init arg, defaults filled in), with nothing built."""
    monkeypatch.setattr(cli.VGSLightningCLI, "instantiate_classes", lambda self: None)
    return cli.main(["--config", str(config)], run=False).config["model"].as_dict()


def instantiate(spec: Mapping) -> nn.Module:
    """The object a ``{class_path, init_args}`` config names, on the meta device (sizes only, no weights)."""
    module_name, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    with torch.device("meta"):
        return cls(**dict(spec.get("init_args") or {}))


def settings(value):
    """What a value configures: an nn.Module by its class, plain attributes and parameter shapes; sequences as
    lists (a config's [0.9, 0.999] is the default (0.9, 0.999))."""
    if isinstance(value, nn.Module):
        plain = {k: v for k, v in vars(value).items() if not k.startswith("_") and k != "training"}
        return type(value), settings(plain), {k: tuple(v.shape) for k, v in value.state_dict().items()}
    if isinstance(value, Mapping):
        return {k: settings(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [settings(v) for v in value]
    return value


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[c.stem for c in PAPER_CONFIGS])
def test_paper_config_values_equal_the_class_defaults(config, monkeypatch):
    spec = parsed_model_config(config, monkeypatch)
    module_name, _, name = spec["class_path"].rpartition(".")
    with torch.device("meta"):
        default = getattr(importlib.import_module(module_name), name)()
    differ = {}
    for key, value in spec["init_args"].items():
        if key in ALLOWED or key not in default.hparams:
            continue
        if isinstance(value, Mapping) and "class_path" in value:  # a loss or an audio net, chosen by class_path
            # the class default may be None ("the variant's default module"): compare what the module holds
            ours, theirs = settings(instantiate(value)), settings(getattr(default, key))
        else:
            ours, theirs = settings(value), settings(default.hparams[key])
        if ours != theirs:
            differ[key] = (ours, theirs)
    assert not differ, f"{config.name} sets values its class {name} does not default to (config, class): {differ}"
