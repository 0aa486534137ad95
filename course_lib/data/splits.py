"""The splits (train / val / test / heldout) and their npz cache under ``data/cache``.
Taught in notebook 00, section 4.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from course_lib import paths
from course_lib.runtime import renamed

from .render import render, sample_attributes, sample_layout
from .vocabulary import ATTRIBUTES, COMBOS, HELD_OUT_COMBOS, RENDER_VERSION, SPLIT_COMBOS, SPLIT_IDS, SPLITS

__all__ = ["render_split", "generate", "load_split", "cache_path"]


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


def render_split(split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 32,
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


generate = renamed(render_split, "data.generate")


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
        split, n, seed, image_size, combos, two_object_fraction: as for :func:`render_split`.
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
    """:func:`render_split` with a cache on disk (data/cache/ by default).

    A missing cache file is rendered and written; an unreadable one (cut short,
    corrupt, written by another version) is rendered again with a warning.
    Nothing is unpickled.

    Args:
        split, n, seed, image_size, combos, two_object_fraction: as for :func:`render_split`.
        cache: False renders without reading or writing the cache.
        cache_dir: folder; None: ``course_lib.paths.CACHE_DIR``.

    Returns:
        (images uint8 (n, H, W, 3), attributes dict of int64 arrays (n,)).
    """
    combos = _check_split_args(split, n, combos, image_size, two_object_fraction)
    args = dict(split=split, n=n, seed=seed, image_size=image_size, combos=combos,
                two_object_fraction=two_object_fraction)
    if not cache:
        return render_split(**args)
    path = cache_path(**args, cache_dir=cache_dir)
    params = _cache_params(**args)
    if path.exists():
        try:
            return _read_cache(path, params)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"The cached world {path} is unreadable ({type(err).__name__}: {err}); "
                          "rendering it again.", stacklevel=2)
    images, attributes = render_split(**args)
    try:
        _write_cache(path, params, images, attributes)
    except OSError as err:
        warnings.warn(f"Could not write the world cache {path} ({err}); continuing without it.",
                      stacklevel=2)
    return images, attributes


