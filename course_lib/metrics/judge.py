"""The judge: a small CNN with one head per attribute, trained on real images of every
combination (held-out ones included: it is the grader, not a student) with augmentations
that mimic how generators err. ``load_judge`` trains it once per profile.
Taught in notebook 02, section 1.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..data.world import (
    ATTRIBUTES,
    NUM_CLASSES,
    to_float,
)
from ..profiles import get_profile
from ..training import Method, fit
from .inputs import (
    FEATURE_DIM,
    JUDGE_CHECKPOINT,
    JUDGE_RECIPE,
    JUDGE_TWO_OBJECT_FRACTION,
    _check_images,
    canonical_order,
)
from .measures import judge_accuracy

__all__ = [
    "Judge", "JudgeTraining", "judge_loader", "judge_config", "train_judge", "load_judge",
    "load_or_train_judge",
    "augment",
]


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
    from ..data import batch_loader

    images, targets = dataset.images, _targets(dataset.attributes)
    return batch_loader(lambda i: (images[i], targets[i]), len(images), batch_size, seed)


def train_judge(judge: Judge, config: Mapping, resume_path=None, profile=None,
                plot: bool = True):
    """Train ``judge`` in place with ``config`` (see :func:`judge_config`); returns
    ``(history, method)``, the validation accuracy in ``history.measured["val_accuracy"]``.

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
    from ..data import WorldDataset

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
    history.measured["val_accuracy"] = acc
    return history, method


def load_or_train_judge(profile=None, *, retrain: bool = False, device=None, verbose: bool = True,
                        **changes) -> tuple[Judge, dict]:
    """The judge of a profile: loaded from its checkpoint, or trained (minutes) and saved.

    The loading half of the generator contract (``course_lib.conditioning``): returns
    ``(judge, card)`` like every ``load_or_train_<name>``.

    Args:
        profile: a Profile, a profile name or None (the active profile).
        retrain: train again even if a checkpoint exists.
        device: where the judge lives (default: course_lib.runtime.get_device()).
        verbose: print where it came from.
        changes: fields of the profile's ``judge`` section (e.g. ``steps=2000``); a changed
            judge gets its own checkpoint name.

    Returns:
        ``(judge, card)``: the :class:`Judge` in eval mode with frozen weights (also
        ``judge.card``) and its checkpoint card (config, training time, validation accuracy).
        A judge that was cut short by its time budget (a busy CPU) or reads some attribute
        with < 90% accuracy raises a RuntimeWarning when it is trained and every time it is
        loaded.
    """
    from ..checkpoints import load_or_train, shortened_note, variant_name

    p = get_profile(profile)
    if changes:
        p = p.replace(judge=changes)
    config = judge_config(p)
    name = variant_name(JUDGE_CHECKPOINT, changes)
    judge, card = load_or_train(
        name, config=config, build=_build_judge,
        train=lambda model, resume: train_judge(model, config, resume, p)[0].summary(),
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
                      + shortened_note(card, name),
                      RuntimeWarning, stacklevel=3)
    for param in judge.parameters():
        param.requires_grad_(False)
    return judge.eval(), card


def load_judge(profile=None, *, retrain: bool = False, device=None, verbose: bool = True,
               **changes) -> Judge:
    """The judge alone (what every grading call needs): :func:`load_or_train_judge`'s model,
    with its card at ``judge.card``."""
    judge, _card = load_or_train_judge(profile, retrain=retrain, device=device, verbose=verbose, **changes)
    return judge
