"""Scene images for SpokenScenes: a textured place background with 1-3 coloured shapes on it.

Every place class has its own texture family (tiles, stripes, waves, dunes, trunks, strata, ...), drawn with
numpy from a handful of random parameters (colours jitter, stripe widths, horizon heights, counts), so two
kitchens look alike but never identical. Backgrounds keep to muted colours; objects are saturated solid
colours, so "the red star" is findable on any scene.

Objects are drawn as binary masks first and filled with their colour, so a mask is exactly the set of pixels
that carry the object's colour in the (pre-JPEG) image. Objects never overlap (their boxes keep a gap), so no
object occludes another and every mask is the object's full shape.

    draw_scene(rng, size) -> Scene(name, image uint8 [S, S, 3], objects: list[SceneObject])

Class names follow Places-205 where it has a one-level class of that name (kitchen, bedroom, ocean, runway,
wheat_field, ...); beach, forest and desert are named like their Places-365 / Places-205 parents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# name -> RGB. Nine colours far apart in hue or lightness (white and black included).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 30),
    "orange": (255, 135, 0),
    "yellow": (250, 225, 20),
    "green": (20, 175, 45),
    "blue": (25, 75, 235),
    "purple": (140, 40, 200),
    "pink": (255, 100, 185),
    "white": (252, 252, 252),
    "black": (12, 12, 12),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "heart")
# size -> range of the shape's radius as a fraction of the image side
SIZES: dict[str, tuple[float, float]] = {"small": (0.085, 0.115), "large": (0.165, 0.205)}
# probability of 1, 2, 3 objects in a scene
N_OBJECTS_P = (0.3, 0.4, 0.3)


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    rgb: tuple[int, int, int]
    mask: np.ndarray  # bool [S, S]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


@dataclass
class Scene:
    name: str
    image: np.ndarray  # uint8 [S, S, 3]
    objects: list[SceneObject]


# ----------------------------------------------------------------------------------------------------------
# texture helpers: images are float [S, S, 3] in 0..255; masks and maps broadcast to [S, S] ([S, 1] = rows,
# [1, S] = columns)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (y [S, 1], x [1, S])."""
    c = (np.arange(size) + 0.5) / size
    return c[:, None], c[None, :]


def _jitter(rng: np.random.Generator, rgb, amount: int = 18) -> np.ndarray:
    return np.clip(np.asarray(rgb, float) + rng.integers(-amount, amount + 1, 3), 0, 255)


def _fill(size: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, float), (size, size, 3)).copy()


