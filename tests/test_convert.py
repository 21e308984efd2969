"""Tests of `lightning_modules.convert`: official DAVEnet-pytorch / ResDAVEnet-VQ checkpoints -> our Lightning ones.

The official state dicts are written here from the key/shape tables of /work/shared/spec/official-keys.md (not from
our nets), filled with random tensors; their outputs are checked against independent re-implementations of the
official forwards (the audio nets with `F.conv2d` on the raw official tensors, the image nets with torchvision).
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from official_layouts import bn_shapes, resdavenet_audio_shapes

from lightning_modules.convert import SOURCES, ConversionError, convert, load_official, main, match_keys
from lightning_modules.core.similarity import similarity_matrix
from lightning_modules.core.weights import WeightsFileError
from lightning_modules.davenet import DAVEnet
from lightning_modules.nets import DAVEnetAudioNet, ResDAVEnetAudioNet, ResNet50Image, VGG16ConvImage
from lightning_modules.resdavenet import ResDAVEnet

EMB = 64  # DAVEnet embedding: the official audio/VGG widths are fixed, only conv5 / image_model.30 shrink
RES_WIDTHS = [8, 16, 16, 32, 64]  # small ResDAVEnet widths; the official layout allows any
RES_DEPTHS = [2, 2, 2, 2]
VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]


# ---- official-layout state dicts -------------------------------------------------------------------------------
def _fill(shapes: dict, seed: int, nbt: bool = False, prefix: str = "") -> dict:
    """Random tensors of the given shapes: convs scaled by 1/sqrt(fan_in) so activations stay O(1), BatchNorm
    statistics positive where they must be; `nbt` adds `num_batches_tracked` to every BatchNorm.

    A new dict each call (tests may edit it), over tensors cached per arguments (never modified in place)."""
    return dict(_cached_fill(tuple(shapes.items()), seed, nbt, prefix))


@functools.cache
def _cached_fill(shapes: tuple, seed: int, nbt: bool, prefix: str) -> dict:
    shapes = dict(shapes)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 4:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight") and key.replace("weight", "running_mean") in shapes:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.1 * torch.randn(shape, generator=g)
        out[prefix + key] = t
        if nbt and key.endswith("running_var"):
            out[prefix + key.replace("running_var", "num_batches_tracked")] = torch.tensor(1234 + seed)
    return out


def davenet_audio_sd(embedding_dim: int = EMB, seed: int = 0, nbt: bool = False, prefix: str = "") -> dict:
    """DAVEnet-pytorch `Davenet` (official-keys.md)."""
    shapes = {
        **bn_shapes("batchnorm1", 1),
        "conv1.weight": (128, 1, 40, 1), "conv1.bias": (128,),
        "conv2.weight": (256, 128, 1, 11), "conv2.bias": (256,),
        "conv3.weight": (512, 256, 1, 17), "conv3.bias": (512,),
        "conv4.weight": (512, 512, 1, 17), "conv4.bias": (512,),
        "conv5.weight": (embedding_dim, 512, 1, 17), "conv5.bias": (embedding_dim,),
    }
    return _fill(shapes, seed, nbt, prefix)


def vgg16_sd(embedding_dim: int = EMB, seed: int = 1, prefix: str = "") -> dict:
    """DAVEnet-pytorch `VGG16`: one Sequential `image_model`, VGG16 features 0..29 and the 3x3 conv at index 30."""
    shapes = {}
    for i, cin, cout in VGG_CONVS + [(30, 512, embedding_dim)]:
        shapes[f"image_model.{i}.weight"] = (cout, cin, 3, 3)
        shapes[f"image_model.{i}.bias"] = (cout,)
    return _fill(shapes, seed, prefix=prefix)


def resdavenet_audio_sd(
    widths=RES_WIDTHS, depths=RES_DEPTHS, convsize: int = 9, vq: dict[int, int] | None = None, seed: int = 2,
    nbt: bool = False, prefix: str = "",
) -> dict:
    """ResDAVEnet-VQ `ResDavenetVQ` (official-keys.md), with the never-called `batchnorm1`.

    `vq` = {k: codebook size} adds VQ layer k's EMA state, named as the official `VectorQuantizerEMA` names it:
    `quant<k>._embedding.weight` [K, width], `quant<k>._ema_cluster_size` [K], `quant<k>._ema_w` [K, width], with
    width = layer_widths[k-1] (quant1 sits after conv1, quant<k> after layer<k-1>). Codes are drawn around the
    scale of the (post-ReLU) activations they quantise, cluster sizes positive, `_ema_w = size * code` as the EMA
    keeps it.
    """
    shapes = resdavenet_audio_shapes(widths, depths, convsize)
    sd = _fill(shapes, seed, nbt, prefix)
    g = torch.Generator().manual_seed(100 + seed)
    for k, size in sorted((vq or {}).items()):
        codes = (0.5 * torch.randn(size, widths[k - 1], generator=g)).abs()
        mass = 1.0 + 3.0 * torch.rand(size, generator=g)
        sd[f"{prefix}quant{k}._embedding.weight"] = codes
        sd[f"{prefix}quant{k}._ema_cluster_size"] = mass
        sd[f"{prefix}quant{k}._ema_w"] = codes * mass[:, None]
    return sd


def resnet50_sd(embedding_dim: int, seed: int = 3, nbt: bool = False, prefix: str = "") -> dict:
    """ResDAVEnet-VQ `Resnet50`: torchvision resnet50 keys without `fc`, then the 1x1 conv `embedder`."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **bn_shapes("bn1", 64)}
    cin = 64
    for k, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for j in range(blocks):
            b = f"layer{k}.{j}"
            shapes[f"{b}.conv1.weight"] = (planes, cin, 1, 1)
            shapes.update(bn_shapes(f"{b}.bn1", planes))
            shapes[f"{b}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(bn_shapes(f"{b}.bn2", planes))
            shapes[f"{b}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes.update(bn_shapes(f"{b}.bn3", planes * 4))
            if j == 0:
                shapes[f"{b}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                shapes.update(bn_shapes(f"{b}.downsample.1", planes * 4))
            cin = planes * 4
    shapes["embedder.weight"] = (embedding_dim, 2048, 1, 1)
    shapes["embedder.bias"] = (embedding_dim,)
    return _fill(shapes, seed, nbt, prefix)


def test_helpers_write_the_official_layouts():
    # Entry counts of official-keys.md (num_batches_tracked included) and a few exact shapes.
    assert len(davenet_audio_sd(1024, nbt=True)) == 15 and len(vgg16_sd(1024)) == 28
    res = resdavenet_audio_sd(nbt=True)
    assert len(res) == 131 and res["layer1.0.downsample.0.weight"].shape == (16, 8, 1, 1)
    assert "layer1.1.downsample.0.weight" not in res
    resnet = resnet50_sd(64, nbt=True)
    assert len(resnet) == 320 and resnet["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert sorted(torchvision.models.resnet50().state_dict()) == sorted(
        [k for k in resnet if not k.startswith("embedder.")] + ["fc.weight", "fc.bias"]
    )


def _strip(sd: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in sd.items()}


# ---- independent official forwards -------------------------------------------------------------------------
def _bn_eval(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)


def official_davenet_audio(sd: dict, audio: torch.Tensor) -> torch.Tensor:
    """DAVEnet-pytorch Davenet.forward from the paper's layer table, on the raw official tensors."""
    sd = _strip(sd)
    x = _bn_eval(audio.unsqueeze(1), sd, "batchnorm1")
    x = F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"]))
    for name, pad in (("conv2", 5), ("conv3", 8), ("conv4", 8), ("conv5", 8)):
        x = F.relu(F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=(0, pad)))
        x = F.max_pool2d(x, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))
    return x.squeeze(2)


def _official_quantize(sd: dict, x: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ResDavenetVQ.maybe_quantize + VectorQuantizerEMA.forward in eval, as the official code writes them: frames
    flattened (B, H, W, C), distances |x|^2 + |e|^2 - 2 x e^T, argmin, a one-hot matrix times the codebook.
    Returns (quantized map [B, C, 1, T], codes [B, T]); the identity and no codes where quant<k> is absent."""
    key = f"quant{position}._embedding.weight"
    if key not in sd:
        return x, None
    e = sd[key]
    flat = x.permute(0, 2, 3, 1).contiguous()
    bhwc = flat.shape
    flat = flat.view(-1, bhwc[-1])
    distances = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
    index = distances.argmin(1, keepdim=True)
    onehots = torch.zeros(index.shape[0], e.shape[0]).scatter_(1, index, 1)
    quantized = (onehots @ e).view(bhwc).permute(0, 3, 1, 2)
    return quantized, onehots.argmax(1).view(bhwc[0], bhwc[2])


def official_resdavenet_audio(sd: dict, audio: torch.Tensor, depths=RES_DEPTHS, codes_at: int | None = None):
    """ResDavenetVQ.forward in eval (batchnorm1 is never called; no jitter in eval), with every `quant<k>` of the
    state dict, on the raw official tensors. `codes_at=k`: instead, the codes at VQ position k, as
    `get_vq_outputs(x, "quant<k>")` gives them (the argmax of its one-hots)."""
    sd = _strip(sd)
    x = F.relu(_bn_eval(F.conv2d(audio.unsqueeze(1), sd["conv1.weight"]), sd, "bn1"))
    x, codes = _official_quantize(sd, x, 1)
    if codes_at == 1:
        return codes
    for k, depth in enumerate(depths, start=1):
        for j in range(depth):
            b = f"layer{k}.{j}"
            stride = 2 if j == 0 else 1
            w1 = sd[f"{b}.conv1.weight"]
            out = F.relu(_bn_eval(F.conv2d(x, w1, stride=stride, padding=(0, w1.shape[-1] // 2)), sd, f"{b}.bn1"))
            out = _bn_eval(F.conv2d(out, sd[f"{b}.conv2.weight"], padding=(0, w1.shape[-1] // 2)), sd, f"{b}.bn2")
            shortcut = x
            if j == 0:
                shortcut = _bn_eval(F.conv2d(x, sd[f"{b}.downsample.0.weight"], stride=2), sd, f"{b}.downsample.1")
            x = F.relu(out + shortcut)
        x, codes = _official_quantize(sd, x, k + 1)
        if codes_at == k + 1:
            return codes
    return x.squeeze(2)


def official_vgg16(sd: dict, image: torch.Tensor) -> torch.Tensor:
    """torchvision's vgg16().features without its last max-pool (indices 0..29), then the 3x3 conv at index 30."""
    sd = _strip(sd)
    vgg = torchvision.models.vgg  # make_layers(cfgs["D"]) is vgg16().features, without building the classifier
    features = vgg.make_layers(vgg.cfgs["D"])[:30].eval()
    features.load_state_dict(
        {k.removeprefix("image_model."): v for k, v in sd.items() if not k.startswith("image_model.30.")}
    )
    with torch.no_grad():
        return F.conv2d(features(image), sd["image_model.30.weight"], sd["image_model.30.bias"], padding=1)


def official_resnet50(sd: dict, image: torch.Tensor) -> torch.Tensor:
    """torchvision's resnet50() up to layer4, then the 1x1 `embedder`."""
    sd = _strip(sd)
    net = torchvision.models.resnet50().eval()
    backbone = {k: v for k, v in sd.items() if not k.startswith("embedder.")}
    missing, unexpected = net.load_state_dict(backbone, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(image))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return F.conv2d(x, sd["embedder.weight"], sd["embedder.bias"])


def _inputs(image_px: int):
    g = torch.Generator().manual_seed(7)
    audio = torch.randn(2, 40, 48, generator=g)
    nframes = torch.tensor([48, 30])
    image = torch.randn(2, 3, image_px, image_px, generator=g)
    return audio, nframes, image


# ---- fixtures: one conversion per model family, shared by the tests of this file ------------------------------
@pytest.fixture(scope="module")
def davenet_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("davenet")
    audio, image = davenet_audio_sd(prefix="module."), vgg16_sd(prefix="module.")  # DataParallel-saved
    torch.save(audio, d / "audio_model.pth")
    torch.save(image, d / "image_model.pth")
    report = convert("davenet-pytorch", d / "audio_model.pth", d / "image_model.pth", d / "davenet.ckpt")
    return dict(dir=d, audio=audio, image=image, report=report, ckpt=d / "davenet.ckpt")


@pytest.fixture(scope="module")
def resdavenet_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("resdavenet")
    audio = resdavenet_audio_sd(vq={2: 16, 3: 16}, nbt=True)
    image = resnet50_sd(RES_WIDTHS[-1], nbt=True)
    torch.save(audio, d / "audio_model.pth")
    torch.save(image, d / "image_model.pth")
    with pytest.warns(UserWarning) as caught:
        report = convert("resdavenet-vq", d / "audio_model.pth", d / "image_model.pth", d / "resdavenet.ckpt")
    return dict(dir=d, audio=audio, image=image, report=report, ckpt=d / "resdavenet.ckpt",
                warnings=[str(w.message) for w in caught])


def _module_from(ckpt_path, cls):
    module = cls.load_from_checkpoint(str(ckpt_path), map_location="cpu")
    return module.eval()


# ---- DAVEnet -----------------------------------------------------------------------------------------------------
def test_davenet_checkpoint_layout_and_inferred_hparams(davenet_case):
    ckpt = torch.load(davenet_case["ckpt"], map_location="cpu", weights_only=True)  # what LightningCLI does
    hp = ckpt["hyper_parameters"]
    assert hp["_class_path"] == "lightning_modules.davenet.DAVEnet"
    assert hp["_instantiator"] == "pytorch_lightning.cli.instantiate_module"
    assert hp["embedding_dim"] == EMB and hp["pretrained_image"] is False
    assert hp["similarity_kind"] == "MISA" and hp["normalize_outputs"] is False
    assert hp["mask_padding"] is False  # the official function: the padding is not masked inside the net
    assert "pytorch-lightning_version" in ckpt
    sd = ckpt["state_dict"]
    assert sd["audio_net.conv5.weight"].shape == (EMB, 512, 1, 17)
    assert torch.equal(sd["audio_net.conv3.weight"], davenet_case["audio"]["module.conv3.weight"])
    assert torch.equal(sd["image_net.embedder.weight"], davenet_case["image"]["module.image_model.30.weight"])
    assert torch.equal(sd["image_net.features.28.bias"], davenet_case["image"]["module.image_model.28.bias"])
    assert all(k.startswith(("audio_net.", "image_net.", "loss.")) for k in sd)
    report = davenet_case["report"]
    assert report["stripped_module_prefix"] is True
    assert report["loaded"] == {"audio_net": 14, "image_net": 28}  # every official entry (no num_batches_tracked)
    assert report["dropped"] == [] and report["vq"] == [] and report["warnings"] == []


def test_davenet_matches_official_forward_and_direct_load(davenet_case):
    module = _module_from(davenet_case["ckpt"], DAVEnet)
    assert isinstance(module.audio_net, DAVEnetAudioNet) and module.audio_net.embedding_dim == EMB
    audio, nframes, image = _inputs(32)
    with torch.no_grad():
        image_out, audio_out, out_nframes = module(image, audio, nframes)
    # Independent official forwards on the raw tensors: catches mapped-but-swapped keys (e.g. conv3 <-> conv4).
    ref_audio = official_davenet_audio(davenet_case["audio"], audio)
    ref_image = official_vgg16(davenet_case["image"], image)
    torch.testing.assert_close(audio_out, ref_audio)
    torch.testing.assert_close(image_out, ref_image)
    assert audio_out.abs().max() > 0 and audio_out.shape == (2, EMB, 3)
    # Our plain nets loaded directly with the same weights agree too.
    audio_net, image_net = DAVEnetAudioNet(EMB, mask_padding=False).eval(), VGG16ConvImage(EMB).eval()
    audio_net.load_state_dict(_strip(davenet_case["audio"]))
    image_renames = SOURCES["davenet-pytorch"].image_renames
    image_net.load_state_dict(match_keys(image_net, _strip(davenet_case["image"]), image_renames, "image"))
    with torch.no_grad():
        torch.testing.assert_close(audio_out, audio_net(audio, nframes))
        torch.testing.assert_close(image_out, image_net(image))
    sim = similarity_matrix(image_out, audio_out, out_nframes, kind="MISA")
    ref_sim = similarity_matrix(ref_image, ref_audio, audio_net.output_frames(nframes), kind="MISA")
    torch.testing.assert_close(sim, ref_sim)


def test_reference_forward_detects_key_mixups(davenet_case):
    # The comparison above can fail: plausible converter bugs change the official forward's output.
    audio, x = davenet_case["audio"], _inputs(32)[0]
    expected = official_davenet_audio(audio, x)
    transposed = {**audio, "module.conv4.weight": audio["module.conv4.weight"].transpose(0, 1)}  # in/out mixed up
    stats_swapped = {**audio, "module.batchnorm1.running_mean": audio["module.batchnorm1.running_var"],
                     "module.batchnorm1.running_var": audio["module.batchnorm1.running_mean"].abs()}
    for wrong in (transposed, stats_swapped):
        assert not torch.allclose(official_davenet_audio(wrong, x), expected, atol=1e-4)


@pytest.mark.parametrize("prefix,nbt", [("", True), ("module.", False)])
def test_davenet_load_official_in_memory(prefix, nbt):
    audio = davenet_audio_sd(seed=5, nbt=nbt, prefix=prefix)
    module, report = load_official("davenet-pytorch", audio, vgg16_sd(seed=6, prefix=prefix), similarity_kind="SIMA")
    assert isinstance(module, DAVEnet) and not module.training
    assert module.similarity_kind == "SIMA" and report["init_args"]["similarity_kind"] == "SIMA"
    assert report["stripped_module_prefix"] is bool(prefix)
    assert report["loaded"]["audio_net"] == 14 + nbt
    nbt_value = module.audio_net.batchnorm1.num_batches_tracked.item()
    assert nbt_value == (audio[f"{prefix}batchnorm1.num_batches_tracked"].item() if nbt else 0)
    torch.testing.assert_close(module.audio_net.batchnorm1.running_var, audio[f"{prefix}batchnorm1.running_var"])


# ---- ResDAVEnet --------------------------------------------------------------------------------------------------
def test_resdavenet_infers_architecture_and_loads_vq(resdavenet_case):
    ckpt = torch.load(resdavenet_case["ckpt"], map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["_class_path"] == "lightning_modules.resdavenet.ResDAVEnet"
    assert hp["layer_widths"] == RES_WIDTHS and hp["layer_depths"] == RES_DEPTHS and hp["convsize"] == 9
    assert hp["image_arch"] == "resnet50" and hp["pretrained_image"] is False and hp["similarity_kind"] == "SISA"
    assert hp["vq_layers"] == [2, 3] and hp["codebook_size"] == 16 and hp["mask_padding"] is False
    report = resdavenet_case["report"]
    assert report["dropped"] == ["batchnorm1.bias", "batchnorm1.num_batches_tracked", "batchnorm1.running_mean",
                                 "batchnorm1.running_var", "batchnorm1.weight"]
    assert report["vq"] == [{"position": 2, "codes": 16, "width": 16}, {"position": 3, "codes": 16, "width": 16}]
    assert report["loaded"]["audio_net"] == 126 + 6  # 131 official entries - batchnorm1's 5 + 2 x 3 VQ tensors
    # The dropped batchnorm1 travels along, untouched, beside the state dict; the VQ state is in it.
    aside = ckpt["unused_official_state"]
    assert sorted(aside) == report["dropped"]
    for key in aside:
        assert torch.equal(aside[key], resdavenet_case["audio"][key])
    sd = ckpt["state_dict"]
    for k in (2, 3):
        for official, ours in (("_embedding.weight", "codebook"), ("_ema_cluster_size", "ema_count"),
                               ("_ema_w", "ema_sum")):
            assert torch.equal(sd[f"audio_net.quant{k}.{ours}"], resdavenet_case["audio"][f"quant{k}.{official}"])
    assert not any("batchnorm1" in k for k in sd)
    assert any("batchnorm1" in w and "never uses" in w for w in resdavenet_case["warnings"])
    assert ckpt["converted_from"]["vq"] == report["vq"]


def test_resdavenet_matches_official_forward_and_direct_load(resdavenet_case):
    module = _module_from(resdavenet_case["ckpt"], ResDAVEnet)
    assert isinstance(module.audio_net, ResDAVEnetAudioNet) and module.audio_net.layer_widths == RES_WIDTHS
    assert module.audio_net.vq_layers == (2, 3) and module.audio_net.mask_padding is False
    audio, nframes, image = _inputs(64)
    with torch.no_grad():
        image_out, audio_out, out_nframes = module(image, audio, nframes)
    ref_audio = official_resdavenet_audio(resdavenet_case["audio"], audio)
    ref_image = official_resnet50(resdavenet_case["image"], image)
    torch.testing.assert_close(audio_out, ref_audio)
    torch.testing.assert_close(image_out, ref_image)
    assert audio_out.shape == (2, RES_WIDTHS[-1], 3) and image_out.shape == (2, RES_WIDTHS[-1], 2, 2)
    # The VQ layers matter: without them the official backbone computes something else.
    vq_off = {k: v for k, v in resdavenet_case["audio"].items() if not k.startswith("quant")}
    assert not torch.allclose(official_resdavenet_audio(vq_off, audio), ref_audio, atol=1e-3)
    # num_batches_tracked came from the file.
    assert module.audio_net.layer3[1].bn2.num_batches_tracked.item() == 1234 + 2
    audio_net = ResDAVEnetAudioNet(RES_WIDTHS, RES_DEPTHS, mask_padding=False).eval()
    audio_net.load_state_dict(
        {k: v for k, v in vq_off.items() if k.startswith(("conv1", "bn1", "layer"))}
    )
    image_net = ResNet50Image(RES_WIDTHS[-1]).eval()
    image_net.load_state_dict(resdavenet_case["image"])
    with torch.no_grad():
        torch.testing.assert_close(official_resdavenet_audio(vq_off, audio), audio_net(audio, nframes))
        torch.testing.assert_close(image_out, image_net(image))
    sim = similarity_matrix(image_out, audio_out, out_nframes, kind="SISA")
    ref_sim = similarity_matrix(ref_image, ref_audio, audio_net.output_frames(nframes), kind="SISA")
    torch.testing.assert_close(sim, ref_sim)


# The VQ configurations of the released checkpoints: {2}, {3}, {2,3} and {2,3,4} (with and without `module.`).
@pytest.mark.parametrize("positions,prefix", [((2,), "module."), ((3,), ""), ((2, 3), "module."), ((2, 3, 4), "")])
def test_resdavenet_vq_round_trip_equals_official_forward_and_codes(positions, prefix):
    sizes = {2: 24, 3: 40, 4: 24}  # different sizes per position: codebook_size becomes one per position
    audio = resdavenet_audio_sd(vq={k: sizes[k] for k in positions}, seed=11, prefix=prefix)
    module, report = load_official("resdavenet-vq", audio, resnet50_sd(RES_WIDTHS[-1]))
    assert report["vq"] == [{"position": k, "codes": sizes[k], "width": RES_WIDTHS[k - 1]} for k in positions]
    assert report["init_args"]["vq_layers"] == list(positions)
    expected_sizes = sizes[positions[0]] if len({sizes[k] for k in positions}) == 1 else [
        sizes.get(k, 1024) if k in positions else 1024 for k in range(1, 6)]
    assert report["init_args"]["codebook_size"] == expected_sizes
    net = module.audio_net
    g = torch.Generator().manual_seed(3)
    x, nframes = torch.randn(3, 40, 70, generator=g), torch.tensor([70, 52, 33])
    with torch.no_grad():
        torch.testing.assert_close(net(x, nframes), official_resdavenet_audio(audio, x))
    for k in positions:
        codes, valid = net.encode_units(x, nframes, layer=k)
        official = official_resdavenet_audio(audio, x, codes_at=k)
        assert codes.dtype == torch.int64 and torch.equal(codes, official)
        assert len(codes.unique()) > 2  # not a degenerate codebook where every frame takes one code
        assert valid.tolist() == [math.ceil(n / 2 ** (k - 1)) for n in nframes.tolist()]
        assert torch.equal(net.codebook(k), audio[f"{prefix}quant{k}._embedding.weight"])


def test_resdavenet_vq_layout_errors():
    audio = resdavenet_audio_sd(vq={3: 16})
    audio["quant3._ema_w"] = torch.zeros(16, 8)
    with pytest.raises(ConversionError, match=r"wrong shapes: quant3\._ema_w \(16, 8\) \(expected \(16, 16\)\)"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))
    audio = resdavenet_audio_sd(vq={3: 16})
    audio["quant3._embedding.weight"] = torch.zeros(16, 32)
    with pytest.raises(ConversionError, match=r"quant3\._embedding\.weight has shape \(16, 32\).*16 wide"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))
    audio = {**resdavenet_audio_sd(vq={2: 16}), "quant6._embedding.weight": torch.zeros(4, 64)}
    with pytest.raises(ConversionError, match=r"quant6 is not a VQ position of a 4-stage model"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))
    audio = {**resdavenet_audio_sd(vq={2: 16}), "quant2.extra": torch.zeros(3)}
    with pytest.raises(ConversionError, match=r"unknown keys: quant2\.extra"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))
    audio = resdavenet_audio_sd(vq={2: 16})
    del audio["quant2._ema_w"]
    with pytest.raises(ConversionError, match=r"missing keys: quant2\._ema_w"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))


