"""The measures: degradations for sanity checks, alignment (the judge's reading against the
caption), the in-domain Fréchet distance and its noise floor, diversity, smoothness, the
CLIP score, and speed (images/s, time to a target). Taught in notebook 02, sections 2-6.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.world import (
    ATTRIBUTES,
    COLORS,
    NUM_CLASSES,
    SHAPES,
    canonical_caption,
    render_attributes,
)
from ..profiles import get_profile
from .inputs import BLUR_SIGMA, NOISE_STD, _check_images, as_attributes, canonical_order, held_out_mask

if TYPE_CHECKING:      # annotations only: the judge module uses these measures
    from .judge import Judge

__all__ = [
    "blur", "add_noise", "shift", "wrong_colors", "collapse", "alignment", "shuffled_chance",
    "frechet_distance", "fd_noise_floor", "diversity", "smoothness", "clip_score",
    "images_per_second", "time_to_target", "TimeToTarget", "judge_accuracy",
]


# ============================================================================ degradations


def blur(images, sigma: float = BLUR_SIGMA, *, relative: bool = True) -> torch.Tensor:
    """Gaussian blur (torchvision's ``gaussian_blur``, kernel 2*ceil(3 sigma)+1).

    Args:
        images: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3).
        sigma: standard deviation in pixels *at 32x32* (``relative=True``: scaled by
            H / 32, so the same blur looks the same in every profile), or in pixels.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    images = _check_images(images)
    s = float(sigma) * (images.shape[-1] / 32.0 if relative else 1.0)
    if s < 0:
        raise ValueError(f"blur: sigma must be >= 0, got {sigma}")
    if s == 0:
        return images.clone()
    # 3 sigma each side, but no wider than the image (reflect padding needs pad < side)
    k = min(2 * math.ceil(3 * s) + 1, 2 * min(images.shape[-2:]) - 1)
    return gaussian_blur(images, [k, k], [s, s])


def add_noise(images, std: float = NOISE_STD, seed: int = 0) -> torch.Tensor:
    """Add Gaussian pixel noise (standard deviation ``std`` in [-1, 1] units), clipped to [-1, 1]."""
    images = _check_images(images)
    if std < 0:
        raise ValueError(f"add_noise: std must be >= 0, got {std}")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g).to(images.device)
    return (images + std * noise).clamp(-1, 1)


def shift(images, pixels: int = 2) -> torch.Tensor:
    """Shift every image right and down by ``pixels`` (at 32x32, scaled), repeating the edge."""
    images = _check_images(images)
    d = int(round(pixels * images.shape[-1] / 32.0))
    if d == 0:
        return images.clone()
    padded = F.pad(images, (d, 0, d, 0), mode="replicate")
    return padded[..., :images.shape[-2], :images.shape[-1]]


def wrong_colors(images) -> torch.Tensor:
    """Swap the colour channels (R, G, B -> G, B, R): red becomes blue, green red,
    blue green; grey stays grey. Shapes, sizes and positions are untouched."""
    images = _check_images(images)
    return images[:, [1, 2, 0]]


def collapse(images) -> torch.Tensor:
    """Mode collapse made on purpose: every image replaced by the first one."""
    images = _check_images(images)
    return images[:1].expand_as(images).clone()


# ============================================================================ alignment


def alignment(images, attributes, judge: Judge, *, predictions: Mapping | None = None,
              batch_size: int = 500, split: bool = True) -> dict:
    """How often images show what their captions asked for, graded by the judge.

    Args:
        images: generated (or real) images: float (N, 3, H, W) in [-1, 1] or uint8
            (N, H, W, 3). May be None when ``predictions`` are given.
        attributes: what each caption asked for (see :func:`as_attributes`);
            -1 = not asked, not graded. Two-object scenes are compared in
            :func:`canonical_order` (object 1 = the left or upper object), so
            "shape" there means the shape of the left/upper object.
        judge: the :class:`Judge` (:func:`load_judge`).
        predictions: the judge's predictions, if already computed (``judge.predict``).
        split: also report seen and held-out combinations separately.

    Returns:
        ``{"shape": acc, "color": acc, ..., "all": share of images with every asked
        attribute right, "n": number of images}``; with ``split=True`` the same for
        ``"seen"`` and ``"held-out"`` under those keys (a group with no images is
        left out). Accuracies are in [0, 1].
    """
    if predictions is None:
        if images is None:
            raise ValueError("alignment: give images (or the judge's predictions)")
        images = _check_images(images)
        predictions = judge.predict(images, batch_size=batch_size)
    n = len(predictions["shape"])
    attrs = canonical_order(as_attributes(attributes, n))
    result = _alignment_rows(predictions, attrs, torch.ones(n, dtype=torch.bool))
    if split:
        held = held_out_mask(attrs)
        for name, mask in (("seen", ~held), ("held-out", held)):
            if mask.any():
                result[name] = _alignment_rows(predictions, attrs, mask)
    return result


