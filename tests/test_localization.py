"""Speech-prompted localisation: word spans, frame spans, batched heat maps, peaks, the metric on oracle models whose
answer is known, and the metric and its command line on a real tiny SpokenScenes sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lightning_modules.analysis.__main__ import main as analysis_main
from lightning_modules.analysis.localization import read_manifest_entries
from lightning_modules.checkpoints import load_retrieval_checkpoint
from lightning_modules.core.grounding import word_frame_spans, word_heatmap
from lightning_modules.core.localization import (
    localization_accuracy,
    naming_span,
    peak_in_mask,
    spoken_objects,
    word_heatmaps,
)
from lightning_modules.core.similarity import matchmap
from lightning_modules.nets import DAVEnetAudioNet, ResDAVEnetAudioNet


# ---- word and frame spans -------------------------------------------------------------------------------------
def test_naming_span_picks_the_shape_noun_and_the_whole_name():
    assert naming_span([4, 5, 6], "shape") == (6, 6)  # "large red diamond"
    assert naming_span([4, 5, 6], "name") == (4, 6)
    assert naming_span([1, 2, 5], "shape") == (2, 2)  # "a big star that is red"
    assert naming_span([1, 2, 5], "name") == (1, 5)
    assert naming_span([3, 6], "shape") == (3, 3)  # "a star that is red"
    assert naming_span([6, 4, 5], "shape") == (6, 6)  # order in the manifest does not matter
    assert naming_span([], "shape") is None
    with pytest.raises(ValueError, match="word must be one of"):
        naming_span([1], "colour")


def test_word_frame_spans_follow_each_nets_output_frames():
    davenet = DAVEnetAudioNet(embedding_dim=8, width_mult=0.05).output_frames  # ceil(n / 16)
    start, end = word_frame_spans([1.89, 0.0, 0.16, 1.0], [2.29, 0.05, 0.32, 1.0], davenet)
    # 1.89-2.29 s = input frames 189..228 -> output frames 11..14; 0.16-0.32 s = frames 16..31 = output frame 1;
    # a zero-length word still gets one frame
    assert start.tolist() == [11, 0, 1, 6] and end.tolist() == [15, 1, 2, 7]
    three_stages = ResDAVEnetAudioNet(layer_widths=[4, 4, 4, 4], layer_depths=[1, 1, 1]).output_frames  # ceil(n/8)
    start, end = word_frame_spans(torch.tensor([1.89]), torch.tensor([2.29]), three_stages)
    assert (start.item(), end.item()) == (23, 29)
    # the start frame agrees with the simple rule: input frame floor(100 t) (10 ms hop), 16 input frames per output
    times = torch.rand(50, dtype=torch.float64) * 10
    start, _ = word_frame_spans(times, times + 0.3, davenet)
    assert start.tolist() == [math.floor(float(t) * 100) // 16 for t in times]


def test_word_heatmaps_equal_the_per_word_loop_reference():
    g = torch.Generator().manual_seed(0)
    image_out, audio_out = torch.randn(3, 4, 2, 3, generator=g), torch.randn(3, 4, 7, generator=g)
    pair = torch.tensor([0, 2, 1, 2, 0, 1])
    start = torch.tensor([0, 3, 6, 9, -2, 4])  # 9 and -2 fall outside the map and are clamped as word_heatmap does
    end = torch.tensor([2, 7, 7, 12, 1, 4])  # 4..4 is empty: one frame is used
    for reduce in ("mean", "max"):
        batched = word_heatmaps(image_out, audio_out, pair, start, end, reduce)
        for k in range(pair.numel()):
            mm = matchmap(image_out[pair[k]], audio_out[pair[k]])
            expected = word_heatmap(mm, int(start[k]), int(end[k]), reduce)
            torch.testing.assert_close(batched[k], expected)
    with pytest.raises(ValueError, match="reduce must be"):
        word_heatmaps(image_out, audio_out, pair, start, end, "median")


def test_peak_is_where_the_bilinear_upsampled_map_peaks():
    # 15 x 15 pixel cells: pixel 15 i + 7 samples the centre of cell i exactly, so the upsampled maximum sits there
    g = torch.Generator().manual_seed(1)
    heat = torch.randn(40, 4, 5, generator=g)
    masks = torch.zeros(40, 60, 75, dtype=torch.bool)
    hits, peaks = peak_in_mask(heat, masks)
    up = F.interpolate(heat[:, None], size=(60, 75), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(up[torch.arange(40), peaks[:, 0], peaks[:, 1]], up.flatten(1).amax(1))
    flat = up.flatten(1).argmax(1)  # on a border cell's plateau the first pixel, still in the same cell
    assert torch.equal(torch.stack([flat // 75, flat % 75], 1) // 15, peaks // 15)
    assert torch.equal(peaks % 15, torch.full_like(peaks, 7))  # the centre pixel of the cell
    assert not hits.any()
    masks[torch.arange(40), peaks[:, 0], peaks[:, 1]] = True
    assert peak_in_mask(heat, masks)[0].all()
    with pytest.raises(ValueError, match="not finite"):
        peak_in_mask(torch.full((1, 2, 2), float("nan")), masks[:1])


# ---- oracle models: answers known by construction -------------------------------------------------------------
H = W = 32  # image pixels; the oracle's region map has 8 x 8 pixel cells
FPS = 100


class OracleAudioNet(nn.Module):
    pooled = False
    embedding_dim = 2

    @staticmethod
    def output_frames(nframes):
        return torch.clamp((torch.as_tensor(nframes).long() + 15) // 16, min=1)


class OracleModel(nn.Module):
    """Region features: how much of each 8 x 8 cell each object's mask covers (the images are the masks, one channel
    per object); frame features: one-hot on the object whose word is spoken in that frame (written by the test in
    the first channels of the spectrogram). So a word's heat map is the mask of the object the speaker named."""

    def __init__(self, invert: bool = False):
        super().__init__()
        self.audio_net = OracleAudioNet()
        self.invert = invert
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so that the metric finds the device

    def forward(self, image, audio, nframes):
        regions = F.avg_pool2d(image, 8) * self.scale
        if self.invert:
            regions = 1 - regions
        frames = F.max_pool1d(audio[:, : image.size(1)], 16, ceil_mode=True)
        return regions, frames, self.audio_net.output_frames(nframes)