def test_resdavenet_infers_other_depths_and_kernel():
    widths, depths = [8, 8, 16, 16, 64], [1, 3, 2, 1]
    audio = resdavenet_audio_sd(widths, depths, convsize=5, prefix="module.")
    module, report = load_official("resdavenet-vq", audio, resnet50_sd(64))
    assert report["init_args"]["layer_widths"] == widths and report["init_args"]["layer_depths"] == depths
    assert report["init_args"]["convsize"] == 5 and report["vq"] == [] and report["init_args"]["vq_layers"] == []
    x = _inputs(32)[0]
    with torch.no_grad():
        torch.testing.assert_close(module.audio_net(x), official_resdavenet_audio(audio, x, depths))


# ---- errors --------------------------------------------------------------------------------------------------
def test_missing_unknown_and_misshaped_keys_name_the_file(tmp_path):
    audio = davenet_audio_sd()
    del audio["conv3.bias"]
    audio["conv6.weight"] = torch.zeros(3)
    audio["conv2.weight"] = torch.zeros(256, 128, 1, 9)
    image = vgg16_sd()
    del image["image_model.30.bias"]
    torch.save(audio, tmp_path / "audio_model.pth")
    torch.save(image, tmp_path / "image_model.pth")
    with pytest.raises(ConversionError) as err:
        convert("davenet-pytorch", tmp_path / "audio_model.pth", tmp_path / "image_model.pth", tmp_path / "out.ckpt")
    msg = str(err.value)
    assert str(tmp_path / "audio_model.pth") in msg and "Davenet" in msg
    assert re.search(r"unknown keys: conv6\.weight", msg)
    assert re.search(r"missing keys: conv3\.bias", msg)
    assert "conv2.weight (256, 128, 1, 9) (expected (256, 128, 1, 11))" in msg
    assert not (tmp_path / "out.ckpt").exists()
    # The image error names the key the way the official file does.
    audio = davenet_audio_sd()
    with pytest.raises(ConversionError, match=r"image state dict \(VGG16\)[\s\S]*missing keys: image_model\.30\.bias"):
        load_official("davenet-pytorch", audio, image)