def _alignment_rows(pred, attrs, mask) -> dict:
    out: dict[str, Any] = {}
    all_right = torch.ones(int(mask.sum()), dtype=torch.bool)
    for key in ATTRIBUTES:
        want = attrs[key][mask]
        asked = want >= 0
        if not asked.any():
            continue
        right = pred[key][mask] == want
        out[key] = float(right[asked].float().mean())
        all_right &= right | ~asked
    out["all"] = float(all_right.float().mean()) if len(all_right) else float("nan")
    out["n"] = int(mask.sum())
    return out


def shuffled_chance(attributes) -> dict[str, float]:
    """The accuracy a perfect judge scores when captions are shuffled among the images.

    An image then agrees with a random other caption with probability
    sum_k p_k^2 (p_k: share of value k), per attribute; "all" multiplies them
    (attributes drawn independently).
    """
    attrs = canonical_order(attributes)
    out = {}
    for key in ATTRIBUTES:
        codes = attrs[key][attrs[key] >= 0]
        if len(codes):
            p = torch.bincount(codes, minlength=NUM_CLASSES[key]).double() / len(codes)
            out[key] = float((p ** 2).sum())
    out["all"] = float(np.prod(list(out.values())))
    return out


def judge_accuracy(judge: Judge, images, attributes, batch_size: int = 500) -> dict[str, float]:
    """Accuracy of the judge per attribute on images whose true attributes are known.

    Only attributes that are present (code >= 0) count; attributes absent from every
    image are left out of the result. Same numbers as :func:`alignment` on real
    images; kept as a separate name for readability.

    Args:
        judge: the :class:`Judge`.
        images: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3), e.g. ``ds.images``.
        attributes: their true attributes (see :func:`as_attributes`).

    Returns:
        ``{attribute: accuracy, ..., "all": share with every attribute right}``.
    """
    result = alignment(images, attributes, judge, batch_size=batch_size, split=False)
    return {k: v for k, v in result.items() if k not in ("n",)}


# ============================================================================ Fréchet distance


class _JudgeFeatures(nn.Module):
    """The judge's penultimate features, as torchmetrics' FID feature extractor."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge
        self.num_features = judge.feature_dim

    def forward(self, images):
        return self.judge.features(images)

    def train(self, mode: bool = True):        # always in eval mode (BatchNorm statistics fixed)
        return super().train(False)


def frechet_distance(images_a, images_b, judge: Judge, batch_size: int = 500) -> float:
    """Fréchet distance between two sets of images on the judge's penultimate features.

    .. math::
        d^2 = \\|\\mu_a - \\mu_b\\|^2
              + \\mathrm{Tr}(\\Sigma_a + \\Sigma_b - 2(\\Sigma_a\\Sigma_b)^{1/2})

    This is an *in-domain* FID (features of the course's judge, not of Inception-v3):
    comparable between models of the course, not with published FIDs. Computed by
    torchmetrics' ``FrechetInceptionDistance`` with the judge as feature extractor
    (its float64 statistics and matrix square root), not by hand.

    Args:
        images_a, images_b: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3);
            at least 2 images each. Typically real and generated images; use the
            same number on both sides and compare with :func:`fd_noise_floor`.
        judge: the :class:`Judge`.

    Returns:
        the distance (>= 0 up to rounding; 0 for identical feature statistics).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _check_images(images_a, "images_a"), _check_images(images_b, "images_b")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance: need at least 2 images on each side")
    device = next(judge.parameters()).device
    fid = FrechetInceptionDistance(feature=_JudgeFeatures(judge).eval(), normalize=False).to(device)
    with torch.no_grad():
        for images, real in ((a, True), (b, False)):
            for s in range(0, len(images), batch_size):
                fid.update(images[s:s + batch_size].to(device), real=real)
        value = float(fid.compute())
    return max(value, 0.0)


