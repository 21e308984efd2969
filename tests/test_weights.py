"""The one reader of weights files: weights_only=True everywhere a user passes a file, a clear error naming the file
for every way a file can be wrong, and a pickle that would run code refused by every entry point that reads weights."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import pytest
import torch

from lightning_modules.core.weights import UnsafeWeightsError, WeightsFileError, read_state_dict, read_weights


class WritesMarker:
    """Unpickling this runs ``os.mkdir(marker)``: what a malicious .pth could do with any other call."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(params=["torch.save", "pickle"])
def unsafe_file(request, tmp_path):
    """(file, marker, format): a checkpoint-like file whose pickle creates ``marker`` when loaded unsafely.

    Written both as torch.save's zip archive and as a plain pickle; the payload is shown to work first, so that
    "the marker never appears" below is a real check.
    """
    marker = str(tmp_path / "MARKER")
    payload = {"state_dict": {"conv1.weight": torch.zeros(2)}, "hyper_parameters": {"loss": WritesMarker(marker)}}
    path = tmp_path / "evil.ckpt"
    if request.param == "torch.save":
        torch.save(payload, path)
        torch.load(path, weights_only=False)  # the payload works: loading it unsafely runs os.mkdir
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
        with open(path, "rb") as f:
            pickle.load(f)
    assert os.path.isdir(marker)
    os.rmdir(marker)
    return path, marker, request.param


def _converter(path, tmp_path):
    from lightning_modules.convert import main

    main(["--from", "davenet-pytorch", "--audio", str(path), "--image", str(path), "--out", str(tmp_path / "o.ckpt")])


def _audio_encoder_ckpt(path, tmp_path):
    from lightning_modules import DAVEnet

    DAVEnet(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06, audio_encoder_ckpt=str(path)).setup("fit")


def _pretrained_image(path, tmp_path):
    from lightning_modules import DAVEnet

    DAVEnet(embedding_dim=16, audio_width_mult=0.06, pretrained_image=str(path))  # ImageNet size: width_mult 1


def _retrieval_checkpoint(path, tmp_path):
    from lightning_modules.checkpoints import load_retrieval_checkpoint

    load_retrieval_checkpoint(path)


def _analysis_command(path, tmp_path):
    from lightning_modules.analysis.__main__ import main

    main(["localization", "--ckpt", str(path), "--manifest", str(tmp_path / "test.json")])


ENTRY_POINTS = [_converter, _audio_encoder_ckpt, _pretrained_image, _retrieval_checkpoint, _analysis_command]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS, ids=lambda f: f.__name__.strip("_"))
def test_every_entry_point_refuses_a_pickle_that_runs_code(entry_point, unsafe_file, tmp_path, capsys):
    path, marker, file_format = unsafe_file
    if entry_point is _converter:  # a command: it prints the error and exits with status 2
        with pytest.raises(SystemExit) as exit_info:
            entry_point(path, tmp_path)
        assert exit_info.value.code == 2
        message = capsys.readouterr().err
    else:
        with pytest.raises(UnsafeWeightsError) as err:
            entry_point(path, tmp_path)
        message = str(err.value)
    assert str(path) in message and "refusing to unpickle arbitrary code" in message
    holds = re.search(r"holds pickled Python objects \(([^)]+)\)", message).group(1)  # what the file holds
    # all that torch.save's archive imports is listed; a plain pickle is refused at its first import
    assert holds == "posix.mkdir" if file_format == "torch.save" else holds
    assert "weights_only=True" in message  # and why it is refused
    assert not os.path.exists(marker)