def test_wrong_source_and_mismatched_pairs():
    with pytest.raises(ConversionError, match=r"no 'conv5\.weight'.*DAVEnet-pytorch Davenet"):
        load_official("davenet-pytorch", resdavenet_audio_sd(), vgg16_sd())
    with pytest.raises(ConversionError, match=r"no 'layer<K>\.<J>\.' keys.*ResDavenetVQ"):
        load_official("resdavenet-vq", davenet_audio_sd(), resnet50_sd(64))
    with pytest.raises(ConversionError, match=r"embedding sizes differ.*64.*32"):
        load_official("davenet-pytorch", davenet_audio_sd(64), vgg16_sd(32))
    with pytest.raises(ConversionError, match=r"embedding sizes differ.*64.*128"):
        load_official("resdavenet-vq", resdavenet_audio_sd(), resnet50_sd(128))
    # VQ keys are set aside only for ResDAVEnet-VQ; in a DAVEnet-pytorch file they are unknown.
    audio = {**davenet_audio_sd(), "quant2._ema_w": torch.zeros(4, 256)}
    with pytest.raises(ConversionError, match=r"unknown keys: quant2\._ema_w"):
        load_official("davenet-pytorch", audio, vgg16_sd())
    with pytest.raises(ValueError, match="source must be one of"):
        load_official("davenet", davenet_audio_sd(), vgg16_sd())