def fd_noise_floor(judge: Judge, attributes=None, n: int | None = None, repeats: int = 3,
                   profile=None, seed: int = 100) -> dict[str, float]:
    """The Fréchet distance between two *real* samples of the same size: its noise floor.

    Two independent renderings of the same attributes (different shades, jitter,
    backgrounds) are compared ``repeats`` times. A generator whose distance to real
    images is within this floor is indistinguishable from real data by this metric.

    Args:
        judge: the :class:`Judge`.
        attributes: the scenes to render (default: ``n`` scenes of the test split).
        n: sample size (default: the profile's ``judge.n_eval``).
        repeats: independent pairs of samples.

    Returns:
        ``{"mean": ..., "std": ..., "n": n}``.
    """
    p = get_profile(profile)
    if attributes is None:
        from ..data import WorldDataset
        n = p.judge.n_eval if n is None else n
        attributes = WorldDataset("test", n=n, combos="all", profile=p, captions="canonical").attributes
    attrs = as_attributes(attributes)
    n = len(attrs["shape"])
    size = getattr(judge, "image_size", p.data.image_size)
    values = []
    for r in range(repeats):
        a = render_attributes(attrs, image_size=size, seed=seed + 2 * r)
        b = render_attributes(attrs, image_size=size, seed=seed + 2 * r + 1)
        values.append(frechet_distance(a, b, judge))
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": n}


# ============================================================================ diversity


def diversity(images, judge: Judge | None = None, asked=None, batch_size: int = 500) -> dict:
    """How different samples of *one* caption are from each other.

    Args:
        images: samples for one caption: float (N, 3, H, W) in [-1, 1] or uint8, N >= 2.
        judge: if given, also the feature distance and the distinct attribute values.
        asked: the attributes the caption fixed: a dict ``{attribute: code or name}``
            (a single row); attributes it does not name (or -1) are *free*, and the
            number of distinct values the judge sees for each free attribute of
            object 1 (shape, color, size, position) is reported.

    Returns:
        ``{"pixel": mean pairwise RMS pixel difference (in [-1, 1] units),
        "feature": mean pairwise Euclidean distance of judge features,
        "distinct": {free attribute: number of distinct values},
        "entropy": {free attribute: entropy of the values the judge reads, as a share of
        the most possible (1: every value of the world equally often, 0: always one)}}``.
        All ~0 (and 1 distinct value) for a constant sampler: mode collapse. On a caption
        that names every attribute only jitter is free; on a partial one ("a star") the
        free attributes' entropy is the diversity a caption leaves open.
    """
    x = _check_images(images)
    if len(x) < 2:
        raise ValueError("diversity: need at least 2 samples of the caption")
    flat = x.flatten(1).double()
    d = flat[0].numel()
    out: dict[str, Any] = {"pixel": float(torch.pdist(flat).mean() / math.sqrt(d))}
    if judge is not None:
        feats = judge.embed(x, batch_size=batch_size).double()
        out["feature"] = float(torch.pdist(feats).mean())
        pred = judge.predict(x, batch_size=batch_size)
        row = {} if asked is None else dict(asked)
        fixed = {k for k, v in row.items() if v is not None and v != -1 and v != "-1"}
        unknown = sorted(set(row) - set(ATTRIBUTES))
        if unknown:
            raise KeyError(f"diversity: unknown attribute(s) {unknown}")
        free = [k for k in ("shape", "color", "size", "position") if k not in fixed]
        out["distinct"] = {k: int(torch.unique(pred[k]).numel()) for k in free}
        out["entropy"] = {k: _entropy_share(pred[k], NUM_CLASSES[k]) for k in free}
    return out


