"""The generated world: simple coloured shapes with known attributes, and captions.

Every image shows one object (or, in a share of scenes, two objects and a spatial
relation) on a slightly noisy grey background. Because the course draws the
images itself, it knows the truth about each one: its shape, colour, size and
position. That truth lets later notebooks *measure* whether a generated image
matches its prompt, which is hard to do with real photos.

Explained in notebook 00, section "The generated world".

What is in this module, in reading order:

1. The attributes (``SHAPES``, ``COLORS``, ...) and ``HELD_OUT_COMBOS``.
2. Captions: templates, synonym tables, :func:`caption_for`, :func:`canonical_caption`.
3. Sampling: :func:`sample_attributes` draws what is in each scene,
   :func:`sample_layout` draws where exactly and in which shade.
4. Rendering: :func:`render` turns a layout into uint8 images (numpy, vectorised
   over the batch, 4x supersampled for smooth edges).
5. Splits and cache: :func:`generate`, :func:`load_split`.
6. The torch side: :class:`WorldDataset`, :func:`make_loader`, :func:`to_float`, :func:`to_uint8`.

Attribute codes
---------------
Each image has eight integer attributes (``ATTRIBUTES``); the integer is an index
into the matching tuple of names, and ``-1`` means "absent":

* single-object scenes: ``shape, color, size, position`` are set;
  ``shape2 = color2 = size2 = relation = -1``.
* two-object scenes: object 1 is ``shape, color, size``, object 2 is
  ``shape2, color2, size2``, and ``relation`` says where object 1 is relative to
  object 2 ("a red circle *to the left of* a blue square"). Both objects are
  small, and ``position = -1`` because the two objects are in different places.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from course_lib import paths
from course_lib.profiles import get_profile
from course_lib.runtime import default_num_workers

__all__ = [
    # attributes
    "SHAPES", "COLORS", "SIZES", "POSITIONS", "RELATIONS", "ATTRIBUTES", "ATTRIBUTE_VALUES",
    "NUM_CLASSES", "HELD_OUT_COMBOS", "SPLITS", "COMBOS", "SPLIT_COMBOS", "RENDER_VERSION",
    # captions
    "TEMPLATES", "RELATION_TEMPLATES", "SHAPE_WORDS", "COLOR_WORDS", "SIZE_WORDS",
    "POSITION_WORDS", "POSITION_LABELS", "RELATION_WORDS",
    "caption_for", "canonical_caption", "varied_caption",
    # helpers
    "attribute_names", "chance_levels", "class_counts", "is_held_out", "allowed_combos",
    "to_uint8", "to_float",
    # sampling, rendering, splits
    "sample_attributes", "sample_layout", "coverage", "render", "render_attributes", "generate",
    "load_split", "cache_path",
    # torch
    "WorldDataset", "make_loader", "batch_loader",
]

# ---------------------------------------------------------------------------
# 1. Attributes
# ---------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLORS = ("red", "green", "blue", "yellow", "purple", "cyan")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
#: Where object 1 is relative to object 2 in a two-object scene.
RELATIONS = ("left of", "right of", "above", "below")

#: The keys of every attributes dict, in this order.
ATTRIBUTES = ("shape", "color", "size", "position", "shape2", "color2", "size2", "relation")
#: Attribute -> the names its integer codes stand for.
ATTRIBUTE_VALUES = {
    "shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITIONS,
    "shape2": SHAPES, "color2": COLORS, "size2": SIZES, "relation": RELATIONS,
}
#: Attribute -> number of classes (the absent value -1 is not a class).
NUM_CLASSES = {name: len(values) for name, values in ATTRIBUTE_VALUES.items()}

#: (color, shape) pairs that never appear in the "train" split, not even as the
#: second object. The "heldout" split contains only these. A model that draws a
#: purple star after training has *composed* "purple" and "star" without ever
#: having seen one: this is how the course tests compositional generalisation.
HELD_OUT_COMBOS = (("purple", "star"), ("cyan", "triangle"), ("green", "square"))

SPLITS = ("train", "val", "test", "heldout")
#: Which (color, shape) pairs a split may contain: "seen" (all but the held-out
#: ones), "heldout" (only those) or "all".
COMBOS = ("seen", "heldout", "all")
#: Default combos per split.
SPLIT_COMBOS = {"train": "seen", "val": "seen", "test": "seen", "heldout": "heldout"}
#: Each split draws from its own random stream, so splits never share images.
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "heldout": 3}

#: Bump this whenever the drawing changes: cached renderings then become stale.
RENDER_VERSION = 1


def allowed_combos(combos: str = "seen") -> list[tuple[str, str]]:
    """The (color, shape) pairs a split with this ``combos`` setting may contain.

    Args:
        combos: "seen", "heldout" or "all".
    """
    if combos not in COMBOS:
        raise ValueError(f"combos={combos!r}: use one of {', '.join(COMBOS)}.")
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    if combos == "seen":
        return [p for p in pairs if p not in HELD_OUT_COMBOS]
    if combos == "heldout":
        return [p for p in pairs if p in HELD_OUT_COMBOS]
    return pairs


def is_held_out(color: str | int, shape: str | int) -> bool:
    """True if the (color, shape) pair is one of ``HELD_OUT_COMBOS``.

    Args:
        color, shape: names ("purple") or integer codes (4).
    """
    return (_name("color", color), _name("shape", shape)) in HELD_OUT_COMBOS


def _name(attribute: str, value) -> str | None:
    """A name from a name or an integer code; None for None or -1."""
    if value is None:
        return None
    values = ATTRIBUTE_VALUES[attribute]
    if isinstance(value, str):
        if value == "center" and attribute == "position":   # American spelling welcome
            value = "centre"
        if value not in values:
            raise ValueError(f"Unknown {attribute} {value!r}: use one of {', '.join(values)}.")
        return value
    code = int(value)
    if code == -1:
        return None
    if not 0 <= code < len(values):
        raise ValueError(f"{attribute} code {code} is out of range 0..{len(values) - 1} (or -1).")
    return values[code]


def attribute_names(attrs_row) -> dict[str, str | None]:
    """Integer codes -> names, e.g. ``{"shape": "circle", ..., "relation": None}``.

    Args:
        attrs_row: a dict with (some of) the keys of ``ATTRIBUTES`` and integer
            values (Python ints, numpy or 0-d torch scalars). -1 becomes None.
    """
    return {key: _name(key, attrs_row[key]) for key in ATTRIBUTES if key in attrs_row}


def chance_levels() -> dict[str, float]:
    """Accuracy of guessing uniformly at random, per attribute (1 / number of classes).

    Useful as the baseline in every accuracy plot: 0.2 for shape, 0.167 for colour...
    """
    return {name: 1.0 / n for name, n in NUM_CLASSES.items()}


def class_counts(attributes) -> dict[str, np.ndarray]:
    """How many images have each value, per attribute (absent values, -1, are not counted).

    Args:
        attributes: dict of integer arrays or tensors, e.g. ``ds.attributes``.

    Returns:
        attribute -> int64 array of length ``NUM_CLASSES[attribute]``.
    """
    counts = {}
    for name in ATTRIBUTES:
        codes = np.asarray(attributes[name]).astype(np.int64)
        codes = codes[codes >= 0]
        counts[name] = np.bincount(codes, minlength=NUM_CLASSES[name])
    return counts


# ---------------------------------------------------------------------------
# 2. Captions
# ---------------------------------------------------------------------------
# Each word has synonyms; the FIRST entry of each tuple is the canonical word.
# Templates are str.format strings with named slots. Template 0 is canonical.

SHAPE_WORDS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "wedge"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "star": ("star", "pointed star", "starlike shape"),
}
COLOR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "jade"),
    "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "plum"),
    "cyan": ("cyan", "turquoise", "aqua"),
}
SIZE_WORDS = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
#: Position as a phrase that ends a sentence ("a red circle at the top").
POSITION_WORDS = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "up high"),
    "bottom": ("at the bottom", "near the bottom", "down low"),
    "centre": ("in the centre", "in the middle", "in the center"),
}
#: Position as a bare label ("top: one tiny crimson circle").
POSITION_LABELS = {
    "left": ("left", "left side"),
    "right": ("right", "right side"),
    "top": ("top", "upper part"),
    "bottom": ("bottom", "lower part"),
    "centre": ("centre", "middle", "center"),
}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath"),
}

#: Single-object templates. Slots: {size} {color} {shape}, and {where} (a phrase)
#: or {pos} (a label) for the position.
TEMPLATES = (
    "a {size} {color} {shape} {where}",
    "{pos}: one {size} {color} {shape}",
    "there is a {size} {color} {shape} {where}",
    "a picture of a {size} {color} {shape} {where}",
    "{where}, a {size} {color} {shape}",
    "one {color} {shape}, {size}, {where}",
    "a {size} {shape} in {color} {where}",
    "{size} {color} {shape} {where}",
)
#: Two-object templates. Slots: {size} {color} {shape} (object 1), {rel},
#: {size2} {color2} {shape2} (object 2).
RELATION_TEMPLATES = (
    "a {size} {color} {shape} {rel} a {size2} {color2} {shape2}",
    "there is a {color} {shape} {rel} a {color2} {shape2}",
    "{size} {color} {shape} {rel} {size2} {color2} {shape2}",
    "one {color} {shape} {rel} one {color2} {shape2}",
    "a {color} {shape} {rel} a {color2} {shape2}",
)


def _pick(words: tuple[str, ...], rng, synonyms: bool) -> str:
    """The canonical word, or a random synonym when an rng is given."""
    if rng is None or not synonyms:
        return words[0]
    return words[int(rng.integers(len(words)))]


def _tidy(text: str) -> str:
    """Collapse spaces and fix the article: "a emerald" -> "an emerald"."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+,", ",", text)
    return re.sub(r"\b(a|A) (?=[aeiouAEIOU])", r"\1n ", text)