def _vgrad(size: int, top, bottom) -> np.ndarray:
    t = _grid(size)[0][:, :, None]  # [S, 1, 1]
    return np.broadcast_to(np.asarray(top, float) * (1 - t) + np.asarray(bottom, float) * t, (size, size, 3)).copy()


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [-1, 1]: a cells x cells random grid, bicubically upsampled."""
    low = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC), dtype=float)


def _paint(img: np.ndarray, where, src) -> np.ndarray:
    """`src` (an RGB colour or an image) where `where` is set (bool, or weights in [0, 1]); `img` elsewhere."""
    w = np.asarray(where, float)[..., None]
    return img * (1 - w) + np.asarray(src, float) * w


def _shade(img: np.ndarray, factor) -> np.ndarray:
    """Brightness times `factor` (a number or a map)."""
    return img * np.asarray(factor, float)[..., None]


def _sky(rng, size) -> np.ndarray:
    return _vgrad(size, _jitter(rng, (110, 160, 215), 20), _jitter(rng, (190, 215, 235), 15))


# ----------------------------------------------------------------------------------------------------------
# one texture family per place class


def _kitchen(rng, size):  # tiled wall, wooden counter
    y, x = _grid(size)
    tile = rng.uniform(0.07, 0.13)
    light = _jitter(rng, (225, 220, 200), 20)
    dark = _jitter(rng, rng.choice([(120, 165, 160), (170, 120, 100), (140, 150, 180)]), 20)
    img = _paint(_fill(size, dark), (np.floor(y / tile) + np.floor(x / tile)) % 2 == 1, light)
    img = _paint(img, (np.mod(y, tile) < 0.012) | (np.mod(x, tile) < 0.012), (235, 235, 230))  # grout
    counter = rng.uniform(0.62, 0.75)
    wood = _shade(_fill(size, _jitter(rng, (135, 95, 60), 20)), 0.9 + 0.1 * np.sin(2 * np.pi * y * rng.uniform(20, 40)))
    img = _paint(img, y > counter, wood)
    return _paint(img, np.abs(y - counter) < 0.015, (80, 60, 40))


def _bedroom(rng, size):  # striped wallpaper, plank floor
    y, x = _grid(size)
    period = rng.uniform(0.06, 0.14)
    a, b = _jitter(rng, (215, 190, 200), 20), _jitter(rng, (185, 170, 210), 20)
    img = _paint(_fill(size, b), np.mod(x + rng.uniform(), period) < period * rng.uniform(0.35, 0.65), a)
    floor = rng.uniform(0.7, 0.8)
    plank = _shade(_fill(size, _jitter(rng, (150, 110, 75))), 0.88 + 0.12 * (np.mod(y * 40, 1) > 0.1))
    return _paint(img, y > floor, plank)


def _beach(rng, size):  # sky, a band of sea, sand
    y, x = _grid(size)
    horizon, shore = rng.uniform(0.25, 0.4), rng.uniform(0.5, 0.62)
    img = _sky(rng, size)
    img = _paint(img, y > horizon, _vgrad(size, _jitter(rng, (40, 110, 150)), _jitter(rng, (70, 160, 170))))
    shoreline = shore + 0.02 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + rng.uniform()))
    sand = _shade(_fill(size, _jitter(rng, (215, 195, 150))), 1 + 0.06 * _smooth_noise(rng, size, 24))
    return _paint(img, y > shoreline, sand)


def _ocean(rng, size):  # deep blue with wavy crests, maybe a strip of sky
    y, x = _grid(size)
    img = _vgrad(size, _jitter(rng, (60, 120, 170)), _jitter(rng, (20, 55, 95)))
    freq, phase, wobble = rng.uniform(8, 16), rng.uniform(), rng.uniform(0.2, 0.6)
    crests = np.sin(2 * np.pi * (y * freq + wobble * np.sin(2 * np.pi * x * rng.uniform(1, 3)) + phase))
    img = _shade(img, 1 + 0.15 * crests)
    horizon = rng.uniform(0.0, 0.18)
    return _paint(img, y < horizon, _sky(rng, size))


def _forest(rng, size):  # mottled green, dark trunks, forest floor
    y, x = _grid(size)
    img = _shade(_fill(size, _jitter(rng, (60, 95, 55))), 1 + 0.25 * _smooth_noise(rng, size, 10))
    for _ in range(rng.integers(4, 10)):
        cx, width = rng.uniform(), rng.uniform(0.02, 0.06)
        img = _paint(img, np.abs(x - cx) < width / 2, _jitter(rng, (80, 60, 40), 15))
    floor = rng.uniform(0.78, 0.9)
    return _paint(img, y > floor, _jitter(rng, (75, 70, 45)))


def _desert(rng, size):  # pale sky, layered sand dunes
    y, x = _grid(size)
    img = _vgrad(size, _jitter(rng, (170, 195, 220)), _jitter(rng, (225, 220, 205)))
    top = rng.uniform(0.25, 0.4)
    n = rng.integers(3, 5)
    sand = np.asarray(_jitter(rng, (215, 165, 105), 15))
    for i, level in enumerate(np.linspace(top, 0.95, n + 1)[:-1]):
        ridge = level + 0.05 * np.sin(2 * np.pi * (x * rng.uniform(0.7, 2) + rng.uniform()))
        img = _paint(img, y > ridge, np.clip(sand * (1 - 0.07 * i) + rng.integers(-8, 9, 3), 0, 255))
    return img


def _runway(rng, size):  # grass and a tarmac strip in perspective with a dashed centre line
    y, x = _grid(size)
    horizon = rng.uniform(0.22, 0.35)
    sky = _sky(rng, size)
    img = _paint(_fill(size, _jitter(rng, (95, 125, 70))), y < horizon, sky)
    depth = np.clip((y - horizon) / (1 - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom
    half = 0.03 + rng.uniform(0.3, 0.45) * depth
    cx = 0.5 + rng.uniform(-0.08, 0.08)
    img = _paint(img, (np.abs(x - cx) < half) & (y > horizon), _jitter(rng, (105, 105, 110), 12))
    dash = np.mod(np.log(depth + 0.05) * rng.uniform(3, 5), 1) < 0.5
    img = _paint(img, (np.abs(x - cx) < 0.006 + 0.012 * depth) & dash & (y > horizon), (225, 225, 220))
    return _paint(img, (np.abs(np.abs(x - cx) - half * 0.93) < 0.004 + 0.008 * depth) & (y > horizon), (215, 215, 210))


def _mountain(rng, size):  # jagged ridges in receding layers, snow on the far one
    y, x = _grid(size)
    img = _sky(rng, size)
    for i in range(rng.integers(2, 4)):
        knots = rng.uniform(0.2 + 0.15 * i, 0.45 + 0.15 * i, rng.integers(4, 8))
        ridge = np.interp(x[0], np.linspace(0, 1, len(knots)), knots)[None, :]
        img = _paint(img, y > ridge, _jitter(rng, (110 - 20 * i, 110 - 15 * i, 120 - 15 * i), 12))
        if i == 0:
            img = _paint(img, (y > ridge) & (y < ridge + 0.06) & (ridge < 0.35), (235, 238, 242))
    return img


def _wheat_field(rng, size):  # golden crop rows converging to the horizon
    y, x = _grid(size)
    horizon = rng.uniform(0.2, 0.38)
    img = _sky(rng, size)
    depth = np.clip((y - horizon) / (1 - horizon), 1e-3, 1)
    rows = np.sin(2 * np.pi * ((x - 0.5) / depth * rng.uniform(3, 6) + rng.uniform()))
    return _paint(img, y > horizon, _shade(_fill(size, _jitter(rng, (205, 170, 80), 15)), 1 + 0.12 * rows))


def _snowfield(rng, size):  # grey-blue sky over softly shaded snow
    y, x = _grid(size)
    horizon = rng.uniform(0.15, 0.35)
    sky = _vgrad(size, _jitter(rng, (150, 170, 195), 12), _jitter(rng, (195, 205, 215), 10))
    snow = _shade(_fill(size, _jitter(rng, (200, 210, 225), 8)), 1 + 0.05 * _smooth_noise(rng, size, 6))
    return _paint(sky, y > horizon, snow)


def _classroom(rng, size):  # a framed chalkboard on a plain wall, floor
    y, x = _grid(size)
    img = _fill(size, _jitter(rng, (210, 200, 165), 15))
    x0, x1 = rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95)
    y0, y1 = rng.uniform(0.1, 0.25), rng.uniform(0.5, 0.65)
    img = _paint(img, (x > x0 - 0.02) & (x < x1 + 0.02) & (y > y0 - 0.02) & (y < y1 + 0.02), (120, 85, 50))
    board = _jitter(rng, rng.choice([(45, 75, 55), (40, 45, 50)]), 10)  # green or black
    img = _paint(img, (x > x0) & (x < x1) & (y > y0) & (y < y1), board)
    floor = rng.uniform(0.78, 0.88)
    return _paint(img, y > floor, _jitter(rng, (140, 120, 100)))


def _bookstore(rng, size):  # shelves of book spines in muted colours
    y, x = _grid(size)
    img = _fill(size, _jitter(rng, (110, 80, 55)))
    shelf = rng.uniform(0.18, 0.28)
    edges = np.cumsum(rng.uniform(0.02, 0.06, (8, 60)), axis=1)  # spine edges along x, per shelf row
    palette = np.asarray([(150, 70, 60), (70, 90, 120), (90, 110, 70), (160, 140, 90), (110, 80, 110),
                          (170, 160, 140)], float)
    book = np.stack([np.searchsorted(row_edges, x[0]) for row_edges in edges])  # [rows, S] book number
    colour = (book * 7 + np.arange(8)[:, None] * 3 + rng.integers(6)) % len(palette)
    spines = palette[colour[np.floor(y[:, 0] / shelf).astype(int)]]  # [S, S, 3]
    return _paint(img, np.mod(y, shelf) > 0.04, spines * rng.uniform(0.8, 1.0))


def _swamp(rng, size):  # murky green, dark pools, bare stems
    y, x = _grid(size)
    img = _shade(_fill(size, _jitter(rng, (85, 95, 60))), 1 + 0.2 * _smooth_noise(rng, size, 8))
    water = _smooth_noise(rng, size, 6) > rng.uniform(0.0, 0.3)
    img = _paint(img, water & (y > 0.35), _jitter(rng, (50, 60, 50), 10))
    for _ in range(rng.integers(3, 7)):
        cx = rng.uniform()
        img = _paint(img, (np.abs(x - cx) < 0.012) & (y < rng.uniform(0.5, 0.9)), (45, 40, 30))
    return img


def _canyon(rng, size):  # red rock strata under a V-shaped notch of sky
    y, x = _grid(size)
    img = _sky(rng, size)
    notch = rng.uniform(0.1, 0.25) * (1 - 2 * np.abs(x - rng.uniform(0.35, 0.65)))
    freq, wobble = rng.uniform(10, 20), rng.uniform(0.01, 0.04)
    strata = np.sin(2 * np.pi * (y + wobble * np.sin(2 * np.pi * x * 2 + rng.uniform() * 6)) * freq)
    rock = _shade(_fill(size, _jitter(rng, (175, 95, 60), 15)), 1 + 0.15 * strata)
    return _paint(img, y > np.maximum(notch, 0.0), rock)


def _corridor(rng, size):  # one-point perspective: walls, floor with tile lines, ceiling, far wall
    y, x = _grid(size)
    vx, vy = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.55)
    w = rng.uniform(0.12, 0.2)  # half-size of the far wall
    dx, dy = np.abs(x - vx), np.abs(y - vy)
    far = (dx < w) & (dy < w)
    floor = (y > vy) & (dy >= dx) & ~far
    wall = _jitter(rng, (190, 185, 170), 15)
    img = _paint(_fill(size, wall), (dx > dy) & ~far, wall * 0.85)
    img = _paint(img, floor, _jitter(rng, (120, 115, 110), 15))
    img = _paint(img, (y < vy) & (dy >= dx) & ~far, _jitter(rng, (225, 225, 215), 10))  # ceiling
    lines = np.mod(np.log(np.maximum(dy, 1e-3)) * rng.uniform(3, 6), 1) < 0.12
    img = _paint(img, floor & lines, (90, 85, 80))
    return _paint(img, far, wall * 0.7)


def _volcano(rng, size):  # dark cone with a glowing crater and a lava stream
    y, x = _grid(size)
    img = _vgrad(size, _jitter(rng, (60, 40, 45)), _jitter(rng, (140, 80, 60)))
    cx, top = rng.uniform(0.35, 0.65), rng.uniform(0.25, 0.4)
    cone = y > top + rng.uniform(0.9, 1.4) * np.maximum(np.abs(x - cx) - 0.06, 0)
    img = _paint(img, cone, _jitter(rng, (55, 45, 45), 10))
    img = _paint(img, 0.8 * np.exp(-((x - cx) ** 2 + (y - top) ** 2) / 0.004), (235, 110, 40))  # glow
    lava = cone & (np.abs(x - cx - 0.08 * np.sin((y - top) * 12)) < 0.012) & (y < top + 0.4)
    return _paint(img, lava, (210, 80, 35))


def _skyscraper(rng, size):  # towers with window grids against the sky
    y, x = _grid(size)
    img = _sky(rng, size)
    for _ in range(rng.integers(3, 6)):
        x0, width, top = rng.uniform(-0.1, 0.9), rng.uniform(0.15, 0.3), rng.uniform(0.05, 0.45)
        body = (x > x0) & (x < x0 + width) & (y > top)
        img = _paint(img, body, _jitter(rng, (120, 130, 140), 20))
        columns = np.mod((x - x0) * rng.uniform(14, 22), 1) < 0.5
        rows = np.mod(y * rng.uniform(18, 28), 1) < 0.5
        img = _paint(img, body & columns & rows, _jitter(rng, (175, 195, 210), 10))
    return img


def _river(rng, size):  # a meandering blue band with sandy banks through grass
    y, x = _grid(size)
    img = _shade(_fill(size, _jitter(rng, (90, 130, 70))), 1 + 0.15 * _smooth_noise(rng, size, 16))
    centre = rng.uniform(0.3, 0.7) + 0.15 * np.sin(2 * np.pi * (y * rng.uniform(0.5, 1.5) + rng.uniform()))
    width = rng.uniform(0.08, 0.14) * (0.5 + y)
    img = _paint(img, np.abs(x - centre) < width, _jitter(rng, (70, 115, 150), 12))
    return _paint(img, np.abs(np.abs(x - centre) - width) < 0.012, _jitter(rng, (140, 130, 95)))


def _pasture(rng, size):  # sky, a distant tree line, green grass, a fence
    y, x = _grid(size)
    horizon = rng.uniform(0.25, 0.4)
    img = _sky(rng, size)
    grass = _shade(_vgrad(size, _jitter(rng, (110, 150, 80)), _jitter(rng, (80, 130, 60))),
                   1 + 0.1 * _smooth_noise(rng, size, 40))
    img = _paint(img, y > horizon, grass)
    trees = (y > horizon - 0.04 - 0.03 * (_smooth_noise(rng, size, 12)[0:1] + 1)) & (y <= horizon)
    img = _paint(img, trees, _jitter(rng, (55, 80, 50), 10))
    fence = rng.uniform(0.6, 0.8)
    return _paint(img, (np.abs(y - fence) < 0.008) | (np.abs(y - fence - 0.05) < 0.008), (120, 95, 65))


def _attic(rng, size):  # sloping wooden roof boards and beams
    y, x = _grid(size)
    apex = rng.uniform(0.4, 0.6)
    wood = _jitter(rng, (170, 125, 80), 18)
    roof = y < 0.75 - np.abs(x - apex)
    planks = np.mod(np.abs(x - apex) * rng.uniform(10, 18) + y * 0.5, 1) < 0.08
    img = _paint(_fill(size, wood * 0.75), roof, wood)
    img = _paint(img, roof & planks, wood * 0.6)
    beams = np.abs(np.mod((y + np.abs(x - apex)) * rng.uniform(3, 5), 1) - 0.5) < 0.04
    return _paint(img, roof & beams, (95, 65, 40))


# class name -> texture function. The spoken words for each class live in captions.py.
SCENES = {
    "kitchen": _kitchen,
    "bedroom": _bedroom,
    "beach": _beach,
    "ocean": _ocean,
    "forest": _forest,
    "desert": _desert,
    "runway": _runway,
    "mountain": _mountain,
    "wheat_field": _wheat_field,
    "snowfield": _snowfield,
    "classroom": _classroom,
    "bookstore": _bookstore,
    "swamp": _swamp,
    "canyon": _canyon,
    "corridor": _corridor,
    "volcano": _volcano,
    "skyscraper": _skyscraper,
    "river": _river,
    "pasture": _pasture,
    "attic": _attic,
}
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)


def place_path(scene: str, stem: str) -> str:
    """Places-205 layout `<first letter>/<class>/<stem>`: the class parses back as the second component."""
    return f"{scene[0]}/{scene}/{stem}"


# ----------------------------------------------------------------------------------------------------------
# objects


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of `shape` (None for the circle, drawn as an ellipse); r is the outer radius."""
    if shape == "circle":
        return None
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full(4, r)
    elif shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, r)
    elif shape == "hexagon":
        t = np.arange(6) * np.pi / 3
        rad = np.full(6, r)
    elif shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "diamond":
        t = -np.pi / 2 + np.arange(4) * np.pi / 2
        rad = np.array([1.0, 0.62, 1.0, 0.62]) * r
    elif shape == "cross":
        a = 0.34  # arm half-width relative to r
        px = np.array([a, a, 1, 1, a, a, -a, -a, -1, -1, -a, -a]) * r
        py = np.array([-1, -a, -a, a, a, 1, 1, a, a, -a, -a, -1]) * r
        t, rad = np.arctan2(py, px), np.hypot(px, py)
    elif shape == "heart":
        s = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        px = 16 * np.sin(s) ** 3 / 17 * r
        py = -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s)) / 17 * r
        t, rad = np.arctan2(py, px), np.hypot(px, py)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    t = t + angle
    return list(zip((cx + rad * np.cos(t)).tolist(), (cy + rad * np.sin(t)).tolist()))


