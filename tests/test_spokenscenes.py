"""SpokenScenes generator: manifests, audio and word timings, masks, place labels, determinism, bad arguments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from datamodules.alignment import check_alignments, item_alignment
from datamodules.spokenscenes import LEXICON, SCENE_NAMES, SPEAKERS, generate, scene_of_image
from datamodules.spokenscenes.__main__ import main as cli_main
from datamodules.spokenscenes.captions import make_caption
from datamodules.spokenscenes.oracle import expected_recall, oracle_on_split, text_oracle
from datamodules.spokenscenes.scenes import draw_scene
from datamodules.spokenscenes.speech import (
    _align_to_lexicon,
    _token_phones,
    resample,
    speak,
    synthesize,
    synthesize_with_phonemes,
)

COUNTS = {"train": 6, "val": 2, "test": 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("spokenscenes") / "ss"
    result = generate(root, **COUNTS, seed=7, workers=2, progress=False)
    return root, result


def _entries(root: Path, split: str) -> list[dict]:
    return json.loads((root / f"{split}.json").read_text())["data"]


def _all_entries(root: Path):
    for split in COUNTS:
        for entry in _entries(root, split):
            yield split, entry


def test_manifests_are_places_format_and_files_exist(dataset):
    root, result = dataset
    assert result["counts"] == COUNTS and result["pairs_per_second"] > 0 and result["mb_per_1000_pairs"] > 0
    for split, n in COUNTS.items():
        manifest = json.loads((root / f"{split}.json").read_text())
        assert (manifest["image_base_path"], manifest["audio_base_path"], manifest["mask_base_path"]) == (
            "images", "wavs", "masks")
        assert len(manifest["data"]) == n
        for i, e in enumerate(manifest["data"]):
            assert {"uttid", "speaker", "asr_text", "wav", "image", "words", "objects", "scene"} <= set(e)
            assert e["speaker"] in SPEAKERS and e["uttid"] == f"{e['speaker']}-ss_{split}_{i:06d}"
            assert (root / "wavs" / e["wav"]).is_file() and (root / "images" / e["image"]).is_file()
            for o in e["objects"]:
                assert (root / "masks" / o["mask"]).is_file()
                assert o["name"] == f"{o['size']} {o['colour']} {o['shape']}"
            # the timed words are the transcript's words, in order
            assert [w["word"] for w in e["words"]] == re.findall(r"[a-z]+", e["asr_text"])
    info = json.loads((root / "info.json").read_text())
    assert info["generator"] == "spokenscenes" and info["args"] == {**COUNTS, "seed": 7, "image_size": 128}


def test_audio_is_16k_pcm_speech_with_timed_words(dataset):
    root, _ = dataset
    for _, e in _all_entries(root):
        info = sf.info(str(root / "wavs" / e["wav"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, sr = sf.read(str(root / "wavs" / e["wav"]))
        assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
        duration = len(audio) / sr
        starts = np.array([w["start"] for w in e["words"]])
        ends = np.array([w["end"] for w in e["words"]])
        assert np.all(starts >= 0) and np.all(ends <= duration + 1e-9) and np.all(ends > starts)
        assert np.all(np.diff(starts) > 0) and np.all(ends[:-1] <= starts[1:] + 1e-9)  # in order, no overlap
        # the timings point at speech: every word is much louder than the quietest 50 ms of the utterance
        floor = np.sqrt(np.min(np.convolve(audio**2, np.ones(800) / 800, mode="valid")))
        for w in e["words"]:
            segment = audio[int(w["start"] * sr): int(w["end"] * sr)]
            assert np.sqrt(np.mean(segment**2)) > 5 * floor, (e["asr_text"], w)


def test_object_and_scene_words_are_indexed(dataset):
    root, _ = dataset
    for _, e in _all_entries(root):
        words = [w["word"] for w in e["words"]]
        spoken = [o for o in e["objects"] if o["word_index"]]
        assert spoken, "every caption names at least one object"
        for o in spoken:
            attrs = {LEXICON[words[i]] for i in o["word_index"]}
            assert {f"colour:{o['colour']}", f"shape:{o['shape']}"} <= attrs <= {
                f"colour:{o['colour']}", f"shape:{o['shape']}", f"size:{o['size']}"}
        for i in e["scene_word_index"]:
            assert LEXICON[words[i]] == f"scene:{e['scene']}"


def test_masks_match_the_drawn_objects(dataset):
    root, _ = dataset
    for _, e in _all_entries(root):
        image = np.asarray(Image.open(root / "images" / e["image"]).convert("RGB"), dtype=float)
        assert image.shape == (128, 128, 3)
        union = np.zeros(image.shape[:2], int)
        for o in e["objects"]:
            mask = np.asarray(Image.open(root / "masks" / o["mask"])) > 0
            assert mask.shape == image.shape[:2] and mask.any()
            ys, xs = np.nonzero(mask)
            assert o["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            union += mask
            # interior pixels (away from JPEG ringing at the edge) carry the object's colour
            interior = mask.copy()
            for axis in (0, 1):
                for shift in (1, -1, 2, -2):
                    interior &= np.roll(mask, shift, axis)
            if interior.sum() >= 10:
                close = np.abs(image[interior] - o["rgb"]).max(1) < 40
                assert close.mean() > 0.9, (e["image"], o)
        assert union.max() == 1  # objects never overlap


def test_scene_objects_exact_before_jpeg():
    for k, name in enumerate(SCENE_NAMES):
        scene = draw_scene(np.random.default_rng(k), 96, name)
        assert scene.name == name and 1 <= len(scene.objects) <= 3
        for o in scene.objects:
            assert np.all(scene.image[o.mask] == o.rgb)
    assert len(SCENE_NAMES) >= 15


def test_place_labels_parse_from_image_paths(dataset):
    root, _ = dataset
    for split, e in _all_entries(root):
        letter, cls, name = e["image"].split("/")
        assert letter == cls[0] and cls == e["scene"] == scene_of_image(e["image"]) and cls in SCENE_NAMES
        assert re.fullmatch(rf"ss_{split}_\d{{6}}\.jpg", name)


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    generate(again, **COUNTS, seed=7, workers=1, progress=False)  # another worker count, same bytes
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = tmp_path / "other"
    generate(other, train=COUNTS["train"], seed=8, workers=1, progress=False)
    assert (other / "train.json").read_bytes() != (root / "train.json").read_bytes()
    wav = _entries(root, "train")[0]["wav"]
    assert (other / "wavs" / wav).read_bytes() != (root / "wavs" / wav).read_bytes()


def test_overwrite_replaces_an_earlier_output(tmp_path):
    root = tmp_path / "ss"
    generate(root, train=2, seed=1, workers=1, progress=False)
    old_wav = root / "wavs" / _entries(root, "train")[1]["wav"]
    generate(root, test=1, seed=1, workers=1, progress=False, overwrite=True)
    assert not old_wav.exists() and not (root / "train.json").exists() and (root / "test.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--train", "-1"], "--train must be a count >= 0"),
    (["--train", "0"], "nothing to generate"),
    (["--test", "2", "--seed", "-3"], "--seed must be an integer >= 0"),
    (["--test", "2", "--image-size", "8"], "--image-size"),
    (["--test", "2", "--workers", "0"], "--workers must be >= 1"),
    (["--test", "two"], "invalid int value"),
])
def test_bad_arguments_exit_with_a_message(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--root", str(tmp_path / "ss"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ss").exists()  # nothing written on a bad argument


def test_bad_roots_exit_with_a_message(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    cases = [
        (str(a_file / "sub"), [], "cannot write there"),  # a folder under a file: not creatable
        (str(a_file), [], "not a directory"),
        (str(busy), [], "not empty"),
        (str(busy), ["--overwrite"], "refusing to overwrite"),
    ]
    for root, extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["--root", root, "--test", "1", "--no-progress", *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="not empty"):
        generate(busy, test=1)


def test_resample_matches_torchaudio():
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    x = np.random.default_rng(0).standard_normal(22050 + 123)
    for orig, new in ((22050, 16000), (16000, 22050), (48000, 16000)):
        expected = torchaudio.functional.resample(torch.from_numpy(x), orig, new).numpy()
        np.testing.assert_allclose(resample(x, orig, new), expected, atol=1e-9)


def test_espeak_is_deterministic_and_every_speaker_exists():
    text = "i can see a circle colored red and we have a box"
    first, events, rate = synthesize(text, "en-us+f2", 180, 40, 60, noise_seed=3)
    synthesize("something else entirely, to move espeak's internal state", "en-gb-x-rp+m3")
    again, events_again, _ = synthesize(text, "en-us+f2", 180, 40, 60, noise_seed=3)
    assert rate == 22050 and np.array_equal(first, again) and events == events_again
    other_noise, _, _ = synthesize(text, "en-us+f2", 180, 40, 60, noise_seed=4)  # f2 breathes: seeded noise
    assert len(other_noise) == len(first) and not np.array_equal(other_noise, first)
    assert [text[p - 1: p - 1 + n] for p, n, _ in events] == text.split()
    assert [ms for _, _, ms in events] == sorted(ms for _, _, ms in events)
    for speaker in SPEAKERS:
        audio, _, _ = synthesize("hello", speaker)
        assert np.abs(audio).max() > 1000, speaker
    with pytest.raises(ValueError, match="no voice"):
        speak(["hi"], "hi", "xx-nonexistent", 175, 50, 50)


def test_captions_name_what_they_index():
    for k in range(300):
        rng = np.random.default_rng(k)
        scene = draw_scene(rng, 64)
        cap = make_caption(scene.name, scene.objects, rng)
        assert re.findall(r"[a-z]+", cap.text) == cap.tokens
        assert any(cap.object_index)
        for o, index in zip(scene.objects, cap.object_index):
            assert {LEXICON.get(cap.tokens[i]) for i in index} >= ({f"colour:{o.colour}", f"shape:{o.shape}"}
                                                                  if index else set())
        assert all(LEXICON[cap.tokens[i]] == f"scene:{scene.name}" for i in cap.scene_index)


def test_oracle_recall_and_ties():
    scores = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 1.0, 0.0]])
    r = expected_recall(scores, ks=(1, 2))
    # query 0: first; query 1: tied with two others (R@1 = 1/3, R@2 = 2/3); query 2: behind one and tied
    # with one (R@1 = 0, R@2 = 1/2)
    assert r["R@1"] == pytest.approx((1 + 1 / 3 + 0) / 3) and r["R@2"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    entries = [
        {"scene": "kitchen", "asr_text": "a red star in a kitchen", "objects": [
            {"colour": "red", "shape": "star", "size": "small"}]},
        {"scene": "kitchen", "asr_text": "a kitchen with a blue box", "objects": [
            {"colour": "blue", "shape": "square", "size": "large"}]},
        {"scene": "beach", "asr_text": "uh a green disc on the shore", "objects": [
            {"colour": "green", "shape": "circle", "size": "small"}]},
    ]
    result = text_oracle(entries)
    assert result["bow"]["caption_to_image"]["R@1"] == 1.0
    assert result["scene_only"]["caption_to_image"]["R@1"] == pytest.approx((0.5 + 0.5 + 1) / 3)


def test_oracle_on_generated_split(dataset):
    root, _ = dataset
    result = oracle_on_split(root, "test")
    assert result["pairs"] == COUNTS["test"]
    bow, scene = result["bow"]["caption_to_image"], result["scene_only"]["caption_to_image"]
    assert 0 <= bow["R@1"] <= bow["R@5"] <= bow["R@10"] == 1.0  # 4 pairs: R@10 is trivially 1
    assert bow["R@1"] >= scene["R@1"]
    with pytest.raises(ValueError, match="val_missing.json"):
        oracle_on_split(root, "val_missing")


def test_scene_classes_cycle_so_every_split_is_balanced(dataset):
    root, _ = dataset
    for split in COUNTS:
        scenes = [e["scene"] for e in _entries(root, split)]
        assert scenes == [SCENE_NAMES[i % len(SCENE_NAMES)] for i in range(len(scenes))], split


def test_alignments_repeat_the_word_timings_and_phones_tile_each_word(dataset):
    root, _ = dataset
    words, phones = [], []
    for i, (_, e) in enumerate(_all_entries(root)):
        w, p = item_alignment(e, "text_alignment", i), item_alignment(e, "phone_alignment", i)
        assert [(a, b, t.lower()) for a, b, t in w] == [(x["start"], x["end"], x["word"]) for x in e["words"]]
        assert all(t.isupper() for _, _, t in w)  # as in the aligned Places and SpokenCOCO manifests
        assert p and all(not label.startswith("_") and "'" not in label for _, _, label in p)
        words.append(w)
        phones.append(p)
    report = check_alignments(words, phones)
    assert report["ok"] and report["words_without_phones"] == 0, report
    # speech-like timing: median phone 40-120 ms, 8-20 phones per second of speech
    assert 40 <= report["duration_ms"]["p50"] <= 120 and 8 <= report["phones_per_second"] <= 20


def test_phoneme_events_leave_the_audio_unchanged():
    text = "there are a red star and a box in the kitchen"
    audio, events, rate = synthesize(text, "en-gb-x-rp+m3", 200, 30, 70, noise_seed=5)
    timed = synthesize_with_phonemes(text, "en-gb-x-rp+m3", 200, 30, 70, noise_seed=5, lexicon_words=("the",))
    assert np.array_equal(audio, timed.audio) and timed.words == events and timed.rate == rate
    names = [n for _, _, n in timed.phonemes if not n.startswith("_")]
    assert len(names) > 20 and [ms for _, ms, _ in timed.phonemes] == sorted(ms for _, ms, _ in timed.phonemes)
    assert timed.lexicon["the"] in (["D", "@"], ["D", "@2"])  # stress marks removed


def test_phoneme_positions_map_to_tokens():
    tokens = ["a", "um", "huge"]
    text = "a um, huge"  # tokens at characters 1, 3, 7 (1-based)
    events = [(1, 0, "a#"), (3, 50, "'V"), (3, 90, "m"), (5, 130, "_:"), (6, 200, "j"), (7, 240, "u:"),
              (7, 300, "dZ")]
    phones = _token_phones(tokens, [1, 3, 7], events, {}, text, 400.0)
    # the pause is dropped; 'j' at character 6 (the space after the comma) belongs to "huge"; stress marks go
    assert phones == [("a#", 0.0, 50.0, 0), ("V", 50.0, 90.0, 1), ("m", 90.0, 130.0, 1), ("j", 200.0, 240.0, 2),
                      ("u:", 240.0, 300.0, 2), ("dZ", 300.0, 400.0, 2)]


def test_joined_words_split_their_phonemes_by_the_lexicon():
    # "there are" said as one word with a linking r: the r goes to "there", the final r- to "are"
    assert _align_to_lexicon(["D", "e@", "r", "A@", "r-"], [["D", "e@"], ["A@"]]) == [0, 0, 0, 1, 1]
    assert _align_to_lexicon(["@", "v", "@"], [["0", "v"], ["eI"]]) == [0, 0, 1]  # "of a", both reduced
    assert _align_to_lexicon(["I", "n", "D", "I2", ";"], [["I", "n"], ["D", "@2"]]) == [0, 0, 1, 1, 1]
    utt = speak(["in", "the", "kitchen"], "in the kitchen", "en-us+m1", 175, 50, 50)
    by_word = [[p for p, _, _, w in utt.phones if w == k] for k in range(3)]
    assert by_word[0] == ["I", "n"] and by_word[1][0] == "D" and by_word[2][0] == "k"