def caption_for(shape=None, color=None, size=None, position=None, *, shape2=None, color2=None,
                size2=None, relation=None, template: int | None = None, rng=None,
                synonyms: bool = True) -> str:
    """A caption (or a prompt) from attribute values.

    Args:
        shape, color, size, position: names ("circle") or integer codes (0).
            For prompts, any of them may be None and is then left out
            (``caption_for(shape="star", color="red")`` -> "a red star"); a
            missing shape reads "shape".
        shape2, color2, size2, relation: object 2 and the relation, for a
            two-object caption (``relation`` set -> two-object; ``position`` is ignored).
        template: index into ``TEMPLATES`` (or ``RELATION_TEMPLATES``). None: the
            canonical template 0, or a random one when ``rng`` is given.
        rng: a ``numpy.random.Generator``. None gives the canonical caption.
        synonyms: with an rng, pick random synonyms ("crimson" for red); False
            keeps the canonical words.

    Returns:
        A short lower-case ASCII sentence, e.g. "a small red circle at the top".
        A partial prompt (some attribute None) always uses the canonical word order.
    """
    shape, color, size = _name("shape", shape), _name("color", color), _name("size", size)
    position, relation = _name("position", position), _name("relation", relation)
    shape_word = _pick(SHAPE_WORDS[shape], rng, synonyms) if shape else "shape"
    color_word = _pick(COLOR_WORDS[color], rng, synonyms) if color else ""
    size_word = _pick(SIZE_WORDS[size], rng, synonyms) if size else ""

    if relation is not None:
        shape2, color2, size2 = _name("shape", shape2), _name("color", color2), _name("size", size2)
        slots = dict(
            shape=shape_word, color=color_word, size=size_word,
            rel=_pick(RELATION_WORDS[relation], rng, synonyms),
            shape2=_pick(SHAPE_WORDS[shape2], rng, synonyms) if shape2 else "shape",
            color2=_pick(COLOR_WORDS[color2], rng, synonyms) if color2 else "",
            size2=_pick(SIZE_WORDS[size2], rng, synonyms) if size2 else "",
        )
        complete = all([shape, color, size, shape2, color2, size2])
        templates = RELATION_TEMPLATES
    else:
        if any(_name(key, value) for key, value in
               (("shape", shape2), ("color", color2), ("size", size2))):
            raise ValueError("shape2 / color2 / size2 describe a second object: give a relation "
                             f"too ({', '.join(RELATIONS)}).")
        slots = dict(
            shape=shape_word, color=color_word, size=size_word,
            where=_pick(POSITION_WORDS[position], rng, synonyms) if position else "",
            pos=_pick(POSITION_LABELS[position], rng, synonyms) if position else "",
        )
        complete = all([shape, color, size, position])
        templates = TEMPLATES

    if not complete:
        template = 0              # partial prompts: canonical word order only
    elif template is None:
        template = 0 if rng is None else int(rng.integers(len(templates)))
    return _tidy(templates[template].format(**slots))