class PooledModel(OracleModel):
    def forward(self, image, audio, nframes):
        return image.mean((2, 3)), audio.mean(2)[:, :2], None


def _box_mask(y0, y1, x0, x1) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _oracle_case(said=None, truncate=None, spoken=(True, True)):
    """Three pairs, two objects each: a star (rows 0-15, columns 0-15) and a circle (rows 16-31, columns 8-31),
    except pair 2 whose objects swap places. Caption: "a red star and a blue circle", each word 0.2 s apart.

    said[(pair, object)] = the object the speaker actually refers to while saying that object's words (the test's
    way to make the oracle wrong); truncate[pair] = input frames kept."""
    said, truncate = said or {}, truncate or {}
    words = [{"word": w, "start": 0.4 * i, "end": 0.4 * i + 0.2}
             for i, w in enumerate(["a", "red", "star", "and", "a", "blue", "circle"])]
    entries, images, audios, nframes = [], [], [], []
    for p in range(3):
        boxes = [(0, 16, 0, 16), (16, 32, 8, 32)]
        if p == 2:
            boxes = boxes[::-1]
        masks = [_box_mask(*b) for b in boxes]
        objects = [
            {"shape": "star", "size": "small", "mask": masks[0], "word_index": [1, 2] if spoken[0] else []},
            {"shape": "circle", "size": "large", "mask": masks[1], "word_index": [5, 6] if spoken[1] else []},
        ]
        entries.append({"uttid": f"p{p}", "words": words, "objects": objects})
        images.append(torch.stack([m.float() for m in masks]))
        n = int(math.ceil(words[-1]["end"] * FPS))
        audio = torch.zeros(40, n)
        for k in range(len(objects)):
            for i in (1, 2) if k == 0 else (5, 6):  # the colour and the shape word refer to the object
                a, b = int(words[i]["start"] * FPS), int(math.ceil(words[i]["end"] * FPS))
                audio[said.get((p, k), k), a:b] = 1.0
        audios.append(audio)
        nframes.append(truncate.get(p, n))
    batch = {"image": torch.stack(images), "audio": torch.stack(audios), "nframes": torch.tensor(nframes),
             "index": torch.arange(3)}
    return entries, batch


def _split(batch, parts):
    return [{k: v[list(part)] for k, v in batch.items()} for part in parts]


