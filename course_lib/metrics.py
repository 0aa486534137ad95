"""The evaluation kit: the numbers every generator notebook reports.

Every image of the generated world has known attributes, so whether a generated
image shows what its caption asked for can be *graded*, not guessed. This module
holds the grader and the yardsticks built on it:

* **The judge** (:class:`Judge`, :func:`load_judge`): a small CNN with one head per
  attribute (shape, colour, size, position; object 2 and the relation in
  two-object scenes). It is trained on real images of *every* colour-shape
  combination, the held-out ones included (it is the grader, not a student),
  with augmentations that mimic how generators err -- blur, noise, small shifts,
  mild colour shifts -- so that a blurry but correct triangle still counts as a
  triangle. It is trained once per profile through :func:`course_lib.training.fit`
  and cached as the checkpoint ``judge`` (:func:`course_lib.checkpoints.load_or_train`);
  every notebook of a profile uses the same judge.
* **Alignment** (:func:`alignment`): accuracy per attribute and the share of images
  with every attribute right, on seen and on held-out combinations separately.
* **Quality** (:func:`frechet_distance`): the Fréchet distance between generated and
  real images, measured on the judge's penultimate features. This is an
  *in-domain* FID, not the Inception FID of papers: Inception-v3 was trained on
  photographs at 299x299 and knows nothing of 32x32 coloured shapes (and its
  weights would have to be downloaded); the judge's features describe exactly the
  things this world varies. Numbers are therefore comparable within the course
  only, never with published FIDs. The computation is torchmetrics'
  ``FrechetInceptionDistance`` with the judge as its feature extractor.
  :func:`fd_noise_floor` measures the distance between two real samples of the
  same size: differences smaller than that floor mean nothing.
* **Diversity** (:func:`diversity`): for one caption, the mean pairwise distance
  between samples (pixels and judge features) and how many distinct values an
  attribute the caption leaves free takes. Mode collapse shows as ~0.
* **CLIP score** (:func:`clip_score`): cosine similarity between a CLIP's image and
  text embeddings (the metric GALIP reports). With the course CLIP it is *the
  course CLIP's* opinion, trained on this world, not OpenAI's CLIP.
* **Speed** (:func:`images_per_second`, :func:`time_to_target`): images per second
  of a sampler (warm-up, synchronised timing), and training time until a score
  (e.g. the judge's alignment) reaches a target.
* **One call** (:func:`evaluate`): all of the above for a ``sample_fn``, returned
  as a small :class:`Report` table (one row per model; ``.to_markdown()``).

Degraded images for sanity checks (:func:`blur`, :func:`add_noise`,
:func:`shift`, :func:`wrong_colors`, :func:`collapse`) show that each number
moves the way it should before a learner trusts it.

Explained in notebook 02 ("Measuring generators: the course's yardstick").
"""
from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.world import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    COLORS,
    HELD_OUT_COMBOS,
    NUM_CLASSES,
    RELATIONS,
    SHAPES,
    canonical_caption,
    render_attributes,
    to_float,
)
from .images import check_images
from .profiles import get_profile
from .training import Method, fit

