"""Embeddings: captions and images to L2-normalised CLIP vectors. Taught in notebook 01.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ..images import check_images
from ..text import _MODEL_TOKENIZERS, tokenize

__all__ = ["encode_text", "encode_image", "to_model_input"]


# =============================================================================
# 5. Embeddings
# =============================================================================


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _prepare_images(model: nn.Module, images) -> torch.Tensor:
    """Course images -> what ``model.visual`` expects (size and normalisation).

    Checked by the package's one image check (:func:`course_lib.images.check_images`):
    float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3); one image gets a batch axis.
    """
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        images = np.asarray(images)
    return to_model_input(model, check_images(images, "CLIP images", single=True))


def to_model_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Checked float images in [-1, 1] -> the size and normalisation ``model.visual`` expects.

    Differentiable and unchecked: a generator's CLIP loss calls it on every training
    step (notebooks 03-04). For the course CLIP (mean = std = 0.5 at its own size) it is
    the identity -- exactly one mapping from [-1, 1], never two.
    """
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    mean = torch.tensor(cfg.get("mean", (0.5,) * 3), dtype=torch.float32)
    std = torch.tensor(cfg.get("std", (0.5,) * 3), dtype=torch.float32)
    images = images.to(_device_of(model), torch.float32)
    identity = torch.allclose(mean, torch.full((3,), 0.5)) and torch.allclose(std, torch.full((3,), 0.5))
    if tuple(images.shape[-2:]) == size and identity:
        return images                     # the course model: already what it wants
    x = (images + 1.0) / 2.0
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return (x - mean.to(x.device)[:, None, None]) / std.to(x.device)[:, None, None]


def encode_image(model: nn.Module, images, *, normalize: bool = True, batch_size: int = 512,
                 grad: bool = False) -> torch.Tensor:
    """Images -> embeddings ``(N, embed_dim)``, L2-normalised by default.

    Args:
        model: a CLIP (the course's, or a pretrained one: images are resized and
            normalised for it).
        images: float ``(N, 3, H, W)`` in [-1, 1], or uint8 ``(N, H, W, 3)``.
        normalize: unit length (what similarities and zero-shot use).
        batch_size: images per forward pass (bounds memory).
        grad: keep the graph (e.g. a CLIP loss on generated images); default no grad.
    """
    x = _prepare_images(model, images)
    with torch.set_grad_enabled(grad):
        out = torch.cat([model.encode_image(x[i:i + batch_size])
                         for i in range(0, len(x), batch_size)])
    return F.normalize(out, dim=-1) if normalize else out


def encode_text(model: nn.Module, captions: str | Sequence[str], *, normalize: bool = True,
                batch_size: int = 1024, truncate: bool = False, grad: bool = False,
                announce_after_s: float | None = None) -> torch.Tensor:
    """Captions -> embeddings ``(N, embed_dim)``, L2-normalised by default.

    Args:
        model: a CLIP. captions: one str or a list (checked by :func:`tokenize`).
        normalize: unit length. batch_size: captions per forward pass.
        truncate: cut over-long captions with a warning instead of raising.
        grad: keep the graph.
        announce_after_s: for many captions, time the first few and print one line
            with the estimated time when it is longer than this many seconds (a
            pretrained ViT-B-32 on a laptop CPU takes minutes for the 2,400 prompts
            of an ensemble); None: :data:`ANNOUNCE_AFTER_S`; ``float("inf")``: never.

    Raises:
        CaptionError: empty or over-long captions (see :func:`tokenize`).
    """
    tokens = tokenize(captions, model.context_length, truncate=truncate,
                      tokenizer=_MODEL_TOKENIZERS.get(model)).to(_device_of(model))
    starts = list(range(0, len(tokens), batch_size))
    announce_after_s = ANNOUNCE_AFTER_S if announce_after_s is None else announce_after_s
    probe = _ANNOUNCE_PROBE if len(tokens) > 4 * _ANNOUNCE_PROBE and not grad else 0
    outs = []
    with torch.set_grad_enabled(grad):
        if probe:
            t0 = time.perf_counter()
            outs.append(model.encode_text(tokens[:probe]))
            estimate = (time.perf_counter() - t0) * len(tokens) / probe
            if estimate > announce_after_s:
                print(f"Encoding {len(tokens):,} captions with this model's text tower: about "
                      f"{_duration(estimate)} here (it is done once per cell run).", flush=True)
            starts = list(range(probe, len(tokens), batch_size))
        outs += [model.encode_text(tokens[i:i + batch_size]) for i in starts]
    out = torch.cat(outs)
    return F.normalize(out, dim=-1) if normalize else out


#: :func:`encode_text` says how long it will take when that is longer than this (seconds).
ANNOUNCE_AFTER_S = 20.0
_ANNOUNCE_PROBE = 32      # captions timed before a long encode_text says how long it will take


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


