"""The course CLIP itself: sizes from the profile, the open_clip model, the contrastive
loss and its training through the course's one loop (``load_or_train_clip``).
Taught in notebook 01, sections 2-4.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import open_clip
import torch
from torch import nn

from .. import checkpoints
from ..profiles import Profile, get_profile
from ..runtime import renamed
from ..text import tokenize
from ..training import History, Method, fit
from .embed import encode_image, encode_text

__all__ = [
    "VOCAB_SIZE", "TWO_OBJECT_FRACTION", "clip_config", "build_clip", "parameter_counts", "count_parameters",
    "clip_loss", "similarity", "ClipMethod", "training_data", "train_clip", "load_or_train_clip",
]


# =============================================================================
# 1. Config and build
# =============================================================================

#: open_clip's byte-pair vocabulary (49,152 merges + bytes + start/end markers).
#: The course keeps it whole, so the course model can read any text a real CLIP can.
VOCAB_SIZE = 49408

#: Share of two-object scenes ("a red circle to the left of a blue square") in
#: CLIP's training data. Without any, the model never sees two objects and the
#: attribute-binding test of notebook 01 only measures a guess; with a quarter
#: it learns relation captions while three quarters of its steps still serve the
#: single-object targets (measured in notebook 01, section "Limits").
TWO_OBJECT_FRACTION = 0.25

#: Every image is mapped from the course's [-1, 1] to [0, 1] and then normalised
#: with the model's mean and std. Mean = std = 0.5 makes that the identity for the
#: course model, while a pretrained model gets its own statistics (ImageNet-like).
_COURSE_PREPROCESS = {"size": 32, "mode": "RGB", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                      "interpolation": "bilinear", "resize_mode": "squash", "fill_color": 0}


def clip_config(profile: Profile | str | None = None, *, image_size: int | None = None,
                two_object_fraction: float | None = None) -> dict:
    """The course CLIP's config, in open_clip's own format, plus how it is trained.

    Args:
        profile: a Profile, a profile name, or None for the active profile.
            Sizes come from ``profile.clip`` (``ClipSizes``) and the image side from
            ``profile.data.image_size``.
        image_size: override the image side (pixels); must be a multiple of the patch size.
        two_object_fraction: override :data:`TWO_OBJECT_FRACTION` for training.

    Returns:
        ``{"embed_dim", "vision_cfg", "text_cfg", "training"}``. The first three are
        exactly what ``open_clip.CLIP(**...)`` and open_clip's JSON model configs take;
        ``"training"`` records the training recipe, so that a checkpoint trained with
        another recipe is not silently reused (``load_or_train`` compares configs).
    """
    p = get_profile(profile)
    c = p.clip
    size = int(image_size or p.data.image_size)
    for what, width, heads in (("vision", c.vision_width, c.vision_heads),
                               ("text", c.text_width, c.text_heads)):
        if width % heads:
            raise ValueError(f"ClipSizes: {what}_width={width} is not divisible by "
                             f"{what}_heads={heads}; pick sizes where it is.")
    if size % c.patch_size:
        raise ValueError(f"image_size={size} is not a multiple of patch_size={c.patch_size}.")
    fraction = TWO_OBJECT_FRACTION if two_object_fraction is None else float(two_object_fraction)
    return {
        "embed_dim": c.embed_dim,
        "vision_cfg": {"image_size": size, "patch_size": c.patch_size, "width": c.vision_width,
                       "layers": c.vision_layers, "head_width": c.vision_width // c.vision_heads},
        "text_cfg": {"context_length": c.context_length, "vocab_size": VOCAB_SIZE,
                     "width": c.text_width, "heads": c.text_heads, "layers": c.text_layers},
        "training": {"steps": c.steps, "batch_size": c.batch_size, "lr": c.lr,
                     "warmup_steps": c.warmup_steps, "n_train": p.data.n_train,
                     "two_object_fraction": fraction, "captions": "random", "seed": p.seed},
    }


def build_clip(config: Mapping) -> open_clip.CLIP:
    """An untrained ``open_clip.CLIP`` from a config (see :func:`clip_config`).

    Args:
        config: ``{"embed_dim", "vision_cfg", "text_cfg", ...}``; other keys
            (``"training"``) are ignored.

    Returns:
        The model, in eval mode, with the course's image preprocessing recorded on
        it (``model.visual.preprocess_cfg``: images in [-1, 1]).
    """
    model = open_clip.CLIP(embed_dim=int(config["embed_dim"]),
                           vision_cfg=dict(config["vision_cfg"]), text_cfg=dict(config["text_cfg"]))
    size = config["vision_cfg"].get("image_size", 32)
    open_clip.set_model_preprocess_cfg(model, {**_COURSE_PREPROCESS, "size": size})
    return model.eval()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per part: ``image`` tower, ``text`` tower (with its token table), ``total``
    (a dict, like ``galip.parameter_counts``; ``training.count_parameters`` is one number)."""
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"image": image, "text": total - image - model.logit_scale.numel(), "total": total}


count_parameters = renamed(parameter_counts, "clip.count_parameters")


