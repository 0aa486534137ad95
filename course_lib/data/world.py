"""The generated world: simple coloured shapes with known attributes, and captions.

Every image shows one object (or, in a share of scenes, two objects and a spatial
relation) on a slightly noisy grey background. Because the course draws the
images itself, it knows the truth about each one: its shape, colour, size and
position. That truth lets later notebooks *measure* whether a generated image
matches its prompt, which is hard to do with real photos.

Explained in notebook 00, section "The generated world".

The world is a small package, one module per stage (this module re-exports every name,
so ``from course_lib.data import world; world.SHAPES`` keeps working):

* :mod:`~course_lib.data.vocabulary` -- 1. attributes and 2. captions;
* :mod:`~course_lib.data.render` -- 3. sampling scenes and 4. rendering them;
* :mod:`~course_lib.data.splits` -- 5. the splits and their cache;
* :mod:`~course_lib.data.loaders` -- 6. the torch side (the image conversions
  :func:`to_float` / :func:`to_uint8` live in :mod:`course_lib.images`).

In reading order:

1. The attributes (``SHAPES``, ``COLORS``, ...) and ``HELD_OUT_COMBOS``.
2. Captions: templates, synonym tables, :func:`caption_for`, :func:`canonical_caption`.
3. Sampling: :func:`sample_attributes` draws what is in each scene,
   :func:`sample_layout` draws where exactly and in which shade.
4. Rendering: :func:`render` turns a layout into uint8 images (numpy, vectorised
   over the batch, 4x supersampled for smooth edges).
5. Splits and cache: :func:`render_split`, :func:`load_split`.
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

from .loaders import (  # noqa: F401
    CAPTION_MODES,
    WorldDataset,
    batch_loader,
    make_loader,
    to_float,
    to_uint8,
)
from .render import (  # noqa: F401
    BACKGROUND_GREY,
    BACKGROUND_SHADING,
    BACKGROUND_TINT,
    CIRCLE_RADIUS,
    COLOR_HUES,
    HUE_JITTER_DEG,
    PAIR_SHIFT,
    PIXEL_NOISE,
    POSITION_JITTER,
    POSITION_XY,
    ROTATION_JITTER_DEG,
    SATURATION_RANGE,
    SIZE_JITTER,
    SIZE_RADIUS,
    SQUARE_HALF_SIDE,
    STAR_INNER_RADIUS,
    SUPERSAMPLE,
    TRIANGLE_RADIUS,
    VALUE_RANGE,
    coverage,
    render,
    render_attributes,
    sample_attributes,
    sample_layout,
)
from .splits import (  # noqa: F401
    CHUNK,
    cache_path,
    generate,
    load_split,
    render_split,
)
from .vocabulary import (  # noqa: F401
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    COLOR_WORDS,
    COLORS,
    COMBOS,
    HELD_OUT_COMBOS,
    NUM_CLASSES,
    POSITION_LABELS,
    POSITION_WORDS,
    POSITIONS,
    RELATION_TEMPLATES,
    RELATION_WORDS,
    RELATIONS,
    RENDER_VERSION,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    SPLIT_COMBOS,
    SPLIT_IDS,
    SPLITS,
    TEMPLATES,
    allowed_combos,
    attribute_names,
    canonical_caption,
    caption_for,
    chance_levels,
    class_counts,
    is_held_out,
    varied_caption,
)

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
    "sample_attributes", "sample_layout", "coverage", "render", "render_attributes", "render_split", "generate",
    "load_split", "cache_path",
    # torch
    "WorldDataset", "make_loader", "batch_loader",
]