def _row_args(attrs_row) -> dict:
    """caption_for keyword arguments from an attributes row (codes or names)."""
    names = {key: _name(key, attrs_row[key]) if key in attrs_row else None for key in ATTRIBUTES}
    if names["relation"] is None:
        return {k: names[k] for k in ("shape", "color", "size", "position")}
    return {k: names[k] for k in ("shape", "color", "size", "shape2", "color2", "size2", "relation")}


def canonical_caption(attrs_row) -> str:
    """The one canonical caption of an image.

    Args:
        attrs_row: dict of attribute codes (or names), e.g. ``ds[0][2]``.

    Returns:
        e.g. "a small red circle at the top", "a large blue star in the centre",
        "a small red circle to the left of a small blue square".
    """
    return caption_for(**_row_args(attrs_row))


def varied_caption(attrs_row, rng) -> str:
    """A random template with random synonyms for an image (caption augmentation).

    Args:
        attrs_row: dict of attribute codes (or names).
        rng: a ``numpy.random.Generator``.
    """
    return caption_for(**_row_args(attrs_row), rng=rng)


# ---------------------------------------------------------------------------
# 3. Sampling: what is in each scene, and where exactly
# ---------------------------------------------------------------------------
# Geometry is in units of the image side: (0, 0) is the top-left corner,
# (1, 1) the bottom-right one; y grows downwards like image rows.

#: Centre of an object at each position (before jitter).
POSITION_XY = {"left": (0.28, 0.5), "right": (0.72, 0.5), "top": (0.5, 0.28),
               "bottom": (0.5, 0.72), "centre": (0.5, 0.5)}
POSITION_JITTER = 0.025         # +- this much, in x and in y
#: Object radius per size (an object fits in a circle of this radius).
SIZE_RADIUS = {"small": 0.13, "large": 0.22}
SIZE_JITTER = 0.04              # radius times 1 +- this
ROTATION_JITTER_DEG = 6.0       # small, so that a square never looks like a diamond
#: Two-object scenes: the pair sits on a line through the centre, shifted across
#: that line by up to this much.
PAIR_SHIFT = 0.12
#: Hue (degrees) of each colour; saturation and value are drawn from the ranges below.
COLOR_HUES = {"red": 0.0, "yellow": 55.0, "green": 120.0, "cyan": 182.0, "blue": 232.0,
              "purple": 282.0}
HUE_JITTER_DEG = 6.0
SATURATION_RANGE = (0.75, 1.0)
VALUE_RANGE = (0.85, 1.0)
#: Background: grey level range, per-channel tint, low-frequency shading, pixel noise.
BACKGROUND_GREY = (0.3, 0.7)
BACKGROUND_TINT = 0.04
BACKGROUND_SHADING = 0.05
PIXEL_NOISE = 0.025


