"""Convert the official DAVEnet-pytorch and ResDAVEnet-VQ checkpoints into VGS-Lightning checkpoints.

    python -m lightning_modules.convert --from davenet-pytorch \
        --audio best_audio_model.pth --image best_image_model.pth --out davenet_official.ckpt
    python cli.py test --config configs/davenet.yaml --ckpt_path davenet_official.ckpt

    python -m lightning_modules.convert --from resdavenet-vq \
        --audio audio_model.pth --image image_model.pth --out resdavenet_official.ckpt
    python cli.py test --config configs/resdavenet.yaml --ckpt_path resdavenet_official.ckpt

    --from            audio file (official class)          image file (official class)         our module
    davenet-pytorch   Davenet: batchnorm1, conv1..conv5    VGG16: image_model.0..30            davenet.DAVEnet
    resdavenet-vq     ResDavenetVQ (any VQ layers)         Resnet50: torchvision + embedder    resdavenet.ResDAVEnet

The architecture is read off the weights: DAVEnet's embedding size from `conv5` (and the image's `image_model.30`,
which must agree); ResDAVEnet's stem and stage widths, blocks per stage and kernel width from `conv1` and the
`layerK.J.*` keys, its VQ layers (positions, codebook sizes, code widths) from the `quant<k>._embedding.weight` keys.
The written checkpoint stores those as hyperparameters with LightningCLI's `_class_path`, so
`cli.py test --ckpt_path` rebuilds this architecture whatever the config says, and
`DAVEnet.load_from_checkpoint(path)` works too. Settings that change what the model computes are pinned to the
official ones: `pretrained_image: false` (the weights come from the file), `normalize_outputs: false`, the official
similarity (DAVEnet MISA, the `--simtype` default; ResDAVEnet SISA, which equals its "pooldot"), and for ResDAVEnet
`mask_padding: false` (the official receptive fields see the padding; pass `mask_padding=True` to evaluate the
padding-invariant function instead). LightningCLI lets a
checkpoint's hyperparameters override the config and the command line, so to evaluate with another similarity,
convert again with `--similarity SIMA` (or `similarity_kind=` in the Python API) rather than `--model.*`.

Keys: DataParallel's `module.` prefix is stripped; BatchNorm `num_batches_tracked` may be present or absent;
ResDAVEnet-VQ's `batchnorm1` (defined but never called in its forward) is dropped and kept under the checkpoint's
`"unused_official_state"`; each VQ layer's EMA state `quant<k>._embedding.weight`, `_ema_cluster_size`, `_ema_w`
goes to our `quant<k>.codebook`, `ema_count`, `ema_sum`, so the converted model computes the official function and
can be fine-tuned with its codebooks. Any other unknown, missing or misshaped key is an error naming the file and
the keys.

The checkpoint holds weights only (no optimiser or loop state): use it with `test`, `validate`, `predict` or
`load_from_checkpoint`, not to resume `fit`.

References: Harwath et al., ECCV 2018 (github.com/dharwath/DAVEnet-pytorch); Hsu, Harwath, Glass, Interspeech 2019
and Harwath, Hsu, Glass, ICLR 2020 (github.com/wnhsu/ResDAVEnet-VQ).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from .base import RetrievalModule
from .checkpoint_io import atomic_torch_save
from .checkpoints import CLI_INSTANTIATOR
from .core.similarity import SIMILARITY_KINDS
from .core.weights import as_state_dict, compare_keys, listing, read_state_dict
from .davenet import DAVEnet
from .resdavenet import ResDAVEnet

CODEBOOK_KEY = re.compile(r"^quant(\d+)\._embedding\.weight$")
# official VectorQuantizerEMA state -> ours (nets.quantizers.VectorQuantizerEMA), per VQ position
VQ_RENAMES = (("_embedding.weight", "codebook"), ("_ema_cluster_size", "ema_count"), ("_ema_w", "ema_sum"))
STAGE_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


class ConversionError(ValueError):
    """An official checkpoint that does not fit the layout of the source it was given as."""


@dataclass(frozen=True)
class Source:
    """How one official code base's checkpoints map onto one of our modules."""

    module: type[RetrievalModule]
    audio_class: str  # the official classes, for messages
    image_class: str
    infer: Callable[[dict, dict, str, str], dict]  # (audio, image, audio_name, image_name) -> init args
    similarity_kind: str  # the official similarity, stored unless --similarity says otherwise
    image_renames: tuple[tuple[str, str], ...] = ()  # (official prefix, ours), after `module.` is stripped
    dropped_audio: tuple[str, ...] = ()  # audio key prefixes that the official forward never uses
    vq_layers: bool = False  # `quant<k>.*` audio keys are VQ layers, loaded into ours (positions read off the keys)
    # init args that fix the architecture or the weights: inferred, never overridden to something else
    arch_args: tuple[str, ...] = ()

    @property
    def class_path(self) -> str:
        return f"{self.module.__module__}.{self.module.__name__}"