def test_resdavenet_layout_errors():
    audio = resdavenet_audio_sd()
    audio["layer2.0.conv2.weight"] = torch.zeros(16, 16, 1, 7)  # one conv with another kernel
    module = ResDAVEnetAudioNet(RES_WIDTHS, RES_DEPTHS)
    with pytest.raises(ConversionError, match=r"wrong shapes: layer2\.0\.conv2\.weight \(16, 16, 1, 7\)"):
        match_keys(module, {k: v for k, v in audio.items() if not k.startswith("batchnorm1")}, (), "a.pth")
    audio = resdavenet_audio_sd(depths=[2, 3, 2, 2])
    gap = {k: v for k, v in audio.items() if not k.startswith("layer2.1.")}  # blocks 0 and 2 only
    with pytest.raises(ConversionError, match=r"missing keys: layer2\.1\.conv1\.weight"):
        load_official("resdavenet-vq", gap, resnet50_sd(64))
    audio = resdavenet_audio_sd()
    audio["layer3.0.conv1.weight"] = torch.zeros(32, 16, 1, 7)
    with pytest.raises(ConversionError, match=r"different kernel widths \[7, 9\]"):
        load_official("resdavenet-vq", audio, resnet50_sd(64))


def test_overrides_cannot_change_the_architecture():
    with pytest.raises(ConversionError, match=r"embedding_dim=1024 contradicts the weights \(embedding_dim=64"):
        load_official("davenet-pytorch", davenet_audio_sd(), vgg16_sd(), embedding_dim=1024)
    with pytest.raises(ConversionError, match="layer_widths"):
        load_official("resdavenet-vq", resdavenet_audio_sd(), resnet50_sd(64), layer_widths=(128, 256, 256, 512, 64))
    module, report = load_official("resdavenet-vq", resdavenet_audio_sd(), resnet50_sd(64),
                                   layer_widths=tuple(RES_WIDTHS), recall_ks=(1, 5))  # repeating them is fine
    assert report["init_args"]["recall_ks"] == [1, 5] and module.similarity_kind == "SISA"