def _entropy_share(codes: torch.Tensor, classes: int) -> float:
    """Entropy of the codes' histogram over ``log(classes)``: 1 = uniform over every class."""
    codes = codes.flatten().long()
    codes = codes[(codes >= 0) & (codes < classes)]         # -1: the judge saw no such object
    if classes < 2 or not len(codes):
        return 0.0
    p = torch.bincount(codes, minlength=classes).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum() / math.log(classes))


def smoothness(strip, judge: Judge) -> dict[str, float]:
    """How smoothly an interpolation strip changes, in the judge's feature space.

    For images ``x_0 .. x_{n-1}`` along a path (noise, caption or embedding
    interpolation), the steps are ``d_i = ‖f(x_{i+1}) - f(x_i)‖`` with ``f`` the judge's
    penultimate features. A smooth path moves in small, even steps; a jump (the picture
    snapping from one object to another) shows as one large step.

    Returns:
        ``{"evenness": mean step / largest step, in (0, 1] -- the course's smoothness
        number: 1 when every step is equally large, near 1/(n-1) when one step carries
        the whole change; "mean_step", "var_step", "path" (the sum of the steps),
        "direct" (endpoint to endpoint)}``.
    """
    x = _check_images(strip, "strip")
    if len(x) < 3:
        raise ValueError(f"smoothness: a strip needs at least 3 images, got {len(x)}")
    f = judge.embed(x)
    steps = (f[1:] - f[:-1]).norm(dim=1)
    mean, largest = float(steps.mean()), float(steps.max())
    return {"evenness": mean / largest if largest > 0 else 1.0, "mean_step": mean,
            "var_step": float(steps.var(unbiased=False)), "path": float(steps.sum()),
            "direct": float((f[-1] - f[0]).norm())}


# ============================================================================ CLIP score


def _clip_encoders(model):
    """(encode_image, encode_text) functions for a CLIP.

    An ``open_clip`` model (the course CLIP is one) takes token ids, not strings, so
    it goes through course_lib.clip's public ``encode_image`` / ``encode_text``
    (tokenising, resizing, normalising). Any other object is duck-typed: its own
    ``encode_image(images)`` and ``encode_text(list of str)``.
    """
    import open_clip

    clip_types = tuple(t for t in (getattr(open_clip, "CLIP", None),
                                   getattr(open_clip, "CustomTextCLIP", None)) if t is not None)
    if clip_types and isinstance(model, clip_types):
        from .. import clip as course_clip
        return (lambda x: course_clip.encode_image(model, x),
                lambda t: course_clip.encode_text(model, t))
    for name in ("encode_image", "encode_text"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"clip_score: the model needs a method {name}(...) (or be an open_clip "
                            f"CLIP); {type(model).__name__} has none")
    return model.encode_image, model.encode_text


@torch.no_grad()
def clip_score(model, images, captions: Sequence[str], batch_size: int = 256) -> float:
    """Mean cosine similarity between each image and its caption under a CLIP model.

    Hand-written (a dot product) because torchmetrics' ``CLIPScore`` only takes
    Hugging Face CLIP models, and the course CLIP is an open_clip one. torchmetrics
    and some papers report 100 x max(cos, 0); this returns the plain mean cosine.

    Args:
        model: the course CLIP (``course_lib.clip``; any open_clip model), or any
            object with ``encode_image(images) -> (N, D)`` and
            ``encode_text(list of str) -> (N, D)``. Embeddings are normalised here
            again (harmless if the model already does).
        images: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3).
        captions: N strings, one per image.

    Returns:
        the mean cosine in [-1, 1]. With the course CLIP it is the course CLIP's
        opinion, trained on this world only -- not OpenAI's CLIP.
    """
    encode_image, encode_text = _clip_encoders(model)
    x = _check_images(images)
    if isinstance(captions, str):
        raise TypeError("clip_score: captions must be a list with one string per image")
    captions = list(captions)
    if len(captions) != len(x):
        raise ValueError(f"clip_score: {len(x)} images but {len(captions)} captions")
    if not all(isinstance(c, str) for c in captions):
        raise TypeError("clip_score: captions must be strings")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device
    else:
        device = torch.device("cpu")
    sims = []
    for s in range(0, len(x), batch_size):
        img = F.normalize(torch.as_tensor(encode_image(x[s:s + batch_size].to(device))).float(), dim=-1)
        txt = F.normalize(torch.as_tensor(encode_text(captions[s:s + batch_size])).float().to(img.device),
                          dim=-1)
        if img.shape != txt.shape:
            raise ValueError(f"clip_score: image embeddings {tuple(img.shape)} and text embeddings "
                             f"{tuple(txt.shape)} differ in shape")
        sims.append((img * txt).sum(-1).cpu())
    if was_training:
        model.train()
    return float(torch.cat(sims).mean())