def sample_attributes(n: int, rng: np.random.Generator, combos: str = "seen",
                      two_object_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """Draw the attributes of ``n`` scenes.

    (color, shape) pairs are drawn uniformly from :func:`allowed_combos`, sizes,
    positions and relations uniformly. So with combos="seen" every seen pair is
    equally common, and a shape (or colour) that is part of a held-out pair is
    a little rarer than the others (5 of 27 pairs instead of 6 of 27). In two-object scenes both objects are
    small, the two pairs differ (otherwise "left of" and "right of" would look
    alike) and ``position`` is -1.

    Args:
        n: number of scenes.
        rng: a ``numpy.random.Generator``.
        combos: "seen", "heldout" or "all" (see ``COMBOS``).
        two_object_fraction: probability that a scene has two objects.

    Returns:
        dict of int64 arrays of length n, keys ``ATTRIBUTES``.
    """
    pairs = np.array([(COLORS.index(c), SHAPES.index(s)) for c, s in allowed_combos(combos)])
    first = rng.integers(len(pairs), size=n)
    # object 2: any other allowed pair (draw from len-1 and skip over the first)
    second = rng.integers(max(len(pairs) - 1, 1), size=n)
    if len(pairs) > 1:
        second = second + (second >= first)
    else:
        second = first
    size = rng.integers(len(SIZES), size=n)
    position = rng.integers(len(POSITIONS), size=n)
    relation = rng.integers(len(RELATIONS), size=n)
    two = rng.random(n) < two_object_fraction

    absent = np.full(n, -1)
    attrs = {
        "shape": pairs[first, 1],
        "color": pairs[first, 0],
        "size": np.where(two, 0, size),
        "position": np.where(two, -1, position),
        "shape2": np.where(two, pairs[second, 1], absent),
        "color2": np.where(two, pairs[second, 0], absent),
        "size2": np.where(two, 0, absent),
        "relation": np.where(two, relation, absent),
    }
    return {key: attrs[key].astype(np.int64) for key in ATTRIBUTES}


def _hsv_to_rgb(hue_deg, sat, val) -> np.ndarray:
    """Vectorised HSV -> RGB. hue in degrees, sat and val in [0, 1]; returns (..., 3)."""
    channels = []
    for k0 in (5.0, 3.0, 1.0):                      # the standard formula for R, G, B
        k = (k0 + np.asarray(hue_deg) / 60.0) % 6.0
        channels.append(val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1).astype(np.float32)


def sample_layout(attributes: dict, rng: np.random.Generator, image_size: int = 32) -> dict:
    """Draw everything about the scenes that the attributes leave open.

    That is the exact position, size, rotation and shade of each object and the
    background (grey level, tint, shading, pixel noise).

    Args:
        attributes: dict of int arrays (see :func:`sample_attributes`). Scenes
            with ``relation >= 0`` have two objects.
        rng: a ``numpy.random.Generator``.
        image_size: side in pixels (the pixel noise is drawn per pixel).

    Returns:
        dict of float32 arrays, one row per scene: ``x, y, radius, rotation, rgb``
        for object 1 and ``x2, y2, radius2, rotation2, rgb2`` for object 2 (unused
        rows hold harmless values), plus ``background_rgb`` (n, 3),
        ``background_shading`` (n, 3, 3) and ``noise`` (n, H, W, 3); also the
        attribute codes themselves.
    """
    attrs = {key: np.asarray(attributes[key]).astype(np.int64) for key in ATTRIBUTES}
    n = len(attrs["shape"])
    two = attrs["relation"] >= 0
    if np.any(~two & (attrs["position"] < 0)):
        raise ValueError("Single-object scenes need a position (0..4); got -1.")

    # Every draw below has one row per scene, so each scene's values do not depend
    # on which other scenes are in the batch beyond their order.
    jitter = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=(4, n))
    shift = rng.uniform(-PAIR_SHIFT, PAIR_SHIFT, size=n)
    scale = rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, size=(2, n))
    rotation = np.deg2rad(rng.uniform(-ROTATION_JITTER_DEG, ROTATION_JITTER_DEG, size=(2, n)))
    hue = rng.uniform(-HUE_JITTER_DEG, HUE_JITTER_DEG, size=(2, n))
    sat = rng.uniform(*SATURATION_RANGE, size=(2, n))
    val = rng.uniform(*VALUE_RANGE, size=(2, n))
    grey = rng.uniform(*BACKGROUND_GREY, size=n)
    tint = rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=(n, 3))
    shading = rng.normal(0.0, BACKGROUND_SHADING, size=(n, 3, 3))
    noise = rng.standard_normal((n, image_size, image_size, 3), dtype=np.float32) * PIXEL_NOISE

    # object centres: single objects from their position ...
    pos_xy = np.array([POSITION_XY[p] for p in POSITIONS])            # (5, 2)
    x, y = pos_xy[np.maximum(attrs["position"], 0)].T
    x2, y2 = np.full(n, 0.5), np.full(n, 0.5)
    # ... two objects from their relation: object 1 "left of" object 2 puts
    # object 1 at x=0.28 and object 2 at x=0.72, both at the same (shifted) height.
    near, far = POSITION_XY["left"][0], POSITION_XY["right"][0]       # 0.28, 0.72
    rel = attrs["relation"]
    pair_x1 = np.select([rel == 0, rel == 1], [near, far], 0.5 + shift)
    pair_x2 = np.select([rel == 0, rel == 1], [far, near], 0.5 + shift)
    pair_y1 = np.select([rel == 2, rel == 3], [near, far], 0.5 + shift)
    pair_y2 = np.select([rel == 2, rel == 3], [far, near], 0.5 + shift)
    x, y = np.where(two, pair_x1, x), np.where(two, pair_y1, y)
    x2, y2 = np.where(two, pair_x2, x2), np.where(two, pair_y2, y2)

    radius_of_size = np.array([SIZE_RADIUS[s] for s in SIZES])
    hues = np.array([COLOR_HUES[c] for c in COLORS])
    size2 = np.maximum(attrs["size2"], 0)
    color2 = np.maximum(attrs["color2"], 0)
    layout = {
        "x": x + jitter[0], "y": y + jitter[1],
        "radius": radius_of_size[attrs["size"]] * scale[0],
        "rotation": rotation[0],
        "rgb": _hsv_to_rgb(hues[attrs["color"]] + hue[0], sat[0], val[0]),
        "x2": x2 + jitter[2], "y2": y2 + jitter[3],
        "radius2": radius_of_size[size2] * scale[1],
        "rotation2": rotation[1],
        "rgb2": _hsv_to_rgb(hues[color2] + hue[1], sat[1], val[1]),
        "background_rgb": grey[:, None] + tint,
        "background_shading": shading,
        "noise": noise,
    }
    layout = {key: np.asarray(value, dtype=np.float32) for key, value in layout.items()}
    layout.update(attrs)
    return layout


# ---------------------------------------------------------------------------
# 4. Rendering
# ---------------------------------------------------------------------------
# Each shape is an "inside test" in the object's own frame: u to the right, v up,
# in units of the object's radius (the shape fits in the unit circle). Testing
# SUPERSAMPLE x SUPERSAMPLE points per pixel and averaging them gives each pixel
# the fraction of it the object covers: smooth (anti-aliased) edges.

