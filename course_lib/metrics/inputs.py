"""The kit's constants and its inputs: attribute tables as tensors (a dict of codes or names),
the held-out mask, and the one image check every measure goes through.
Taught in notebook 02.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..data.world import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    COLORS,
    HELD_OUT_COMBOS,
    NUM_CLASSES,
    RELATIONS,
    SHAPES,
)
from ..images import check_images

__all__ = [
    "JUDGE_CHECKPOINT", "JUDGE_TWO_OBJECT_FRACTION", "FEATURE_DIM", "BLUR_SIGMA", "NOISE_STD",
    "as_attributes", "held_out_mask", "canonical_order",
]


#: Name of the judge's checkpoint (one per profile, in data/checkpoints/<profile>/).
JUDGE_CHECKPOINT = "judge"
#: Least share of two-object scenes the judge trains on (the course CLIP trains with
#: 0.25), so that one judge also grades relations ("a red circle left of a blue star").
JUDGE_TWO_OBJECT_FRACTION = 0.25
#: Size of the judge's penultimate feature vector (the features of the Fréchet distance).
FEATURE_DIM = 128
#: The degradations the judge is checked against (at 32x32; scaled with the image size):
#: Gaussian blur of this sigma in pixels ...
BLUR_SIGMA = 1.0
#: ... and added Gaussian pixel noise of this standard deviation (images in [-1, 1],
#: so 0.2 is 10% of the range, about 25 of 255 grey levels).
NOISE_STD = 0.2
#: Version of the judge recipe (architecture + augmentations); stored in its config so
#: that a checkpoint of an older recipe is never loaded silently.
JUDGE_RECIPE = 1


# ============================================================================ inputs


def _check_images(images, what: str = "images") -> torch.Tensor:
    """Images as a float (N, 3, H, W) tensor in [-1, 1]: the package's one image check
    (:func:`course_lib.images.check_images`; uint8 pixels (N, H, W, 3) are converted)."""
    return check_images(images, what)


def as_attributes(attributes, n: int | None = None) -> dict[str, torch.Tensor]:
    """Attributes in the one form the metrics use: a dict of int64 tensors (N,), -1 = absent.

    Args:
        attributes: a dict ``{attribute: codes}`` (tensors, arrays or lists of ints, or
            of names such as "circle"), a list of such dicts (one per image, e.g.
            ``[ds.attributes_row(i) ...]``), or a :class:`~course_lib.data.WorldDataset`.
            Missing keys count as absent (-1); ``shape`` and ``color`` are required.
        n: the number of images they must describe (checked when given).
    """
    if hasattr(attributes, "attributes") and isinstance(attributes.attributes, Mapping):
        attributes = attributes.attributes                      # a WorldDataset
    if isinstance(attributes, Sequence) and not isinstance(attributes, (str, bytes)):
        rows = list(attributes)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("attributes: a list must hold one dict per image")
        attributes = {key: [r.get(key, -1) for r in rows] for key in ATTRIBUTES}
    if not isinstance(attributes, Mapping):
        raise TypeError("attributes: expected a dict of codes per attribute, got "
                        f"{type(attributes).__name__}")
    unknown = sorted(set(attributes) - set(ATTRIBUTES))
    if unknown:
        raise KeyError(f"attributes: unknown key(s) {unknown}; the world's attributes are {list(ATTRIBUTES)}")
    for key in ("shape", "color"):
        if key not in attributes:
            raise KeyError(f"attributes: {key!r} is missing (every scene has a shape and a colour)")
    length = len(attributes["shape"])
    out = {}
    for key in ATTRIBUTES:
        values = attributes.get(key)
        if values is None:
            out[key] = torch.full((length,), -1, dtype=torch.long)
            continue
        if isinstance(values, torch.Tensor):
            codes = values.detach().to("cpu", torch.long).reshape(-1)
        else:
            values = list(values)
            codes = torch.tensor([_code(key, v) for v in values], dtype=torch.long)
        if len(codes) != length:
            raise ValueError(f"attributes: {key!r} has {len(codes)} values but 'shape' has {length}")
        if ((codes < -1) | (codes >= NUM_CLASSES[key])).any():
            raise ValueError(f"attributes: {key!r} codes must be -1 (absent) or 0..{NUM_CLASSES[key] - 1}")
        out[key] = codes
    if n is not None and length != n:
        raise ValueError(f"attributes describe {length} images but there are {n} images")
    return out


def _code(key: str, value) -> int:
    if value is None:
        return -1
    if isinstance(value, str):
        names = ATTRIBUTE_VALUES[key]
        if value == "center":
            value = "centre"
        if value not in names:
            raise ValueError(f"attributes: unknown {key} {value!r}; use one of {', '.join(names)}")
        return names.index(value)
    return int(value)


def held_out_mask(attributes) -> torch.Tensor:
    """Which scenes contain a held-out (color, shape) pair (object 1 or object 2): bool (N,)."""
    attrs = as_attributes(attributes)
    table = torch.zeros(len(COLORS) + 1, len(SHAPES) + 1, dtype=torch.bool)   # +1: index -1
    for color, shape in HELD_OUT_COMBOS:
        table[COLORS.index(color), SHAPES.index(shape)] = True
    first = table[attrs["color"], attrs["shape"]]
    second = table[attrs["color2"], attrs["shape2"]] & (attrs["shape2"] >= 0)
    return first | second


def canonical_order(attributes) -> dict[str, torch.Tensor]:
    """Two-object scenes written with the left (or upper) object first.

    "a red circle to the left of a blue square" and "a blue square to the right of
    a red circle" are the same picture, so no one -- the judge included -- can
    tell from the image which object a caption named first. The judge therefore
    reads every two-object scene in one order: object 1 is the left object
    (relation "left of") or the upper one ("above"). This function rewrites
    attributes into that order ("right of" and "below" swap the objects); alignment
    compares judge and caption in it. Single-object scenes are unchanged.

    Args:
        attributes: see :func:`as_attributes`.

    Returns:
        a new dict of int64 tensors.
    """
    a = as_attributes(attributes)
    flip = (a["relation"] == RELATIONS.index("right of")) | (a["relation"] == RELATIONS.index("below"))
    out = dict(a)
    for one, two in (("shape", "shape2"), ("color", "color2"), ("size", "size2")):
        out[one] = torch.where(flip, a[two], a[one])
        out[two] = torch.where(flip, a[one], a[two])
    out["relation"] = torch.where(flip, a["relation"] - 1, a["relation"])   # right->left, below->above
    return out
