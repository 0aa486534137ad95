"""The torch side: ``WorldDataset``, ``make_loader`` and ``batch_loader``.
Taught in notebook 00, section 5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from course_lib.profiles import get_profile
from course_lib.runtime import default_num_workers

from ..images import to_float, to_uint8  # noqa: F401  (re-exported: the data side of the image conventions)
from .splits import load_split
from .vocabulary import SPLIT_COMBOS, SPLIT_IDS, SPLITS, canonical_caption, class_counts, varied_caption

__all__ = ["WorldDataset", "make_loader", "batch_loader"]


# ---------------------------------------------------------------------------
# 6. The torch side
# ---------------------------------------------------------------------------

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