__all__ = [
    # the judge
    "Judge", "JudgeTraining", "judge_loader", "judge_config", "train_judge", "load_judge", "judge_accuracy",
    "augment", "canonical_order", "JUDGE_CHECKPOINT", "JUDGE_TWO_OBJECT_FRACTION", "FEATURE_DIM",
    # degradations
    "blur", "add_noise", "shift", "wrong_colors", "collapse", "BLUR_SIGMA", "NOISE_STD",
    # metrics
    "as_attributes", "held_out_mask", "alignment", "shuffled_chance", "frechet_distance",
    "fd_noise_floor", "diversity", "smoothness", "clip_score", "images_per_second", "time_to_target",
    "TimeToTarget", "evaluation_set", "evaluate", "Report",
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


# ============================================================================ the judge


class Judge(nn.Module):
    """The attribute classifier that grades images of the world.

    Three convolution stages (the first with stride 2, for speed on a CPU), then a
    linear layer to ``feature_dim`` penultimate features, then one linear head per
    attribute. Each head has one class per value *plus one for "absent"* (the last
    index), so the judge can say "there is no second object".

    The feature map is flattened rather than averaged, so the features keep *where*
    things are (position and relation need it).

    Args:
        width: channels of the first stage (doubled at each stage).
        image_size: side of the input images in pixels (a multiple of 8).
        feature_dim: size of the penultimate features.

    Input: float images (N, 3, H, W) in [-1, 1]. ``forward`` returns a dict
    attribute -> logits (N, NUM_CLASSES[attribute] + 1).
    """

    def __init__(self, width: int = 16, image_size: int = 32, feature_dim: int = FEATURE_DIM):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"Judge: image_size must be a multiple of 8, got {image_size}")
        self.width, self.image_size, self.feature_dim = int(width), int(image_size), int(feature_dim)

        def stage(cin, cout, kernel=3, stride=1):
            return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = self.width
        self.body = nn.Sequential(
            *stage(3, w, kernel=5, stride=2),              # S   -> S/2
            *stage(w, 2 * w), nn.MaxPool2d(2),             # S/2 -> S/4
            *stage(2 * w, 4 * w), nn.MaxPool2d(2),         # S/4 -> S/8
            nn.AdaptiveAvgPool2d(4),                       # any size -> 4x4 cells
            nn.Flatten(),
            nn.Linear(4 * w * 16, self.feature_dim), nn.ReLU(inplace=True),
        )
        self.heads = nn.ModuleDict({key: nn.Linear(self.feature_dim, NUM_CLASSES[key] + 1)
                                    for key in ATTRIBUTES})

    @property
    def num_features(self) -> int:
        """Size of the penultimate features (torchmetrics reads this name)."""
        return self.feature_dim

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim) of float images (N, 3, H, W) in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body(images)
        return {key: head(feats) for key, head in self.heads.items()}

    def _checked(self, images) -> torch.Tensor:
        images = _check_images(images)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"The judge reads {self.image_size}x{self.image_size} images (its profile's size) "
                f"but got {images.shape[-2]}x{images.shape[-1]}. Sample at the profile's "
                "data.image_size, or resize first (torch.nn.functional.interpolate).")
        return images

    @torch.no_grad()
    def predict(self, images, batch_size: int = 500) -> dict[str, torch.Tensor]:
        """Predicted attribute codes, -1 where the judge sees the object as absent.

        Args:
            images: float (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3).
            batch_size: images per forward pass.

        Returns:
            dict attribute -> int64 tensor (N,) on the CPU.
        """
        images = self._checked(images)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = {key: [] for key in ATTRIBUTES}
        for start in range(0, len(images), batch_size):
            logits = self(images[start:start + batch_size].to(device))
            for key in ATTRIBUTES:
                code = logits[key].argmax(dim=1).cpu()
                out[key].append(torch.where(code == NUM_CLASSES[key], -1, code))
        self.train(was_training)
        return {key: torch.cat(v) for key, v in out.items()}

    @torch.no_grad()
    def embed(self, images, batch_size: int = 500) -> torch.Tensor:
        """Penultimate features of many images, in batches, on the CPU: float (N, feature_dim)."""
        images = self._checked(images)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        feats = [self.features(images[s:s + batch_size].to(device)).float().cpu()
                 for s in range(0, len(images), batch_size)]
        self.train(was_training)
        return torch.cat(feats)


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


