"""The course's CLIP: a contrastive image-text embedding, built with open_clip.

CLIP (Radford et al., 2021) trains two encoders side by side, one for images and
one for captions, so that an image and its caption land close together on the
unit sphere and mismatched pairs land far apart. Every later generator of the
course conditions on this embedding, so this module also gives them a frozen
text encoder.

The model *is* an ``open_clip.CLIP`` (a small ViT image tower and a causal text
transformer), the tokenizer is open_clip's byte-pair ``SimpleTokenizer`` (it works
offline), the loss is ``open_clip.ClipLoss``. This module only chooses sizes,
checks inputs, trains through the course's one loop and measures the result.

Read top-down:

1. Config and build: :func:`clip_config` (sizes from the profile) ->
   :func:`build_clip` (an ``open_clip.CLIP``).
2. Tokenizing with clear errors: :func:`tokenize`, :func:`count_tokens`,
   :class:`CaptionError`.
3. The contrastive loss: :func:`clip_loss` (``open_clip.ClipLoss``),
   :func:`similarity`.
4. Training: :class:`ClipMethod` (a ``course_lib.training.Method``),
   :func:`train_clip`, :func:`load_or_train_clip`.
5. Embeddings: :func:`encode_text`, :func:`encode_image` (both L2-normalised).
6. Measuring: zero-shot classification with prompt strategies
   (:func:`attribute_prompts`, :func:`zero_shot_classify`, :func:`evaluate_zero_shot`),
   :func:`confusion_matrix`, :func:`retrieval_recall`, and the limits
   (:func:`swapped_captions`, :func:`caption_preference`).
7. Real weights: :func:`load_pretrained` (a local file first; by name only when
   online), :func:`save_open_clip_dir`.
8. For the generators: :class:`FrozenTextEncoder` (captions -> pooled embedding,
   captions -> per-token hidden states + mask) and :func:`image_intermediates`
   (the image tower's layer features through open_clip's ``forward_intermediates``).

Captions that are too long
--------------------------
A caption longer than the text encoder's context (``ClipSizes.context_length``
tokens, start and end markers included) is an error (:class:`CaptionError`) that
says how many tokens it has and how many fit. open_clip itself would silently cut
it, and a cut caption means something else ("a red circle to the left of a blue
square" cut after "left of" has lost its second object): a generator would then
draw the wrong thing without any sign why. Pass ``truncate=True`` to cut on
purpose; that warns once per call.

Non-ASCII text
--------------
open_clip's tokenizer works on UTF-8 bytes, so any text can be tokenized
("a café-coloured círcle 🙂" works). A character outside the course's world
costs several tokens and means nothing to a model trained on that world's
English captions; a pretrained open_clip model knows many of them.

Explained in notebook 01 (``notebooks/01_clip_contrastive_embedding.ipynb``).
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import re
import socket
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints
from .images import check_images
from .profiles import Profile, get_profile
from .training import History, Method, fit

__all__ = [
    # 1. config and build
    "VOCAB_SIZE", "TWO_OBJECT_FRACTION", "clip_config", "build_clip", "count_parameters",
    # 2. tokenizer
    "CaptionError", "get_tokenizer", "tokenize", "count_tokens",
    # 3. loss
    "clip_loss", "similarity",
    # 4. training
    "ClipMethod", "training_data", "train_clip", "load_or_train_clip",
    # 5. embeddings
    "encode_text", "encode_image",
    # 6. measuring
    "EVAL_ATTRIBUTES", "PROMPT_STRATEGIES", "all_captions", "caption_bank", "attribute_prompts",
    "zero_shot_classify", "evaluate_zero_shot", "ZeroShotResult", "confusion_matrix",
    "retrieval_recall", "swapped_captions", "caption_preference",
    # 7. real weights
    "PretrainedUnavailableError", "downloads_allowed", "load_pretrained", "save_open_clip_dir",
    # 8. for the generators
    "FrozenTextEncoder", "image_intermediates", "to_model_input",
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


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per part: ``image`` tower, ``text`` tower (with its token table), ``total``."""
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"image": image, "text": total - image - model.logit_scale.numel(), "total": total}


# =============================================================================
# 2. Tokenizing, with clear errors
# =============================================================================


class CaptionError(ValueError):
    """A caption the text encoder cannot read as asked: empty, or longer than its context."""


@functools.lru_cache(maxsize=8)
def get_tokenizer(context_length: int = 32) -> open_clip.SimpleTokenizer:
    """open_clip's byte-pair tokenizer (the one OpenAI's CLIP uses), offline.

    Args:
        context_length: tokens per caption, start and end markers included.
    """
    return open_clip.SimpleTokenizer(context_length=int(context_length))


#: Tokenizers of loaded pretrained models that use another one (e.g. SigLIP's).
_MODEL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tokenizer_for(model: nn.Module):
    tok = _MODEL_TOKENIZERS.get(model)
    return tok if tok is not None else get_tokenizer(model.context_length)


