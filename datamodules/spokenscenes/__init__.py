"""SpokenScenes: an offline, Places-format spoken-caption data set (images, espeak-ng speech, ground truth).

    python -m datamodules.spokenscenes --root DIR --train N --val N --test N --seed S
    python -m datamodules.spokenscenes.oracle --root DIR --split test

Scenes (`scenes.py`): 20 place classes named like Places-205, each a texture family, with 1-3 objects
(8 shapes x 9 colours x 2 sizes) and a mask per object. Captions (`captions.py`): templates, synonyms, fillers,
partial mentions. Speech (`speech.py`): espeak-ng through ctypes, 88 voice+variant speakers, word timings.
`generate.py` writes it all; `oracle.py` measures how much of the retrieval task the words solve.
"""

from .captions import LEXICON
from .generate import SPLITS, VERSION, check_dataset, generate, scene_of_image
from .scenes import COLOURS, SCENE_NAMES, SHAPES, SIZES
from .speech import SAMPLE_RATE, SPEAKERS

__all__ = ["generate", "check_dataset", "scene_of_image", "SPLITS", "VERSION", "LEXICON",
           "COLOURS", "SCENE_NAMES", "SHAPES", "SIZES", "SAMPLE_RATE", "SPEAKERS"]
