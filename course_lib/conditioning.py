"""What every text-to-image generator of the course shares: its frozen CLIP text
encoder, the record of which CLIP it was trained on, and the finish of ``sample``.

* :func:`text_encoder` -- the course CLIP of a profile (loaded or trained once by
  notebook 01's :func:`course_lib.clip.load_or_train_clip`) wrapped as a
  :class:`course_lib.clip.FrozenTextEncoder`; one per profile and process.
* :func:`clip_fingerprint` -- a short hash of a CLIP's weights. A generator stores it
  in its config, so a generator checkpoint loaded beside *another* CLIP (retrained,
  or a pretrained one) is a clear mismatch error instead of silently wrong pictures.
* :func:`attach_text_encoder` / :func:`get_text_encoder` -- a generator carries its
  encoder *beside* its weights (not inside its ``state_dict``), so
  ``sample(model, captions)`` needs nothing else and its checkpoint never holds CLIP.
* :func:`finish_samples` -- the last line of every ``sample``: clamp into [-1, 1],
  then the package's one image check (:func:`course_lib.images.check_images`).
* :func:`check_captions` -- a non-empty list of strings, or a clear error.

**The generator contract** (notebooks 03-10 and the training command rely on it; the
contract test in ``tests/test_contract.py`` holds every registered generator to it):

* ``load_or_train_<name>(profile=None, *, retrain=False, **changes) -> (model, card)``:
  the profile's model, loaded from its checkpoint or trained and saved; ``changes``
  override the profile's section (a changed model gets its own checkpoint name); the card
  is a dict with at least ``source`` ("loaded", "shipped" or "trained"), ``config`` and
  ``metrics`` (the training record of ``training.History.summary``). The CLIP, the judge
  and the autoencoder load the same way.
* ``sample(model, captions, *, seed=0, noise=None, **options) -> images``: float
  ``(N, 3, H, W)`` in [-1, 1], N = ``len(captions)``, through :func:`finish_samples`
  (the package's one image check). The same seed, captions and options give the same
  images; ``noise`` (checked by :func:`check_noise`) replaces what ``seed`` would draw
  for the images (a GAN's z, a VAE's latent, a diffusion model's starting noise), so an
  interpolation can hold it fixed. Bad captions raise the course's caption errors
  (:func:`check_captions`, ``clip.CaptionError``); a model without its CLIP says how to
  attach it, and one beside another CLIP raises ``CheckpointMismatchError``
  (:func:`attach_text_encoder`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .images import check_images
from .profiles import get_profile
from .text import is_blank

__all__ = ["text_encoder", "clip_fingerprint", "clip_dependency", "attach_text_encoder",
           "get_text_encoder", "finish_samples", "check_captions", "check_noise", "NoiseShapeError",
           "check_embeddings", "EmbeddingError", "slerp"]

_ENCODERS: dict[tuple, object] = {}


def text_encoder(profile=None, *, device=None, verbose: bool = True):
    """The profile's course CLIP as a frozen text encoder (trained by notebook 01 if missing).

    Returns:
        a :class:`course_lib.clip.FrozenTextEncoder`; ``.clip`` is the whole CLIP (its
        image tower serves CLIP losses and GALIP), ``.fingerprint`` its
        :func:`clip_fingerprint`.
    """
    from .clip import FrozenTextEncoder, load_or_train_clip
    from .runtime import get_device

    p = get_profile(profile)
    device = get_device(device)
    from .checkpoints import current_source
    # the source matters: inside checkpoints.use("reference") the shipped CLIP is another model
    key = (p.name, p.clip, p.data.image_size, str(device), current_source())
    enc = _ENCODERS.get(key)
    if enc is None:
        model, _card = load_or_train_clip(p, device=device, verbose=verbose)
        enc = FrozenTextEncoder(model)
        enc.fingerprint = clip_fingerprint(model)
        _ENCODERS[key] = enc
    return enc


def clip_fingerprint(model: nn.Module) -> str:
    """A 12-hex-digit hash of a CLIP's weights (names, shapes and values).

    Values are hashed at fp16 precision: shipped checkpoints and instructors' bundles are
    stored in fp16, and a generator must still recognise the CLIP it was trained on."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.half()
        h.update(value.to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def clip_dependency(encoder) -> dict:
    """What a generator's config records of the CLIP it conditions on."""
    return {"embed_dim": int(encoder.embed_dim), "width": int(encoder.width),
            "context_length": int(encoder.context_length),
            "fingerprint": getattr(encoder, "fingerprint", None) or clip_fingerprint(encoder.clip)}


def attach_text_encoder(model: nn.Module, encoder, expected: dict | None = None) -> nn.Module:
    """Give ``model`` its frozen text encoder (kept out of ``state_dict`` and ``parameters``).

    Args:
        expected: the ``clip_dependency`` the model was trained with (from its config);
            a different CLIP is a clear error.
    """
    if expected:
        found = clip_dependency(encoder)
        diff = [f"{k}: trained with {expected[k]!r}, given {found[k]!r}" for k in expected
                if k in found and expected[k] != found[k]]
        if diff:
            from .checkpoints import CheckpointMismatchError
            raise CheckpointMismatchError(
                f"{type(model).__name__} was trained on another CLIP than the one given ("
                + "; ".join(diff) + "). Its pictures would not follow the captions. Fix: use the "
                "CLIP it was trained with, or retrain the generator (retrain=True) on this CLIP.")
    object.__setattr__(model, "_text_encoder", encoder)     # not a submodule: never saved, never trained
    return model


def get_text_encoder(model: nn.Module):
    enc = getattr(model, "_text_encoder", None)
    if enc is None:
        raise RuntimeError(f"{type(model).__name__} has no text encoder. Load it with its "
                           "load_or_train_* function, or call "
                           "course_lib.conditioning.attach_text_encoder(model, encoder).")
    return enc


def check_captions(captions, what: str = "captions") -> list[str]:
    """A list of non-empty strings (one str becomes a list of one)."""
    if isinstance(captions, str):
        captions = [captions]
    if isinstance(captions, (bytes, dict)) or not isinstance(captions, Sequence):
        raise TypeError(f"{what}: expected a list of strings, got {type(captions).__name__}.")
    captions = list(captions)
    if not captions:
        raise ValueError(f"{what}: no captions (an empty list). Give at least one caption.")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"{what}: caption {i} is a {type(c).__name__} ({c!r}), not a str.")
        if is_blank(c):
            raise ValueError(f"{what}: caption {i} is empty (nothing but spaces or invisible characters: "
                             f"{c!r}). Every image needs a caption.")
    return captions