SUPERSAMPLE = 4
CIRCLE_RADIUS = 0.85
SQUARE_HALF_SIDE = 0.78
TRIANGLE_RADIUS = 1.05          # circumradius; the triangle points up
STAR_INNER_RADIUS = 0.45        # the 5 inner corners, outer corners at 1


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask: which points (u, v) of the object's frame are inside ``shape``."""
    if shape == "circle":
        return u * u + v * v <= CIRCLE_RADIUS ** 2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        # corners (0, R) and (+-0.87 R, -R/2); moved down by R/4 so that its
        # bounding box is centred: bottom edge v >= -R/2, two slanted edges.
        r = TRIANGLE_RADIUS
        w = v + 0.25 * r
        return (w >= -0.5 * r) & (math.sqrt(3.0) * np.abs(u) + w <= r)
    if shape == "star":
        # Fold the plane into one 36-degree wedge (a star is symmetric under 72-degree
        # turns and mirroring), then test one edge: from the outer corner (0, 1) to the
        # inner corner at 36 degrees.
        wedge = math.pi / 5
        angle = np.abs(np.mod(np.arctan2(u, v) + wedge, 2 * wedge) - wedge)
        rho = np.sqrt(u * u + v * v)
        px, py = rho * np.sin(angle), rho * np.cos(angle)
        ex = STAR_INNER_RADIUS * math.sin(wedge)          # edge direction (ex, ey)
        ey = STAR_INNER_RADIUS * math.cos(wedge) - 1.0
        return ex * (py - 1.0) - ey * px <= 0.0           # same side as the centre
    raise ValueError(f"Unknown shape {shape!r}")