# =============================================================================
# 3. The contrastive loss
# =============================================================================

_CLIP_LOSS = open_clip.ClipLoss()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, computed by ``open_clip.ClipLoss``.

    Args:
        image_features, text_features: ``(B, D)``, L2-normalised; row i of each is a pair.
        logit_scale: the *multiplier* of the cosine similarities (``model.logit_scale.exp()``,
            i.e. 1 / temperature).

    Returns:
        The mean of cross-entropy over rows (image -> its caption) and over
        columns (caption -> its image), a scalar.
    """
    return _CLIP_LOSS(image_features, text_features, logit_scale)


def similarity(model: nn.Module, images, captions, *, scaled: bool = False) -> torch.Tensor:
    """Cosine similarities ``(N_images, N_captions)`` between images and captions.

    Args:
        model: a CLIP (the course's or a pretrained one).
        images: float ``(N, 3, H, W)`` in [-1, 1] (or uint8 ``(N, H, W, 3)``).
        captions: list of str.
        scaled: multiply by the learned ``logit_scale.exp()`` (the loss's logits).
    """
    sims = encode_image(model, images) @ encode_text(model, captions).T
    return sims * model.logit_scale.exp().detach() if scaled else sims


# =============================================================================
# 4. Training
# =============================================================================

#: Largest allowed logit scale, as in CLIP: exp(logit_scale) <= 100 (temperature >= 0.01).
MAX_LOGIT_SCALE = math.log(100.0)


class ClipMethod(Method):
    """One CLIP training step for ``course_lib.training.fit``.

    A step encodes a batch of images and their captions, computes the contrastive
    loss and takes one AdamW step. After it the learnable ``logit_scale`` is clamped
    to ``[0, log 100]`` as in CLIP: without the clamp it keeps growing (a sharper
    softmax always lowers the loss on a batch it already sorts right) until the
    logits overflow.

    The learning rate warms up linearly for ``warmup_steps`` and then follows a
    cosine to 0. Its clock is the larger of ``step / steps`` and
    ``elapsed / max_seconds``, so a run that the time budget stops early still
    ends with a small learning rate (on a busy machine too).

    Args:
        model: an ``open_clip.CLIP``.
        steps: steps planned. lr: peak learning rate. warmup_steps: linear warm-up.
        max_seconds: the time budget ``fit`` gets (None: steps only).
        weight_decay: AdamW decay of matrices (not of gains, biases, embeddings, logit_scale).
        freeze_logit_scale: a fixed multiplier (e.g. ``1.0`` or ``100.0``) instead of a
            learned one: the temperature experiment of notebook 01.
        context_length: tokens per caption (default: the model's).

    Batches are ``(images, captions, ...)`` as ``course_lib.data.make_loader`` gives them.
    """

    def __init__(self, model: open_clip.CLIP, *, steps: int, lr: float = 1e-3,
                 warmup_steps: int = 50, max_seconds: float | None = None,
                 weight_decay: float = 0.1, freeze_logit_scale: float | None = None,
                 context_length: int | None = None):
        self.models = {"clip": model}
        if freeze_logit_scale is not None:
            if freeze_logit_scale <= 0:
                raise ValueError(f"freeze_logit_scale={freeze_logit_scale}: use a positive multiplier.")
            with torch.no_grad():
                model.logit_scale.fill_(math.log(freeze_logit_scale))
            model.logit_scale.requires_grad_(False)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            flat = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "class_embedding" in name
            (no_decay if flat else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        try:   # the fused kernel is ~10x faster on a CPU: the 49,408-row token table is most weights
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
        except (RuntimeError, TypeError, ValueError):
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
        self.optimizers = {"clip": optimizer}
        self.schedulers = {}
        self.steps, self.lr, self.warmup_steps = int(steps), float(lr), int(warmup_steps)
        self.max_seconds = max_seconds
        self.context_length = int(context_length or model.context_length)
        self.freeze_logit_scale = freeze_logit_scale
        self._t0: float | None = None
        #: ``(step, logit_scale.exp())`` every 10 steps: how the temperature evolved.
        self.scale_history: list[tuple[int, float]] = []

    def learning_rate(self, step: int) -> float:
        """The learning rate at ``step`` (warm-up, then a step- or time-clocked cosine)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        if self.max_seconds and self._t0 is not None:
            progress = max(progress, (time.perf_counter() - self._t0) / self.max_seconds)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def training_step(self, batch, ctx) -> dict:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        images, captions = batch[0], batch[1]
        tokens = tokenize(captions, self.context_length).to(ctx.device)
        for group in self.optimizers["clip"].param_groups:
            group["lr"] = self.learning_rate(ctx.step)
        model = self.models["clip"]
        image_features, text_features, scale = model(images, tokens)[:3]
        loss = clip_loss(image_features, text_features, scale)
        ctx.optimize("clip", loss)
        core = ctx.accelerator.unwrap_model(model) if ctx.accelerator is not None else model
        with torch.no_grad():
            core.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        if ctx.step % 10 == 0:
            self.scale_history.append((ctx.step, float(core.logit_scale.detach().exp())))
        return {"loss": loss}


def training_data(config: Mapping, profile: Profile | str | None = None, seed: int | None = None):
    """The world's train split as CLIP batches ``(images, captions, attributes)``.

    Args:
        config: :func:`clip_config` (its ``"training"`` part: ``n_train``, ``batch_size``,
            ``two_object_fraction``, caption mode; its image size).
        profile: a Profile, a name or None (active). seed: default ``profile.seed``.

    Returns:
        a ``DataLoader`` from ``course_lib.data.make_loader`` (random captions: a new
        template and synonyms every time an image is drawn).
    """
    from ..data import WorldDataset, make_loader

    profile = get_profile(profile)
    seed = profile.seed if seed is None else seed

    t = config["training"]
    train = WorldDataset("train", n=t["n_train"], image_size=config["vision_cfg"]["image_size"],
                         captions=t.get("captions", "random"),
                         two_object_fraction=t["two_object_fraction"], profile=profile)
    return make_loader(train, batch_size=t["batch_size"], seed=seed, profile=profile)


def train_clip(model: open_clip.CLIP, *, config: Mapping | None = None,
               profile: Profile | str | None = None, data=None, steps: int | None = None,
               max_minutes: float | None = None, resume_path: str | Path | None = None,
               plot: bool | float | None = None, freeze_logit_scale: float | None = None,
               desc: str = "CLIP", seed: int | None = None) -> tuple[History, ClipMethod]:
    """Train a CLIP in place on the generated world, through ``course_lib.training.fit``.

    Args:
        model: an ``open_clip.CLIP`` (e.g. from :func:`build_clip`).
        config: the recipe (:func:`clip_config`); default from ``profile``.
        profile: a Profile, a name, or None (active). Gives ``max_minutes``,
            the live-plot interval and, without ``config``, every size.
        data: batches ``(images, captions, ...)``; default: the profile's train
            split of the world with random captions and ``config``'s share of
            two-object scenes, through ``make_loader``.
        steps, max_minutes: override the recipe's steps and the profile's time budget.
        resume_path: where ``fit`` keeps resumable state (None: no checkpoints).
        plot: live loss plot (default: every ``profile.plot_every_s`` seconds).
        freeze_logit_scale: train with a fixed logit multiplier (see :class:`ClipMethod`).
        desc: progress-bar label. seed: default ``profile.seed``.

    Returns:
        ``(history, method)``; ``history.step``, ``.seconds`` and ``.stopped_by``
        say how it went; ``method.scale_history`` holds the learned temperature.
    """
    p = get_profile(profile)
    config = dict(config or clip_config(p))
    t = config["training"]
    seed = p.seed if seed is None else seed
    steps = int(t["steps"] if steps is None else steps)
    minutes = p.clip.max_minutes if max_minutes is None else max_minutes
    max_seconds = None if minutes is None else 60.0 * float(minutes)
    if data is None:
        data = training_data(config, p, seed)
    method = ClipMethod(model, steps=steps, lr=t["lr"], warmup_steps=t["warmup_steps"],
                        max_seconds=max_seconds, freeze_logit_scale=freeze_logit_scale)
    history = fit(method, data, steps=steps, max_seconds=max_seconds, resume_path=resume_path,
                  plot=p.plot_every_s if plot is None else plot, desc=desc, seed=seed,
                  card={"config": config})
    model.eval()
    return history, method


def load_or_train_clip(profile: Profile | str | None = None, *, name: str = "clip",
                       retrain: bool = False, config: Mapping | None = None,
                       device: str | torch.device | None = None,
                       verbose: bool = True) -> tuple[open_clip.CLIP, dict]:
    """The trained course CLIP: loaded from its checkpoint, or trained and saved.

    Uses ``course_lib.checkpoints.load_or_train``: a local checkpoint of this
    profile (``data/checkpoints/<profile>/<name>.safetensors``) with the same
    config is loaded; else a shipped one (instructor-trained) if the profile
    allows; else the model is trained (:func:`train_clip`) and saved.

    Args:
        profile: a Profile, a name, or None (active).
        name: checkpoint name. retrain: train even if a checkpoint exists.
        config: default :func:`clip_config` of the profile.
        device: where the returned model lives (default: the course device).

    Returns:
        ``(model, card)``: an ``open_clip.CLIP`` in eval mode and its checkpoint card
        (``card["source"]``: "loaded", "shipped" or "trained"; ``card["metrics"]``
        holds the training steps, minutes, seconds per step, final loss, and the
        loss and temperature curves, so they can be drawn after a load too).
    """
    p = get_profile(profile)
    config = dict(config or clip_config(p))

    def train(model, resume_path):
        history, method = train_clip(model, config=config, profile=p, resume_path=resume_path)
        return {**history.summary(),
                "budget_minutes": history.budget_seconds / 60.0,   # this run's share of max_minutes
                "final_loss": history.last("loss", 5),
                "loss_history": history.losses["loss"], "scale_history": method.scale_history}

    return checkpoints.load_or_train(name, config=config, build=build_clip, train=train,
                                     profile=p, retrain=retrain, device=device, verbose=verbose)