def _targets(attributes: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(N, 8) class indices for the heads, in :func:`canonical_order`: the code, or
    NUM_CLASSES (the "absent" class) for -1."""
    attributes = canonical_order(attributes)
    cols = [torch.where(attributes[k] < 0, NUM_CLASSES[k], attributes[k]) for k in ATTRIBUTES]
    return torch.stack(cols, dim=1).long()


def _shift_and_blur(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                    sigma: torch.Tensor) -> torch.Tensor:
    """Shift each image by (dx, dy) pixels and blur it with its own Gaussian sigma, in one go.

    Hand-written rather than torchvision's ``gaussian_blur`` because that applies one
    sigma to a whole call, and blurring image by image is ~10x slower on a CPU. A
    Gaussian blur is separable and a shift is a blur kernel moved off-centre, so each
    image gets one horizontal and one vertical 1-D kernel (a delta for sigma = 0),
    applied to the whole batch by two grouped convolutions (reflect padding).
    For a single sigma and no shift it equals torchvision's result to 1e-6 (tested).

    Args:
        images: float (N, C, H, W). dx, dy, sigma: float tensors (N,) in pixels.
    """
    n, c, h, w = images.shape
    reach = int(math.ceil(3 * float(sigma.max()) + float(torch.cat([dx.abs(), dy.abs()]).max())))
    reach = max(1, min(reach, h - 1, w - 1))
    taps = torch.arange(-reach, reach + 1, dtype=images.dtype, device=images.device)

    def kernels(offset):
        s = sigma.to(images)[:, None]
        gauss = torch.exp(-0.5 * ((taps[None] - offset.to(images)[:, None]) / s.clamp_min(1e-3)) ** 2)
        # sigma 0: linear interpolation between the two taps around the offset
        delta = (1 - (taps[None] - offset.to(images)[:, None]).abs()).clamp_min(0)
        k = torch.where(s > 0, gauss, delta)
        k = k / k.sum(dim=1, keepdim=True)
        return k.repeat_interleave(c, dim=0)                    # (N * C, taps)

    kx, ky = kernels(dx), kernels(dy)
    x = F.pad(images.reshape(1, n * c, h, w), (reach, reach, reach, reach), mode="reflect")
    x = F.conv2d(x, kx[:, None, None, :], groups=n * c)
    x = F.conv2d(x, ky[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def augment(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
            ) -> torch.Tensor:
    """Random generator-like artefacts, drawn independently for each image (training only).

    Each of these is applied to an image with probability ``p``:

    * a small shift (up to 2 px at 32x32, scaled with the image size) -- position
      classes are 7 px apart, so no label changes;
    * a mild colour shift (per-channel gain 0.9..1.1 and offset +-0.08, contrast
      0.8..1.1) -- far less than the 50-60 degrees of hue between colour classes;
    * a Gaussian blur with sigma 0.4..1.6 px (at 32x32, scaled with the image size);
    * Gaussian pixel noise with standard deviation 0..0.3 (images in [-1, 1]).

    Args:
        images: float (N, 3, H, W) in [-1, 1], on any device.
        generator: a torch.Generator on the CPU for repeatable draws (optional).
        p: probability of each artefact.

    Returns:
        float (N, 3, H, W) in [-1, 1].
    """
    n, _, h, _ = images.shape
    device = images.device
    scale = h / 32.0

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    def chosen():
        return (rand(n) < p).float()

    x = images
    # mild colour shifts
    on = chosen()[:, None, None, None]
    gain = 1 + (rand(n, 3, 1, 1) * 2 - 1) * 0.1
    offset = (rand(n, 3, 1, 1) * 2 - 1) * 0.08
    contrast = 0.8 + rand(n, 1, 1, 1) * 0.3
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = on * (((x - mean) * contrast + mean) * gain + offset) + (1 - on) * x
    # small whole-pixel shifts and blur, in one separable filter
    shifted = chosen()
    dx = torch.round((rand(n) * 2 - 1) * 2 * scale) * shifted
    dy = torch.round((rand(n) * 2 - 1) * 2 * scale) * shifted
    sigma = (0.4 + rand(n) * 1.2) * scale * chosen()
    x = _shift_and_blur(x, dx, dy, sigma)
    # pixel noise
    std = rand(n) * 0.3 * chosen()
    x = x + torch.randn(x.shape, generator=generator).to(device) * std[:, None, None, None]
    return x.clamp(-1, 1)


class JudgeTraining(Method):
    """How the judge trains (a :class:`course_lib.training.Method`).

    One step: augment a batch of real images (:func:`augment`), sum the
    cross-entropy of the eight heads (absent attributes are the "absent" class),
    one AdamW step with a one-cycle learning rate.

    Batches are ``(uint8 images (B, H, W, 3), targets (B, 8))``.
    """

    def __init__(self, judge: Judge, lr: float, steps: int, seed: int = 0):
        self.models = {"judge": judge}
        opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
        self.optimizers = {"judge": opt}
        self.schedulers = {"judge": torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=max(int(steps), 1), pct_start=0.15)}
        self.generator = torch.Generator().manual_seed(seed)

    def training_step(self, batch, ctx):
        pixels, targets = batch
        images = augment(to_float(pixels), self.generator)
        logits = self.models["judge"](images)
        losses = [F.cross_entropy(logits[key], targets[:, i]) for i, key in enumerate(ATTRIBUTES)]
        loss = torch.stack(losses).sum()
        ctx.optimize("judge", loss)
        with torch.no_grad():
            acc = (logits["shape"].argmax(1) == targets[:, 0]).float().mean()
        return {"loss": loss, "shape_acc": acc}


def judge_config(profile=None) -> dict:
    """Everything that defines the judge of a profile (stored in and checked against its card)."""
    p = get_profile(profile)
    s = p.judge
    return {"width": s.width, "image_size": p.data.image_size, "feature_dim": FEATURE_DIM,
            "n_train": s.n_train, "steps": s.steps, "batch_size": s.batch_size, "lr": s.lr,
            "max_minutes": s.max_minutes,
            "two_object_fraction": max(p.data.two_object_fraction, JUDGE_TWO_OBJECT_FRACTION),
            "combos": "all", "seed": p.seed, "recipe": JUDGE_RECIPE}


def _build_judge(config: Mapping) -> Judge:
    return Judge(width=config["width"], image_size=config["image_size"],
                 feature_dim=config["feature_dim"])


def judge_loader(dataset, batch_size: int, seed: int = 0):
    """Batches for :class:`JudgeTraining`: ``(uint8 images (B, H, W, 3), targets (B, 8))``.

    Whole batches are indexed straight from the split's tensors (one indexing per
    batch, no per-item collate), in a shuffled order fixed by ``seed``.

    Args:
        dataset: a :class:`~course_lib.data.WorldDataset` (its ``images`` and ``attributes``).
        batch_size: images per batch (the last incomplete batch is dropped).
    """
    from .data import batch_loader

    images, targets = dataset.images, _targets(dataset.attributes)
    return batch_loader(lambda i: (images[i], targets[i]), len(images), batch_size, seed)


def train_judge(judge: Judge, config: Mapping, resume_path=None, profile=None,
                plot: bool = True) -> dict:
    """Train ``judge`` in place with ``config`` (see :func:`judge_config`); returns its metrics.

    The training images are ``n_train`` real images of *all* colour-shape
    combinations (``combos="all"``), a ``two_object_fraction`` of them with two
    objects. After training, the judge is measured on fresh validation images; its
    accuracy per attribute goes into the checkpoint card, and a judge cut short by
    its time budget, or weaker than 90% on some attribute, raises a RuntimeWarning.

    Args:
        judge: an untrained :class:`Judge` built from ``config``.
        config: :func:`judge_config` of the profile.
        resume_path: where :func:`~course_lib.training.fit` keeps resumable state.
        profile: the profile (for the data's sizes).
        plot: live loss plot in a notebook.
    """
    from .data import WorldDataset

    p = get_profile(profile)
    train = WorldDataset("train", n=config["n_train"], image_size=config["image_size"],
                         captions="canonical", combos="all",
                         two_object_fraction=config["two_object_fraction"], profile=p)
    method = JudgeTraining(judge, lr=config["lr"], steps=config["steps"], seed=config["seed"])
    history = fit(method, judge_loader(train, config["batch_size"], config["seed"]),
                  steps=config["steps"], max_seconds=60.0 * config["max_minutes"],
                  resume_path=resume_path, desc="judge", seed=config["seed"], plot=plot,
                  log_every=25)
    val = WorldDataset("val", n=min(1000, p.data.n_val), image_size=config["image_size"],
                       captions="canonical", combos="all",
                       two_object_fraction=config["two_object_fraction"], profile=p)
    acc = judge_accuracy(judge, val.images, val.attributes)
    worst = min(v for k, v in acc.items() if k != "all")
    if history.stopped_by == "time":
        # A judge cut short would mis-grade every notebook of this profile: say so loudly.
        warnings.warn(
            f"The judge's time budget ({config['max_minutes']} min) ran out after "
            f"{history.step} of {config['steps']} steps; its weakest attribute on validation "
            f"images is read with {worst:.1%} accuracy. Was the CPU busy with other work? "
            f"Call metrics.load_judge() again to continue toward its {config['steps']} steps "
            "(or metrics.load_judge(retrain=True) to train it again from scratch).",
            RuntimeWarning, stacklevel=2)
    elif worst < 0.9:
        warnings.warn(
            f"The judge reads its weakest attribute on validation images with only {worst:.1%} "
            "accuracy: its grades are not reliable. Give it more steps (profile.judge.steps).",
            RuntimeWarning, stacklevel=2)
    return {"train_minutes": history.seconds / 60.0, "steps": history.step,
            "stopped_by": history.stopped_by, "val_accuracy": acc}


def load_judge(profile=None, *, retrain: bool = False, device=None, verbose: bool = True) -> Judge:
    """The judge of a profile: loaded from its checkpoint, or trained (minutes) and saved.

    Args:
        profile: a Profile, a profile name or None (the active profile).
        retrain: train again even if a checkpoint exists.
        device: where the judge lives (default: course_lib.runtime.get_device()).
        verbose: print where it came from.

    Returns:
        the :class:`Judge` in eval mode; ``judge.card`` holds its checkpoint card
        (config, training time, validation accuracy). A judge that was cut short by
        its time budget (a busy CPU) or reads some attribute with < 90% accuracy
        raises a RuntimeWarning when it is trained and every time it is loaded.
    """
    from .checkpoints import load_or_train, shortened_note

    p = get_profile(profile)
    config = judge_config(p)
    judge, card = load_or_train(
        JUDGE_CHECKPOINT, config=config, build=_build_judge,
        train=lambda model, resume: train_judge(model, config, resume, p),
        profile=p, retrain=retrain, device=device, verbose=verbose)
    judge.card = card
    metrics = card.get("metrics", {})
    val = {k: v for k, v in metrics.get("val_accuracy", {}).items() if k != "all"}
    if card["source"] != "trained" and (metrics.get("stopped_by") == "time"
                                        or (val and min(val.values()) < 0.9)):
        warnings.warn(f"The judge checkpoint of profile {p.name} was cut short or is weak "
                      f"({metrics.get('steps')} steps, stopped by {metrics.get('stopped_by')}; weakest "
                      f"validation accuracy {min(val.values()) if val else float('nan'):.1%}): its grades "
                      "are not reliable. Retrain it: metrics.load_judge(retrain=True). "
                      + shortened_note(card, JUDGE_CHECKPOINT),
                      RuntimeWarning, stacklevel=2)
    for param in judge.parameters():
        param.requires_grad_(False)
    return judge.eval()


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
        from .data import WorldDataset
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
        "distinct": {free attribute: number of distinct values}}``. All ~0 (and
        1 distinct value) for a constant sampler: mode collapse.
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
        out["distinct"] = {k: int(torch.unique(pred[k]).numel())
                           for k in ("shape", "color", "size", "position") if k not in fixed}
    return out


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
        from . import clip as course_clip
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
    from .runtime import Timer, get_device

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


# ============================================================================ the one call


def evaluation_set(profile=None, n: int | None = None, held_out_share: float = 0.25,
                   seed: int = 0) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The standard prompts every generator is graded on: canonical captions and attributes.

    ``n`` (default: the profile's ``judge.n_eval``) scenes: ``1 - held_out_share`` of them
    from the test split (seen combinations) and the rest from the heldout split.
    Object layout follows the profile's data (two_object_fraction).
    """
    from .data import WorldDataset

    p = get_profile(profile)
    n = p.judge.n_eval if n is None else int(n)
    if n < 2:
        raise ValueError(f"evaluation_set: n must be >= 2, got {n}")
    n_held = int(round(n * held_out_share))
    parts = [WorldDataset("test", n=n - n_held, seed=seed, captions="canonical", profile=p)]
    if n_held:
        parts.append(WorldDataset("heldout", n=n_held, seed=seed, captions="canonical", profile=p))
    attrs = {k: torch.cat([d.attributes[k] for d in parts]) for k in ATTRIBUTES}
    captions = [c for d in parts for c in d.canonical_captions]
    return captions, attrs


def _sample_all(sample_fn, captions: list[str], batch_size: int, *, range_check: bool = True) -> torch.Tensor:
    """Every caption's image from ``sample_fn``, checked.

    The check that tells [0, 1] images from [-1, 1] ones (no value below 0) is made once on
    the whole set, not per chunk: a few samples of one pale caption from a weakly trained
    generator can all be >= 0 and still be [-1, 1] images. ``range_check=False`` skips it
    (the diversity samples, drawn from a sampler whose range the main set already showed).
    """
    out = []
    for s in range(0, len(captions), batch_size):
        chunk = captions[s:s + batch_size]
        with torch.no_grad():
            images = sample_fn(chunk)
        images = check_images(images, "sample_fn(captions)", allow_unit_range=True)
        if len(images) != len(chunk):
            raise ValueError(f"sample_fn returned {len(images)} images for {len(chunk)} captions")
        out.append(images.detach().float().cpu())
    images = torch.cat(out)
    if range_check:
        check_images(images, "sample_fn(captions)")
    return images


def evaluate(sample_fn: Callable, captions: Sequence[str] | None = None, attributes=None, *,
             name: str = "model", judge: Judge | None = None, profile=None, n: int | None = None,
             batch_size: int | None = None, clip_model=None, diversity_prompts: int = 4,
             samples_per_prompt: int = 8, speed: bool = True, real_seed: int = 1) -> Report:
    """Grade a text-to-image sampler with every metric of the course; one call.

    Args:
        sample_fn: ``sample_fn(list of captions) -> images`` (float (B, 3, H, W) in
            [-1, 1] or uint8 (B, H, W, 3)), one image per caption.
        captions, attributes: the prompts and what they ask for. Give both, or only
            ``attributes`` (captions are then the canonical ones), or neither (the
            standard :func:`evaluation_set` of the profile, seen and held-out).
        name: the row name in the report (e.g. "GAN").
        judge: default :func:`load_judge` of the profile.
        profile: a Profile, a name or None (the active profile).
        n: number of prompts of the standard set (default ``judge.n_eval``).
        batch_size: captions per ``sample_fn`` call (default ``data.batch_size``).
        clip_model: a CLIP (``encode_image``/``encode_text``) for the CLIP score; None skips it.
        diversity_prompts, samples_per_prompt: diversity is measured on this many of
            the prompts, each sampled this many times (0 skips it).
        speed: time ``sample_fn`` (:func:`images_per_second`) at ``batch_size``.
        real_seed: seed of the real reference images (rendered for the same attributes).

    Returns:
        a :class:`Report` with one row ``name``; its columns: alignment ("all right"
        and per attribute, seen and held-out), "FD" (to fresh real renderings of the same
        prompts; only when every prompt names shape, colour, size and position or a
        relation) and "FD floor" (two real renderings of them), "diversity pixel" /
        "diversity feature" (mean over the diversity prompts) with "diversity feature
        (real)" for reference, "CLIP score" (with ``clip_model``), "sampling s" (time
        to sample all prompts) and "images/s" (with ``speed``).

    Raises:
        ValueError: captions without attributes; a sampler returning the wrong number of
            images, values outside [-1, 1], or images of another size than the judge's.
    """
    p = get_profile(profile)
    if judge is None:
        judge = load_judge(p)
    batch_size = int(batch_size or p.data.batch_size)
    if captions is not None and attributes is None:
        raise ValueError("evaluate: the judge needs to know what each caption asks for; pass "
                         "attributes= as well (build captions from attributes with "
                         "course_lib.data.caption_for), or pass only attributes.")
    if attributes is None:
        captions, attrs = evaluation_set(p, n)
    else:
        attrs = as_attributes(attributes)
        if captions is None:
            captions = [canonical_caption({k: int(v[i]) for k, v in attrs.items()})
                        for i in range(len(attrs["shape"]))]
    captions = list(captions)
    attrs = as_attributes(attrs, len(captions))

    t0 = time.perf_counter()
    fake = _sample_all(sample_fn, captions, batch_size)
    sampling_s = time.perf_counter() - t0
    row: dict[str, float] = {}
    align = alignment(fake, attrs, judge)
    for group in ("seen", "held-out"):
        if group in align:
            row[f"all right ({group})"] = align[group]["all"]
    for group in ("seen", "held-out"):
        for key in ATTRIBUTES:
            if key in align.get(group, {}):
                row[f"{key} ({group})"] = align[group][key]

    # the real reference: fresh renderings of exactly the same prompts
    complete = (all(bool((attrs[k] >= 0).all()) for k in ("shape", "color", "size"))
                and bool(((attrs["position"] >= 0) | (attrs["relation"] >= 0)).all()))
    if complete:
        real = to_float(render_attributes(attrs, image_size=fake.shape[-1], seed=real_seed))
        row["FD"] = frechet_distance(real, fake, judge)
        floor = fd_noise_floor(judge, attrs, repeats=1, profile=p, seed=real_seed + 10)
        row["FD floor"] = floor["mean"]
    else:
        warnings.warn("evaluate: some prompts leave shape, colour, size or position open, so no "
                      "real reference images can be rendered for them: FD is left out.", stacklevel=2)

    if diversity_prompts and samples_per_prompt >= 2:
        order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))
        div_pix, div_feat, real_feat = [], [], []
        for i in order[:diversity_prompts].tolist():
            rep = {k: v[i].repeat(samples_per_prompt) for k, v in attrs.items()}
            same = _sample_all(sample_fn, [captions[i]] * samples_per_prompt, batch_size, range_check=False)
            d = diversity(same, judge)
            div_pix.append(d["pixel"])
            div_feat.append(d["feature"])
            ref = render_attributes(rep, image_size=same.shape[-1], seed=real_seed + i)
            real_feat.append(diversity(ref, judge)["feature"])
        row["diversity pixel"] = float(np.mean(div_pix))
        row["diversity feature"] = float(np.mean(div_feat))
        row["diversity feature (real)"] = float(np.mean(real_feat))

    if clip_model is not None:
        row["CLIP score"] = clip_score(clip_model, fake, captions)

    row["sampling s"] = sampling_s
    if speed:
        row["images/s"] = images_per_second(sample_fn, min(batch_size, len(captions)),
                                            captions[:batch_size], warmup=1, repeats=3)["images_per_s"]
    return Report({name: row})