# ---- key handling ------------------------------------------------------------------------------------------
def strip_dataparallel(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Remove `nn.DataParallel`'s `module.` prefix (both official trainers save through it); also say if any was."""
    out, stripped = {}, False
    for key, value in state.items():
        while key.startswith("module."):
            key, stripped = key[len("module."):], True
        out[key] = value
    return out, stripped


def _shape(state: Mapping[str, Tensor], key: str, name: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(
            f"{name}: no {key!r}, so this is not a {what} state dict (its keys: {listing(sorted(state), 8)})"
        )
    return tuple(state[key].shape)


def rename(key: str, renames: tuple[tuple[str, str], ...], back: bool = False) -> str:
    """Apply the first matching (official prefix, our prefix) pair to `key`; `back=True` goes from ours to official."""
    for official, ours in renames:
        old, new = (ours, official) if back else (official, ours)
        if key.startswith(old):
            return new + key[len(old):]
    return key


def match_keys(
    net: nn.Module, official: Mapping[str, Tensor], renames: tuple[tuple[str, str], ...], name: str
) -> dict[str, Tensor]:
    """The official tensors under `net`'s keys; a ConversionError naming `name` and the keys if they do not fit.

    `renames`: (official prefix, our prefix) pairs. Every key of `net` must be given with its shape, except
    BatchNorm's `num_batches_tracked` (older files lack it; ours then stays 0); any other key is an error.
    `net` may live on the meta device: only its keys and shapes are read.
    """
    mapped = {rename(k, renames): (k, v) for k, v in official.items()}
    diff = compare_keys(net.state_dict(), {ours: v for ours, (_, v) in mapped.items()})
    missing = [rename(k, renames, back=True) for k in diff.missing]
    unexpected = [mapped[k][0] for k in diff.unexpected]
    misshaped = [f"{mapped[k][0]} {theirs} (expected {ours})" for k, theirs, ours in diff.misshaped]
    if diff:
        lines = [f"{name} does not fit {type(net).__name__} (the architecture inferred from the weights):"]
        if unexpected:
            lines.append(f"  unknown keys: {listing(unexpected, 12)}")
        if missing:
            lines.append(f"  missing keys: {listing(missing, 12)}")
        if misshaped:
            lines.append(f"  wrong shapes: {listing(misshaped, 12)}")
        raise ConversionError("\n".join(lines))
    return {ours: value for ours, (_, value) in mapped.items()}


# ---- the two sources ---------------------------------------------------------------------------------------
def _infer_davenet(audio: dict, image: dict, audio_name: str, image_name: str) -> dict:
    audio_dim = _shape(audio, "conv5.weight", audio_name, "DAVEnet-pytorch Davenet (audio)")[0]
    image_dim = _shape(image, "image_model.30.weight", image_name, "DAVEnet-pytorch VGG16 (image)")[0]
    if audio_dim != image_dim:
        raise ConversionError(
            f"embedding sizes differ: {audio_name} conv5 gives {audio_dim} channels, {image_name} image_model.30 "
            f"gives {image_dim}; the two files must come from one training run"
        )
    return dict(
        embedding_dim=audio_dim, audio_width_mult=1.0, image_width_mult=1.0, conv_batchnorm=False,
        image_batch_norm=False, pretrained_image=False, mask_padding=False,  # the official function
    )


def _infer_resdavenet(audio: dict, image: dict, audio_name: str, image_name: str) -> dict:
    what = "ResDAVEnet-VQ ResDavenetVQ (audio)"
    stem = _shape(audio, "conv1.weight", audio_name, what)[0]
    blocks: dict[int, set[int]] = {}
    for key in audio:
        m = STAGE_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise ConversionError(f"{audio_name}: no 'layer<K>.<J>.' keys, so this is not a {what} state dict")
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)):
        raise ConversionError(f"{audio_name}: residual stages must be layer1..layerN, found layer{stages}")
    widths, kernels = [stem], set()
    for k in stages:
        shape = _shape(audio, f"layer{k}.0.conv1.weight", audio_name, what)
        widths.append(shape[0])
        kernels.add(shape[-1])
    if len(kernels) != 1:
        raise ConversionError(f"{audio_name}: the stages use different kernel widths {sorted(kernels)}")
    # Blocks are numbered from 0; a gap shows up below as missing keys.
    depths = [max(blocks[k]) + 1 for k in stages]
    image_dim = _shape(image, "embedder.weight", image_name, "ResDAVEnet-VQ Resnet50 (image)")[0]
    if image_dim != widths[-1]:
        raise ConversionError(
            f"embedding sizes differ: {audio_name} layer{stages[-1]} gives {widths[-1]} channels, {image_name} "
            f"embedder gives {image_dim}; the two files must come from one training run"
        )
    vq_layers, sizes = _infer_vq_layers(audio, widths, audio_name)
    return dict(
        layer_widths=widths, layer_depths=depths, convsize=kernels.pop(), embedding_dim=None,
        audio_width_mult=1.0, image_arch="resnet50", image_width_mult=1.0, pretrained_image=False,
        vq_layers=vq_layers, codebook_size=sizes, mask_padding=False,
    )


