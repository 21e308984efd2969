"""Caption text for a SpokenScenes scene: templates, synonyms, word order, fillers, partial mentions.

A caption is a list of tokens (lower-case words, one espeak word event each) plus the punctuation that
follows some of them (commas give espeak a short pause). It records which tokens name the scene and which
name each object, so that the manifest can point from an object to its spoken words.

    make_caption(scene, objects, rng) -> Caption(tokens, text, scene_index, object_index)

What varies, and why: scene and shape synonyms (a model must learn several words per concept), sizes spoken
half of the time, two phrase orders for an object ("a red star" / "a star that is red"), several sentence
templates that put the scene first or last, fillers ("uh", "um", "you know", ...), the scene left out of
some captions, and only some of the objects named in some captions. LEXICON maps every content word back to
its attribute (`scene:kitchen`, `colour:red`, `shape:star`, `size:small`) for the text oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import COLOURS, SCENE_NAMES, SHAPES

# spoken words for each place class (first = most frequent). No word is shared between classes.
SCENE_WORDS: dict[str, tuple[str, ...]] = {
    "kitchen": ("kitchen",),
    "bedroom": ("bedroom",),
    "beach": ("beach", "shore", "seaside"),
    "ocean": ("ocean", "sea"),
    "forest": ("forest", "woods"),
    "desert": ("desert", "dunes"),
    "runway": ("runway", "airstrip", "airfield"),
    "mountain": ("mountain", "mountains"),
    "wheat_field": ("wheat", "field", "farm"),
    "snowfield": ("snowfield", "snow", "glacier"),
    "classroom": ("classroom", "schoolroom"),
    "bookstore": ("bookstore", "bookshop", "library"),
    "swamp": ("swamp", "marsh", "bog"),
    "canyon": ("canyon", "gorge"),
    "corridor": ("corridor", "hallway", "hall"),
    "volcano": ("volcano", "lava"),
    "skyscraper": ("skyscraper", "skyscrapers", "city"),
    "river": ("river", "stream", "creek"),
    "pasture": ("pasture", "meadow", "grassland"),
    "attic": ("attic", "loft"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond",),
    "cross": ("cross", "plus"),
    "hexagon": ("hexagon",),
    "heart": ("heart",),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS}
COLOUR_WORDS["purple"] = ("purple", "violet")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
FILLERS: tuple[tuple[str, ...], ...] = (("uh",), ("um",), ("you", "know"), ("like",), ("so",), ("well",))

# plural and mass scene nouns take "the", never "a" ("in the dunes", "on the snow")
_PLURAL = {"dunes", "mountains", "woods", "skyscrapers", "lava", "snow", "wheat"}

# attribute of every content word, for the text oracle
LEXICON: dict[str, str] = {}
for _kind, _table in (("scene", SCENE_WORDS), ("shape", SHAPE_WORDS), ("colour", COLOUR_WORDS), ("size", SIZE_WORDS)):
    for _name, _words in _table.items():
        for _w in _words:
            assert _w not in LEXICON, f"{_w!r} names two attributes"
            LEXICON[_w] = f"{_kind}:{_name}"
assert set(SCENE_WORDS) == set(SCENE_NAMES) and set(SHAPE_WORDS) == set(SHAPES)


@dataclass
class Caption:
    tokens: list[str]  # lower-case words, in spoken order
    text: str  # tokens joined by spaces, with commas after some of them
    scene_index: list[int]  # token indices naming the scene (empty if the scene is not spoken)
    object_index: list[list[int]]  # per object: token indices naming it (empty if not spoken)


def _pick(rng: np.random.Generator, words: tuple[str, ...], first: float = 0.6) -> str:
    """The first word with probability `first`, else a uniformly chosen other one."""
    if len(words) == 1 or rng.random() < first:
        return words[0]
    return words[1 + rng.integers(len(words) - 1)]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Builder:
    """Accumulates tokens with a tag each: ('scene',), ('object', k) or None."""

    def __init__(self):
        self.tokens: list[str] = []
        self.tags: list[tuple | None] = []
        self.comma_after: set[int] = set()

    def add(self, words, tag=None):
        for w in (words.split() if isinstance(words, str) else words):
            self.tokens.append(w)
            self.tags.append(tag)

    def comma(self):
        if self.tokens:
            self.comma_after.add(len(self.tokens) - 1)


def _object_phrase(b: _Builder, rng, k: int, shape: str, colour: str, size: str, say_size: bool):
    tag = ("object", k)
    colour_w, shape_w = _pick(rng, COLOUR_WORDS[colour], 0.8), _pick(rng, SHAPE_WORDS[shape])
    size_w = _pick(rng, SIZE_WORDS[size]) if say_size else None
    if rng.random() < 0.15:  # "a star that is red", "a big star that is red"
        head = [size_w, shape_w] if size_w else [shape_w]
        b.add(_article(head[0]))
        b.add(head, tag)
        b.add(rng.choice(["that is", "which is", "colored"]).split())
        b.add(colour_w, tag)
    else:
        words = [size_w, colour_w, shape_w] if size_w else [colour_w, shape_w]
        b.add(_article(words[0]))
        b.add(words, tag)


def _objects_phrase(b: _Builder, rng, objects, order: list[int]):
    for j, k in enumerate(order):
        if j > 0:
            if j == len(order) - 1:
                b.add("and")
            else:
                b.comma()
        o = objects[k]
        _object_phrase(b, rng, k, o.shape, o.colour, o.size, say_size=rng.random() < 0.6)


def _scene_phrase(b: _Builder, rng, scene: str, preposition: bool):
    word = _pick(rng, SCENE_WORDS[scene])
    if preposition:
        b.add(rng.choice(["in", "on", "at"]) if rng.random() < 0.3 else "in")
    if word in _PLURAL:
        b.add("the")
    else:
        b.add("the" if preposition and rng.random() < 0.6 else _article(word))
    b.add(word, ("scene",))


def make_caption(scene: str, objects, rng: np.random.Generator) -> Caption:
    """A caption of `scene` with `objects` (anything with .shape, .colour, .size); deterministic in `rng`."""
    n = len(objects)
    order = list(rng.permutation(n))
    if n > 1 and rng.random() < 0.12:  # name only some of the objects
        order = order[: rng.integers(1, n)]
    say_scene = rng.random() < 0.92
    there = "there are" if len(order) > 1 else "there is"

    b = _Builder()
    if rng.random() < 0.15:
        b.add(_pick(rng, (("okay", "so"), ("so",), ("um",), ("well",)), 0.4))
        b.comma()
    template = rng.integers(6) if say_scene else 6 + rng.integers(3)
    if template == 0:  # "a kitchen with a red star and a blue circle"
        _scene_phrase(b, rng, scene, preposition=False)
        b.add(rng.choice(["with", "that has", "showing"]).split())
        _objects_phrase(b, rng, objects, order)
    elif template == 1:  # "this is a picture of a kitchen with ..."
        b.add(rng.choice(["this is a picture of", "here is a photo of", "i see", "this shows"]).split())
        _scene_phrase(b, rng, scene, preposition=False)
        b.add(rng.choice(["with", "and"]))
        _objects_phrase(b, rng, objects, order)
    elif template == 2:  # "a red star in the kitchen"
        _objects_phrase(b, rng, objects, order)
        _scene_phrase(b, rng, scene, preposition=True)
    elif template == 3:  # "there is a red star in a kitchen"
        b.add(there)
        _objects_phrase(b, rng, objects, order)
        _scene_phrase(b, rng, scene, preposition=True)
    elif template == 4:  # "in this kitchen there is ..."
        word = _pick(rng, SCENE_WORDS[scene])
        b.add(["in", "the" if word in _PLURAL else rng.choice(["this", "the"])])
        b.add(word, ("scene",))
        b.add(there)
        _objects_phrase(b, rng, objects, order)
    elif template == 5:  # "i can see a red star and a blue circle, it is a kitchen"
        b.add(rng.choice(["i can see", "we have", "there is"]).split())
        _objects_phrase(b, rng, objects, order)
        b.comma()
        b.add(rng.choice(["it is", "it looks like", "probably"]).split())
        _scene_phrase(b, rng, scene, preposition=False)
    elif template == 6:  # no scene word: "a red star and a blue circle"
        _objects_phrase(b, rng, objects, order)
    elif template == 7:
        b.add(rng.choice(["i see", "there is", "this picture shows"]).split())
        _objects_phrase(b, rng, objects, order)
    else:
        b.add(rng.choice(["here we have", "a picture of", "look at"]).split())
        _objects_phrase(b, rng, objects, order)

    # fillers go between two words, never between two content words of the same object
    for _ in range(rng.choice(3, p=(0.55, 0.3, 0.15))):
        gaps = [i for i in range(1, len(b.tokens) + 1)
                if i == len(b.tokens) or b.tags[i] is None or b.tags[i] != b.tags[i - 1]]
        at = gaps[rng.integers(len(gaps))]
        filler = list(FILLERS[rng.integers(len(FILLERS))])
        b.tokens[at:at] = filler
        b.tags[at:at] = [None] * len(filler)
        b.comma_after = {i + len(filler) if i >= at else i for i in b.comma_after}
        if rng.random() < 0.5:
            b.comma_after.add(at + len(filler) - 1)

    text = " ".join(t + ("," if i in b.comma_after and i < len(b.tokens) - 1 else "") for i, t in enumerate(b.tokens))
    scene_index = [i for i, t in enumerate(b.tags) if t == ("scene",)]
    object_index = [[i for i, t in enumerate(b.tags) if t == ("object", k)] for k in range(n)]
    return Caption([str(t) for t in b.tokens], text, scene_index, object_index)