class EmbeddingError(ValueError):
    """Embeddings of the wrong size (another CLIP) or not finite."""


def check_embeddings(z: torch.Tensor, dim: int, what: str = "embeddings") -> torch.Tensor:
    """CLIP embeddings ``(N, dim)`` of finite floats, or a clear error naming the shape expected."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != dim:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise EmbeddingError(
            f"{what}: expected CLIP embeddings of shape (N, {dim}) from the course CLIP this model "
            f"was trained with, got {got}. Embeddings of another CLIP (another size) cannot be "
            "used: encode the images or captions with this model's CLIP (course_lib.clip.encode_image).")
    if not torch.isfinite(z).all():
        raise EmbeddingError(f"{what} hold NaN or infinite values.")
    return z


class NoiseShapeError(ValueError):
    """Noise handed to a sampler that does not have the shape its model draws."""


def check_noise(noise, shape: tuple[int, ...], what: str = "sample(noise)") -> torch.Tensor:
    """``noise`` as a float32 tensor of exactly ``shape`` (one row per caption), or a clear error.

    Raises:
        NoiseShapeError: another shape (the message names the expected one and why).
        TypeError: not a tensor or array.
    """
    import numpy as np

    if isinstance(noise, np.ndarray):
        noise = torch.from_numpy(noise)
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"{what}: expected a tensor of shape {tuple(shape)}, got {type(noise).__name__}.")
    if tuple(noise.shape) != tuple(shape):
        raise NoiseShapeError(f"{what}: noise must have shape {tuple(shape)} (one row per caption, then "
                              f"the model's noise shape), got {tuple(noise.shape)}.")
    if not noise.is_floating_point():
        raise TypeError(f"{what}: noise must be floats (standard normal), got {noise.dtype}.")
    return noise.float()


def finish_samples(images: torch.Tensor, what: str = "sample") -> torch.Tensor:
    """Clamp a sampler's output into [-1, 1] and pass it through the one image check."""
    return check_images(images.detach().clamp(-1.0, 1.0), what, allow_unit_range=True)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between vectors ``a`` and ``b`` (last axis), ``t`` in [0, 1].

    For Gaussian noise (and unit embeddings) slerp keeps the norm typical all the way,
    where a straight line passes through the unlikely, short middle. The angle is
    computed from the *whole* vectors (not element-wise); nearly parallel vectors fall
    back to a straight line.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    t = t.reshape(-1, *([1] * (a.ndim))) if t.ndim else t
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    dot = (an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    near = so.abs() < 1e-6
    safe = torch.where(near, torch.ones_like(so), so)
    out = torch.sin((1 - t) * omega) / safe * a + torch.sin(t * omega) / safe * b
    return torch.where(near, (1 - t) * a + t * b, out)