def _as_caption_list(captions) -> list[str]:
    """One caption or a list (any iterable) of them, as a list of str; else a clear error."""
    if isinstance(captions, str):
        return [captions]
    if isinstance(captions, (bytes, bytearray)):
        raise TypeError(f"The captions are bytes ({captions[:40]!r}), not text: decode them first, "
                        "e.g. captions.decode('utf-8').")
    if isinstance(captions, Mapping):
        raise TypeError("The captions are a dict: pass a list of strings, e.g. list(d.values()) "
                        "(a dict would be read by its keys).")
    if isinstance(captions, torch.Tensor) or not isinstance(captions, Iterable):
        raise TypeError(f"Expected a caption (str) or a list of captions, not a "
                        f"{type(captions).__name__} ({captions!r}).")
    captions = list(captions)
    if not captions:
        raise CaptionError("No captions were given (an empty list). Pass at least one caption.")
    for i, text in enumerate(captions):
        if isinstance(text, (bytes, bytearray)):
            raise TypeError(f"Caption {i} is bytes ({text!r}), not text: decode it first, "
                            "e.g. text.decode('utf-8').")
        if not isinstance(text, str):
            raise TypeError(f"Caption {i} is a {type(text).__name__} ({text!r}), not a str.")
    return captions


def count_tokens(captions: str | Sequence[str], context_length: int = 32) -> list[int]:
    """Tokens each caption needs, start and end markers included.

    Args:
        captions: one caption or a list.
        context_length: only selects the (cached) tokenizer; nothing is cut.
    """
    tok = get_tokenizer(context_length)
    return [len(tok.encode(text)) + 2 for text in _as_caption_list(captions)]


def tokenize(captions: str | Sequence[str], context_length: int = 32, *, truncate: bool = False,
             tokenizer=None) -> torch.Tensor:
    """Captions -> token ids ``(N, context_length)``, padded with 0, checked first.

    Args:
        captions: one caption or a list of them. Text is lower-cased and cleaned
            the way open_clip does (``ftfy``, whitespace); any Unicode is accepted.
        context_length: tokens the text encoder reads (its ``model.context_length``).
        truncate: cut over-long captions (with a warning) instead of raising.
        tokenizer: another open_clip tokenizer (a pretrained model's); default
            open_clip's ``SimpleTokenizer``.

    Raises:
        CaptionError: a caption is empty or only spaces; a caption has more tokens
            than ``context_length`` (unless ``truncate``). The message names the
            caption, its token count and the limit.
        TypeError: a caption is not a str.
    """
    captions = _as_caption_list(captions)
    context_length = int(context_length)
    simple = tokenizer is None or isinstance(tokenizer, open_clip.SimpleTokenizer)
    tok = get_tokenizer(context_length) if tokenizer is None else tokenizer
    too_long = []
    for i, text in enumerate(captions):
        n = len(tok.encode(text)) if simple else None
        if not text.strip() or n == 0:
            raise CaptionError(f"Caption {i} ({text!r}) is empty or only spaces: the text encoder "
                               "needs at least one word, e.g. 'a red circle'.")
        if simple and n + 2 > context_length:
            too_long.append((i, text, n + 2))
    if too_long:
        i, text, n = too_long[0]
        more = f" ({len(too_long)} captions are too long; this is the first)" if len(too_long) > 1 else ""
        message = (f"Caption {i} has {n} tokens (start and end markers included) but the text "
                   f"encoder reads at most {context_length}{more}: {text!r}. Shorten it by "
                   f"{n - context_length} tokens (a word is usually one token), "
                   "or pass truncate=True to cut it.")
        if not truncate:
            raise CaptionError(message)
        warnings.warn("Cutting over-long captions. " + message, stacklevel=2)
    if simple:
        return tok(captions, context_length=context_length)
    return tok(captions)


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
    from .data import WorldDataset, make_loader

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
        return {"steps": history.step, "train_minutes": history.seconds / 60.0,
                "budget_minutes": history.budget_seconds / 60.0,   # this run's share of max_minutes
                "stopped_by": history.stopped_by, "final_loss": history.last("loss", 5),
                "seconds_per_step": history.seconds / max(1, history.step),
                "loss_history": history.losses["loss"], "scale_history": method.scale_history}

    return checkpoints.load_or_train(name, config=config, build=build_clip, train=train,
                                     profile=p, retrain=retrain, device=device, verbose=verbose)


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


# =============================================================================
# 6. Measuring what the embedding learned
# =============================================================================

#: The attributes of a single-object scene, in the order the notebooks show them.
EVAL_ATTRIBUTES = ("color", "shape", "size", "position")

