"""Scenes and pixels: sampling what is in each scene and where exactly (jitter, hue, shading),
then rendering it anti-aliased with NumPy. Taught in notebook 00, section 3.
"""
from __future__ import annotations

import math

import numpy as np

from .vocabulary import ATTRIBUTES, COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, allowed_combos

__all__ = ["sample_attributes", "sample_layout", "coverage", "render", "render_attributes"]


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