def test_convert_stores_only_plain_overrides(davenet_case, tmp_path):
    d = davenet_case["dir"]
    with pytest.raises(ValueError, match=r"override loss=.*plain values only"):
        convert("davenet-pytorch", d / "audio_model.pth", d / "image_model.pth", tmp_path / "o.ckpt",
                loss=torch.nn.Identity())
    report = convert("davenet-pytorch", d / "audio_model.pth", d / "image_model.pth", tmp_path / "o.ckpt",
                     recall_ks=(1, 2), eval_chunk_size=1024)
    hp = torch.load(tmp_path / "o.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["recall_ks"] == [1, 2] and hp["eval_chunk_size"] == 1024 and report["init_args"]["recall_ks"] == [1, 2]
    assert list(_module_from(tmp_path / "o.ckpt", DAVEnet).hparams.recall_ks) == [1, 2]


def test_unreadable_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save(vgg16_sd(), tmp_path / "image.pth")
    with pytest.raises(WeightsFileError, match=r"audio file \S*notes\.txt: not a torch file"):
        convert("davenet-pytorch", tmp_path / "notes.txt", tmp_path / "image.pth", tmp_path / "o.ckpt")
    torch.save({"state_dict": davenet_audio_sd(), "epoch": 3}, tmp_path / "lightning.ckpt")
    with pytest.raises(WeightsFileError, match=r"lightning\.ckpt: expected a state dict.*Lightning checkpoint"):
        convert("davenet-pytorch", tmp_path / "lightning.ckpt", tmp_path / "image.pth", tmp_path / "o.ckpt")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert("davenet-pytorch", tmp_path / "nope.pth", tmp_path / "image.pth", tmp_path / "o.ckpt")


def test_command_line(davenet_case, capsys, tmp_path):
    d = davenet_case["dir"]
    report = main(["--from", "davenet-pytorch", "--audio", str(d / "audio_model.pth"), "--image",
                   str(d / "image_model.pth"), "--out", str(tmp_path / "sub" / "sisa.ckpt"), "--similarity", "SISA"])
    out = capsys.readouterr().out
    assert "lightning_modules.davenet.DAVEnet(embedding_dim=64" in out and "similarity_kind=SISA" in out
    assert "python cli.py test --config configs/davenet.yaml --ckpt_path" in out
    assert report["init_args"]["similarity_kind"] == "SISA"
    ckpt = torch.load(tmp_path / "sub" / "sisa.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["similarity_kind"] == "SISA"
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "resdavenet-vq", "--audio", str(d / "audio_model.pth"), "--image",
              str(d / "image_model.pth"), "--out", str(tmp_path / "x.ckpt")])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x.ckpt").exists()


