"""The unit-analysis commands (python -m lightning_modules.analysis words / abx / boundaries / localization /
keywords) on the shared tiny SpokenScenes sample: user-supplied oracle inputs score what they must (units that are
the words detect every word; the reference boundaries score 1), checkpoint runs print their chance baselines and
write the report keys the docs promise, bad inputs are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.alignment import item_alignment
from lightning_modules.analysis.__main__ import main as analysis_main


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random tiny DAVEnet saved as LightningCLI saves checkpoints (class path, instantiator, image size)."""
    import pytorch_lightning as pl

    from lightning_modules import DAVEnet

    torch.manual_seed(0)
    model = DAVEnet(embedding_dim=16, audio_width_mult=0.06, image_width_mult=0.06, conv_batchnorm=True,
                    image_batch_norm=True)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    hparams = {**model.hparams, "_class_path": "lightning_modules.DAVEnet",
               "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": hparams, "datamodule_hyper_parameters": {"image_size": 64}}, path)
    return path


@pytest.fixture(scope="module")
def test_split(spokenscenes):
    manifest = spokenscenes / "test.json"
    return manifest, json.loads(manifest.read_text())["data"]


def test_words_from_oracle_units_detect_every_word(test_split, tmp_path, capsys):
    manifest, entries = test_split
    # one code per word type on a 40 ms grid: every frame whose centre lies inside a word carries its code
    vocab: dict[str, int] = {}
    units = {}
    for i, e in enumerate(entries):
        words = item_alignment(e, "text_alignment", i)
        end = words[-1][1]
        times = [(f + 0.5) * 0.04 for f in range(int(np.ceil(end / 0.04)) + 2)]
        codes = []
        for t in times:
            inside = [w for w in words if w[0] <= t < w[1]]
            codes.append(vocab.setdefault(inside[0][2], len(vocab) + 1) if inside else 0)
        units[e["uttid"]] = {"codes": codes, "times": times}
    units_file = tmp_path / "units.json"
    units_file.write_text(json.dumps(units))
    report = analysis_main(["words", "--units", str(units_file), "--manifest", str(manifest),
                            "--out", str(tmp_path / "w.json")])
    out = capsys.readouterr().out
    assert "chance (codes shuffled)" in out and "words detected" in out
    content = [r for r in report["words"] if r["f1"] > 0]
    assert report["words_detected"] == len(content) == report["n_content_words"]  # every word but stop words
    assert report["words_detected_chance"] < report["words_detected"]
    saved = json.loads((tmp_path / "w.json").read_text())
    assert saved["words_detected"] == report["words_detected"] and saved["n_utterances"] == len(entries)
    # a dump that misses some captions scores the others; one that matches none is an error
    units_file.write_text(json.dumps(dict(list(units.items())[:3])))
    assert analysis_main(["words", "--units", str(units_file), "--manifest", str(manifest)])["n_utterances"] == 3
    units_file.write_text(json.dumps({"nobody": {"codes": [1], "times": [0.02]}}))
    with pytest.raises(SystemExit, match="no uttid"):
        analysis_main(["words", "--units", str(units_file), "--manifest", str(manifest)])
    units_file.write_text(json.dumps({entries[0]["uttid"]: {"codes": [1, 2], "times": [0.02]}}))
    with pytest.raises(ValueError, match="2 codes but 1 times"):
        analysis_main(["words", "--units", str(units_file), "--manifest", str(manifest)])