#: Ways to turn class names into text for zero-shot classification.
#:
#: * ``"one-word"``: one short prompt per class, e.g. "a red shape", "a star",
#:   "a small shape", "a shape at the top" (the world's ``caption_for`` with only
#:   that attribute).
#: * ``"ensemble"``: CLIP's prompt ensembling: the mean embedding of every full
#:   caption that names the class (for "red": the 50 red attribute combinations,
#:   each written with every one of the world's templates).
#: * ``"full-caption"``: score every full caption (the 300 attribute combinations,
#:   each embedded as the mean over the world's templates), turn the scores into
#:   probabilities with the model's temperature, and add up the probabilities of
#:   the captions that name each class.
PROMPT_STRATEGIES = ("one-word", "ensemble", "full-caption")


def _world():
    from .data import world
    return world


def all_captions() -> tuple[list[str], dict[str, torch.Tensor]]:
    """Every canonical single-object caption (all colour-shape pairs, held-out ones too).

    Returns:
        ``(captions, attributes)``: 300 captions ("a small red circle on the left"...)
        and attribute -> int64 tensor of the codes each caption names.
    """
    w = _world()
    rows = list(itertools.product(range(len(w.SHAPES)), range(len(w.COLORS)),
                                  range(len(w.SIZES)), range(len(w.POSITIONS))))
    captions = [w.caption_for(shape=s, color=c, size=z, position=p) for s, c, z, p in rows]
    codes = torch.tensor(rows, dtype=torch.long)
    attrs = {name: codes[:, i] for i, name in enumerate(("shape", "color", "size", "position"))}
    return captions, attrs


def _template_captions() -> list[list[str]]:
    """Every row of :func:`all_captions`, written with each of the world's templates."""
    w = _world()
    _, attrs = all_captions()
    rows = zip(*(attrs[a].tolist() for a in ("shape", "color", "size", "position")))
    return [[w.caption_for(shape=s, color=c, size=z, position=p, template=t)
             for t in range(len(w.TEMPLATES))] for s, c, z, p in rows]


def caption_bank(model: nn.Module) -> torch.Tensor:
    """Text embeddings of the 300 rows of :func:`all_captions`, ``(300, embed_dim)``.

    Each row is the normalised mean of one attribute combination written with every
    template of the world ("a small red circle at the top", "top: one small red
    circle", ...): prompt ensembling per caption, as CLIP does with its 80 templates.
    Kept per model until its weights change; a long first encoding says how long.
    """
    # changes when the weights do (training, load_state_dict) or move
    version = (str(_device_of(model)), *(p._version for p in model.parameters()))
    cached = _CAPTION_BANKS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    groups = _template_captions()
    emb = encode_text(model, [c for g in groups for c in g])
    bank = F.normalize(emb.reshape(len(groups), len(groups[0]), -1).mean(dim=1), dim=-1)
    _CAPTION_BANKS[model] = (version, bank)
    return bank


#: model -> (its weights' version counters, its caption bank): a cell run again (or another
#: strategy) does not send the 2,400 prompts through a big text tower again.
_CAPTION_BANKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attribute_prompts(attribute: str, strategy: str = "ensemble") -> list[list[str]]:
    """The prompts of each class of ``attribute`` (index = the class code).

    Args:
        attribute: "color", "shape", "size" or "position".
        strategy: "one-word" (one prompt per class) or "ensemble"/"full-caption"
            (every full caption that names the class, in every template).
    """
    w = _world()
    if attribute not in EVAL_ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r}: use one of {', '.join(EVAL_ATTRIBUTES)}.")
    if strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: use one of {', '.join(PROMPT_STRATEGIES)}.")
    values = w.ATTRIBUTE_VALUES[attribute]
    if strategy == "one-word":
        return [[w.caption_for(**{attribute: v})] for v in values]
    _, attrs = all_captions()
    groups = _template_captions()
    return [[c for g, code in zip(groups, attrs[attribute].tolist()) if code == k for c in g]
            for k in range(len(values))]


