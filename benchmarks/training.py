"""Training throughput: samples/s of one optimiser step (forward, loss, backward, step) of each paper model at
full size and of the CPU demo preset, built from their configs (``configs/*.yaml``) without a Trainer.

| model      | config                  | audio frames (padded batch)         | image   | loss                  |
|------------|-------------------------|-------------------------------------|---------|-----------------------|
| davenet    | configs/davenet.yaml    | 1024 (a realistic padded batch)     | 224 px  | sampled margin, MISA  |
| resdavenet | configs/resdavenet.yaml | 2048 (its target_length)            | 224 px  | 4 triplets, SISA      |
| nips2016   | configs/nips2016.yaml   | 2048 (its target_length)            | 224 px  | sampled margin, dot   |
| acl2017    | configs/acl2017.yaml    | 1024 (its target_length: the paper) | 224 px  | sampled margin, dot   |
| demo       | configs/demo.yaml       | 512 (bucketed SpokenScenes batches) | 128 px  | InfoNCE x30, MISA     |

Captions are random log-mels with nframes between 60% and 100% of the padded length. ``pretrained_image`` is
off (no download); everything else is the config's, including the optimiser. Variants for GPUs: ``bf16``
(autocast), ``cl`` (channels-last images and weights), ``compile`` (``torch.compile`` on the audio net), e.g.
``bf16+cl+compile``.

FLOPs and MFU (model FLOPs utilisation): ``model_flops`` counts 2 x multiply-adds of every Conv2d and Linear
of the two nets on the step's input shapes (forward), x 3 for a training step (backward = 2 x forward,
the usual convention; frozen layers count 1 x). The loss adds well under 1% and is left out. MFU = achieved
model FLOP/s / the device's peak (``PEAK_TFLOPS``; unknown devices, CPUs included, get FLOP/s only).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
from dataclasses import dataclass

import torch
import yaml
from torch import nn

from lightning_modules.optim import build_optimizer

from .harness import Config, synchronize, timed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Model:
    config: str
    frames: int
    image_size: int | None = None  # None: 224
    batch_size: int | None = None  # None: the --train-batch (8)


MODELS = {
    "davenet": Model("configs/davenet.yaml", 1024),
    "resdavenet": Model("configs/resdavenet.yaml", 2048),
    "nips2016": Model("configs/nips2016.yaml", 2048),
    "acl2017": Model("configs/acl2017.yaml", 1024),
    "demo": Model("configs/demo.yaml", 512, image_size=128, batch_size=32),  # demo.yaml's data.batch_size
}

# Dense peak TFLOP/s by device-name fragment: (bf16 tensor core, fp32 without tensor cores).
PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5)}


def _instantiate(spec):
    """A {class_path, init_args} dict from a config, recursively; anything else unchanged."""
    if isinstance(spec, dict) and "class_path" in spec:
        module_name, _, class_name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**{k: _instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    return spec


def build_model(name: str) -> nn.Module:
    """The LightningModule of a model's config, with ImageNet weights off."""
    with open(os.path.join(REPO, MODELS[name].config), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    spec = dict(config["model"])
    spec["init_args"] = {**(spec.get("init_args") or {}), "pretrained_image": False}
    return _instantiate(spec)


def training_batch(batch: int, frames: int, image_size: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, 40, frames, generator=g) * 10 - 40  # dB-like values
    nframes = torch.randint(int(0.6 * frames), frames + 1, (batch,), generator=g)
    nframes[0] = frames  # the longest caption sets the padded length
    image = torch.randn(batch, 3, image_size, image_size, generator=g)
    return image.to(device), audio.to(device), nframes.to(device)


# ---- FLOPs --------------------------------------------------------------------------------------------------
def model_flops(module: nn.Module, image: torch.Tensor, audio: torch.Tensor, nframes: torch.Tensor) -> dict:
    """Forward and training-step FLOPs of the nets (2 x multiply-adds of Conv2d and Linear layers)."""
    counts = {"forward": 0, "train": 0}

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            macs = output.numel() * (layer.in_channels // layer.groups) * kh * kw
        else:
            macs = output.numel() * layer.in_features
        trainable = any(p.requires_grad for p in layer.parameters())
        counts["forward"] += 2 * macs
        counts["train"] += 2 * macs * (3 if trainable else 1)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(image, audio, nframes)
    finally:
        for h in handles:
            h.remove()
    return counts


def peak_tflops(device: torch.device, bf16: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (bf16_peak, fp32_peak) in PEAK_TFLOPS.items():
        if fragment in name:
            return bf16_peak if bf16 else fp32_peak
    return None


# ---- one training step ----------------------------------------------------------------------------------------
def training_row(cfg: Config, name: str, variant: str = "fp32", batch: int | None = None) -> dict:
    options = set(variant.split("+"))
    unknown = options - {"fp32", "bf16", "cl", "compile"}
    if unknown:
        raise ValueError(f"benchmarks/training.py: unknown variant option(s) {sorted(unknown)} in {variant!r}")
    spec = MODELS[name]
    module = build_model(name)
    batch = spec.batch_size or batch or 8
    image_size = spec.image_size or 224
    module.to(cfg.device).train()
    channels_last = "cl" in options or bool(module.hparams.get("channels_last"))  # the demo config sets it
    if channels_last:
        module.to(memory_format=torch.channels_last)
    image, audio, nframes = training_batch(batch, spec.frames, image_size, cfg.device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    flops = model_flops(module, image, audio, nframes)
    if "compile" in options:
        torch._dynamo.reset()  # a fresh cache: each model compiles for its own shapes, never dynamic ones
        module.audio_net = torch.compile(module.audio_net, dynamic=False)
    hp = module.hparams
    optimizer = build_optimizer(module.parameters(), hp.optimizer, hp.lr, hp.momentum, hp.weight_decay,
                                tuple(hp.betas))
    bf16 = "bf16" in options
    autocast = (torch.autocast(device_type=cfg.device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            image_out, audio_out, out_nframes = module(image, audio, nframes)
            loss = module.loss(image_out, audio_out, out_nframes, module.similarity_kind)
        loss.backward()
        optimizer.step()
        return loss

    warmup = 3 if ("compile" in options or cfg.device.type == "cuda") else 1
    for _ in range(warmup):
        step()
    n = cfg.slow_repeats if cfg.device.type == "cpu" else max(cfg.fast_repeats, 10)
    times = [timed(step, cfg.device) for _ in range(n)]
    best, median = min(times), statistics.median(times)
    row = {
        "row": f"train_{name}" + ("" if variant == "fp32" else f"_{variant}"), "kind": "throughput",
        "model": name, "variant": variant, "device": str(cfg.device), "unit": "samples/s",
        "shapes": f"batch {batch}, audio 40x{spec.frames}, image {image_size} px, {variant}",
        "best": batch / best, "median": batch / median, "step_s": {"min": best, "median": median, "times": times},
        "params_trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "flops_per_step": flops["train"], "forward_flops_per_sample": flops["forward"] / batch,
        "achieved_tflops": flops["train"] / best / 1e12,
    }
    peak = peak_tflops(cfg.device, bf16)
    row["mfu"] = None if peak is None else row["achieved_tflops"] / peak
    row["notes"] = (f"{row['achieved_tflops']:.3g} TFLOP/s"
                    + ("" if row["mfu"] is None else f", MFU {100 * row['mfu']:.1f}% of {peak:g}"))
    synchronize(cfg.device)
    module = optimizer = None  # free this model before the next is built
    return row