def test_boundaries_of_the_reference_score_one_and_random_ones_less(test_split, tmp_path, capsys):
    manifest, entries = test_split
    reference = {}
    for i, e in enumerate(entries):
        words = item_alignment(e, "text_alignment", i)
        reference[e["uttid"]] = sorted({t for s, en, _ in words for t in (s, en)})[1:-1]
    path = tmp_path / "bounds.json"
    path.write_text(json.dumps(reference))
    report = analysis_main(["boundaries", "--predictions", str(path), "--manifest", str(manifest),
                            "--out", str(tmp_path / "b.json")])
    assert (report["precision"], report["recall"], report["f1"], report["r_value"], report["token_f1"]) == (
        1.0, 1.0, 1.0, 1.0, 1.0)
    assert report["f1_chance"] < 0.6 and report["tolerance"] == 0.02
    assert "chance (random, same count)" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "b.json").read_text())) >= {
        "precision", "recall", "f1", "over_segmentation", "r_value", "token_f1", "f1_chance", "r_value_chance"}
    shifted = {k: [t + 0.03 for t in v] for k, v in reference.items()}
    path.write_text(json.dumps(shifted))
    assert analysis_main(["boundaries", "--predictions", str(path), "--manifest", str(manifest)])["f1"] < 0.3
    path.write_text(json.dumps({entries[0]["uttid"]: ["0.5"]}))
    with pytest.raises(ValueError, match="list of boundary times"):
        analysis_main(["boundaries", "--predictions", str(path), "--manifest", str(manifest)])