def _infer_vq_layers(audio: dict, widths: list[int], audio_name: str) -> tuple[list[int], int | list[int]]:
    """VQ positions and codebook sizes from the `quant<k>._embedding.weight` [K, width] keys; the sizes as one int
    when they agree, else one per position (1024, the official default, where a position has no VQ layer)."""
    found = {int(m.group(1)): tuple(audio[key].shape) for key in audio if (m := CODEBOOK_KEY.match(key))}
    positions = len(widths)
    for k, shape in sorted(found.items()):
        if not 1 <= k <= positions:
            raise ConversionError(f"{audio_name}: quant{k} is not a VQ position of a {positions - 1}-stage model "
                                  f"(quant1..quant{positions})")
        if len(shape) != 2 or shape[1] != widths[k - 1]:
            raise ConversionError(
                f"{audio_name}: quant{k}._embedding.weight has shape {shape}, but a code at VQ position {k} is "
                f"{widths[k - 1]} wide (expected [codes, {widths[k - 1]}])"
            )
    sizes = {k: shape[0] for k, shape in found.items()}
    if len(set(sizes.values())) <= 1:
        return sorted(sizes), next(iter(sizes.values()), 1024)
    return sorted(sizes), [sizes.get(k, 1024) for k in range(1, positions + 1)]


def _vq_renames(audio: dict) -> tuple[tuple[str, str], ...]:
    """(official prefix, ours) for the EMA state of every VQ layer in `audio`."""
    positions = sorted({int(m.group(1)) for key in audio if (m := CODEBOOK_KEY.match(key))})
    return tuple((f"quant{k}.{official}", f"quant{k}.{ours}") for k in positions for official, ours in VQ_RENAMES)


SOURCES: dict[str, Source] = {
    "davenet-pytorch": Source(
        module=DAVEnet, audio_class="Davenet", image_class="VGG16", infer=_infer_davenet,
        similarity_kind="MISA",  # the --simtype default of run.py
        # One nn.Sequential: VGG16 features 0..29 (last max-pool removed), then the 3x3 conv at index 30.
        image_renames=(("image_model.30.", "embedder."), ("image_model.", "features.")),
        arch_args=("embedding_dim", "audio_width_mult", "image_width_mult", "conv_batchnorm", "image_batch_norm",
                   "pretrained_image"),
    ),
    "resdavenet-vq": Source(
        module=ResDAVEnet, audio_class="ResDavenetVQ", image_class="Resnet50", infer=_infer_resdavenet,
        similarity_kind="SISA",  # equals the official compute_pooldot_similarity_matrix
        dropped_audio=("batchnorm1.",), vq_layers=True,
        arch_args=("layer_widths", "layer_depths", "convsize", "embedding_dim", "audio_width_mult", "image_arch",
                   "image_width_mult", "pretrained_image", "vq_layers", "codebook_size"),
    ),
}


