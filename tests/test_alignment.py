"""The one alignment parser: real-corpus strings (aligned Places, SpokenCOCO unrolled), malformed strings named by
item, the writer's round trip, and the phone-against-word quality check on hand-made cases."""

from __future__ import annotations

import json

import pytest

from datamodules.alignment import check_alignments, format_alignment, item_alignment, main, parse_alignment

# the aligned Places manifests (train_original_with_alignments.json): upper case, 2 decimals
PLACES_ITEM = {
    "uttid": "A2WQT33K6LD9Z5-GSUN_42132D45B3DF142544343E029936AC60", "speaker": "A2WQT33K6LD9Z5",
    "asr_text": "photos of showcasing a civilian", "wav": "wavs/296/utterance_377328.wav",
    "image": "r/runway/gsun_42132d45b3df142544343e029936ac60.jpg",
    "text_alignment": "0.40__PHOTOS__0.81 0.81__OF__0.92 1.02__SHOWCASING__1.71 1.71__A__1.78 "
                      "1.78__<SPOKEN_NOISE>__2.10 2.10__CIVILIAN__2.66",
}
# VG-HuBERT's unrolled SpokenCOCO: one caption per item, the alignment beside the caption dict
COCO_UNROLLED_ITEM = {
    "image": "val2014/COCO_val2014_000000325114.jpg",
    "caption": {"text": "A BOY", "speaker": "m071506418gb9vo0w5xq3",
                "uttid": "m071506418gb9vo0w5xq3-3LUY3GC63Z0R9PYEETJGN5HO4UEP7B_325114_629297",
                "wav": "wavs/val/0/m071506418gb9vo0w5xq3-3LUY3GC63Z0R9PYEETJGN5HO4UEP7B_325114_629297.wav"},
    "text_alignment": "0.40__A__0.51 0.51__BOY__0.89",
}


def test_real_corpus_strings():
    places = item_alignment(PLACES_ITEM)
    assert places == [(0.40, 0.81, "PHOTOS"), (0.81, 0.92, "OF"), (1.02, 1.71, "SHOWCASING"), (1.71, 1.78, "A"),
                      (1.78, 2.10, "<SPOKEN_NOISE>"), (2.10, 2.66, "CIVILIAN")]
    assert item_alignment(COCO_UNROLLED_ITEM) == [(0.40, 0.51, "A"), (0.51, 0.89, "BOY")]
    # the string may also sit inside the caption dict; a missing key is None, not an error
    inner = {"image": "x.jpg", "caption": {**COCO_UNROLLED_ITEM["caption"], "text_alignment": "0.4__A__0.5"}}
    assert item_alignment(inner) == [(0.4, 0.5, "A")]
    assert item_alignment({"wav": "a.wav"}) is None
    assert parse_alignment("") == [] and parse_alignment("  \n ") == []
    # SpokenScenes phones: espeak names with digits, '#', '@', ':' and single underscores in labels
    assert [x[2] for x in parse_alignment("0.050__a#__0.110 0.110__@2__0.2 0.2__A:__0.3 0.3__r_x__0.4")] == [
        "a#", "@2", "A:", "r_x"]
    # zero-length words (forced aligners write them) and touching words are fine
    assert parse_alignment("1.00__UM__1.00 1.00__A__1.20") == [(1.0, 1.0, "UM"), (1.0, 1.2, "A")]


@pytest.mark.parametrize("text, message", [
    ("0.40__PHOTOS 0.81__OF__0.92", "token 0 '0.40__PHOTOS' is not start__LABEL__end"),
    ("0.40__PHOTOS__0.81 OF", "token 1 'OF' is not start__LABEL__end"),
    ("0.40____0.81", "empty label"),
    ("0.4s__A__0.8", "times must be numbers"),
    ("nan__A__0.8", "times must be numbers"),
    ("-0.1__A__0.8", "finite and >= 0"),
    ("0.9__A__0.8", "ends before it starts"),
    ("0.4__A__0.8 0.7__B__0.9", "starts before the previous token 'A' ends at 0.8"),
    ("0.4__A__0.8 0.2__B__0.3", "in time order"),
])
def test_malformed_strings_name_the_item_and_the_token(text, message):
    with pytest.raises(ValueError, match="alignment of item 7 \\(utt-7\\)") as err:
        item_alignment({"uttid": "utt-7", "text_alignment": text}, index=7)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="^alignment: "):
        parse_alignment(text)
    with pytest.raises(ValueError, match="expected a string"):
        parse_alignment(["0.4__A__0.8"], item="utt-1")