class Report:
    """A small table of metrics: one row per model, one column per metric.

    ``report.rows`` is a plain dict ``{model: {metric: value}}``; ``report[model]``
    one row. Combine reports with ``a | b`` (or :meth:`merge`) for the comparison
    notebook; show one with ``print(report)`` or ``report.to_markdown()``. In a
    notebook, a report at the end of a cell renders as a table. (pandas is not a
    dependency of the course; ``pandas.DataFrame(report.rows).T`` works if you have it.)
    """

    def __init__(self, rows: Mapping[str, Mapping[str, float]] | None = None):
        self.rows: dict[str, dict[str, float]] = {str(k): dict(v) for k, v in (rows or {}).items()}

    def __getitem__(self, name: str) -> dict[str, float]:
        return self.rows[name]

    def __len__(self) -> int:
        return len(self.rows)

    def __or__(self, other: Report) -> Report:
        return self.merge(other)

    def merge(self, *others: Report) -> Report:
        """A new report with the rows of this one and of ``others`` (later rows win)."""
        rows = dict(self.rows)
        for other in others:
            rows.update(other.rows)
        return Report(rows)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows.values():
            cols += [c for c in row if c not in cols]
        return cols

    def to_markdown(self, columns: Sequence[str] | None = None, digits: int = 3,
                    transpose: bool | None = None) -> str:
        """A Markdown table.

        Args:
            columns: metrics to show (default all, in first-seen order).
            digits: significant digits.
            transpose: metrics as rows and models as columns (default: when there are
                more metrics than models, which keeps a one-model report readable).
        """
        cols = list(columns) if columns is not None else self.columns
        names = list(self.rows)
        if transpose is None:
            transpose = len(cols) > len(names)

        def fmt(v):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            if isinstance(v, float):
                return f"{v:.{digits}g}"
            return str(v)

        if transpose:
            header, body = ["metric", *names], [[c, *[fmt(self.rows[m].get(c)) for m in names]]
                                               for c in cols]
        else:
            header, body = ["model", *cols], [[m, *[fmt(self.rows[m].get(c)) for c in cols]]
                                             for m in names]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"Report({len(self.rows)} rows x {len(self.columns)} metrics)\n{self.to_markdown()}"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


# The training command (python -m course_lib.train) finds this model here.
from . import registry as _registry
_registry.register("judge", load_judge, section="judge")