def _class_scores(model, image_emb, attribute, strategy, prompts=None, bank=None):
    """(N, n_classes) scores of every class for every image embedding."""
    if attribute not in EVAL_ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r}: use one of {', '.join(EVAL_ATTRIBUTES)}.")
    if prompts is None and strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: use one of {', '.join(PROMPT_STRATEGIES)}.")
    n = len(_world().ATTRIBUTE_VALUES[attribute])
    if prompts is not None or strategy == "one-word":
        prompts = prompts if prompts is not None else attribute_prompts(attribute, strategy)
        flat = [p for group in prompts for p in group]
        emb = encode_text(model, flat)
        owner = torch.tensor([k for k, group in enumerate(prompts) for _ in group], device=emb.device)
        centres = torch.zeros(len(prompts), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
        return image_emb @ F.normalize(centres, dim=-1).T
    _, attrs = all_captions()
    bank = caption_bank(model) if bank is None else bank
    owner = attrs[attribute].to(bank.device)
    if strategy == "ensemble":
        centres = torch.zeros(n, bank.shape[1], device=bank.device).index_add_(0, owner, bank)
        return image_emb @ F.normalize(centres, dim=-1).T
    probs = (model.logit_scale.exp().detach() * image_emb @ bank.T).softmax(dim=-1)
    return torch.zeros(len(probs), n, device=probs.device).index_add_(1, owner, probs)


def zero_shot_classify(model: nn.Module, images, attribute: str, strategy: str = "full-caption",
                       *, prompts: Sequence[Sequence[str]] | None = None,
                       image_emb: torch.Tensor | None = None) -> torch.Tensor:
    """Predict one attribute of each image from text prompts alone (no classifier trained).

    Args:
        model: a CLIP. images: float ``(N, 3, H, W)`` in [-1, 1] (ignored if ``image_emb``).
        attribute: "color", "shape", "size" or "position".
        strategy: one of :data:`PROMPT_STRATEGIES`.
        prompts: your own prompts per class (a list per class code); their mean
            embedding is each class's (overrides ``strategy``).
        image_emb: precomputed :func:`encode_image` output, to save time.

    Returns:
        int64 tensor ``(N,)`` of predicted class codes.
    """
    if image_emb is None:
        image_emb = encode_image(model, images)
    with torch.no_grad():
        return _class_scores(model, image_emb, attribute, strategy, prompts).argmax(dim=-1).cpu()


@dataclass
class ZeroShotResult:
    """Zero-shot predictions and accuracies per strategy and attribute."""
    #: strategy -> attribute -> accuracy in [0, 1]
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    #: strategy -> attribute -> predicted codes (N,)
    predictions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: attribute -> true codes (N,)
    truth: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean_accuracy(self, strategy: str) -> float:
        """Accuracy of one strategy averaged over the attributes."""
        accs = self.accuracy[strategy]
        return sum(accs.values()) / len(accs)

    def best_strategy(self) -> str:
        """The strategy with the highest accuracy averaged over the attributes."""
        return max(self.accuracy, key=self.mean_accuracy)

    def confusion(self, attribute: str, strategy: str | None = None) -> torch.Tensor:
        """Confusion matrix (rows: true class, columns: predicted) of one attribute."""
        strategy = strategy or self.best_strategy()
        n = len(_world().ATTRIBUTE_VALUES[attribute])
        return confusion_matrix(self.truth[attribute], self.predictions[strategy][attribute], n)

    def table(self) -> str:
        """Accuracies as a small text table (strategies x attributes)."""
        attrs = list(next(iter(self.accuracy.values())))
        lines = [f"{'strategy':14s}" + "".join(f"{a:>10s}" for a in attrs)]
        for s, accs in self.accuracy.items():
            lines.append(f"{s:14s}" + "".join(f"{100 * accs[a]:9.1f}%" for a in attrs))
        return "\n".join(lines)


def evaluate_zero_shot(model: nn.Module, images, attributes: Mapping[str, Any], *,
                       strategies: Sequence[str] = PROMPT_STRATEGIES,
                       attribute_names: Sequence[str] = EVAL_ATTRIBUTES,
                       image_emb: torch.Tensor | None = None) -> ZeroShotResult:
    """Zero-shot accuracy of every strategy on every attribute of single-object images.

    Args:
        model: a CLIP. images: float ``(N, 3, H, W)`` in [-1, 1] (ignored if ``image_emb``).
        attributes: attribute -> true codes (e.g. ``dataset.attributes``); only
            images with ``position >= 0`` (single-object scenes) are scored.
        strategies: subset of :data:`PROMPT_STRATEGIES`.
        attribute_names: which attributes to classify.
        image_emb: precomputed :func:`encode_image` output.
    """
    single = torch.as_tensor(np.asarray(attributes["position"])) >= 0
    if not bool(single.any()):
        raise ValueError("evaluate_zero_shot needs single-object images (position >= 0); "
                         "these are all two-object scenes.")
    if image_emb is None:
        image_emb = encode_image(model, images)
    image_emb = image_emb[single.to(image_emb.device)]
    result = ZeroShotResult()
    result.truth = {a: torch.as_tensor(np.asarray(attributes[a]))[single].long()
                    for a in attribute_names}
    bank = caption_bank(model) if set(strategies) - {"one-word"} else None
    with torch.no_grad():
        for s in strategies:
            result.predictions[s] = {}
            result.accuracy[s] = {}
            for a in attribute_names:
                pred = _class_scores(model, image_emb, a, s, bank=bank).argmax(-1).cpu()
                result.predictions[s][a] = pred
                result.accuracy[s][a] = float((pred == result.truth[a]).float().mean())
    return result


def confusion_matrix(truth, predicted, n_classes: int) -> torch.Tensor:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    truth = torch.as_tensor(np.asarray(truth)).long().reshape(-1)
    predicted = torch.as_tensor(np.asarray(predicted)).long().reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    return torch.bincount(truth * n_classes + predicted, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, ks: Sequence[int] = (1, 5),
                     keys: Sequence | None = None) -> dict[str, float]:
    """Recall@k of retrieval both ways; pair i is (image i, text i).

    Args:
        image_emb, text_emb: ``(N, D)`` normalised embeddings of N pairs.
        ks: the k's to report.
        keys: optional label per pair (e.g. the caption itself); a retrieved item
            counts as right when its key equals the query's (identical captions
            are then not counted as errors). Default: only the pair itself is right.

    Returns:
        ``{"image->text R@1": ..., "text->image R@1": ..., ...}`` in [0, 1].
    """
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb {tuple(image_emb.shape)} and text_emb "
                         f"{tuple(text_emb.shape)} must hold the same pairs")
    n = len(image_emb)
    sims = (image_emb @ text_emb.T).detach().float().cpu()
    if keys is None:
        same = torch.eye(n, dtype=torch.bool)
    else:
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        ids = torch.tensor([index[k] for k in keys])
        same = ids[:, None] == ids[None, :]
    out = {}
    for name, s, right in (("image->text", sims, same), ("text->image", sims.T, same.T)):
        order = s.argsort(dim=1, descending=True)
        hits = torch.gather(right, 1, order)
        for k in ks:
            out[f"{name} R@{k}"] = float(hits[:, :k].any(dim=1).float().mean())
    return out