def coverage(shape_codes, x, y, radius, rotation, image_size: int,
             supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by each object: float32 (n, H, W) in [0, 1].

    Args:
        shape_codes: int array (n,), index into ``SHAPES``.
        x, y, radius: float arrays (n,), in units of the image side.
        rotation: float array (n,), radians (counter-clockwise).
        image_size: H = W in pixels.
        supersample: test supersample**2 points per pixel.
    """
    n = len(shape_codes)
    side = image_size * supersample
    grid = ((np.arange(side, dtype=np.float32) + 0.5) / side)         # sample centres
    out = np.zeros((n, image_size, image_size), dtype=np.float32)
    for code, shape in enumerate(SHAPES):
        rows = np.flatnonzero(shape_codes == code)
        if len(rows) == 0:
            continue
        cos = (np.cos(rotation[rows]) / radius[rows])[:, None, None]
        sin = (np.sin(rotation[rows]) / radius[rows])[:, None, None]
        dx = (grid[None, None, :] - x[rows, None, None]).astype(np.float32)   # (m, 1, side)
        dy = (grid[None, :, None] - y[rows, None, None]).astype(np.float32)   # (m, side, 1)
        # rotate into the object's frame; the broadcast sum makes (m, side, side)
        u = cos * dx + sin * dy
        v = sin * dx - cos * dy          # minus: image rows grow downwards, v grows up
        mask = _inside(shape, u, v)
        # average each supersample x supersample block -> one pixel
        blocks = mask.reshape(len(rows), image_size, supersample, image_size, supersample)
        counts = blocks.sum(axis=(2, 4), dtype=np.int32)
        out[rows] = counts / np.float32(supersample * supersample)
    return out


def _shading_field(shading: np.ndarray, image_size: int) -> np.ndarray:
    """Smooth (n, H, W) field: a 3x3 grid of random values, bilinearly stretched."""
    t = (np.arange(image_size) + 0.5) / image_size * 2.0             # 0..2 over the image
    hat = np.maximum(0.0, 1.0 - np.abs(t[:, None] - np.arange(3)[None, :]))   # (H, 3)
    hat = hat.astype(np.float32)
    return np.einsum("hi,nij,wj->nhw", hat, shading.astype(np.float32), hat)


def render(layout: dict, image_size: int, supersample: int = SUPERSAMPLE,
           batch_pixels: int = 2 ** 22) -> np.ndarray:
    """Draw the scenes of a layout (see :func:`sample_layout`).

    Args:
        layout: the dict from :func:`sample_layout` (its ``noise`` must be
            ``image_size`` pixels wide).
        image_size: side in pixels.
        supersample: anti-aliasing, points per pixel along each side.
        batch_pixels: memory bound: scenes are drawn in batches of about this
            many supersampled points.

    Returns:
        uint8 array (n, H, W, 3).
    """
    n = len(layout["shape"])
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    per_batch = max(1, batch_pixels // (image_size * supersample) ** 2)
    for start in range(0, n, per_batch):
        part = {key: value[start:start + per_batch] for key, value in layout.items()}
        images[start:start + per_batch] = _render_batch(part, image_size, supersample)
    return images


def _render_batch(layout: dict, image_size: int, supersample: int) -> np.ndarray:
    """render() for one batch that fits in memory."""
    # background: grey + tint, plus smooth shading (the same on all channels)
    field = _shading_field(layout["background_shading"], image_size)
    image = layout["background_rgb"][:, None, None, :] + field[..., None]
    # object 1, then object 2 on top: colour * coverage + background * (1 - coverage)
    cover = coverage(layout["shape"], layout["x"], layout["y"], layout["radius"],
                     layout["rotation"], image_size, supersample)[..., None]
    image = image * (1.0 - cover) + layout["rgb"][:, None, None, :] * cover
    two = np.flatnonzero(layout["relation"] >= 0)
    if len(two):
        cover2 = coverage(layout["shape2"][two], layout["x2"][two], layout["y2"][two],
                          layout["radius2"][two], layout["rotation2"][two],
                          image_size, supersample)[..., None]
        image[two] = image[two] * (1.0 - cover2) + layout["rgb2"][two, None, None, :] * cover2
    image = image + layout["noise"]
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def render_attributes(attributes: dict, image_size: int = 32, seed: int = 0) -> np.ndarray:
    """Draw fresh images with given attributes, e.g. reference images for a prompt.

    Args:
        attributes: dict of int arrays (keys ``ATTRIBUTES``), e.g. from
            :func:`sample_attributes` or a batch of a dataset.
        image_size: side in pixels.
        seed: seed of the layout (jitter, shades, background).

    Returns:
        uint8 array (n, H, W, 3).
    """
    attrs = {key: np.asarray(attributes[key]) for key in ATTRIBUTES}
    layout = sample_layout(attrs, np.random.default_rng(seed), image_size)
    return render(layout, image_size)


# ---------------------------------------------------------------------------
# 5. Splits and the cache
# ---------------------------------------------------------------------------

#: Scenes are drawn in chunks of this many, each chunk from its own random stream
#: (seed, split, chunk index). So the first k images of a split are the same
#: whatever n is: the smoke profile's training set is the start of the cpu one's.
CHUNK = 256


def _check_split_args(split: str, n: int, combos: str | None, image_size: int,
                      two_object_fraction: float) -> str:
    """Clear errors for bad arguments; returns the combos to use (the split's default for None)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    combos = SPLIT_COMBOS[split] if combos is None else combos
    if combos not in COMBOS:
        raise ValueError(f"combos={combos!r}: use one of {', '.join(COMBOS)} (or None).")
    if int(n) < 0:
        raise ValueError(f"n={n}: the number of images cannot be negative.")
    if int(image_size) < 8:
        raise ValueError(f"image_size={image_size}: use at least 8 pixels (32 is the default).")
    if not 0.0 <= float(two_object_fraction) <= 1.0:
        raise ValueError(f"two_object_fraction={two_object_fraction}: use a number in [0, 1].")
    return combos


def generate(split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 32,
             combos: str | None = None, two_object_fraction: float = 0.0
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render a split (no cache; see :func:`load_split` for the cached version).

    Args:
        split: "train", "val", "test" or "heldout" (each has its own random stream).
        n: number of images.
        seed: the same arguments always give the same images.
        image_size: side in pixels.
        combos: "seen" | "heldout" | "all"; None: "heldout" for the heldout split,
            "seen" for the others.
        two_object_fraction: share of two-object scenes.

    Returns:
        (images uint8 (n, H, W, 3), attributes dict of int64 arrays (n,)).
    """
    combos = _check_split_args(split, n, combos, image_size, two_object_fraction)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    attributes = {key: np.empty(n, dtype=np.int64) for key in ATTRIBUTES}
    for chunk, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], chunk])
        # always draw a whole chunk, then keep what is needed (see CHUNK)
        attrs = sample_attributes(CHUNK, rng, combos, two_object_fraction)
        layout = sample_layout(attrs, rng, image_size)
        count = min(CHUNK, n - start)
        layout = {key: value[:count] for key, value in layout.items()}
        images[start:start + count] = render(layout, image_size)
        for key in ATTRIBUTES:
            attributes[key][start:start + count] = attrs[key][:count]
    return images, attributes


def _cache_params(split, n, seed, image_size, combos, two_object_fraction) -> dict:
    return {"render_version": RENDER_VERSION, "split": split, "n": int(n), "seed": int(seed),
            "image_size": int(image_size), "combos": combos,
            "two_object_fraction": float(two_object_fraction),
            "held_out_combos": [list(p) for p in HELD_OUT_COMBOS]}


def cache_path(split: str, n: int, seed: int = 0, image_size: int = 32, combos: str | None = None,
               two_object_fraction: float = 0.0, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`load_split` keeps a rendered split.

    The name holds a hash of every generation parameter and ``RENDER_VERSION``,
    so a changed parameter or renderer never reads a stale file.

    Args:
        split, n, seed, image_size, combos, two_object_fraction: as for :func:`generate`.
        cache_dir: folder; None: ``course_lib.paths.CACHE_DIR`` (data/cache/).
    """
    combos = _check_split_args(split, n, combos, image_size, two_object_fraction)
    if cache_dir is None:
        cache_dir = paths.CACHE_DIR        # read at call time, so tests can monkeypatch it
    params = _cache_params(split, n, seed, image_size, combos, two_object_fraction)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"world_{split}_{n}_{image_size}px_{key}.npz"


def _read_cache(path: Path, params: dict):
    """(images, attributes) from a cache file; raises if it is not what we expect."""
    with np.load(path, allow_pickle=False) as archive:
        stored = json.loads(str(archive["params"]))
        if stored != params:
            raise ValueError("its parameters differ from the requested ones")
        images = archive["images"]
        attributes = {key: archive[f"attr_{key}"].astype(np.int64) for key in ATTRIBUTES}
    n, size = params["n"], params["image_size"]
    if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
        raise ValueError(f"images have shape {images.shape} {images.dtype}")
    if any(a.shape != (n,) for a in attributes.values()):
        raise ValueError("attribute arrays have the wrong length")
    return images, attributes


def _write_cache(path: Path, params: dict, images: np.ndarray, attributes: dict) -> None:
    """Write atomically: a temporary file, then a rename (never a half-written cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:        # a file object: np.savez adds no ".npz" suffix
            np.savez(f, images=images, params=np.array(json.dumps(params, sort_keys=True)),
                     **{f"attr_{key}": attributes[key] for key in ATTRIBUTES})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_split(split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 32,
               combos: str | None = None, two_object_fraction: float = 0.0, cache: bool = True,
               cache_dir: str | Path | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`generate` with a cache on disk (data/cache/ by default).

    A missing cache file is rendered and written; an unreadable one (cut short,
    corrupt, written by another version) is rendered again with a warning.
    Nothing is unpickled.

    Args:
        split, n, seed, image_size, combos, two_object_fraction: as for :func:`generate`.
        cache: False renders without reading or writing the cache.
        cache_dir: folder; None: ``course_lib.paths.CACHE_DIR``.

    Returns:
        (images uint8 (n, H, W, 3), attributes dict of int64 arrays (n,)).
    """
    combos = _check_split_args(split, n, combos, image_size, two_object_fraction)
    args = dict(split=split, n=n, seed=seed, image_size=image_size, combos=combos,
                two_object_fraction=two_object_fraction)
    if not cache:
        return generate(**args)
    path = cache_path(**args, cache_dir=cache_dir)
    params = _cache_params(**args)
    if path.exists():
        try:
            return _read_cache(path, params)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"The cached world {path} is unreadable ({type(err).__name__}: {err}); "
                          "rendering it again.", stacklevel=2)
    images, attributes = generate(**args)
    try:
        _write_cache(path, params, images, attributes)
    except OSError as err:
        warnings.warn(f"Could not write the world cache {path} ({err}); continuing without it.",
                      stacklevel=2)
    return images, attributes


# ---------------------------------------------------------------------------
# 6. The torch side
# ---------------------------------------------------------------------------

def to_float(image) -> torch.Tensor:
    """uint8 HWC image(s) -> float32 CHW tensor in [-1, 1].

    Args:
        image: numpy array or tensor, (H, W, 3) or (N, H, W, 3), uint8 0..255.

    Returns:
        (3, H, W) or (N, 3, H, W) float32 tensor; 0 -> -1.0, 255 -> 1.0.
    """
    if torch.is_tensor(image) and image.device.type != "cpu":       # e.g. already on a GPU
        return image.movedim(-1, -3).to(torch.float32) / 127.5 - 1.0
    array = image.numpy() if torch.is_tensor(image) else np.asarray(image)
    # numpy on the CPU: a little faster than torch for these small copies
    array = np.ascontiguousarray(np.moveaxis(array, -1, -3), dtype=np.float32)
    return torch.from_numpy(array / np.float32(127.5) - np.float32(1.0))


def to_uint8(image) -> np.ndarray:
    """float CHW image(s) in [-1, 1] -> uint8 HWC numpy array (for plotting and PIL).

    Args:
        image: tensor or numpy array, (3, H, W) or (N, 3, H, W); values outside
            [-1, 1] are clipped.

    Returns:
        (H, W, 3) or (N, H, W, 3) uint8 numpy array.
    """
    if torch.is_tensor(image):
        image = image.detach().to("cpu", torch.float32).numpy()
    image = np.moveaxis(np.asarray(image, dtype=np.float32), -3, -1)
    return np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


CAPTION_MODES = ("random", "fixed", "canonical")


class WorldDataset(Dataset):
    """One split of the generated world as a torch Dataset.

    Items are ``(image, caption, attributes)``: image a float32 (3, H, W) tensor
    in [-1, 1], caption a str, attributes a dict of Python ints (so a DataLoader
    batch has a dict of int64 tensors).

    For fast batched use without a DataLoader the whole split is also held as
    tensors: ``ds.images`` (uint8 N, H, W, 3), ``ds.attributes`` (dict of int64
    tensors), ``ds.canonical_captions`` (list of str) and ``ds.batch(indices)``.

    Args:
        split: "train", "val", "test" or "heldout".
        n: number of images; None: the profile's ``n_train`` / ``n_val`` / ...
        image_size: side in pixels; None: the profile's.
        seed: the same arguments give the same images.
        captions: "random" (a new varied caption at every access: augmentation
            for CLIP; it draws from torch's global RNG, so ``seed_everything``
            makes it repeatable), "fixed" (one varied caption per image) or
            "canonical" (the canonical caption).
        combos: "seen" | "heldout" | "all"; None: the split's default (see ``SPLIT_COMBOS``).
        two_object_fraction: None: the profile's.
        profile: a Profile, a profile name or None (the active profile).
        cache: keep the rendered split in data/cache/.
        cache_dir: override the cache folder (tests).
    """

    def __init__(self, split: str = "train", n: int | None = None, image_size: int | None = None,
                 seed: int = 0, captions: str = "random", combos: str | None = None,
                 two_object_fraction: float | None = None, profile=None, cache: bool = True,
                 cache_dir: str | Path | None = None):
        profile = get_profile(profile)
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
        if captions not in CAPTION_MODES:
            raise ValueError(f"captions={captions!r}: use one of {', '.join(CAPTION_MODES)}.")
        sizes = profile.data
        self.split = split
        self.n = int(getattr(sizes, f"n_{split}") if n is None else n)
        self.image_size = int(sizes.image_size if image_size is None else image_size)
        self.seed = int(seed)
        self.captions = captions
        self.combos = SPLIT_COMBOS[split] if combos is None else combos
        self.two_object_fraction = float(sizes.two_object_fraction if two_object_fraction is None
                                         else two_object_fraction)
        self.profile = profile
        images, attributes = load_split(split, self.n, self.seed, self.image_size, self.combos,
                                        self.two_object_fraction, cache=cache, cache_dir=cache_dir)
        #: uint8 (N, H, W, 3): the whole split (shares memory with the numpy array).
        self.images = torch.from_numpy(images)
        self._image_array = images                   # numpy indexing is faster than torch's here
        #: attribute -> int64 tensor (N,); -1 = absent.
        self.attributes = {key: torch.from_numpy(value) for key, value in attributes.items()}
        self._attribute_arrays = attributes          # the same memory, for fast row lookups
        self._canonical: list[str] | None = None
        self._fixed: list[str] | None = None

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"WorldDataset(split={self.split!r}, n={self.n}, image_size={self.image_size}, "
                f"seed={self.seed}, captions={self.captions!r}, combos={self.combos!r}, "
                f"two_object_fraction={self.two_object_fraction})")

    def attributes_row(self, index: int) -> dict[str, int]:
        """The attributes of one image as a dict of Python ints."""
        return {key: int(value[index]) for key, value in self._attribute_arrays.items()}

    @property
    def canonical_captions(self) -> list[str]:
        """The canonical caption of every image (made on first use)."""
        if self._canonical is None:
            self._canonical = [canonical_caption(self.attributes_row(i)) for i in range(self.n)]
        return self._canonical

    @property
    def fixed_captions(self) -> list[str]:
        """One varied caption per image, the same on every access (made on first use)."""
        if self._fixed is None:
            rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], 7])
            self._fixed = [varied_caption(self.attributes_row(i), rng) for i in range(self.n)]
        return self._fixed

    def caption(self, index: int, rng: np.random.Generator | None = None) -> str:
        """The caption of one image in this dataset's ``captions`` mode."""
        if self.captions == "canonical":
            return self.canonical_captions[index]
        if self.captions == "fixed":
            return self.fixed_captions[index]
        if rng is None:
            rng = _torch_seeded_rng()
        return varied_caption(self.attributes_row(index), rng)

    def __getitem__(self, index: int):
        index = int(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} is out of range for a dataset of {self.n} images")
        index = index % self.n
        return to_float(self._image_array[index]), self.caption(index), self.attributes_row(index)

    def float_images(self, indices=None) -> torch.Tensor:
        """Images as float32 (N, 3, H, W) in [-1, 1]; all of them, or ``indices``."""
        if indices is None:
            return to_float(self._image_array)
        return to_float(self._image_array[_as_index_array(indices)])

    def batch(self, indices):
        """A batch without a DataLoader: (images (B, 3, H, W), captions, attributes).

        Args:
            indices: sequence or tensor of indices.

        Returns:
            float32 images in [-1, 1], a list of captions (in this dataset's
            captions mode), and a dict of int64 tensors (B,).
        """
        index = _as_index_array(indices)
        rng = _torch_seeded_rng() if self.captions == "random" else None
        captions = [self.caption(i, rng) for i in index.tolist()]
        attributes = {key: torch.from_numpy(value[index]) for key, value in
                      self._attribute_arrays.items()}
        return to_float(self._image_array[index]), captions, attributes

    def class_counts(self) -> dict[str, np.ndarray]:
        """Images per value of each attribute (see :func:`class_counts`)."""
        return class_counts(self.attributes)