# ---- end to end: the CLI rebuilds the inferred architecture and tests it ------------------------------------------
@pytest.mark.parametrize("family", ["davenet", "resdavenet"])
def test_cli_test_accepts_converted_checkpoint(family, davenet_case, resdavenet_case, make_manifest, tmp_path):
    import cli

    case = davenet_case if family == "davenet" else resdavenet_case
    manifest = str(make_manifest(n=4, name="test"))
    args = [
        "test", "--config", f"configs/{family}.yaml", "--ckpt_path", str(case["ckpt"]),
        # The config asks for ImageNet weights (a download) and paper sizes; the checkpoint's hparams override both.
        # train_manifest: cli.py links data.n_places -> model, which needs a train manifest even for `test`.
        "--data.train_manifest", manifest, "--data.val_manifest", "null", "--data.test_manifest", manifest,
        "--data.num_workers", "0", "--data.batch_size", "4", "--data.image_size", "32", "--data.target_length", "null",
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
    ]
    result = cli.main(args, run=True)
    model = result.model
    if family == "davenet":
        assert isinstance(model, DAVEnet) and model.audio_net.embedding_dim == EMB  # config says 1024
        official = case["audio"]["module.conv5.weight"]
        assert torch.equal(model.audio_net.conv5.weight.cpu(), official)
    else:
        assert isinstance(model, ResDAVEnet) and model.audio_net.layer_widths == RES_WIDTHS  # config: 128..1024
        assert torch.equal(model.audio_net.layer4[1].conv2.weight.cpu(), case["audio"]["layer4.1.conv2.weight"])
    assert model.hparams.pretrained_image is False
    metrics = {k: float(v) for k, v in result.trainer.callback_metrics.items()}
    recalls = {k: v for k, v in metrics.items() if re.fullmatch(r"test/(a2i|i2a|mean)_R@\d+", k)}
    assert {"test/a2i_R@1", "test/i2a_R@10", "test/mean_R@10"} <= set(recalls)
    assert all(0.0 <= v <= 1.0 for v in recalls.values())
    assert recalls["test/a2i_R@10"] == 1.0  # 4 captions: every image is within the top 10
