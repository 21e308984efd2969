"""Tests for lightning_modules/nets: sizes, shapes, output lengths, masking, frozen VGG, official keys, weights."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from official_layouts import resdavenet_audio_shapes
from torch import nn

from lightning_modules.convert import SOURCES, match_keys, strip_dataparallel
from lightning_modules.nets import (
    RESDAVENET_RELEASED_WIDTHS,
    ACL2017AudioNet,
    AudioPlaceClassifier,
    DAVEnetAudioNet,
    NIPS2016AudioNet,
    ResDAVEnetAudioNet,
    ResNet50Image,
    VGG16ConvImage,
    VGG16FC7Image,
    masked_max,
    masked_mean,
)


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def keys_and_shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


# Tiny CPU-sized versions of every audio net (paper layer structure, few channels).
TINY_AUDIO = {
    "nips2016": lambda: NIPS2016AudioNet(embedding_dim=16, width_mult=1 / 16),
    "nips2016_mean": lambda: NIPS2016AudioNet(embedding_dim=16, width_mult=1 / 16, pooling="mean"),
    "acl2017": lambda: ACL2017AudioNet(embedding_dim=16, width_mult=1 / 16),
    "acl2017_bn": lambda: ACL2017AudioNet(embedding_dim=16, width_mult=1 / 16, conv_batchnorm=True),
    "davenet": lambda: DAVEnetAudioNet(embedding_dim=16, width_mult=1 / 16),
    "davenet_bn": lambda: DAVEnetAudioNet(embedding_dim=16, width_mult=1 / 16, conv_batchnorm=True),
    "resdavenet": lambda: ResDAVEnetAudioNet(width_mult=1 / 16, embedding_dim=16),
}
POOLED = ["nips2016", "nips2016_mean", "acl2017", "acl2017_bn"]


def tiny_audio(name: str) -> nn.Module:
    torch.manual_seed(0)
    return TINY_AUDIO[name]().eval()


@pytest.fixture(scope="module")
def tv_vgg16():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def tv_resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


# --------------------------------------------------------------------------------------------------------------
# Parameter counts at paper size


def test_paper_size_audio_parameter_counts():
    # Official class counts (DAVEnet-pytorch Davenet; ResDAVEnet-VQ ResDavenetVQ without its unused batchnorm1).
    assert n_params(DAVEnetAudioNet()) == 15_965_570
    assert n_params(ResDAVEnetAudioNet.released()) == 46_490_880
    assert n_params(ResDAVEnetAudioNet(layer_widths=RESDAVENET_RELEASED_WIDTHS)) == 46_490_880
    assert n_params(ResDAVEnetAudioNet()) == 44_670_976
    # NIPS 2016 by hand from the layer table (weights + biases):
    #   conv1  64 * 1 * 40 * 5 + 64        =     12,864
    #   conv2  512 * 64 * 1 * 25 + 512     =    819,712
    #   conv3  1024 * 512 * 1 * 25 + 1024  = 13,108,224
    #   total                                13,940,800
    assert n_params(NIPS2016AudioNet()) == 64 * 40 * 5 + 64 + 512 * 64 * 25 + 512 + 1024 * 512 * 25 + 1024
    assert n_params(NIPS2016AudioNet()) == 13_940_800
    # ACL 2017 = the DAVEnet conv stack without the input BatchNorm (2 parameters):
    #   conv1 128*40+128 = 5,248; conv2 256*128*11+256 = 360,704; conv3 512*256*17+512 = 2,228,736;
    #   conv4 512*512*17+512 = 4,456,960; conv5 1024*512*17+1024 = 8,913,920; total 15,965,568
    assert n_params(ACL2017AudioNet()) == 5_248 + 360_704 + 2_228_736 + 4_456_960 + 8_913_920 == 15_965_568


def test_paper_size_image_parameter_counts(tv_vgg16):
    assert n_params(VGG16ConvImage()) == 19_434_304
    assert n_params(ResNet50Image()) == 25_606_208
    # NIPS 2016 / ACL 2017 image: VGG16 without fc8 (frozen) + Linear(4096, 1024) (trainable):
    #   VGG16 138,357,544 - fc8 (4096 * 1000 + 1000 = 4,097,000) = 134,260,544 frozen
    #   Linear 4096 * 1024 + 1024 = 4,195,328 trainable; total 138,455,872
    net = VGG16FC7Image()
    assert n_params(tv_vgg16) == 138_357_544
    assert n_params(net, trainable_only=True) == 4096 * 1024 + 1024 == 4_195_328
    assert n_params(net) == 138_357_544 - (4096 * 1000 + 1000) + 4_195_328 == 138_455_872
    # Its backbone keys are torchvision's (so vgg16-397923af.pth loads), minus fc8, plus the head.
    expected = {k: v for k, v in keys_and_shapes(tv_vgg16).items() if not k.startswith("classifier.6.")}
    expected.update({"embedder.weight": (1024, 4096), "embedder.bias": (1024,)})
    assert keys_and_shapes(net) == expected


# --------------------------------------------------------------------------------------------------------------
# Output shapes and output_frames


@pytest.mark.parametrize("name", list(TINY_AUDIO))
@pytest.mark.parametrize("T", [37, 100, 131])
def test_audio_output_shapes_and_output_frames(name, T):
    net = tiny_audio(name)
    x = torch.randn(2, 40, T)
    frames = net.frames(x)
    assert frames.shape[:2] == (2, net.embedding_dim)
    assert net.output_frames(torch.tensor([T, T])).tolist() == [frames.shape[-1]] * 2
    assert net.output_frames(T).dtype == torch.long
    out = net(x)
    if net.pooled:
        assert out.shape == (2, net.embedding_dim)
    else:
        assert out.shape == frames.shape == (2, net.embedding_dim, math.ceil(T / 16))
        torch.testing.assert_close(out, frames)
    # [B, 1, 40, T] is accepted too.
    torch.testing.assert_close(net(x.unsqueeze(1)), out)


def test_output_frames_formulas():
    n = torch.arange(1, 300)
    ceil = lambda k: torch.div(n + k - 1, k, rounding_mode="floor")  # noqa: E731
    assert torch.equal(DAVEnetAudioNet(width_mult=1 / 64, embedding_dim=4).output_frames(n), ceil(16))
    assert torch.equal(ResDAVEnetAudioNet(width_mult=1 / 64, embedding_dim=4).output_frames(n), ceil(16))
    assert torch.equal(ACL2017AudioNet(width_mult=1 / 64, embedding_dim=4).output_frames(n), ceil(8))
    # NIPS: valid 5-wide conv, then two unpadded 4-wide / stride-2 pools; 1024 frames -> 1020 -> 509 -> 253.
    nips = NIPS2016AudioNet(width_mult=1 / 64, embedding_dim=4)
    assert nips.output_frames(1024).item() == 253
    ref = [max(1, ((max(1, (k - 4 - 4) // 2 + 1)) - 4) // 2 + 1) for k in n.tolist()]
    assert nips.output_frames(n).tolist() == ref
    assert nips.output_frames(torch.tensor([1, 13, 14])).tolist() == [1, 1, 1]


def test_nips_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 14 input frames"):
        tiny_audio("nips2016")(torch.randn(1, 40, 13))


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"DAVEnetAudioNet: expected audio of shape \[B, 40, T\]"):
        tiny_audio("davenet")(torch.randn(2, 41, 50))


@pytest.mark.parametrize("name", list(TINY_AUDIO))
def test_output_frames_match_unpadded_items(name):
    net = tiny_audio(name)
    nframes = torch.tensor([131, 100, 37, 14, 17])
    x = torch.randn(len(nframes), 40, 131)
    for b, n in enumerate(nframes.tolist()):
        alone = net.frames(x[b : b + 1, :, :n])
        assert alone.shape[-1] == net.output_frames(torch.tensor([n])).item() == net.output_frames(nframes)[b].item()


# --------------------------------------------------------------------------------------------------------------
# Masking: pooled nets ignore the padding completely; frame-level nets only where receptive fields allow


@pytest.mark.parametrize("name", POOLED)
def test_pooled_nets_ignore_padding(name):
    net = tiny_audio(name)
    nframes = torch.tensor([131, 90, 37, 14])
    x = torch.randn(len(nframes), 40, 131)
    pad = torch.arange(131)[None, :] >= nframes[:, None]
    x_zero = x.masked_fill(pad[:, None, :], 0.0)
    x_garbage = torch.where(pad[:, None, :], 50 * torch.randn_like(x) + 20, x)
    out = net(x_zero, nframes)
    torch.testing.assert_close(net(x_garbage, nframes), out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net(x.masked_fill(pad[:, None, :], float("nan")), nframes), out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(nframes)))
    for b, n in enumerate(nframes.tolist()):
        torch.testing.assert_close(net(x[b : b + 1, :, :n])[0], out[b], atol=1e-5, rtol=1e-4)
    # Without nframes every frame counts, so the garbage does change the result: the test above is not vacuous.
    assert not torch.allclose(net(x_garbage)[1], out[1], atol=1e-3)


def _last_input_frame_seen(layers, j: int) -> int:
    """Largest input index that reaches output frame j through (kernel, stride, pad) layers along time."""
    for kernel, stride, pad in reversed(layers):
        j = j * stride - pad + kernel - 1
    return j


DAVENET_TIME_LAYERS = [(1, 1, 0), (11, 1, 5), (3, 2, 1)] + [(17, 1, 8), (3, 2, 1)] * 3
RESDAVENET_TIME_LAYERS = [(1, 1, 0)] + [(9, 2, 4), (9, 1, 4), (9, 1, 4), (9, 1, 4)] * 4


@pytest.mark.parametrize("name, layers", [("davenet", DAVENET_TIME_LAYERS), ("davenet_bn", DAVENET_TIME_LAYERS),
                                          ("resdavenet", RESDAVENET_TIME_LAYERS)])
def test_frame_nets_valid_prefix_matches_unpadded_input(name, layers):
    net = tiny_audio(name)
    T, n = 700, 600
    x = torch.randn(1, 40, T)
    x[..., n:] = 0.0  # the official pad value (0 dB)
    padded = net(x)[0]
    alone = net(x[..., :n])[0]
    assert alone.shape[-1] == net.output_frames(n).item() == math.ceil(n / 16)
    clean = sum(_last_input_frame_seen(layers, j) < n for j in range(alone.shape[-1]))
    assert clean >= 5  # frames whose receptive field ends inside the caption
    torch.testing.assert_close(padded[:, :clean], alone[:, :clean], atol=1e-5, rtol=1e-4)


def _randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Non-trivial eval-mode BatchNorm (per-channel affine maps that turn zero padding into other values)."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=g)
            m.running_var.uniform_(0.5, 2, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-1, 1, generator=g)
    return net.eval()


@pytest.mark.parametrize("conv_batchnorm", [False, True])
def test_davenet_mask_padding_gives_each_caption_its_own_output_whatever_the_batch(conv_batchnorm):
    net = _randomise_batchnorm(DAVEnetAudioNet(embedding_dim=16, width_mult=1 / 16, conv_batchnorm=conv_batchnorm))
    nframes = torch.tensor([131, 100, 37, 14, 17, 1, 2, 33])
    T = 160  # every caption has padding, several of a length that is not a multiple of 16
    x = torch.randn(len(nframes), 40, T)
    pad = torch.arange(T)[None, :] >= nframes[:, None]
    padded = {"zeros (0 dB, the official pad value)": x.masked_fill(pad[:, None, :], 0.0),
              "garbage": torch.where(pad[:, None, :], 50 * torch.randn_like(x), x)}
    out_frames = net.output_frames(nframes)
    with torch.no_grad():
        alone = [net(x[b : b + 1, :, :n], torch.tensor([n]))[0] for b, n in enumerate(nframes.tolist())]
        for what, batch in padded.items():
            out = net(batch, nframes)
            for b, n_out in enumerate(out_frames.tolist()):
                torch.testing.assert_close(out[b, :, :n_out], alone[b], atol=1e-6, rtol=1e-5, msg=what)
                assert not out[b, :, n_out:].any()  # the padding of the output is zero too
        # mask_padding=False is the official function: the last valid frames do see the padding.
        net.mask_padding = False
        official = net(padded["zeros (0 dB, the official pad value)"], nframes)
        assert torch.equal(official, net(padded["zeros (0 dB, the official pad value)"]))  # nframes unused
        assert not torch.allclose(official[2, :, : out_frames[2]], alone[2], atol=1e-3)


def test_masked_pooling_matches_loop_and_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 20)
    valid = torch.tensor([20, 7, 1, 13])
    ref_mean = torch.stack([x[b, :, :n].mean(-1) for b, n in enumerate(valid.tolist())])
    ref_max = torch.stack([x[b, :, :n].amax(-1) for b, n in enumerate(valid.tolist())])
    torch.testing.assert_close(masked_mean(x, valid), ref_mean)
    torch.testing.assert_close(masked_max(x, valid), ref_max)
    # Garbage frames (huge values, inf, nan) appended beyond the valid ones change nothing.
    garbage = torch.full((4, 6, 5), float("nan"))
    garbage[:, :3] = float("inf")
    padded = torch.cat([x, garbage], dim=-1)
    torch.testing.assert_close(masked_mean(padded, valid), ref_mean)
    torch.testing.assert_close(masked_max(padded, valid), ref_max)
    inside = x.clone()
    inside[1, :, 7:] = 1e6  # padding inside the tensor, beyond item 1's 7 valid frames
    torch.testing.assert_close(masked_mean(inside, valid)[1], ref_mean[1])
    torch.testing.assert_close(masked_max(inside, valid)[1], ref_max[1])
    torch.testing.assert_close(masked_mean(x), x.mean(-1))  # None = all frames valid


# --------------------------------------------------------------------------------------------------------------
# Place classifier


@pytest.mark.parametrize("name", ["davenet", "resdavenet", "acl2017", "nips2016"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_place_classifier_pools_valid_frames(name, pooling):
    audio_net = tiny_audio(name)
    clf = AudioPlaceClassifier(audio_net, n_places=5, pooling=pooling).eval()
    for T in (64, 131):  # any length works (the seed's classifier hard-coded 64 output frames)
        nframes = torch.tensor([T, T - 20, 30])
        x = torch.randn(3, 40, T)
        logits = clf(x, nframes)
        assert logits.shape == (3, 5)
        frames = audio_net.frames(x, nframes)
        valid = audio_net.output_frames(nframes).tolist()
        pool = (lambda f: f.mean(-1)) if pooling == "mean" else (lambda f: f.amax(-1))
        ref = torch.stack([clf.classifier(pool(frames[b, :, :v])) for b, v in enumerate(valid)])
        torch.testing.assert_close(logits, ref)


@pytest.fixture
def one_thread():
    """Tensors this small run faster on one thread; a second one only waits for a core on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_place_classifier_trains(one_thread):
    """A few optimiser steps fit a tiny batch: the loss falls by 10x and every caption gets its class."""
    torch.manual_seed(0)
    clf = AudioPlaceClassifier(TINY_AUDIO["davenet_bn"](), n_places=3, dropout=0.1)
    audio, nframes = torch.randn(6, 40, 50), torch.tensor([50, 44, 38, 32, 26, 20])
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        clf.train()
        loss = nn.functional.cross_entropy(clf(audio, nframes), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    with torch.no_grad():
        assert clf.eval()(audio, nframes).argmax(dim=1).tolist() == target.tolist()


# --------------------------------------------------------------------------------------------------------------
# Image nets


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: VGG16ConvImage(embedding_dim=8, width_mult=1 / 16), (2, 8, 4, 6)),
        (lambda: VGG16ConvImage(embedding_dim=8, width_mult=1 / 16, batch_norm=True), (2, 8, 4, 6)),
        (lambda: ResNet50Image(embedding_dim=8, width_mult=1 / 16), (2, 8, 2, 3)),
        (lambda: ResNet50Image(embedding_dim=8, arch="resnet18", width_mult=1 / 8), (2, 8, 2, 3)),
        (lambda: VGG16FC7Image(embedding_dim=8, width_mult=1 / 16), (2, 8)),
    ],
)
def test_image_output_shapes(make, shape):
    net = make().eval()
    assert net(torch.randn(2, 3, 64, 96)).shape == shape