def _as_index_array(indices) -> np.ndarray:
    """Indices (list, array or tensor) as a flat int64 numpy array."""
    if torch.is_tensor(indices):
        indices = indices.cpu().numpy()
    return np.asarray(indices, dtype=np.int64).reshape(-1)


def _torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global RNG.

    DataLoader workers seed torch differently, so every worker draws different
    captions, and ``torch.manual_seed`` makes the captions repeatable.
    """
    return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))


def make_loader(dataset, batch_size: int | None = None, shuffle: bool = True, seed: int = 0,
                drop_last: bool = True, num_workers: int | None = None, profile=None) -> DataLoader:
    """A DataLoader with a seeded shuffle order and a worker count that works here.

    Args:
        dataset: a WorldDataset, ImageTextFolder or any Dataset.
        batch_size: None: the profile's ``data.batch_size``.
        shuffle: shuffle every epoch (in an order fixed by ``seed``).
        seed: seeds the shuffle order (and the workers' random captions).
        drop_last: drop the last incomplete batch (keeps batch statistics even).
        num_workers: None: the profile's ``data.num_workers``, passed through
            :func:`course_lib.runtime.default_num_workers` (0 on Windows/macOS).
        profile: a Profile, a profile name or None; None uses the dataset's
            profile if it has one, else the active profile.
    """
    if profile is None:
        profile = getattr(dataset, "profile", None)
    profile = get_profile(profile)
    workers = default_num_workers(profile.data.num_workers if num_workers is None else num_workers)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size or profile.data.batch_size, shuffle=shuffle,
                      drop_last=drop_last, num_workers=workers, generator=generator,
                      persistent_workers=workers > 0)

class _WholeBatches(Dataset):
    """Indexed with a list of indices (a whole batch) -> ``get_batch(indices)``."""

    def __init__(self, get_batch, n: int):
        self.get_batch, self.n = get_batch, int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, indices):
        return self.get_batch(torch.as_tensor(indices))


def batch_loader(get_batch, n: int, batch_size: int, seed: int = 0) -> DataLoader:
    """Whole batches from in-memory data, in a shuffled order fixed by ``seed``.

    ``get_batch(indices)`` receives one batch's indices as an int64 tensor and returns
    the batch (e.g. ``lambda i: (images[i], labels[i])``): one indexing per batch, no
    per-item collate, which on a 2-core CPU is many times faster than a DataLoader that
    assembles small models' batches item by item. Each epoch draws a new permutation of
    ``range(n)``; the last incomplete batch is dropped. No worker processes.
    """
    from torch.utils.data import BatchSampler, RandomSampler

    sampler = BatchSampler(RandomSampler(range(int(n)), generator=torch.Generator().manual_seed(int(seed))),
                           batch_size=int(batch_size), drop_last=True)
    # batch_size=None: the sampler yields lists of indices, the dataset takes a whole list
    return DataLoader(_WholeBatches(get_batch, n), sampler=sampler, batch_size=None)