# ---- every other way a file can be wrong ------------------------------------------------------------------------
def _torch_file(tmp_path, **kw):
    path = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0), "b": torch.zeros(2)}, path, **kw)
    return path


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_FILES = {
    "empty": (lambda t: _write(t, "x.pth", b""), "the file is empty"),
    "folder": (lambda t: t, "is a folder"),
    "text": (lambda t: _write(t, "x.pth", b"hello"), r"not a torch file \(it starts with the bytes b'hell'"),
    "jpeg": (lambda t: _write(t, "x.jpg", b"\xff\xd8\xff\xe0" + bytes(100)), "not a torch file"),
    "plain pickle": (lambda t: _write(t, "x.pkl", pickle.dumps({"w": [1.0]}, protocol=4)), "not a torch file"),
    "other zip": (lambda t: _zip(t), "a zip archive without torch.save's data.pkl"),
    "truncated": (lambda t: _write(t, "x.pth", _torch_file(t).read_bytes()[:300]), "truncated or corrupt"),
    "corrupt": (lambda t: _corrupt(t), "truncated or corrupt"),
    "truncated legacy": (
        lambda t: _write(t, "x.pth", _torch_file(t, _use_new_zipfile_serialization=False).read_bytes()[:-20]),
        "truncated or corrupt",
    ),
}


def _zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("notes.txt", "hi")
    return tmp_path / "x.zip"


def _corrupt(tmp_path):
    data = bytearray(_torch_file(tmp_path).read_bytes())
    data[40:120] = bytes(80)  # the first member's header and data: the archive's directory stays intact
    return _write(tmp_path, "x.pth", bytes(data))


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_give_an_error_naming_the_file_and_the_reason(kind, tmp_path):
    make, reason = BAD_FILES[kind]
    path = make(tmp_path)
    with pytest.raises(WeightsFileError, match=reason) as err:
        read_weights(path, "audio_encoder_ckpt")
    assert str(err.value).startswith(f"audio_encoder_ckpt {path}: ")


def test_missing_file_and_good_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file \S*nope\.pth: no such file"):
        read_weights(tmp_path / "nope.pth", "image file")
    for legacy in (False, True):  # torch.save's zip archive and its older pickle format
        state = read_state_dict(_torch_file(tmp_path, _use_new_zipfile_serialization=not legacy))
        assert torch.equal(state["w"], torch.arange(3.0)) and set(state) == {"w", "b"}
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, tmp_path / "lightning.ckpt")
    with pytest.raises(WeightsFileError, match=r"state_dict, epoch are not tensors \(a Lightning checkpoint"):
        read_state_dict(tmp_path / "lightning.ckpt")


# ---- checkpoints of modules built in Python --------------------------------------------------------------------
class MyLoss(torch.nn.Module):
    """A user's own loss: not one of the project's classes."""

    def forward(self, image_out, audio_out, nframes, kind):
        return image_out.sum() * 0


def _python_checkpoint(module, path):
    """What Lightning writes for a module built in Python: its hparams hold the nn.Module arguments themselves."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_checkpoints_of_modules_built_in_python_load_with_their_audio_net_and_loss(tmp_path):
    from lightning_modules import DAVEnet, PlaceClassifier
    from lightning_modules.checkpoints import load_audio_encoder, load_retrieval_checkpoint
    from lightning_modules.core.losses import InfoNCELoss
    from lightning_modules.nets import DAVEnetAudioNet

    torch.manual_seed(0)
    warm = PlaceClassifier(DAVEnetAudioNet(embedding_dim=16, width_mult=0.06), n_places=3)
    assert isinstance(warm.hparams.audio_net, DAVEnetAudioNet)  # pickled whole into the checkpoint
    target = DAVEnetAudioNet(embedding_dim=16, width_mult=0.06)
    load_audio_encoder(target, _python_checkpoint(warm, tmp_path / "warm.ckpt"))
    assert torch.equal(target.conv5.weight, warm.audio_net.conv5.weight)

    tiny = dict(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06)
    model = DAVEnet(loss=InfoNCELoss(scale=20.0), **tiny)
    loaded = load_retrieval_checkpoint(_python_checkpoint(model, tmp_path / "davenet.ckpt"), DAVEnet)
    assert isinstance(loaded.loss, InfoNCELoss) and loaded.loss.scale == 20.0
    assert torch.equal(loaded.image_net.embedder.weight, model.image_net.embedder.weight)

    # any other class is refused, and the message lists what the file holds
    with pytest.raises(UnsafeWeightsError, match=r"test_weights\.MyLoss"):
        load_retrieval_checkpoint(_python_checkpoint(DAVEnet(loss=MyLoss(), **tiny), tmp_path / "mine.ckpt"), DAVEnet)