def test_frozen_vgg_gets_no_gradient_and_stays_in_eval():
    torch.manual_seed(0)
    net = VGG16FC7Image(embedding_dim=8, width_mult=1 / 16)
    net.train()
    assert net.training and net.embedder.training
    assert not net.features.training and not net.classifier.training
    assert not any(m.training for m in net.classifier.modules())  # the Dropout too
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    torch.testing.assert_close(net(x), out)  # no dropout in the frozen backbone
    out.pow(2).sum().backward()
    backbone = [*net.features.parameters(), *net.classifier.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in backbone)
    assert net.embedder.weight.grad is not None and net.embedder.weight.grad.abs().sum() > 0
    # A parent's .train() reaches the override too.
    nn.Sequential(net).eval().train()
    assert not net.classifier.training and net.embedder.training
    # freeze=False trains the backbone.
    open_net = VGG16FC7Image(embedding_dim=8, width_mult=1 / 16, freeze=False).train()
    assert open_net.classifier.training
    open_net(x).sum().backward()
    assert open_net.features[0].weight.grad is not None


# --------------------------------------------------------------------------------------------------------------
# Official checkpoint key compatibility

DAVENET_OFFICIAL_KEYS = {  # DAVEnet-pytorch models.AudioModels.Davenet() state_dict (without num_batches_tracked)
    "batchnorm1.weight": (1,), "batchnorm1.bias": (1,), "batchnorm1.running_mean": (1,), "batchnorm1.running_var": (1,),
    "conv1.weight": (128, 1, 40, 1), "conv1.bias": (128,),
    "conv2.weight": (256, 128, 1, 11), "conv2.bias": (256,),
    "conv3.weight": (512, 256, 1, 17), "conv3.bias": (512,),
    "conv4.weight": (512, 512, 1, 17), "conv4.bias": (512,),
    "conv5.weight": (1024, 512, 1, 17), "conv5.bias": (1024,),
}  # fmt: skip