@pytest.mark.parametrize("word", ["shape", "name"])
def test_oracle_pointing_at_the_named_object_scores_one_and_chance_is_the_mask_area(word):
    entries, batch = _oracle_case()
    result = localization_accuracy(OracleModel(), _split(batch, [[0, 1], [2]]), entries, word=word,
                                   return_records=True)
    assert result["accuracy"] == 1.0 and result["n_words"] == 6 and result["n_pairs"] == 3
    assert result["chance"] == pytest.approx((0.25 + 0.375) / 2)  # 16x16 and 16x24 of 32x32 pixels
    # the centre pixel (16, 16) lies in the circle's box where it is at the bottom right (pairs 0, 1) and in the
    # star's box where that is (pair 2): 3 of 6 objects
    assert result["centre"] == pytest.approx(0.5)
    # the star is the 16 x 16 box in pairs 0, 1 and the 16 x 24 box in pair 2
    star = {"n": 3, "accuracy": 1.0, "chance": pytest.approx((0.25 + 0.25 + 0.375) / 3), "centre": pytest.approx(1 / 3)}
    assert result["by_shape"]["star"] == star
    assert set(result["by_size"]) == {"small", "large"}
    rec = result["records"]
    assert rec["text"][:2] == (["star", "circle"] if word == "shape" else ["red star", "blue circle"])
    assert rec["pair"].tolist() == [0, 0, 1, 1, 2, 2] and rec["object"].tolist() == [0, 1] * 3
    assert rec["hit"].all()


def test_oracle_pointing_away_scores_zero_and_confusions_count_per_shape():
    entries, batch = _oracle_case()
    away = localization_accuracy(OracleModel(invert=True), [batch], entries)
    assert away["accuracy"] == 0.0 and away["chance"] == pytest.approx(0.3125)
    # the speaker's "star" points at the circle in pairs 0 and 2: those star words miss, everything else hits
    entries, batch = _oracle_case(said={(0, 0): 1, (2, 0): 1})
    mixed = localization_accuracy(OracleModel(), [batch], entries)
    assert mixed["accuracy"] == pytest.approx(4 / 6)
    assert mixed["by_shape"]["star"]["accuracy"] == pytest.approx(1 / 3)
    assert mixed["by_shape"]["circle"]["accuracy"] == 1.0


def test_unspoken_objects_repeated_pairs_and_truncated_captions():
    # pair 1 keeps 0.7 s = 5 output frames; its "star" (0.8-1.0 s) starts at output frame 5: nothing left of it
    entries, batch = _oracle_case(spoken=(True, False), truncate={1: 70})
    batches = _split(batch, [[0, 1], [0, 2]])  # pair 0 twice: counted once
    result = localization_accuracy(OracleModel(), batches, entries)
    assert result["n_words"] == 2 and result["n_skipped"] == 1 and result["n_pairs"] == 2
    assert result["accuracy"] == 1.0 and set(result["by_shape"]) == {"star"}


def test_bad_models_and_entries_are_named():
    entries, batch = _oracle_case()
    with pytest.raises(ValueError, match="frame-level"):
        localization_accuracy(PooledModel(), [batch], entries)
    with pytest.raises(ValueError, match="needs an audio_net"):
        localization_accuracy(nn.Linear(2, 2), [batch], entries)
    with pytest.raises(ValueError, match="entry 1 has no 'words'/'objects'.*SpokenScenes"):
        localization_accuracy(OracleModel(), [batch], [entries[0], {"wav": "a.wav"}, entries[2]])
    with pytest.raises(ValueError, match="outside the 2 entries"):
        localization_accuracy(OracleModel(), [batch], entries[:2])
    with pytest.raises(ValueError, match="no spoken object"):
        localization_accuracy(OracleModel(), [], entries)
    with pytest.raises(ValueError, match="no mask_root"):
        localization_accuracy(OracleModel(), [batch], [{**e, "objects": [{**o, "mask": "m.png"} for o in e["objects"]]}
                                                       for e in entries])


def test_model_mode_is_restored():
    entries, batch = _oracle_case()
    model = OracleModel().train()
    localization_accuracy(model, [batch], entries)
    assert model.training
    localization_accuracy(model.eval(), [batch], entries)
    assert not model.training


# ---- a real tiny SpokenScenes sample ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spokenscenes(tmp_path_factory):
    from datamodules.spokenscenes import generate

    root = tmp_path_factory.mktemp("loc") / "ss"
    generate(root, test=12, seed=3, image_size=64, workers=2, progress=False)
    return root / "test.json"


def _tiny_davenet():
    from lightning_modules import DAVEnet

    torch.manual_seed(0)
    return DAVEnet(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06, conv_batchnorm=True,
                   image_batch_norm=True)


