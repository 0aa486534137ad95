"""GALIP: a GAN with the frozen course CLIP inside both players (notebook 04).

GALIP (Tao et al., CVPR 2023; code: github.com/tobran/GALIP) keeps DF-GAN's game
(notebook 03, :mod:`course_lib.gan`) and changes the two players:

* **CLIP-based discriminator** (:class:`CLIPDiscriminator`): the frozen CLIP image
  tower reads the image; the patch tokens of a few of its blocks (:func:`tapped_blocks`)
  are reshaped to maps; a small learnable **Mate-D** (:class:`MateD`) merges them --
  each later block's map is added into a residual stream through a gate that starts at
  zero -- and a conditional head sees the tiled sentence embedding and gives the score.
* **CLIP-empowered generator** (:class:`CLIPGenerator`): a learnable **Mate-G**
  (:class:`MateG`) turns noise into a small map, modulated by ``[noise, sentence]``,
  and predicts a **bridge feature** shaped like CLIP's patch embeddings; it runs
  through the frozen CLIP transformer blocks (:func:`bridge`) with one text-predicted
  **prompt token** appended at several blocks (:func:`prompt_blocks`) and removed
  after each; the result is added to the bridge feature and up-sampled to the image by
  notebook 03's FiLM blocks (:class:`course_lib.gan.UpBlock`).

Read top-down:

1. Config: :func:`galip_config` (the profile's ``galip`` section), :func:`tapped_blocks`,
   :func:`prompt_blocks`.
2. Parts: :func:`clip_input`, :func:`clip_features`, :class:`MateD`,
   :class:`CLIPDiscriminator`, :class:`MBlock`, :class:`MateG`, :func:`bridge`,
   :class:`CLIPGenerator`, :class:`GALIP` (both players, one checkpoint, CLIP beside).
3. Losses: notebook 03's (:func:`course_lib.gan.d_hinge_loss`, ``g_hinge_loss``,
   ``mismatched``, ``ma_gradient_penalty``) -- here on CLIP *features*, not pixels.
4. Training: :class:`GALIPMethod`, :func:`train_galip`, :func:`load_or_train_galip`.
5. Sampling: :func:`sample` (notebook 03's, whose convention GALIP shares),
   :func:`interpolate_captions`, :func:`interpolate_noise`.

The frozen CLIP is never a submodule: it is attached beside the model (like the text
encoder, :func:`course_lib.conditioning.attach_text_encoder`), so it is neither trained
nor saved again; the config records the CLIP's fingerprint, and loading GALIP beside
another CLIP is a :class:`course_lib.checkpoints.CheckpointMismatchError`.

Why hand-written: no maintained library ships GALIP (the reference code is a research
repository hard-wired to ViT-B/32 at 224 pixels); its parts are the lesson.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints, conditioning, gan
from .profiles import get_profile, model_sizes

__all__ = [
    # 1. config
    "CHECKPOINT", "galip_config", "tapped_blocks", "prompt_blocks",
    # 2. parts
    "clip_input", "clip_features", "MateD", "CLIPDiscriminator", "MBlock", "MateG", "bridge",
    "CLIPGenerator", "GALIP", "build_galip", "parameter_counts",
    # 4. training
    "GALIPMethod", "train_galip", "load_or_train_galip",
    # 5. sampling
    "sample", "interpolate_noise", "interpolate_captions",
]

#: Name of GALIP's checkpoint (data/checkpoints/<profile>/galip.safetensors).
CHECKPOINT = "galip"


# =============================================================================
# 1. Config
# =============================================================================


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))          # round half up (Python's round(2.5) is 2)


def tapped_blocks(layers: int) -> list[int]:
    """The CLIP blocks whose patch tokens the discriminator reads (0-based block indices).

    The paper taps blocks 1, 4 and 8 of ViT-B/32's 12 (its code: ``selected = [1, 4, 8]``),
    i.e. after 2/12, 5/12 and 9/12 of the tower: an early block (edges, colour), a middle
    one and a late one, but *not* the last blocks, which specialise in the contrastive
    class token. The course keeps those fractions of its own depth:
    12 layers -> [1, 4, 8] (the paper), 4 (cpu) -> [0, 1, 2], 2 (smoke) -> [0, 1],
    6 (gpu) -> [0, 2, 4].
    """
    if layers < 1:
        raise ValueError(f"a CLIP with {layers} blocks has nothing to tap")
    return sorted({max(0, _round(f * layers) - 1) for f in (2 / 12, 5 / 12, 9 / 12)})


def prompt_blocks(layers: int) -> list[int]:
    """The CLIP blocks that get a text-predicted prompt token in the generator's bridge.

    The paper's code prompts blocks 1..8 of 12 (``selected = [1, ..., 8]``): not the
    first (the bridge feature settles in first) and not the last three. Same fractions
    here: 12 -> 1..8, 4 (cpu) -> [1, 2, 3], 2 (smoke) -> [1], 6 (gpu) -> [1, 2, 3, 4].
    """
    if layers < 2:
        return []
    return list(range(1, max(2, _round(8 / 12 * layers) + 1)))


def galip_config(profile=None, encoder=None, **changes) -> dict:
    """Everything that defines a GALIP of a profile (stored in and checked against its card).

    Args:
        profile: a Profile, a name or None (active).
        encoder: the frozen text encoder (default :func:`course_lib.conditioning.text_encoder`);
            its CLIP is the one inside both players: its sizes, tapped and prompted blocks and
            fingerprint go into the config.
        changes: overrides of the profile's ``galip`` section (e.g. ``prompts=False``).
    """
    p = get_profile(profile)
    sizes = model_sizes(p, "galip", changes, "galip_config")
    if sizes["d_head"] not in ("concat", "projection"):
        raise ValueError(f"d_head={sizes['d_head']!r}: use 'concat' (GALIP's) or 'projection'.")
    encoder = encoder if encoder is not None else conditioning.text_encoder(p)
    visual = encoder.clip.visual
    layers = len(visual.transformer.resblocks)
    grid = visual.grid_size
    return {**sizes, "image_size": p.data.image_size, "seed": p.seed,
            "clip_width": int(visual.transformer.width), "clip_layers": layers,
            "clip_grid": int(grid[0] if isinstance(grid, (tuple, list)) else grid),
            "taps": tapped_blocks(layers), "prompt_at": prompt_blocks(layers) if sizes["prompts"] else [],
            "clip": conditioning.clip_dependency(encoder)}


# =============================================================================
# 2. Parts
# =============================================================================


def clip_input(clip_model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> what the CLIP image tower expects: exactly one mapping.

    It is :func:`course_lib.clip.to_model_input` (the course's one path; the identity for
    the course CLIP, whose mean = std = 0.5). GALIP's reference code maps twice:
    ``x*0.5+0.5`` (to [0, 1]) and then ``(x+1)*0.5`` again, so the pictures its CLIP sees
    lie in [0.5, 1] -- half the contrast, washed out towards white (notebook 04 shows it,
    ``tests/test_galip.py`` checks the course's path).
    """
    from .clip import to_model_input

    return to_model_input(clip_model, images)