def test_davenet_audio_keys_equal_official():
    net = DAVEnetAudioNet()
    assert keys_and_shapes(net) == DAVENET_OFFICIAL_KEYS
    official = {"module." + k: torch.randn(s) for k, s in DAVENET_OFFICIAL_KEYS.items()}
    net.load_state_dict({k.removeprefix("module."): v for k, v in official.items()}, strict=False)
    torch.testing.assert_close(net.conv3.weight, official["module.conv3.weight"])


def test_resdavenet_audio_keys_equal_official_minus_batchnorm1():
    released = keys_and_shapes(ResDAVEnetAudioNet.released())
    expected = resdavenet_audio_shapes(RESDAVENET_RELEASED_WIDTHS, batchnorm1=False)
    assert released == expected
    # 109 listed official entries (131 with num_batches_tracked) minus batchnorm1's 4.
    assert len(released) == 105
    assert released["layer1.0.conv1.weight"] == (256, 128, 1, 9)
    assert released["layer1.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert released["layer4.1.conv2.weight"] == (1024, 1024, 1, 9)
    default_widths = (128, 128, 256, 512, 1024)
    assert keys_and_shapes(ResDAVEnetAudioNet()) == resdavenet_audio_shapes(default_widths, batchnorm1=False)


def test_resdavenet_official_initialisation():
    net = ResDAVEnetAudioNet.released()
    w = net.layer4[1].conv2.weight  # 9.4 M samples of N(0, sqrt(2 / (1 * 9 * 1024)))
    assert abs(w.std().item() / math.sqrt(2 / (9 * 1024)) - 1) < 0.01
    assert abs(net.conv1.weight.std().item() / math.sqrt(2 / (40 * 128)) - 1) < 0.05
    assert abs(w.mean().item()) < 1e-3
    assert torch.all(net.layer2[0].downsample[1].weight == 1) and torch.all(net.bn1.bias == 0)


def test_resnet50_image_keys_equal_torchvision(tv_resnet50):
    expected = {k: v for k, v in keys_and_shapes(tv_resnet50).items() if not k.startswith("fc.")}
    expected.update({"embedder.weight": (1024, 2048, 1, 1), "embedder.bias": (1024,)})
    assert keys_and_shapes(ResNet50Image()) == expected
    assert len(ResNet50Image().state_dict()) == 320  # with num_batches_tracked, as the official table counts


def test_vgg16_conv_image_official_and_torchvision_keys(tv_vgg16):
    net = VGG16ConvImage()
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    official = {}
    c_in = 3
    for i, c in zip(conv_idx, widths):
        official[f"module.image_model.{i}.weight"] = torch.randn(c, c_in, 3, 3)
        official[f"module.image_model.{i}.bias"] = torch.randn(c)
        c_in = c
    official["module.image_model.30.weight"] = torch.randn(1024, 512, 3, 3)
    official["module.image_model.30.bias"] = torch.randn(1024)
    renames = SOURCES["davenet-pytorch"].image_renames  # the converter's mapping
    converted = match_keys(net, strip_dataparallel(official)[0], renames, "official VGG16")
    net.load_state_dict(converted, strict=True)
    torch.testing.assert_close(net.embedder.weight, official["module.image_model.30.weight"])
    torch.testing.assert_close(net.features[28].bias, official["module.image_model.28.bias"])
    # torchvision's vgg16().features keys are ours (the last max-pool, index 30, has none).
    tv_features = {k: v for k, v in keys_and_shapes(tv_vgg16).items() if k.startswith("features.")}
    assert {k: v for k, v in keys_and_shapes(net).items() if k.startswith("features.")} == tv_features


# --------------------------------------------------------------------------------------------------------------
# pretrained= True / local file


def test_pretrained_vgg16_conv_from_local_file(tmp_path, tv_vgg16):
    path = tmp_path / "vgg16-features.pth"
    torch.save({k: v for k, v in tv_vgg16.state_dict().items() if k.startswith("features.")}, path)
    net = VGG16ConvImage(pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.features(x), tv_vgg16.features[:30](x))
        assert net(x).shape == (1, 1024, 4, 4)


def test_pretrained_resnet50_from_local_file(tmp_path, tv_resnet50):
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(tv_resnet50.state_dict(), path)
    net = ResNet50Image(pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    tv_trunk = nn.Sequential(*list(tv_resnet50.children())[:-2])  # without avgpool and fc
    with torch.no_grad():
        torch.testing.assert_close(net.backbone(x), tv_trunk(x))
        assert net(x).shape == (1, 1024, 2, 2)


def test_pretrained_resnet18_preset_from_local_file(tmp_path):
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    net = ResNet50Image(pretrained=str(path), arch="resnet18", embedding_dim=32).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone(x), nn.Sequential(*list(tv.children())[:-2])(x))


def test_pretrained_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained weights file .*nope.pth: no such file"):
        ResNet50Image(pretrained=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a torch file"):
        ResNet50Image(pretrained=str(junk))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="list.pth: expected a state dict"):
        VGG16ConvImage(pretrained=str(not_a_dict))
    wrong_arch = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong_arch)
    with pytest.raises(ValueError, match=r"resnet18.pth: does not match ResNet50Image.*missing keys.*another shape"):
        ResNet50Image(pretrained=str(wrong_arch))
    with pytest.raises(ValueError, match="width_mult=1.0"):
        VGG16ConvImage(pretrained=str(wrong_arch), width_mult=0.5)


