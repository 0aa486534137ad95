"""Sharpness, the number notebook 05 needs that the evaluation kit does not have.

* :func:`high_frequency_energy` -- how much of an image's energy is in fine detail:
  the mean squared response of a Laplacian filter (a second derivative, large at edges
  and corners, zero on flat areas). Blur lowers it; the source article's "VAE images
  are blurry" becomes a number, comparable with real images of the same captions and
  with real images blurred on purpose (:func:`equivalent_blur`).

Smoothness of interpolation strips is the evaluation kit's, shared by every generator:
:func:`course_lib.metrics.smoothness` (its "evenness").

Explained in notebook 05, sections "Blurry, measured" and "Controllability".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..images import check_images

__all__ = ["high_frequency_energy", "equivalent_blur"]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@torch.no_grad()
def high_frequency_energy(images) -> float:
    """Mean squared Laplacian response of float images in [-1, 1] (per pixel and channel).

    Args:
        images: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3).

    Returns:
        a float >= 0; 0 for flat images. Compare only images of the same size.
    """
    x = check_images(images, "high_frequency_energy(images)").cpu()
    k = _LAPLACIAN.to(x)[None, None].repeat(3, 1, 1, 1)
    response = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    return float(response.pow(2).mean())


@torch.no_grad()
def equivalent_blur(energy: float, real_images, sigmas=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0,
                                                         2.5, 3.0)) -> float:
    """The Gaussian blur (sigma in pixels at 32x32) that gives real images this sharpness.

    Blurs ``real_images`` with each sigma (``course_lib.metrics.blur``), measures
    :func:`high_frequency_energy`, and interpolates linearly where ``energy`` falls.
    Returns 0.0 for images as sharp as the real ones or sharper, the largest sigma
    for images blurrier than all of them.
    """
    from ..metrics import blur

    real = check_images(real_images, "equivalent_blur(real_images)")
    curve = [(float(s), high_frequency_energy(blur(real, s).clamp(-1, 1))) for s in sigmas]
    if energy >= curve[0][1]:
        return 0.0
    for (s0, e0), (s1, e1) in zip(curve, curve[1:]):
        if e1 <= energy <= e0:
            return s0 + (s1 - s0) * (e0 - energy) / max(e0 - e1, 1e-12)
    return curve[-1][0]
