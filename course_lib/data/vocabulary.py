"""The world's vocabulary: shapes, colours, sizes, positions and relations, the held-out
combinations, and the caption grammar (templates, synonyms, canonical captions).
Taught in notebook 00, sections 1-2.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = [
    "SHAPES", "COLORS", "SIZES", "POSITIONS", "RELATIONS", "ATTRIBUTES", "ATTRIBUTE_VALUES",
    "NUM_CLASSES", "HELD_OUT_COMBOS", "SPLITS", "COMBOS", "SPLIT_COMBOS", "RENDER_VERSION",
    "TEMPLATES", "RELATION_TEMPLATES", "SHAPE_WORDS", "COLOR_WORDS", "SIZE_WORDS",
    "POSITION_WORDS", "POSITION_LABELS", "RELATION_WORDS", "caption_for", "canonical_caption",
    "varied_caption", "attribute_names", "chance_levels", "class_counts", "is_held_out",
    "allowed_combos",
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