def swapped_captions(attributes: Mapping[str, Any], kind: str = "colors"
                     ) -> tuple[list[str], list[str], torch.Tensor]:
    """Right and deliberately wrong captions of two-object scenes, to test binding and order.

    Args:
        attributes: attribute -> codes of some images (e.g. ``dataset.attributes``).
        kind: ``"colors"``: swap the two colours ("a red circle left of a blue
            square" -> "a blue circle left of a red square"): the same words, bound
            the other way. ``"objects"``: swap the two objects ("a blue square left of
            a red circle"): the same words in another order, which says the opposite.

    Returns:
        ``(right, wrong, index)``: canonical captions, and the indices of the
        images used (two-object scenes whose swap changes the caption).
    """
    w = _world()
    if kind not in ("colors", "objects"):
        raise ValueError(f"kind={kind!r}: use 'colors' or 'objects'.")
    a = {k: torch.as_tensor(np.asarray(v)).long() for k, v in attributes.items()}
    right, wrong, used = [], [], []
    for i in range(len(a["shape"])):
        row = {k: int(v[i]) for k, v in a.items()}
        if row["relation"] < 0:
            continue
        if kind == "colors":
            swap = {**row, "color": row["color2"], "color2": row["color"]}
        else:
            swap = {**row, "shape": row["shape2"], "color": row["color2"], "size": row["size2"],
                    "shape2": row["shape"], "color2": row["color"], "size2": row["size"]}
        r, s = w.canonical_caption(row), w.canonical_caption(swap)
        if r != s:
            right.append(r)
            wrong.append(s)
            used.append(i)
    return right, wrong, torch.tensor(used, dtype=torch.long)


def caption_preference(model: nn.Module, images, right: Sequence[str], wrong: Sequence[str],
                       *, image_emb: torch.Tensor | None = None) -> float:
    """How often each image is closer to its right caption than to a wrong one.

    Args:
        model: a CLIP. images: ``(N, 3, H, W)`` (ignored if ``image_emb``).
        right, wrong: one caption each per image.
        image_emb: precomputed :func:`encode_image` output.

    Returns:
        The fraction in [0, 1]; 0.5 is a coin toss.
    """
    if len(right) != len(wrong):
        raise ValueError(f"{len(right)} right captions but {len(wrong)} wrong ones")
    if image_emb is None:
        image_emb = encode_image(model, images)
    if len(image_emb) != len(right):
        raise ValueError(f"{len(image_emb)} images but {len(right)} caption pairs")
    with torch.no_grad():
        r = (image_emb * encode_text(model, list(right))).sum(-1)
        s = (image_emb * encode_text(model, list(wrong))).sum(-1)
    return float((r > s).float().mean())


# =============================================================================
# 7. Real weights: load_pretrained
# =============================================================================


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights were asked for by name, but they are not here and we are offline."""


def _online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we reach the model hub? (False when ``HF_HUB_OFFLINE`` is set.)"""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(arch: str, tag: str) -> str | None:
    """The weights file of (arch, tag) if an earlier download left it in the HF cache."""
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, filename = os.path.split(hub)        # "org/name/" -> ("org/name", ""), as open_clip does
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo_id=repo, filename=name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _finish_pretrained(model: nn.Module, tokenizer, device) -> nn.Module:
    if not isinstance(tokenizer, open_clip.SimpleTokenizer):
        _MODEL_TOKENIZERS[model] = tokenizer
    return model.to(device).eval()


