"""The course's data: the generated world, and your own images.

* the generated world, images of coloured shapes with known attributes, one module per
  stage: :mod:`~course_lib.data.vocabulary` (attributes and captions),
  :mod:`~course_lib.data.render` (scenes and pixels), :mod:`~course_lib.data.splits`
  (train / val / test / heldout and their cache), :mod:`~course_lib.data.loaders`
  (:class:`WorldDataset`, loaders); :mod:`course_lib.data.world` re-exports all four.
* :mod:`course_lib.data.folder` -- :class:`ImageTextFolder`, a folder of your
  own images with a captions file, usable wherever a WorldDataset is.

Explained in notebook 00, sections "The generated world" and "Your own images".

Typical use::

    from course_lib.data import WorldDataset, make_loader, canonical_caption
    train = WorldDataset("train")                  # sizes from the active profile
    image, caption, attributes = train[0]
    loader = make_loader(train, batch_size=128)
"""
from ..images import (
    to_float,
    to_uint8,
)
from . import world  # noqa: F401  (the stages together, as before the split)
from .folder import FolderError, ImageTextFolder, load_image, read_captions, to_rgb
from .loaders import (
    WorldDataset,
    batch_loader,
    make_loader,
)
from .render import (
    render,
    render_attributes,
    sample_attributes,
    sample_layout,
)
from .splits import (
    cache_path,
    generate,
    load_split,
    render_split,
)
from .vocabulary import (
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
    # attributes and splits
    "SHAPES", "COLORS", "SIZES", "POSITIONS", "RELATIONS", "ATTRIBUTES", "ATTRIBUTE_VALUES",
    "NUM_CLASSES", "HELD_OUT_COMBOS", "SPLITS", "COMBOS", "SPLIT_COMBOS", "RENDER_VERSION",
    "allowed_combos", "is_held_out",
    # captions
    "TEMPLATES", "RELATION_TEMPLATES", "SHAPE_WORDS", "COLOR_WORDS", "SIZE_WORDS",
    "POSITION_WORDS", "POSITION_LABELS", "RELATION_WORDS",
    "caption_for", "canonical_caption", "varied_caption",
    # statistics and conversions
    "attribute_names", "chance_levels", "class_counts", "to_uint8", "to_float",
    # drawing and splits
    "sample_attributes", "sample_layout", "render", "render_attributes", "render_split", "generate",
    "load_split", "cache_path",
    # torch
    "WorldDataset", "make_loader", "batch_loader",
    # your own images
    "ImageTextFolder", "FolderError", "read_captions", "load_image", "to_rgb",
]