def test_checkpoint_runs_of_words_boundaries_and_abx(test_split, tiny_ckpt, tmp_path, capsys):
    manifest, entries = test_split
    words = analysis_main(["words", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--kmeans", "16",
                           "--no-progress"])
    assert "k-means (16 clusters) of layer conv4" in words["source"] and words["n_codes"] <= 16
    for method in ("codes", "peaks"):
        bounds = analysis_main(["boundaries", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--method",
                                method, "--kmeans", "16", "--layer", "2", "--no-progress"])
        assert 0 <= bounds["precision"] <= 1 and bounds["n_predicted"] > 0 and "conv2" in bounds["source"]
    item_file = tmp_path / "test.item"
    abx = analysis_main(["abx", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--layer", "input",
                         "--layer", "5", "--item-file", str(item_file),
                         "--out", str(tmp_path / "abx.json"), "--no-progress"])
    out = capsys.readouterr().out
    assert "within %" in out and "chance: 50%" in out
    assert list(abx["layers"]) == ["input", "conv5"] and 20 < abx["n_items"] < abx["n_items_all"]
    for layer in abx["layers"].values():
        assert 0 <= layer["abx_across"] <= 1 and layer["n_across_triplets"] > 0
    assert abx["layers"]["conv5"]["seconds_per_frame"] == pytest.approx(0.16)
    assert item_file.read_text().startswith("#file onset offset #phone prev-phone next-phone speaker\n")
    assert len(item_file.read_text().splitlines()) == abx["n_items"] + 1
    few = analysis_main(["abx", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--layer", "input",
                         "--max-items", "12", "--item-file", str(item_file), "--no-progress"])
    assert few["n_items"] == 12 and len(item_file.read_text().splitlines()) == 13
    saved = json.loads((tmp_path / "abx.json").read_text())
    assert saved["abx_within_chance"] == 0.5 and set(saved["layers"]["input"]) >= {"abx_within", "abx_across"}
    with pytest.raises(SystemExit, match="VQ positions"):
        analysis_main(["abx", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--layer", "vq3"])
    with pytest.raises(SystemExit, match="exactly one of"):
        analysis_main(["words", "--manifest", str(manifest)])


def test_localization_ap_iou_and_keywords_from_a_checkpoint(test_split, tiny_ckpt, tmp_path, capsys):
    manifest, entries = test_split
    loc = analysis_main(["localization", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--batch-size", "4",
                         "--out", str(tmp_path / "loc.json")])["shape"]
    assert set(loc) >= {"accuracy", "chance", "ap", "iou", "ap_chance", "iou_chance", "ap_centre", "iou_centre"}
    assert 0 < loc["ap_chance"] == loc["iou_chance"] < 0.5 and 0 <= loc["ap"] <= 1 and 0 <= loc["iou"] <= 1
    assert set(loc["ap_iou_by_size"]) <= {"small", "large"} and loc["n_classes"] == len(loc["ap_iou_by_shape"])
    assert "AP " in capsys.readouterr().out
    kw = analysis_main(["keywords", "--ckpt", str(tiny_ckpt), "--manifest", str(manifest), "--min-count", "2",
                        "--no-progress", "--out", str(tmp_path / "kw.json")])
    assert kw["n_keywords"] > 0 and kw["eer_chance"] == 0.5
    assert {"precision_at_10", "precision_at_n", "eer", "precision_at_10_chance"} <= set(kw)
    assert {r["kind"] for r in kw["keywords"]} <= {"scene", "colour", "shape"}
    assert json.loads((tmp_path / "kw.json").read_text())["n_captions"] == len(entries)


def test_manifests_without_alignments_are_named(tmp_path, make_manifest, tiny_ckpt):
    manifest = make_manifest(n=3, name="old")
    with pytest.raises(ValueError, match="item 0 .* has no 'text_alignment'.*regenerate"):
        analysis_main(["boundaries", "--predictions", str(tmp_path / "x.json"), "--manifest", str(manifest)])


# ---- a ResDAVEnet-VQ checkpoint: the commands read its VQ codes ------------------------------------------------------
VQ_TINY = ["--model.layer_widths=[8,8,16,16,16]", "--model.image_arch=resnet18", "--model.image_width_mult=0.125",
           "--model.codebook_size=16"]


@pytest.fixture(scope="module")
def vq_ckpt(tmp_path_factory, test_split):
    """A tiny ResDAVEnet-VQ {3} (configs/resdavenet_vq.yaml at the CLI tests' tiny widths, 16 codes) saved as
    LightningCLI saves checkpoints, and each test caption's codes by `encode_units` (the caption alone). The codebook
    is 16 layer-2 frames of the captions, so that the codes vary as a trained model's do."""
    import pytorch_lightning as pl

    from datamodules import PlacesAudioDataset
    from lightning_modules.core.units.features import layer_outputs
    from lightning_modules.resdavenet import ResDAVEnetVQ

    manifest, _ = test_split
    torch.manual_seed(0)
    model = ResDAVEnetVQ(layer_widths=[8, 8, 16, 16, 16], image_arch="resnet18", image_width_mult=0.125,
                         codebook_size=16).eval()
    dataset = PlacesAudioDataset(manifest, target_length=None, load_images=False)
    captions = [dataset[i]["audio"][None] for i in range(len(dataset))]
    frames = torch.cat([layer_outputs(model.audio_net, a, layers=["layer2"])["layer2"].frames[0].T for a in captions])
    model.audio_net.quant3.codebook.copy_(frames[torch.randperm(len(frames))[:16]])
    codes = [model.audio_net.encode_units(a, layer=3)[0][0] for a in captions]
    path = tmp_path_factory.mktemp("vq") / "vq.ckpt"
    hparams = {**model.hparams, "_class_path": "lightning_modules.ResDAVEnetVQ",
               "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": hparams, "datamodule_hyper_parameters": {"image_size": 32}}, path)
    return path, codes, [int(n) for n in dataset.lengths()]


def test_vq_codes_through_words_abx_and_boundaries(test_split, vq_ckpt, tmp_path):
    from lightning_modules.core.units.abx import abx_error_rates, discriminable_items, item_features, triphone_items
    from lightning_modules.core.units.boundaries import boundary_scores, code_boundaries, reference_boundaries
    from lightning_modules.core.units.features import frame_times
    from lightning_modules.core.units.word_detection import word_detection

    manifest, entries = test_split
    ckpt, codes, lengths = vq_ckpt
    assert [len(c) for c in codes] == [-(-n // 4) for n in lengths] and len(torch.cat(codes).unique()) > 4
    words = [item_alignment(e, "text_alignment", i) for i, e in enumerate(entries)]
    # words --layer 3 (and vq3): exactly the analysis of encode_units' codes on the 40 ms grid
    report = analysis_main(["words", "--ckpt", str(ckpt), "--manifest", str(manifest), "--layer", "3",
                            "--no-progress", "--out", str(tmp_path / "words.json")])
    expected = word_detection([c.numpy() for c in codes], 0.04, words)
    assert report["source"] == "VQ codes of position 3" and report["n_frames"] == sum(len(c) for c in codes)
    assert {k: report[k] for k in expected} == expected
    assert 0 <= report["words_detected_chance"] <= report["n_words"] and 0 <= report["mean_f1"] <= 1
    vq3 = analysis_main(["words", "--ckpt", str(ckpt), "--manifest", str(manifest), "--layer", "vq3", "--no-progress"])
    assert vq3["words"] == report["words"]
    with pytest.raises(ValueError, match=r"quantises at VQ positions \[3\]"):
        analysis_main(["words", "--ckpt", str(ckpt), "--manifest", str(manifest), "--layer", "2"])
    # boundaries from code changes at position 3
    bounds = analysis_main(["boundaries", "--ckpt", str(ckpt), "--manifest", str(manifest), "--method", "codes",
                            "--layer", "3", "--no-progress"])
    assert bounds["source"] == "VQ code changes, position 3"
    preds = [code_boundaries(c.numpy(), 0.04) for c in codes]
    assert {k: bounds[k] for k in ("precision", "recall", "f1", "r_value", "n_predicted")} == {
        k: v for k, v in boundary_scores([reference_boundaries(w) for w in words], preds).items()
        if k in ("precision", "recall", "f1", "r_value", "n_predicted")}
    assert 0 < bounds["n_predicted"] and 0 <= bounds["f1"] <= 1 and 0 <= bounds["f1_chance"] <= 1
    # ABX: every stage at its stride and the one-hot VQ codes, scored on encode_units' codes
    abx = analysis_main(["abx", "--ckpt", str(ckpt), "--manifest", str(manifest), "--no-progress"])
    assert list(abx["layers"]) == ["input", "conv1", "layer1", "layer2", "layer3", "layer4", "vq3"]
    assert [v["seconds_per_frame"] for v in abx["layers"].values()] == [0.01, 0.01, 0.02, 0.04, 0.08, 0.16, 0.04]
    assert all(0 <= v["abx_across"] <= 1 and v["n_across_triplets"] > 0 for v in abx["layers"].values())
    phones = [item_alignment(e, "phone_alignment", i) for i, e in enumerate(entries)]
    items = discriminable_items(triphone_items([(e["uttid"], e["speaker"], p) for e, p in zip(entries, phones)]), 10)
    assert abx["n_items"] == len(items) > 20
    onehot = {e["uttid"]: (torch.nn.functional.one_hot(c, 16).float(), frame_times(len(c), 0.04))
              for e, c in zip(entries, codes)}
    own = abx_error_rates(item_features(onehot, items), items, progress=False)
    assert (abx["layers"]["vq3"]["abx_within"], abx["layers"]["vq3"]["abx_across"]) == (
        own["abx_within"], own["abx_across"])


def test_predict_units_dump_scores_as_the_checkpoint(spokenscenes, test_split, vq_ckpt, tmp_path):
    """predict --units.output (batches padded to 2,048 frames) writes encode_units' codes of each caption alone at
    the analyses' frame centres: words --units gives the report of words --ckpt."""
    from test_cli import _run, _tiny_args

    manifest, entries = test_split
    ckpt, codes, _ = vq_ckpt
    dump = tmp_path / "units.json"
    config = Path(__file__).parent.parent / "configs" / "resdavenet_vq.yaml"
    _run("predict", [*_tiny_args(config, spokenscenes, tmp_path / "predict", VQ_TINY), "--ckpt_path", str(ckpt),
                     f"--data.predict_manifest={manifest}", f"--units.output={dump}", "--units.layer=3"])
    units = json.loads(dump.read_text())
    assert list(units) == [e["uttid"] for e in entries]
    for e, c in zip(entries, codes):
        assert units[e["uttid"]]["codes"] == c.tolist()
        assert units[e["uttid"]]["times"] == [round((j + 0.5) * 0.04, 6) for j in range(len(c))]
    from_dump = analysis_main(["words", "--units", str(dump), "--manifest", str(manifest)])
    from_ckpt = analysis_main(["words", "--ckpt", str(ckpt), "--manifest", str(manifest), "--layer", "3",
                               "--no-progress"])
    for report in (from_dump, from_ckpt):
        del report["source"], report["seconds"]
    assert from_dump == from_ckpt
