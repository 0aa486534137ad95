"""The one image check of the course: what an image batch must look like.

Every image that crosses a course function's boundary -- a generator's samples, a
batch handed to the judge, a metric or CLIP -- goes through :func:`check_images`,
so a learner gets one clear message, naming the fix, for every way a batch can be
wrong:

* the course's convention is **float ``(N, 3, H, W)`` in [-1, 1]** (what the data
  loaders yield and every generator's ``sample`` returns);
* **uint8 pixels ``(N, H, W, 3)``** (what the renderer and PIL give) are converted;
* integers of another type, NaN or infinity, a missing batch axis, the channels
  last, one or four channels, an empty batch, and values outside [-1, 1] are errors;
* floats in **[0, 1]** (torchvision's ``ToTensor`` convention) are an error that
  says to use ``x * 2 - 1``: they would pass a plain range check and be graded as
  washed-out images without a word. A batch that really is in [-1, 1] but happens
  to have no negative value (an all-white batch) passes ``allow_unit_range=True``.

Why no tolerance: a sampler whose output drifts past [-1, 1] (an unclipped
diffusion sample) must clamp it itself -- :func:`clamp_images` -- so that what a
notebook shows, grades and saves is one and the same picture.

Used by course_lib.metrics (every metric), course_lib.clip (encode_image) and every
generator's ``sample`` (notebooks 03-09).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["ImageBatchError", "check_images", "clamp_images", "to_float", "to_uint8"]


class ImageBatchError(ValueError):
    """An image batch of the wrong type, shape, size or range (the message says the fix)."""


_CONVERT = ("Course images are float (N, 3, H, W) in [-1, 1], or uint8 pixels (N, H, W, 3): "
            "convert [0, 1] floats with x * 2 - 1, [0, 255] floats with x / 127.5 - 1, "
            "uint8 with course_lib.data.to_float.")


def _as_tensor(images, what: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        return images
    raise TypeError(f"{what}: expected a tensor or NumPy array of images, got "
                          f"{type(images).__name__}. {_CONVERT}")


def check_images(images, what: str = "images", *, size: int | tuple[int, int] | None = None,
                 allow_unit_range: bool = False, single: bool = False) -> torch.Tensor:
    """Images as a float32 ``(N, 3, H, W)`` tensor in [-1, 1], or a clear error.

    Args:
        images: float ``(N, 3, H, W)`` in [-1, 1] or uint8 ``(N, H, W, 3)``; a tensor or
            a NumPy array. The device is kept.
        what: how the message names the batch (e.g. ``"sample(gan, ...)"``).
        size: the height and width the caller needs (an int for square images).
        allow_unit_range: accept a float batch whose values all lie in [0, 1]
            (see the module docstring); off by default.
        single: also accept one image, ``(3, H, W)`` or ``(H, W, 3)``; it gets a batch axis.

    Raises:
        TypeError: not a tensor/array, or neither float nor uint8.
        ImageBatchError (a ValueError): wrong shape or size, an empty batch, NaN/inf,
            values outside [-1, 1], or a [0, 1] batch.
    """
    x = _as_tensor(images, what)
    if single and x.ndim == 3:
        x = x[None]
    pixels = x.dtype == torch.uint8
    if pixels:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ImageBatchError(f"{what}: uint8 images must be (N, H, W, 3), got {tuple(x.shape)}. "
                                  + _CONVERT)
        x = to_float(x).to(images.device if isinstance(images, torch.Tensor) else "cpu")
    elif not x.is_floating_point():
        raise TypeError(f"{what}: expected float images in [-1, 1] or uint8 pixels, got "
                              f"{x.dtype}. {_CONVERT}")
    if x.ndim != 4 or x.shape[1] != 3:
        hint = ""
        if x.ndim == 3 and x.shape[0] == 3:
            hint = " It looks like one image: add the batch axis with images[None]."
        elif x.ndim == 4 and x.shape[-1] == 3:
            hint = " The channels look last: use images.permute(0, 3, 1, 2)."
        elif x.ndim == 4 and x.shape[1] in (1, 4):
            hint = (" Grey images: repeat the channel (x.expand(-1, 3, -1, -1)); RGBA: drop alpha "
                    "(x[:, :3]) or composite it onto a background.")
        raise ImageBatchError(f"{what}: float images must be (N, 3, H, W), got {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise ImageBatchError(f"{what}: no images (N = 0). Pass at least one image (one caption).")
    if size is not None:
        want = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[-2:]) != want:
            raise ImageBatchError(
                f"{what}: images are {x.shape[-2]}x{x.shape[-1]} but {want[0]}x{want[1]} are needed "
                "(the profile's image size). Resize them (torch.nn.functional.interpolate, or "
                "course_lib.data.ImageTextFolder for files), or use the matching profile.")
    x = x.float()
    values = x.detach()                  # the checks read values; x keeps its graph (a CLIP loss)
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).sum())
        raise ImageBatchError(f"{what}: {bad} of {len(x)} images contain NaN or infinite values "
                              "(a diverged model?). Nothing was graded or shown.")
    lo, hi = float(values.min()), float(values.max())
    if lo < -1.0 or hi > 1.0:
        raise ImageBatchError(f"{what}: values span [{lo:.3g}, {hi:.3g}], outside [-1, 1]. {_CONVERT} "
                              "A sampler that overshoots should end with "
                              "course_lib.images.clamp_images(x).")
    if lo >= 0.0 and hi > lo and not (allow_unit_range or pixels):   # a constant grey batch is fine
        raise ImageBatchError(
            f"{what}: every value is in [0, 1] (span [{lo:.3g}, {hi:.3g}]): these look like "
            "torchvision-style [0, 1] images, not the course's [-1, 1]. Convert with x * 2 - 1. "
            "(If they really are [-1, 1] images with no dark pixel, pass allow_unit_range=True.)")
    return x


def clamp_images(images: torch.Tensor) -> torch.Tensor:
    """Clip a sampler's float output into [-1, 1] (NaN stays NaN, so the check still sees it)."""
    return images.clamp(-1.0, 1.0)


# The course's two image forms and the conversions between them (the data, the plots and
# every sampler use them; they live here, below everything, so nothing imports sideways).

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