# ---- public API --------------------------------------------------------------------------------------------
def load_official(
    source: str,
    audio_sd: Mapping[str, Tensor],
    image_sd: Mapping[str, Tensor],
    audio_name: str = "audio state dict",
    image_name: str = "image state dict",
    **overrides: Any,
) -> tuple[RetrievalModule, dict]:
    """Our module (in eval mode) holding the weights of an official audio + image state dict pair.

    Args:
        source: ``"davenet-pytorch"`` or ``"resdavenet-vq"``.
        audio_sd, image_sd: the official state dicts (as `torch.load` returns them).
        audio_name, image_name: how errors name them (the converter passes the file paths).
        **overrides: other init args of the module, e.g. ``similarity_kind="SISA"``. Architecture args are
            inferred from the weights and may only be repeated with the same value.

    Returns:
        ``(module, report)``; the report holds ``source``, ``class_path``, ``init_args`` (what the checkpoint
        stores), ``stripped_module_prefix``, ``loaded`` (tensors per net), ``vq`` (one dict per VQ layer:
        ``position``, ``codes``, ``width``), ``dropped`` (keys never used by the official forward), ``unused_state``
        (those tensors) and ``warnings``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    spec = SOURCES[source]
    audio, audio_prefix = strip_dataparallel(as_state_dict(audio_sd, audio_name))
    image, image_prefix = strip_dataparallel(as_state_dict(image_sd, image_name))

    dropped = sorted(k for k in audio if spec.dropped_audio and k.startswith(spec.dropped_audio))
    aside = {k: audio.pop(k) for k in dropped}

    init_args = spec.infer(audio, image, audio_name, image_name)
    init_args["similarity_kind"] = spec.similarity_kind
    init_args["normalize_outputs"] = False
    for key, value in overrides.items():
        value = list(value) if isinstance(value, tuple) else value
        if key in spec.arch_args and value != init_args[key]:
            raise ConversionError(
                f"{key}={value!r} contradicts the weights ({key}={init_args[key]!r} inferred from {audio_name} "
                f"and {image_name}); architecture arguments cannot be overridden"
            )
        init_args[key] = value

    with torch.device("meta"):  # check every key and shape before allocating and initialising the real nets
        probe = spec.module(**init_args)
    weights = {
        "audio_net": match_keys(probe.audio_net, audio, _vq_renames(audio) if spec.vq_layers else (),
                                f"{audio_name} ({spec.audio_class})"),
        "image_net": match_keys(probe.image_net, image, spec.image_renames, f"{image_name} ({spec.image_class})"),
    }
    module = spec.module(**init_args)
    for net_name, state in weights.items():
        # strict=False only lets a missing num_batches_tracked through: match_keys checked everything else.
        getattr(module, net_name).load_state_dict(state, strict=False)
    module.eval()

    messages = []
    if dropped:
        messages.append(
            f"dropped {len(dropped)} keys of {audio_name} that the official forward never uses: {listing(dropped, 12)}"
        )
    vq = [{"position": k, "codes": vq_net.num_codes, "width": vq_net.dim}
          for k in getattr(module.audio_net, "vq_layers", ()) for vq_net in [getattr(module.audio_net, f"quant{k}")]]
    report = dict(
        source=source,
        class_path=spec.class_path,
        init_args=init_args,
        stripped_module_prefix=audio_prefix or image_prefix,
        loaded={net_name: len(state) for net_name, state in weights.items()},
        vq=vq,
        dropped=dropped,
        unused_state=aside,
        warnings=messages,
    )
    return module, report


def checkpoint_dict(module: RetrievalModule, report: dict, audio_path: str = "", image_path: str = "") -> dict:
    """The Lightning checkpoint of a converted module: what `trainer.test(ckpt_path=...)`, `cli.py --ckpt_path`
    and `load_from_checkpoint` read, plus where the weights came from and the official tensors set aside."""
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"_class_path": report["class_path"], "_instantiator": CLI_INSTANTIATOR,
                             **report["init_args"]},
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        "converted_from": {
            "source": report["source"],
            "audio": os.fspath(audio_path),
            "image": os.fspath(image_path),
            "stripped_module_prefix": report["stripped_module_prefix"],
            "vq": report["vq"],
            "dropped": report["dropped"],
        },
        "unused_official_state": dict(report["unused_state"]),
    }


def convert(
    source: str, audio_path: str | os.PathLike, image_path: str | os.PathLike, out_path: str | os.PathLike,
    **overrides: Any,
) -> dict:
    """Read an official audio + image checkpoint pair, write our Lightning checkpoint to `out_path`.

    `overrides` as in `load_official`. Returns the report of `load_official` (without the tensors) plus ``out``.
    Warnings (dropped keys) are also issued with `warnings.warn`.
    """
    audio_path, image_path, out_path = os.fspath(audio_path), os.fspath(image_path), os.fspath(out_path)
    for key, value in overrides.items():
        if not _plain(value):
            raise ValueError(
                f"override {key}={value!r}: the checkpoint stores plain values only (str, number, bool, None, lists "
                "and dicts of them), which LightningCLI reads back with torch.load(weights_only=True)"
            )
    if os.path.abspath(out_path) in {os.path.abspath(audio_path), os.path.abspath(image_path)}:
        raise ValueError(f"--out {out_path} would overwrite an input file")
    module, report = load_official(
        source, read_state_dict(audio_path, "audio file"), read_state_dict(image_path, "image file"), audio_path,
        image_path, **overrides,
    )
    for message in report["warnings"]:
        warnings.warn(message, UserWarning, stacklevel=2)
    ckpt = checkpoint_dict(module, report, audio_path, image_path)
    atomic_torch_save(ckpt, out_path)  # no half-written checkpoint if saving fails
    report = {k: v for k, v in report.items() if k != "unused_state"}
    report["out"] = out_path
    return report


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, float, bool))


# ---- command line ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_modules.convert",
        description="Convert official DAVEnet-pytorch / ResDAVEnet-VQ audio + image checkpoints into a "
        "VGS-Lightning checkpoint for `cli.py test --ckpt_path`.",
    )
    parser.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES),
                        help="the code base that saved the files")
    parser.add_argument("--audio", required=True, help="the official audio model file, e.g. best_audio_model.pth")
    parser.add_argument("--image", required=True, help="the official image model file, e.g. best_image_model.pth")
    parser.add_argument("--out", required=True, help="the Lightning checkpoint to write")
    parser.add_argument("--similarity", choices=[k for k in SIMILARITY_KINDS if k != "dot"], default=None,
                        help="similarity stored in the checkpoint (default: DAVEnet MISA, ResDAVEnet SISA)")
    args = parser.parse_args(argv)
    overrides = {} if args.similarity is None else {"similarity_kind": args.similarity}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed below, once, as part of the summary
            report = convert(args.source, args.audio, args.image, args.out, **overrides)
    except (ConversionError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    config = "davenet" if report["class_path"].endswith(".DAVEnet") else "resdavenet"
    config += "_vq" if report["vq"] else ""
    arch = ", ".join(f"{k}={v}" for k, v in report["init_args"].items())
    print(f"wrote {report['out']}: {report['class_path']}({arch})")
    print(f"  loaded {report['loaded']['audio_net']} audio and {report['loaded']['image_net']} image tensors"
          + (" (stripped DataParallel's 'module.' prefix)" if report["stripped_module_prefix"] else ""))
    if report["vq"]:
        layers = ", ".join(f"quant{v['position']} ({v['codes']} codes x {v['width']})" for v in report["vq"])
        print(f"  VQ layers: {layers}")
    for message in report["warnings"]:
        print(f"  warning: {message}")
    print(f"  evaluate: python cli.py test --config configs/{config}.yaml --ckpt_path {report['out']}")
    return report


if __name__ == "__main__":
    main()