def test_real_spokenscenes_sample(spokenscenes):
    from torch.utils.data import DataLoader

    from datamodules import PlacesAudioDataset
    from datamodules.places_audio import PlacesAudioCollate
    from datamodules.spokenscenes import LEXICON, SHAPES

    entries, mask_root = read_manifest_entries(spokenscenes)
    dataset = PlacesAudioDataset(spokenscenes, target_length=None, image_transform="resize", image_size=64)
    loader = DataLoader(dataset, batch_size=5, collate_fn=PlacesAudioCollate())
    result = localization_accuracy(_tiny_davenet(), loader, entries, mask_root, return_records=True)

    spoken = [(i, o) for i, e in enumerate(entries) for o in e["objects"] if o["word_index"]]
    assert result["n_words"] == len(spoken) and result["n_skipped"] == 0
    assert result["n_pairs"] == len({i for i, _ in spoken})
    assert 0.0 <= result["accuracy"] <= 1.0
    areas = [(np.asarray(Image.open(Path(mask_root) / o["mask"])) > 127).mean() for _, o in spoken]
    assert result["chance"] == pytest.approx(float(np.mean(areas)))
    assert set(result["by_shape"]) <= set(SHAPES) and sum(r["n"] for r in result["by_shape"].values()) == len(spoken)
    assert sum(r["n"] for r in result["by_size"].values()) == len(spoken)
    # the chosen word really is the object's shape noun (synonyms included), for every spoken object
    assert [LEXICON[t] for t in result["records"]["text"]] == [f"shape:{o['shape']}" for _, o in spoken]
    peaks = result["records"]["peak"]
    assert ((peaks >= 0) & (peaks < 64)).all()
    names = spoken_objects(entries, "name")["text"]  # "big red star", "star that is red": naming words at both ends
    assert len(names) == len(spoken) and all(t.split()[0] in LEXICON and t.split()[-1] in LEXICON for t in names)


def test_command_line_loads_a_cli_checkpoint_and_prints_the_metric(spokenscenes, tmp_path, capsys, monkeypatch):
    import pytorch_lightning as pl

    model = _tiny_davenet()
    ckpt = tmp_path / "tiny.ckpt"
    # what LightningCLI writes: the class path and the loss as its config
    hparams = {**model.hparams, "_class_path": "lightning_modules.DAVEnet",
               "loss": {"class_path": "lightning_modules.core.losses.InfoNCELoss", "init_args": {"scale": 20.0}},
               "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": hparams, "datamodule_hyper_parameters": {"image_size": 64}}, ckpt)
    loaded = load_retrieval_checkpoint(ckpt)
    assert not loaded.training and torch.equal(loaded.audio_net.conv1.weight, model.audio_net.conv1.weight)
    assert type(loaded.loss).__name__ == "InfoNCELoss" and loaded.loss.scale == 20.0  # the class_path config, built

    out_json = tmp_path / "loc.json"
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(kw.get("weights_only")) or real_load(*a, **kw))
    results = analysis_main(["localization", "--ckpt", str(ckpt), "--manifest", str(spokenscenes),
                             "--word", "shape", "name", "--batch-size", "4", "--limit", "8", "--json", str(out_json)])
    monkeypatch.undo()
    assert loads == [True]  # the checkpoint is read once, safely; the image size comes from that one read
    printed = capsys.readouterr().out
    assert "(8 pairs, images resized to 64 px)" in printed and "word=name" in printed and "chance" in printed
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"shape", "name"} and saved["shape"]["accuracy"] == results["shape"]["accuracy"]

    from torch.utils.data import DataLoader, Subset

    from datamodules import PlacesAudioDataset
    from datamodules.places_audio import PlacesAudioCollate

    entries, mask_root = read_manifest_entries(spokenscenes)
    dataset = PlacesAudioDataset(spokenscenes, target_length=None, image_transform="resize", image_size=64)
    # the same batches as the command line: padding to the batch's longest caption changes the last frames a little
    loader = DataLoader(Subset(dataset, range(8)), batch_size=4, collate_fn=PlacesAudioCollate())
    direct = localization_accuracy(model, loader, entries, mask_root, word="name")
    assert saved["name"]["accuracy"] == pytest.approx(direct["accuracy"])
    assert saved["name"]["n_words"] == direct["n_words"]
    with pytest.raises(FileNotFoundError, match=r"checkpoint \S*missing\.ckpt: no such file"):
        load_retrieval_checkpoint(tmp_path / "missing.ckpt")
    extra = {**hparams, "n_places": 5}  # an init arg DAVEnet does not take is an error, not silently dropped
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": extra}, tmp_path / "extra.ckpt")
    with pytest.raises(Exception, match="n_places"):
        load_retrieval_checkpoint(tmp_path / "extra.ckpt")