def clip_features(clip_model: nn.Module, images: torch.Tensor, taps: Sequence[int], *,
                  embedding: bool = False):
    """The frozen CLIP's patch-token maps of the ``taps`` blocks, stacked.

    Args:
        images: float (B, 3, H, W) in [-1, 1]; gradients flow through the frozen CLIP to
            them when they have a graph (the generator's step), none are kept for CLIP.
        embedding: also return CLIP's unit-length image embedding (the whole tower runs;
            without it the tower stops after the last tapped block).

    Returns:
        ``(B, len(taps), width, grid, grid)``, and with ``embedding`` a tuple with the
        ``(B, embed_dim)`` embedding.
    """
    out = clip_model.visual.forward_intermediates(
        clip_input(clip_model, images), indices=list(taps), stop_early=not embedding,
        intermediates_only=not embedding)
    feats = torch.stack(out["image_intermediates"], dim=1)
    if embedding:
        return feats, F.normalize(out["image_features"], dim=-1)
    return feats


class _DBlock(nn.Module):
    """GALIP's D_Block: ``x + gamma * convs(x) [+ beta * CLIP map]``, both gates starting at 0."""

    def __init__(self, cin: int, cout: int, clip_gate: bool):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.LeakyReLU(0.2),
                                   nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.LeakyReLU(0.2))
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1)) if clip_gate else None

    def forward(self, x: torch.Tensor, clip_map: torch.Tensor | None = None) -> torch.Tensor:
        out = self.shortcut(x) + self.gamma * self.convs(x)
        if self.beta is not None:
            out = out + self.beta * clip_map
        return out


