"""Shared test fixtures: tiny wavs, images and Places-format manifests written into pytest's tmp_path.

Fixtures for everyone:
    make_manifest   factory writing a small Places-format data set and returning the manifest path
    write_wav       function writing one synthetic wav
    write_image     function writing one synthetic image
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402

DEFAULT_CLASSES = ("runway", "abbey", "apartment_building/outdoor")


@pytest.fixture(autouse=True)
def _no_wandb_run_left_over():
    """Finish a W&B run a test leaves open and W&B's process-wide setup: Lightning's WandbLogger adopts
    ``wandb.run`` when one exists, and W&B keeps the mode of its first run (``WANDB_MODE=disabled``) for the
    process, so a later test's offline run would otherwise log nowhere."""
    yield
    import sys

    wandb = sys.modules.get("wandb")  # only when a test imported it
    if wandb is not None:
        if getattr(wandb, "run", None) is not None:
            wandb.finish()
        wandb.teardown()


def _write_wav(
    path: str | os.PathLike,
    seconds: float = 0.5,
    sample_rate: int = 16000,
    channels: int = 1,
    subtype: str = "PCM_16",
    seed: int = 0,
    silent: bool = False,
) -> Path:
    """A synthetic caption: two chirps plus a little noise (or zeros with `silent`), written with soundfile.

    `subtype`: any soundfile subtype, e.g. "PCM_U8", "PCM_16", "PCM_24", "FLOAT".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    f0 = 200.0 + 50.0 * (seed % 7)
    wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + t)) + 0.15 * np.sin(2 * np.pi * 2.5 * f0 * t)
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    if silent:
        wave = np.zeros(n)
    data = np.stack([wave * (0.8 ** c) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return path


def _write_image(
    path: str | os.PathLike,
    size: tuple[int, int] = (40, 32),
    mode: str = "RGB",
    seed: int = 0,
    format: str | None = None,
) -> Path:
    """A synthetic image (smooth gradient + noise) of `size` (width, height) in PIL `mode` ("RGB", "L", "CMYK",
    "RGBA", "P", "I;16", ...), saved in `format` (default: from the file extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(w + h - 2, 1)], -1)
    rgb = np.clip(rgb + rng.integers(-20, 20, size=rgb.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # 16-bit grey: mode "I;16"
    elif mode == "RGBA":
        alpha = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
        img = Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1))  # RGBA
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(str(path), format=format)
    return path


@pytest.fixture
def write_wav():
    """`write_wav(path, seconds=0.5, sample_rate=16000, channels=1, subtype="PCM_16", seed=0, silent=False) -> Path`."""
    return _write_wav


@pytest.fixture
def write_image():
    """`write_image(path, size=(40, 32), mode="RGB", seed=0, format=None) -> Path`."""
    return _write_image


@pytest.fixture
def make_manifest(tmp_path):
    """Factory for a tiny Places-format data set; returns the manifest's Path.

    make_manifest(n=6, name="train", classes=("runway", "abbey", "apartment_building/outdoor"), n_images=None,
                  seconds=None, sample_rate=16000, channels=1, subtype="PCM_16", image_size=(40, 32),
                  image_ext="jpg", seed=0, root=None, extra_items=None) -> Path

    Layout under `root` (default: the test's tmp_path):
        <name>.json                                   manifest; base paths relative to its folder
        <name>/wavs/utt_<i>.wav                       caption i
        <name>/images/<letter>/<class>/img_<j>.<ext>  image j = i % n_images, class classes[j % len(classes)]

    Captions have different lengths (`seconds[i]`, default 0.25 .. 0.61 s, i.e. 26 .. 62 log-mel frames), so
    padding is exercised; several captions share an image when n_images < n. Every item has uttid, speaker and
    asr_text. `extra_items` (list of dicts) are appended to "data" as given, e.g. to point at broken files.
    Deterministic for a given seed; calling it twice with different `name`s gives two splits under one root.
    """

    def make(
        n: int = 6,
        name: str = "train",
        classes: tuple[str, ...] = DEFAULT_CLASSES,
        n_images: int | None = None,
        seconds: list[float] | None = None,
        sample_rate: int = 16000,
        channels: int = 1,
        subtype: str = "PCM_16",
        image_size: tuple[int, int] = (40, 32),
        image_ext: str = "jpg",
        seed: int = 0,
        root: str | os.PathLike | None = None,
        extra_items: list[dict] | None = None,
    ) -> Path:
        root = Path(root) if root is not None else Path(tmp_path)
        n_images = n if n_images is None else n_images
        if seconds is None:
            seconds = [0.25 + 0.06 * ((i * 5 + seed) % 7) for i in range(n)]
        data = []
        for i in range(n):
            j = i % n_images
            cls = classes[j % len(classes)]
            image_rel = f"{cls[0]}/{cls}/img_{j}.{image_ext}"
            image_file = root / name / "images" / image_rel
            if not image_file.exists():
                _write_image(image_file, size=image_size, seed=seed * 1000 + j)
            wav_rel = f"wavs/utt_{i}.wav"
            _write_wav(root / name / wav_rel, seconds=seconds[i], sample_rate=sample_rate, channels=channels,
                       subtype=subtype, seed=seed * 1000 + i)
            speaker = f"SPK{i % 3}"
            data.append({"uttid": f"{speaker}-{name}{i}", "speaker": speaker, "asr_text": f"caption {i} of a {cls}",
                         "wav": wav_rel, "image": image_rel})
        data.extend(extra_items or [])
        manifest = root / f"{name}.json"
        manifest.write_text(json.dumps({"image_base_path": f"{name}/images", "audio_base_path": name, "data": data}))
        return manifest

    return make


@pytest.fixture(scope="session")
def spokenscenes(tmp_path_factory) -> Path:
    """A tiny SpokenScenes data set (16 train / 8 val / 8 test pairs at 64 px), generated once per session.

    Returns the folder with train.json, val.json and test.json (Places format plus words/objects/masks).
    """
    from datamodules.spokenscenes import generate

    root = tmp_path_factory.mktemp("spokenscenes") / "data"
    generate(root, train=16, val=8, test=8, seed=0, image_size=64, workers=1, progress=False)
    return root