def test_pretrained_true_without_network_says_how_to_pass_a_file(monkeypatch):
    weights_cls = torchvision.models.ResNet50_Weights

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(weights_cls, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"pretrained='/path/to/resnet50-0676ba61.pth'"):
        ResNet50Image(pretrained=True)


# --------------------------------------------------------------------------------------------------------------
# CPU presets


def test_width_mult_and_conv_batchnorm_presets():
    net = DAVEnetAudioNet(embedding_dim=128, width_mult=0.25, conv_batchnorm=True)
    assert [net.conv1.out_channels, net.conv2.out_channels, net.conv3.out_channels, net.conv4.out_channels] == [
        32, 64, 128, 128]
    assert net.conv5.out_channels == 128 and isinstance(net.norm3, nn.BatchNorm2d)
    assert isinstance(DAVEnetAudioNet().norm3, nn.Identity)
    res = ResDAVEnetAudioNet(width_mult=0.125, embedding_dim=64)
    assert res.layer_widths == [16, 16, 32, 64, 64]
    assert res(torch.randn(1, 40, 33)).shape == (1, 64, 3)
    # The suggested ~1 M parameter DAVEnet-style demo pair at 128 px.
    audio = DAVEnetAudioNet(embedding_dim=128, width_mult=0.25, conv_batchnorm=True)
    image = VGG16ConvImage(embedding_dim=128, width_mult=0.125, batch_norm=True)
    assert n_params(audio) == 721_570 and n_params(image) == 305_480
    assert image(torch.randn(1, 3, 128, 128)).shape == (1, 128, 8, 8)