def _arch_suggestions(name: str) -> str:
    import difflib

    known = open_clip.list_models()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    examples = close or [m for m in known if m.startswith("ViT-B")][:5]
    return f" ({'close names' if close else 'e.g.'}: {', '.join(examples)})"


def _check_arch(arch) -> None:
    if not isinstance(arch, str) or arch not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture arch={arch!r}"
                         f"{_arch_suggestions(str(arch))}; open_clip.list_models() lists them all.")


def _looks_like_path(source: str) -> bool:
    return (os.sep in source or source.startswith(".") or source.startswith("~")
            or Path(source).suffix in (".safetensors", ".bin", ".pt", ".pth", ".npz"))


def downloads_allowed() -> bool:
    """Whether the learner asked for downloads (``COURSE_ALLOW_DOWNLOADS=1``).

    The course never downloads on its own: a named pretrained model is fetched only
    when this is set or ``load_pretrained(..., download=True)`` is passed.
    """
    return os.environ.get("COURSE_ALLOW_DOWNLOADS", "").strip().lower() in ("1", "true", "yes", "on")


def load_pretrained(source: str | os.PathLike, *, arch: str | None = None, tag: str | None = None,
                    device: str | torch.device | None = None, missing_ok: bool = False,
                    download: bool | None = None):
    """A CLIP from a local file or folder, or (when online) an open_clip model by name.

    Looks in this order:

    1. ``source`` is a folder with ``open_clip_config.json`` and weights (how models
       are stored on the Hugging Face hub, and what :func:`save_open_clip_dir` writes):
       ``open_clip.create_model_and_transforms("local-dir:<folder>")``.
    2. ``source`` is a file: a course checkpoint (``.safetensors`` with a card) is
       rebuilt from its card; any other weights file is an open_clip checkpoint
       for the architecture ``arch`` (e.g. ``"ViT-B-32"``), or for the
       ``open_clip_config.json`` beside it.
    3. ``source`` is a name: an open_clip architecture ("ViT-B-32", with ``tag``, e.g.
       "openai" or "laion2b_s34b_b79k"; default its first tag) or "hf-hub:org/repo".
       Weights already in the Hugging Face cache are used offline; otherwise they are
       downloaded, but only when asked (``download=True`` or ``COURSE_ALLOW_DOWNLOADS=1``)
       and online.

    Args:
        source: path or name (see above).
        arch: the open_clip architecture of a bare weights file.
        tag: the pretrained tag of a named architecture.
        device: where the model goes (default: the course device).
        missing_ok: when a named model is unavailable offline, print one line and
            return None instead of raising (the notebook then goes on with the course model).
        download: fetch a named model that is not cached; None reads
            ``COURSE_ALLOW_DOWNLOADS`` (see :func:`downloads_allowed`). The course never
            downloads unless asked.

    Returns:
        An open_clip model in eval mode; :func:`encode_image` / :func:`encode_text`
        and the rest of this module work on it (its own tokenizer and image
        preprocessing are used).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a bare weights file without ``arch``; an unknown architecture.
        PretrainedUnavailableError: a name while offline, with nothing cached.
    """
    from .runtime import get_device

    device = get_device(device)
    src = os.path.expanduser(os.fspath(source))
    path = Path(src)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without open_clip_config.json: pass the "
                                    "weights file itself (with arch=...) or the folder open_clip wrote.")
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}", device="cpu")
        return _finish_pretrained(model, open_clip.get_tokenizer(f"local-dir:{path}"), device)
    if path.is_file():
        card = None
        if path.suffix == ".safetensors":
            try:
                card = checkpoints.read_card(path)    # a truncated file is an error naming it
            except checkpoints.NotACourseCheckpointError:
                card = None
        if card is not None and "vision_cfg" in card.get("config", {}):
            model = build_clip(card["config"])
            checkpoints.load_model(path, model)
            return model.to(device).eval()
        if arch is None and (path.parent / "open_clip_config.json").is_file():
            return load_pretrained(path.parent, device=device)
        if arch is None:
            raise ValueError(f"{path} holds bare weights: say which open_clip architecture they "
                             "belong to, e.g. load_pretrained(path, arch='ViT-B-32').")
        _check_arch(arch)
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(path), device="cpu")
        except Exception as e:       # open_clip/torch/safetensors raise many kinds here
            raise ValueError(
                f"Cannot load {path} ({path.stat().st_size} bytes) as open_clip {arch!r} weights "
                f"({type(e).__name__}: {str(e)[:200]}). Either arch is not the architecture the "
                "weights were saved from (use the name they were published with), or the file is "
                "truncated or corrupt (copy or download it again).") from e
        return _finish_pretrained(model, open_clip.get_tokenizer(arch), device)
    if _looks_like_path(src) and not src.startswith("hf-hub:"):
        raise FileNotFoundError(f"No file or folder at {path}. Check the path (it is relative "
                                f"to {Path.cwd()}).")

    # a name
    if src.startswith("hf-hub:"):
        what, cached = src, None
    else:
        if src not in open_clip.list_models():
            raise FileNotFoundError(
                f"{src!r} is neither a file or folder (looked in {Path.cwd()}) nor an open_clip "
                f"architecture{_arch_suggestions(src)}. Check the path, or the name.")
        tags = open_clip.list_pretrained_tags_by_model(src)
        if not tags:
            raise ValueError(f"open_clip has no pretrained weights for {src!r}.")
        tag = tag or tags[0]
        if tag not in tags:
            raise ValueError(f"{src!r} has no weights tagged {tag!r}; tags: {', '.join(tags)}.")
        what, cached = f"{src} ({tag})", _cached_weights(src, tag)
        if cached is not None:
            model, _, _ = open_clip.create_model_and_transforms(src, pretrained=cached, device="cpu")
            preprocess = {**open_clip.get_model_preprocess_cfg(model),
                          **{k: v for k, v in (open_clip.get_pretrained_cfg(src, tag) or {}).items()
                             if k in ("mean", "std", "interpolation", "resize_mode")}}
            open_clip.set_model_preprocess_cfg(model, preprocess)
            return _finish_pretrained(model, open_clip.get_tokenizer(src), device)
    download = downloads_allowed() if download is None else download
    if not download or not _online():
        why = ("downloads are off (set COURSE_ALLOW_DOWNLOADS=1 or pass download=True to fetch it)"
               if not download else "it cannot be fetched offline")
        message = (f"open_clip {what} is not on this machine and {why}; going on with the "
                   "course's model (or pass a local file to load_pretrained).")
        if missing_ok:
            print(message)
            return None
        raise PretrainedUnavailableError(message)
    if src.startswith("hf-hub:"):
        model, _, _ = open_clip.create_model_and_transforms(src, device="cpu")
    else:
        model, _, _ = open_clip.create_model_and_transforms(src, pretrained=tag, device="cpu")
    return _finish_pretrained(model, open_clip.get_tokenizer(src), device)