def test_format_round_trip_and_bad_labels():
    segments = [(0.05, 0.11, "A"), (0.118, 0.54, "KITCHEN")]
    text = format_alignment(segments)
    assert text == "0.050__A__0.110 0.118__KITCHEN__0.540" and parse_alignment(text) == segments
    assert format_alignment([(0.4, 0.81, "OF")], decimals=2) == "0.40__OF__0.81"
    for label in ("", "TWO WORDS", "TAB\tBED"):
        with pytest.raises(ValueError, match="empty or contains whitespace"):
            format_alignment([(0.0, 1.0, label)])


def test_quality_check_counts_each_kind_of_problem():
    words = [[(0.0, 0.3, "A"), (0.4, 0.8, "B")], [(0.0, 0.5, "C")], [(0.0, 0.2, "D")]]
    good = [[(0.0, 0.1, "x"), (0.1, 0.3, "y"), (0.4, 0.8, "z")], [(0.0, 0.25, "x"), (0.25, 0.5, "y")],
            [(0.0, 0.2, "x")]]
    report = check_alignments(words, good)
    assert report["ok"] and report["phones"] == 6 and report["words"] == 4 and report["distinct_phones"] == 3
    assert report["duration_ms"]["p50"] == pytest.approx(225.0)  # 100, 200, 200, 250, 250, 400 ms
    assert report["phones_per_second"] == pytest.approx(6 / 1.4)
    assert report["by_phone"]["x"] == {"n": 3, "median_ms": pytest.approx(200.0)}
    bad = [
        [(0.0, 0.1, "x"), (0.12, 0.3, "y"),  # a gap inside A
         (0.33, 0.37, "o"),  # between the words: outside
         (0.35, 0.6, "z")],  # starts before B (midpoint in B): crosses its edge; B is not covered to its end
        [(0.0, 0.3, "x"), (0.25, 0.5, "y")],  # an overlap inside C
        [],  # D has no phones
    ]
    report = check_alignments(words, bad)
    assert not report["ok"]
    assert {k: report[k] for k in ("gaps_inside_words", "phones_outside_words", "phones_crossing_word_edges",
                                   "overlaps_inside_words", "words_without_phones", "words_not_covered",
                                   "zero_duration_phones")} == {
        "gaps_inside_words": 1, "phones_outside_words": 1, "phones_crossing_word_edges": 1,
        "overlaps_inside_words": 1, "words_without_phones": 1, "words_not_covered": 1, "zero_duration_phones": 0}
    with pytest.raises(ValueError, match="2 word alignments but 1"):
        check_alignments(words[:2], good[:1])


def test_command_line_reports_a_manifest(tmp_path, capsys):
    manifest = tmp_path / "m.json"
    items = [{"uttid": "u0", "text_alignment": "0.0__A__0.3", "phone_alignment": "0.0__x__0.1 0.1__y__0.3"}]
    manifest.write_text(json.dumps({"data": items}))
    report = main(["--manifest", str(manifest), "--json", str(tmp_path / "r.json")])
    assert report["ok"] and "1 utterances, 1 words, 2 phones" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["phones"] == 2
    manifest.write_text(json.dumps({"data": [{"uttid": "u0", "text_alignment": "0.0__A__0.3"}]}))
    with pytest.raises(SystemExit, match="item 0 \\(u0\\) has no phone_alignment"):
        main(["--manifest", str(manifest)])