# rotation range (radians, +-) per shape: squares and crosses stay near upright so that a square never
# turns into a diamond nor a cross into an "x"
_MAX_ANGLE = {"circle": 0.0, "square": 0.25, "triangle": 0.35, "star": np.pi, "diamond": 0.25,
              "cross": 0.25, "hexagon": np.pi, "heart": 0.3}


def _shape_mask(size: int, shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    poly = _outline(shape, cx, cy, r, angle)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(poly, fill=1)
    return np.asarray(canvas, dtype=bool)


def _place_objects(rng: np.random.Generator, size: int) -> list[SceneObject]:
    n = rng.choice(len(N_OBJECTS_P), p=N_OBJECTS_P) + 1
    objects: list[SceneObject] = []
    taken: list[tuple[int, int, int, int]] = []
    gap = max(2, size // 40)
    for _ in range(n):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size_name = ("small", "large")[rng.integers(2)]
        lo, hi = SIZES[size_name]
        r = rng.uniform(lo, hi) * size
        angle = rng.uniform(-1, 1) * _MAX_ANGLE[shape]
        rgb = tuple(int(v) for v in np.clip(np.asarray(COLOURS[colour]) + rng.integers(-10, 11, 3), 0, 255))
        for _attempt in range(50):  # rejection sampling of a free spot; the object is dropped if none is found
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            mask = _shape_mask(size, shape, cx, cy, r, angle)
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            if all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
                   for b in taken):
                taken.append(box)
                objects.append(SceneObject(shape, colour, size_name, rgb, mask, box))
                break
    return objects


def draw_scene(rng: np.random.Generator, size: int = 128, scene: str | None = None) -> Scene:
    """Draw a random scene (or the given class) with 1-3 non-overlapping objects; deterministic in `rng`."""
    if scene is None:
        scene = SCENE_NAMES[rng.integers(len(SCENE_NAMES))]
    background = np.clip(SCENES[scene](rng, size), 0, 255)
    objects = _place_objects(rng, size)
    image = background.round().astype(np.uint8)
    for obj in objects:
        image[obj.mask] = obj.rgb
    return Scene(scene, image, objects)