def save_open_clip_dir(model: open_clip.CLIP, directory: str | os.PathLike,
                       config: Mapping | None = None) -> Path:
    """Save a course CLIP the way open_clip models are published (a folder open_clip can load).

    Writes ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and
    ``open_clip_model.safetensors``. ``open_clip.create_model_and_transforms(
    "local-dir:<folder>")`` and :func:`load_pretrained` read it back.

    Args:
        model: the CLIP. directory: the folder (created).
        config: its :func:`clip_config` (default: read from the model's sizes).
    """
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = _config_of(model)
    model_cfg = {k: config[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    with open(directory / "open_clip_config.json", "w", encoding="utf-8") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, f, indent=2)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def _config_of(model: open_clip.CLIP) -> dict:
    """The open_clip config of a course-built CLIP, read back from its modules."""
    v, blocks = model.visual, model.transformer.resblocks
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    patch = v.patch_size if isinstance(v.patch_size, int) else v.patch_size[0]
    vblock = v.transformer.resblocks[0].attn
    return {
        "embed_dim": int(v.output_dim),
        "vision_cfg": {"image_size": int(size), "patch_size": int(patch), "width": int(v.transformer.width),
                       "layers": int(v.transformer.layers),
                       "head_width": int(v.transformer.width // vblock.num_heads)},
        "text_cfg": {"context_length": int(model.context_length), "vocab_size": int(model.vocab_size),
                     "width": int(model.transformer.width), "heads": int(blocks[0].attn.num_heads),
                     "layers": int(model.transformer.layers)},
    }


# =============================================================================
# 8. For the generators: a frozen text encoder, and image-tower features
# =============================================================================


class FrozenTextEncoder(nn.Module):
    """A CLIP text tower, frozen, as the generators of the course condition on it.

    Two views of a caption:

    * :meth:`pooled` -> ``(B, embed_dim)``: the caption's CLIP embedding (unit
      length by default), one vector per caption: what a GAN or unCLIP conditions on.
    * :meth:`tokens` -> ``(hidden (B, L, width), mask (B, L))``: the text transformer's
      last hidden state (after its final LayerNorm) for every token, and which
      positions hold real tokens (start marker .. end marker): what a diffusion
      UNet attends to with cross-attention. ``L`` is the context length.

    ``forward(captions)`` returns both as a dict. All parameters have
    ``requires_grad=False``, outputs carry no graph, and the module stays in eval
    mode even inside a model put in training mode. Keep it *beside* the model you
    train, not inside it, so the optimizer and its checkpoint never hold it.

    Args:
        model: a CLIP (the course's or a pretrained one).
        normalize: unit-length pooled embeddings.
    """

    def __init__(self, model: nn.Module, normalize: bool = True):
        super().__init__()
        self.clip = model
        self.normalize = normalize
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        super().train(False)          # frozen: dropout etc. never come back on
        return self

    @property
    def context_length(self) -> int:
        return int(self.clip.context_length)

    @property
    def embed_dim(self) -> int:
        """Size of a pooled embedding."""
        return int(self.clip.text_projection.shape[1] if isinstance(self.clip.text_projection, torch.Tensor)
                   else self.clip.text_projection.out_features)

    @property
    def width(self) -> int:
        """Size of a per-token hidden state."""
        return int(self.clip.transformer.width)

    def tokenize(self, captions) -> torch.Tensor:
        """Token ids ``(B, L)`` on the encoder's device (checked like :func:`tokenize`)."""
        return tokenize(captions, self.context_length,
                        tokenizer=_MODEL_TOKENIZERS.get(self.clip)).to(_device_of(self.clip))

    @torch.no_grad()
    def forward(self, captions) -> dict[str, torch.Tensor]:
        """``{"pooled": (B, D), "tokens": (B, L, W), "mask": (B, L) bool}``."""
        ids = self.tokenize(captions)
        out = self.clip.forward_intermediates(text=ids, text_indices=1, normalize=self.normalize,
                                              normalize_intermediates=True)
        eot = ids.argmax(dim=-1)      # the end marker has the largest id in the vocabulary
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot[:, None]
        return {"pooled": out["text_features"], "tokens": out["text_intermediates"][-1], "mask": mask}

    def pooled(self, captions) -> torch.Tensor:
        """Captions -> ``(B, embed_dim)`` embeddings (unit length if ``normalize``)."""
        return self(captions)["pooled"]

    def tokens(self, captions) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ``(hidden (B, L, width), mask (B, L) bool)``."""
        out = self(captions)
        return out["tokens"], out["mask"]


def image_intermediates(model: nn.Module, images, *, indices: int | Sequence[int] | None = None,
                        grad: bool = False, normalize_intermediates: bool = False
                        ) -> dict[str, Any]:
    """The image tower's per-layer features, via open_clip's ``forward_intermediates``.

    Args:
        model: a CLIP with a ViT image tower (the course's, or a pretrained ViT).
        images: float ``(N, 3, H, W)`` in [-1, 1] (resized/normalised for the model).
        indices: which blocks: an int n = the last n, a list = those block indices,
            None = all.
        grad: keep the graph (e.g. a discriminator on CLIP features of fake images).
        normalize_intermediates: apply the tower's final LayerNorm to each.

    Returns:
        ``{"image_intermediates": [ (N, width, H/patch, W/patch) per block ],
        "image_features": (N, embed_dim) unit-length embedding}``.
    """
    x = _prepare_images(model, images)
    with torch.set_grad_enabled(grad):
        return model.forward_intermediates(image=x, image_indices=indices, normalize=True,
                                           normalize_intermediates=normalize_intermediates)


# ----------------------------------------------------------------------------- references


def world_token_ids() -> list[int]:
    """Every token id a caption or prompt of the course's world can contain (sorted).

    CLIP's byte-pair tokenizer encodes word by word, so the tokens of every word and
    punctuation mark of the world's templates and synonym lists, plus the start, end and
    padding tokens, are all the tokens its captions use: ~90 of the 49,408 rows of the
    token table."""
    from .data import world
    tok = get_tokenizer()
    texts = [re.sub(r"\{\w+\}", " ", t) for t in world.TEMPLATES + world.RELATION_TEMPLATES]
    for table in (world.SHAPE_WORDS, world.COLOR_WORDS, world.SIZE_WORDS, world.POSITION_WORDS,
                  world.POSITION_LABELS, world.RELATION_WORDS):
        texts += [" ".join(words) for words in table.values()]
    texts.append("an shape")          # _tidy's article; a partial prompt's missing shape
    ids = {0, tok.sot_token_id, tok.eot_token_id}
    for text in texts:
        ids.update(tok.encode(text))
    return sorted(ids)


def keep_world_tokens(state: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, the rows of a CLIP state's token table that no world caption uses.

    For a shipped reference (``python -m course_lib.train ... --reference``): the course's
    CLIP never sees the other ~49,300 tokens, so their rows are still their random start;
    as zeros they cost nothing in the shipped file (checkpoints store all-zero rows sparsely),
    and the course CLIP goes from ~15 MB to ~3 MB in fp16. Words outside the world then all
    map to the same zero vector, instead of each to its own untrained random one."""
    keep = torch.tensor(world_token_ids())
    with torch.no_grad():
        for key in [k for k in state if k.endswith("token_embedding.weight")]:
            table = state[key]
            mask = torch.ones(table.shape[0], dtype=torch.bool, device=table.device)
            mask[keep.to(table.device)] = False
            table[mask] = 0


# The training command (python -m course_lib.train) finds this model here.
from . import registry as _registry
_registry.register("clip", load_or_train_clip, section="clip", prepare_reference=keep_world_tokens)