# ============================================================================ speed


def images_per_second(sample_fn: Callable, batch_size: int, captions: Sequence[str] | None = None,
                      *, warmup: int = 1, repeats: int = 3, device=None) -> dict:
    """How many images per second ``sample_fn`` makes at ``batch_size``.

    Args:
        sample_fn: ``sample_fn(captions) -> images`` (a batch of ``len(captions)``).
        batch_size: images per call.
        captions: the captions of one batch (default: ``batch_size`` canonical captions
            of the world).
        warmup: untimed calls first (memory allocation, kernel selection, caches).
        repeats: timed calls; the device is synchronised before and after each.
        device: the device the sampler runs on (default: course_lib.runtime.get_device()).

    Returns:
        ``{"images_per_s": batch_size / median seconds per call, "seconds_per_batch":
        median, "batch_size": ..., "device": "cpu"}``.
    """
    from ..runtime import Timer, get_device

    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("images_per_second: batch_size and repeats must be >= 1, warmup >= 0")
    device = get_device(device)
    if captions is None:
        captions = _default_captions(batch_size)
    captions = list(captions)[:batch_size]
    if len(captions) != batch_size:
        raise ValueError(f"images_per_second: {len(captions)} captions for a batch of {batch_size}")
    for _ in range(warmup):
        sample_fn(captions)
    times = []
    for _ in range(repeats):
        with Timer(sync=True, device=device) as t:   # synchronised before and after
            sample_fn(captions)
        times.append(t.seconds)
    sec = statistics.median(times)
    return {"images_per_s": batch_size / sec if sec > 0 else float("inf"),
            "seconds_per_batch": sec, "batch_size": batch_size, "device": device.type}


def _default_captions(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    rows = [{"shape": int(rng.integers(len(SHAPES))), "color": int(rng.integers(len(COLORS))),
             "size": int(rng.integers(2)), "position": int(rng.integers(5))} for _ in range(n)]
    return [canonical_caption(r) for r in rows]


@dataclass
class TimeToTarget:
    """Result of :func:`time_to_target`.

    ``seconds``: training seconds until the score first reached the target (None if
    never); ``curve``: (training seconds, score) after each round; ``reached``.
    """
    seconds: float | None
    target: float
    curve: list[tuple[float, float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.seconds is not None


def time_to_target(train_round: Callable[[], Any], score: Callable[[], float], target: float,
                   *, max_seconds: float, max_rounds: int = 10_000) -> TimeToTarget:
    """Training time until a score reaches a target, e.g. "seconds until 80% alignment".

    Alternates ``train_round()`` (timed) and ``score()`` (not timed: evaluation is not
    training) until ``score() >= target`` or the training time passes ``max_seconds``.

    Args:
        train_round: trains a little (e.g. ``fit`` for a few more steps with a resume path).
        score: returns the number to reach (e.g. ``alignment(...)["all"]``).
        target: the value to reach.
        max_seconds: give up after this much training time.

    Returns:
        a :class:`TimeToTarget`.
    """
    trained = 0.0
    curve = []
    for _ in range(max_rounds):
        t0 = time.perf_counter()
        train_round()
        trained += time.perf_counter() - t0
        value = float(score())
        curve.append((trained, value))
        if value >= target:
            return TimeToTarget(seconds=trained, target=target, curve=curve)
        if trained >= max_seconds:
            break
    return TimeToTarget(seconds=None, target=target, curve=curve)