class MateD(nn.Module):
    """GALIP's Mate-D: the first tapped map starts a residual stream; each later one is
    added in through a gate initialised at zero; a last block maps to ``out_channels``.

    Input ``(B, n_taps, width, g, g)``, output ``(B, out_channels, g, g)``.
    """

    def __init__(self, width: int, n_taps: int, out_channels: int):
        super().__init__()
        self.merge = nn.ModuleList(_DBlock(width, width, clip_gate=True) for _ in range(n_taps - 1))
        self.main = _DBlock(width, out_channels, clip_gate=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = feats[:, 0]
        for i, block in enumerate(self.merge):
            out = block(out, feats[:, i + 1])
        return self.main(out)


class CLIPDiscriminator(nn.Module):
    """Frozen CLIP tower (beside, not inside) + Mate-D + a conditional head.

    ``features(images)`` -> the frozen CLIP's tapped maps; ``forward(feats)`` -> Mate-D's
    map; ``score(map, s)`` -> one number per (image, caption). Split in three so that one
    CLIP pass serves the matched and the mismatched caption, and MA-GP differentiates with
    respect to the CLIP features and the sentence (as GALIP does), not the pixels.

    Heads: ``"concat"`` (GALIP's: the sentence tiled over the map, two convolutions) or
    ``"projection"`` (notebook 03's: ``w·φ + <V s, φ>``).
    """

    def __init__(self, width: int, n_taps: int, grid: int, cond_dim: int, channels: int = 64,
                 head: str = "concat"):
        super().__init__()
        self.taps_count, self.head_kind = n_taps, head
        self.mate = MateD(width, n_taps, channels)
        if head == "concat":
            self.joint = nn.Sequential(nn.Conv2d(channels + cond_dim, channels, 3, padding=1, bias=False),
                                       nn.LeakyReLU(0.2), nn.Conv2d(channels, 1, grid, bias=False))
        elif head == "projection":
            self.linear = nn.Linear(channels, 1)
            self.embed = nn.Linear(cond_dim, channels, bias=False)
        else:
            raise ValueError(f"head={head!r}: use 'concat' or 'projection'.")

    def features(self, images: torch.Tensor, taps: Sequence[int], *, embedding: bool = False):
        return clip_features(_clip_of(self), images, taps, embedding=embedding)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mate(feats)

    def score(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "concat":
            tiled = s[:, :, None, None].expand(-1, -1, *h.shape[-2:])
            return self.joint(torch.cat([h, tiled], dim=1)).flatten()
        pooled = F.leaky_relu(h, 0.2).mean(dim=(2, 3))
        return self.linear(pooled).flatten() + (self.embed(s) * pooled).sum(dim=1)


class MBlock(nn.Module):
    """GALIP's M_Block (Mate-G): conv -> (FiLM, LeakyReLU) ×2 -> conv -> (FiLM, LeakyReLU) ×2,
    plus a shortcut; FiLM is notebook 03's :class:`course_lib.gan.Affine`."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.fuse1 = nn.ModuleList([gan.Affine(cond_dim, cout), gan.Affine(cond_dim, cout)])
        self.fuse2 = nn.ModuleList([gan.Affine(cond_dim, cout), gan.Affine(cond_dim, cout)])
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    @staticmethod
    def _fuse(pair, h, c):
        for affine in pair:
            h = F.leaky_relu(affine(h, c), 0.2)
        return h

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self._fuse(self.fuse1, self.conv1(x), c)
        h = self._fuse(self.fuse2, self.conv2(h), c)
        return self.shortcut(x) + h


class MateG(nn.Module):
    """GALIP's Mate-G: noise (``code_from_text``: noise and sentence) -> a ``grid``×``grid``
    code map -> M-blocks conditioned on
    ``c = [noise, sentence]`` -> the **bridge feature**, ``(B, clip_width, grid, grid)``,
    shaped like the ViT's patch embeddings (what its ``conv1`` would give)."""

    def __init__(self, noise_dim: int, cond_dim: int, code_channels: int, n_blocks: int,
                 clip_width: int, grid: int, code_from_text: bool = False):
        super().__init__()
        self.grid, self.code_channels, self.code_from_text = grid, code_channels, code_from_text
        self.fc = nn.Linear(cond_dim if code_from_text else noise_dim, code_channels * grid * grid)
        self.blocks = nn.ModuleList(MBlock(code_channels, code_channels, cond_dim) for _ in range(n_blocks))
        self.to_bridge = nn.Conv2d(code_channels, clip_width, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.fc(c if self.code_from_text else z).view(len(z), self.code_channels, self.grid, self.grid)
        for block in self.blocks:
            x = block(x, c)
        return self.to_bridge(x)


def bridge(visual: nn.Module, feature: torch.Tensor, prompts: torch.Tensor | None,
           prompt_at: Sequence[int]) -> torch.Tensor:
    """Run a bridge feature through the frozen CLIP transformer, with prompt tokens.

    The ViT's own path without its patch convolution: class token + positional
    embedding + ``ln_pre``, then every block; before each block of ``prompt_at`` one
    prompt token (``prompts[:, k]``) is appended to the sequence, and removed after the
    block (GALIP's ``CLIP_Mapper``). Returns the patch tokens as a map, shaped like
    ``feature`` ``(B, width, g, g)``.
    """
    B, W, gh, gw = feature.shape
    if prompt_at and (prompts is None or prompts.shape[1] < len(prompt_at)):
        raise ValueError(f"bridge: {len(prompt_at)} prompted blocks need {len(prompt_at)} prompts, got "
                         f"{None if prompts is None else prompts.shape[1]}")
    x = feature.flatten(2).transpose(1, 2)                                 # (B, g*g, W)
    cls = visual.class_embedding.to(x.dtype).expand(B, 1, W)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
    if not getattr(visual.transformer, "batch_first", True):
        raise ValueError("bridge needs an open_clip transformer run batch-first (open_clip >= 2.23)")
    k = 0
    for i, block in enumerate(visual.transformer.resblocks):
        if i in prompt_at:
            x = block(torch.cat([x, prompts[:, k:k + 1].to(x.dtype)], dim=1))[:, :-1]
            k += 1
        else:
            x = block(x)
    return x[:, 1:].transpose(1, 2).reshape(B, W, gh, gw)


class CLIPGenerator(nn.Module):
    """Noise + sentence -> image in [-1, 1], through the frozen CLIP.

    ``c = [z, s]``; Mate-G gives the bridge feature ``f``; prompts ``P = fc(c)``;
    ``h = conv(f + bridge_scale · CLIP_blocks(f, P))`` at ``grid``×``grid`` (GALIP: 0.1);
    then notebook 03's :class:`course_lib.gan.UpBlock` (FiLM from ``c``) up to the image
    size, LeakyReLU, 3×3 conv, tanh.
    """

    def __init__(self, config: Mapping):
        super().__init__()
        self.noise_dim = int(config["noise_dim"])
        cond = self.noise_dim + int(config["clip"]["embed_dim"])
        W, grid, size = int(config["clip_width"]), int(config["clip_grid"]), int(config["image_size"])
        self.prompt_at = list(config["prompt_at"])
        self.bridge_scale = float(config["bridge_scale"])
        self.clip_width = W
        self.mate = MateG(self.noise_dim, cond, config["code_channels"], config["mate_blocks"], W, grid,
                          config["code_from_text"])
        self.fc_prompt = nn.Linear(cond, W * len(self.prompt_at)) if self.prompt_at else None
        n_up = int(round(math.log2(size / grid)))
        if grid * 2 ** n_up != size:
            raise ValueError(f"image_size {size} must be the CLIP grid ({grid}) times a power of 2")
        w = int(config["g_width"])
        chans = [w * min(4, 2 ** (n_up - i)) for i in range(n_up + 1)]
        self.from_clip = nn.Conv2d(W, chans[0], 3, padding=1)
        self.blocks = nn.ModuleList(gan.UpBlock(chans[i], chans[i + 1], cond) for i in range(n_up))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def prompts(self, c: torch.Tensor) -> torch.Tensor | None:
        if self.fc_prompt is None:
            return None
        return self.fc_prompt(c).view(len(c), len(self.prompt_at), self.clip_width)

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        c = torch.cat([z, s], dim=1)
        f = self.mate(z, c)
        mapped = bridge(_clip_of(self).visual, f, self.prompts(c), self.prompt_at)
        x = self.from_clip(f + self.bridge_scale * mapped)
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


def _clip_of(module: nn.Module) -> nn.Module:
    clip_model = getattr(module, "_clip", None)
    if clip_model is None:
        raise RuntimeError(f"{type(module).__name__} has no frozen CLIP beside it. Load GALIP with "
                           "galip.load_or_train_galip, or call galip.build_galip(config, encoder).")
    return clip_model


class GALIP(nn.Module):
    """Both players in one module (one checkpoint). The frozen CLIP is attached beside
    both (never a submodule: not in ``parameters()``, not in ``state_dict()``)."""

    def __init__(self, config: Mapping):
        super().__init__()
        self.config = dict(config)
        self.generator = CLIPGenerator(config)
        self.discriminator = CLIPDiscriminator(
            config["clip_width"], len(config["taps"]), config["clip_grid"], int(config["clip"]["embed_dim"]),
            config["d_channels"], config["d_head"])

    @property
    def noise_dim(self) -> int:
        return self.generator.noise_dim

    def attach_clip(self, encoder, expected: Mapping | None = None) -> GALIP:
        """Put the frozen CLIP beside both players (and the text encoder beside the model);
        ``expected``: the CLIP dependency it was trained with (a different CLIP is an error)."""
        conditioning.attach_text_encoder(self, encoder, expected=expected)
        for part in (self.generator, self.discriminator):
            object.__setattr__(part, "_clip", encoder.clip)
        return self


def build_galip(config: Mapping, encoder=None) -> GALIP:
    """An untrained GALIP; with ``encoder`` its CLIP is attached (checked against the config)."""
    model = GALIP(config)
    if encoder is not None:
        model.attach_clip(encoder, expected=config.get("clip"))
    return model


def parameter_counts(model: nn.Module, clip_model: nn.Module | None = None) -> dict:
    """Trainable parameters of each player, and the frozen CLIP's (image tower and all).

    Works for a :class:`GALIP` and for notebook 03's GAN alike.
    """
    count = gan.count_parameters
    out = {"generator": count(model.generator), "discriminator": count(model.discriminator)}
    out["trainable"] = out["generator"] + out["discriminator"]
    if clip_model is not None:
        out["frozen CLIP"] = sum(p.numel() for p in clip_model.parameters())
        out["frozen CLIP image tower"] = sum(p.numel() for p in clip_model.visual.parameters())
    return out


# =============================================================================
# 4. Training
# =============================================================================


class GALIPMethod(gan.GANMethod):
    """Notebook 03's adversarial step (:class:`course_lib.gan.GANMethod`), reading the images
    through the frozen CLIP.

    D: the hinge with mismatched pairs, on Mate-D(frozen CLIP features of real / fake
    images); MA-GP on (CLIP features, sentence). G: hinge + ``clip_weight`` ×
    (1 − cos(CLIP image embedding, s)), taken from the same CLIP pass that feeds D (the
    paper's text-image similarity term). Adam, betas (0, 0.9).
    """

    def __init__(self, model: GALIP, encoder, config: Mapping):
        super().__init__(model, encoder, config)
        self.galip = model

    def d_inputs(self, real, fake):
        # CLIP is frozen and D's update needs no gradient through it
        with torch.no_grad():
            return clip_features(self.encoder.clip, torch.cat([real, fake]), self.config["taps"]).chunk(2)

    def g_inputs(self, fake):
        # through the frozen CLIP: features for D and the embedding for the CLIP term, one pass
        return clip_features(self.encoder.clip, fake, self.config["taps"], embedding=True)

    def clip_term(self, fake, embedding, s):
        # gan.clip_distance's formula, on the embedding the generator's pass already computed
        return (1.0 - (embedding * F.normalize(s, dim=-1)).sum(dim=-1)).mean()


def train_galip(model: GALIP, encoder, *, config: Mapping | None = None, profile=None, resume_path=None,
                steps: int | None = None, max_minutes: float | None = None, plot=None,
                desc: str = "GALIP", data=None):
    """Train ``model`` in place: :func:`course_lib.gan.train_adversarial` with
    :class:`GALIPMethod` (the same data: the world's train split, captions drawn afresh
    each time); returns ``(history, method)``."""
    return gan.train_adversarial(model, encoder, GALIPMethod, config=config, profile=profile,
                                 resume_path=resume_path, steps=steps, max_minutes=max_minutes,
                                 plot=plot, desc=desc, data=data)


def load_or_train_galip(profile=None, *, retrain: bool = False, config: Mapping | None = None,
                        name: str = CHECKPOINT, verbose: bool = True, **changes):
    """The profile's GALIP: loaded from its checkpoint, or trained (minutes) and saved.

    Args:
        profile: a Profile, a name or None (active). retrain: train even if a checkpoint exists.
        config: default :func:`galip_config` of the profile (with ``changes`` applied), e.g.
            ``load_or_train_galip(name="galip-no-prompts", prompts=False)`` for an ablation.
        name: the checkpoint's name.

    Returns:
        ``(galip, card)``: a :class:`GALIP` in eval mode with its frozen CLIP and text
        encoder attached (ready for :func:`sample`), and its checkpoint card.

    Raises:
        CheckpointMismatchError: a checkpoint of another config exists, or it was trained
            on another CLIP than the profile's (the card names the CLIP's fingerprint).
    """
    p = get_profile(profile)
    encoder = conditioning.text_encoder(p, verbose=verbose)
    config = dict(config or galip_config(p, encoder, **changes))

    def train(model, resume_path):
        # in stages, grading after each (outside the training clock): the card keeps
        # "alignment per minute of training", notebook 04's curve
        from . import metrics

        judge = metrics.load_judge(p, verbose=False) if config["probes"] else None
        captions, attrs = metrics.evaluation_set(p, min(500, p.judge.n_eval)) if judge else (None, None)
        stages = [int(round(config["steps"] * (i + 1) / config["probes"])) for i in range(config["probes"])] \
            if judge and config["steps"] else [None]
        curve = []
        for target in stages:
            history, _ = train_galip(model, encoder, config=config, profile=p, resume_path=resume_path,
                                     steps=target)
            if judge is not None:
                al = metrics.alignment(sample(model, captions, seed=0), attrs, judge)
                curve.append({"step": history.step, "minutes": history.seconds / 60.0,
                              "all right (seen)": al["seen"]["all"],
                              "all right (held-out)": al.get("held-out", {}).get("all", float("nan"))})
                model.train()
            if history.stopped_by == "time":
                break                      # the guard stopped it: later stages would add no step
        return {**history.summary(),
                "losses": {k: v for k, v in history.losses.items()}, "curve": curve}

    # the CLIP is attached at build time (the generator runs through it), checked against the
    # card's record of the CLIP it was trained with before any weights are used
    def build(cfg):
        return build_galip(cfg, encoder)

    model, card = checkpoints.load_or_train(name, config=config, build=build, train=train, profile=p,
                                            retrain=retrain, device=encoder.clip.logit_scale.device,
                                            verbose=verbose)
    model.attach_clip(encoder, expected=card.get("config", config).get("clip"))
    model.eval()
    return model, card


# =============================================================================
# 5. Sampling (notebook 03's: GALIP's generator has the same interface)
# =============================================================================


def sample(model: GALIP, captions, *, seed: int = 0, noise=None, truncation: float = 1.0,
           embeddings=None, batch_size: int = 1024, z=None) -> torch.Tensor:
    """One image per caption: float ``(N, 3, H, W)`` in [-1, 1]; see :func:`course_lib.gan.sample`
    (the same arguments, errors and determinism: the same seed and captions give the same images)."""
    if z is not None:
        warnings.warn("galip.sample(z=...) is now sample(noise=...), the name every generator uses.",
                      DeprecationWarning, stacklevel=2)
        noise = z if noise is None else noise
    return gan.sample(model, captions, seed=seed, noise=noise, truncation=truncation,
                      embeddings=embeddings, batch_size=batch_size)


interpolate_noise = gan.interpolate_noise
interpolate_captions = gan.interpolate_captions
