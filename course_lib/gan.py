"""A text-to-image GAN conditioned on the course CLIP (notebook 03).

The source article's "CLIP + GAN": the caption's CLIP text embedding is the
generator's condition, a discriminator judges whether an image *and its caption*
belong together, and a CLIP loss pulls each generated image towards its caption in
CLIP's space. The architecture follows DF-GAN (Tao et al., 2022): a generator whose
normalisation is replaced by text-predicted affine modulation ("deep fusion"), a
one-stage discriminator with a conditional head, the hinge loss with mismatched
pairs and the matching-aware gradient penalty (MA-GP). GALIP (notebook 04,
``course_lib.galip``) reuses the losses, the fusion blocks, training and sampling
of this module.

Read top-down:

1. Config: :func:`gan_config` (sizes from the profile's ``gan`` section).
2. Parts: :class:`Affine` (FiLM from the condition), :class:`UpBlock`,
   :class:`Generator`, :class:`DownBlock`, :class:`Discriminator` (with a
   ``"concat"`` head as DF-GAN, or a ``"projection"`` head as Miyato & Koyama 2018),
   :class:`TextToImageGAN` (both players in one checkpoint).
3. Losses, as plain functions: :func:`mismatched`, :func:`d_hinge_loss`,
   :func:`g_hinge_loss`, :func:`ma_gradient_penalty`, :func:`clip_distance`.
4. Training: :class:`GANMethod` (two optimizers, one step of each player per
   ``fit`` step), :func:`training_batches`, :func:`train_gan`, :func:`load_or_train_gan`.
5. Sampling: :func:`sample` (the course's convention), :func:`interpolate_noise`,
   :func:`interpolate_captions`, :func:`slerp`.

Why a hand-written GAN: no maintained library ships a text-conditional GAN with
these losses (diffusers has no GANs; torch-gan projects are unmaintained), and the
losses are the lesson. Everything around the step -- devices, EMA (diffusers'
``EMAModel``), checkpoints, resume, the divergence guard -- is the course's one loop
(:func:`course_lib.training.fit`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints, conditioning, runtime
from .conditioning import slerp  # noqa: F401  (gan.slerp, as notebook 03 calls it)
from .profiles import get_profile, section_with
from .runtime import renamed, seeded_noise
from .training import Method, count_parameters, fit, unwrap  # noqa: F401  (gan.count_parameters, notebook 03)

__all__ = [
    # 1. config
    "CHECKPOINT", "gan_config",
    # 2. parts
    "Affine", "UpBlock", "Generator", "DownBlock", "Discriminator", "TextToImageGAN", "build_gan",
    "count_parameters",
    # 3. losses
    "mismatched", "d_hinge_loss", "g_hinge_loss", "ma_gradient_penalty", "clip_distance", "clip_loss",
    # 4. training
    "GANMethod", "training_batches", "train_gan", "load_or_train_gan",
    # 5. sampling
    "sample", "noise", "slerp", "interpolate_noise", "interpolate_captions",
]

#: Name of the GAN's checkpoint (data/checkpoints/<profile>/gan.safetensors).
CHECKPOINT = "gan"


# =============================================================================
# 1. Config
# =============================================================================


def gan_config(profile=None, encoder=None, **changes) -> dict:
    """Everything that defines a GAN of a profile (stored in and checked against its card).

    Args:
        profile: a Profile, a name or None (active).
        encoder: the frozen text encoder (default :func:`course_lib.conditioning.text_encoder`);
            its size and fingerprint go into the config, so a GAN trained on another CLIP
            is never loaded beside this one silently.
        changes: overrides of the profile's ``gan`` section (e.g. ``clip_weight=0.0``).
    """

    p = get_profile(profile)
    sizes = section_with(p, "gan", changes, "gan_config")
    if sizes["d_head"] not in ("concat", "projection"):
        raise ValueError(f"d_head={sizes['d_head']!r}: use 'concat' (DF-GAN) or 'projection'.")
    encoder = encoder if encoder is not None else conditioning.text_encoder(p)
    return {**sizes, "image_size": p.data.image_size, "seed": p.seed,
            "clip": conditioning.clip_dependency(encoder)}


# =============================================================================
# 2. Parts
# =============================================================================


class Affine(nn.Module):
    """FiLM: ``gamma(c) * x + beta(c)``, per channel, predicted from the condition ``c``.

    DF-GAN's "deep fusion" block. The last layer starts at gamma = 1, beta = 0, so an
    untrained block is the identity and the condition is learned in gently.
    """

    def __init__(self, cond_dim: int, channels: int, hidden: int = 64):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.gamma[-1].weight)
        nn.init.ones_(self.gamma[-1].bias)
        nn.init.zeros_(self.beta[-1].weight)
        nn.init.zeros_(self.beta[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.gamma(c)[:, :, None, None] * x + self.beta(c)[:, :, None, None]


class UpBlock(nn.Module):
    """×2 upsampling, two (FiLM -> LeakyReLU -> 3×3 conv) stages, plus a shortcut."""

    def __init__(self, cin: int, cout: int, cond_dim: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.affine1, self.conv1 = Affine(cond_dim, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine2, self.conv2 = Affine(cond_dim, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.conv1(F.leaky_relu(self.affine1(x, c), 0.2))
        h = self.conv2(F.leaky_relu(self.affine2(h, c), 0.2))
        return self.shortcut(x) + h


class Generator(nn.Module):
    """Noise + sentence embedding -> image in [-1, 1].

    ``[z, s]`` -> linear -> a 4×4 map -> :class:`UpBlock` ×log2(size/4) (FiLM from
    ``[z, s]`` in every block) -> LeakyReLU -> 3×3 conv -> tanh.

    The first map is predicted from the sentence too, not from the noise alone as
    in DF-GAN: FiLM scales whole channels, the same at every pixel, so *where* the
    object goes ("at the top") is easiest to decide in the one layer that has a
    spatial layout of its own.
    """

    def __init__(self, noise_dim: int = 32, cond_dim: int = 128, width: int = 32, image_size: int = 32):
        super().__init__()
        n_up = int(round(math.log2(image_size / 4)))
        if 4 * 2 ** n_up != image_size:
            raise ValueError(f"image_size must be 4 * 2^k (8, 16, 32, 64, ...), got {image_size}")
        self.noise_dim, self.cond_dim, self.image_size = noise_dim, cond_dim, image_size
        chans = [width * min(4, 2 ** (n_up - i)) for i in range(n_up + 1)]   # e.g. 4w, 4w, 2w, w
        self.fc = nn.Linear(noise_dim + cond_dim, chans[0] * 16)
        self.blocks = nn.ModuleList(UpBlock(chans[i], chans[i + 1], noise_dim + cond_dim)
                                    for i in range(n_up))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        c = torch.cat([z, s], dim=1)
        x = self.fc(c).view(len(z), -1, 4, 4)
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


class DownBlock(nn.Module):
    """Two 3×3 convs with LeakyReLU, ×½ average pooling, plus a learned-gain residual."""

    def __init__(self, cin: int, cout: int, downsample: bool = True):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.gain = nn.Parameter(torch.zeros(1))      # DF-GAN: the residual starts switched off

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        h = F.leaky_relu(h, 0.2)
        s = self.shortcut(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return s + self.gain * h


class Discriminator(nn.Module):
    """Image -> a 4×4 feature map; ``score(features, s)`` -> one number per (image, caption).

    Split in two, as DF-GAN does, so one feature pass serves the matched and the
    mismatched caption, and MA-GP can differentiate with respect to both inputs.

    Heads:
        ``"concat"``: the sentence tiled over the 4×4 map and concatenated, then
        3×3 conv -> LeakyReLU -> 4×4 conv (DF-GAN).
        ``"projection"``: ``w·φ(x) + <embed(s), φ(x)>`` with φ the pooled map
        (Miyato & Koyama, 2018): the caption enters as an inner product, which makes
        "does this image fit this caption" a direct, strong signal.
    """

    def __init__(self, cond_dim: int = 128, width: int = 32, image_size: int = 32, head: str = "concat"):
        super().__init__()
        n_down = int(round(math.log2(image_size / 4)))
        chans = [width * min(4, 2 ** i) for i in range(n_down + 1)]             # e.g. w, 2w, 4w, 4w
        self.head_kind = head
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1)
        self.blocks = nn.Sequential(*[DownBlock(chans[i], chans[i + 1]) for i in range(n_down)])
        c = chans[-1]
        self.feature_channels = c
        if head == "concat":
            self.joint = nn.Sequential(nn.Conv2d(c + cond_dim, 2 * width, 3, padding=1),
                                       nn.LeakyReLU(0.2), nn.Conv2d(2 * width, 1, 4))
        elif head == "projection":
            self.linear = nn.Linear(c, 1)
            self.embed = nn.Linear(cond_dim, c, bias=False)
        else:
            raise ValueError(f"head={head!r}: use 'concat' or 'projection'.")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(images))

    def score(self, features: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "concat":
            tiled = s[:, :, None, None].expand(-1, -1, *features.shape[-2:])
            return self.joint(torch.cat([features, tiled], dim=1)).flatten()
        # mean (not Miyato's sum) over the 4x4 cells: 16x smaller gradients at the start, so
        # MA-GP's sixth power does not explode before D has learned anything
        pooled = F.leaky_relu(features, 0.2).mean(dim=(2, 3))
        return self.linear(pooled).flatten() + (self.embed(s) * pooled).sum(dim=1)


class TextToImageGAN(nn.Module):
    """Both players in one module (one checkpoint). Sampling needs only ``generator``.

    The frozen CLIP text encoder travels beside it (``conditioning.attach_text_encoder``),
    never inside its weights.
    """

    def __init__(self, config: Mapping):
        super().__init__()
        self.config = dict(config)
        cond = int(config["clip"]["embed_dim"])
        self.generator = Generator(config["noise_dim"], cond, config["g_width"], config["image_size"])
        self.discriminator = Discriminator(cond, config["d_width"], config["image_size"], config["d_head"])

    @property
    def noise_dim(self) -> int:
        return self.generator.noise_dim


def build_gan(config: Mapping) -> TextToImageGAN:
    return TextToImageGAN(config)


# =============================================================================
# 3. Losses (plain functions; notebook 03 writes each from scratch first)
# =============================================================================


def mismatched(s: torch.Tensor) -> torch.Tensor:
    """Each image's *wrong* caption: the batch's sentence embeddings shifted by one.

    A conditional D shown only (real, right caption) and (fake, right caption) can
    ignore the caption altogether; (real image, wrong caption) counted as fake
    forces it to check the match (Reed et al., 2016; DF-GAN).
    """
    if len(s) < 2:
        raise ValueError("mismatched pairs need a batch of at least 2 captions")
    return torch.roll(s, shifts=1, dims=0)


def d_hinge_loss(real: torch.Tensor, fake: torch.Tensor, mismatch: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The discriminator's hinge loss: ``E[relu(1 - D(real))] + ½E[relu(1 + D(fake))] +
    ½E[relu(1 + D(real, wrong caption))]`` (without mismatches: the plain hinge,
    ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]``)."""
    loss_real = F.relu(1.0 - real).mean()
    if mismatch is None:
        return loss_real + F.relu(1.0 + fake).mean()
    return loss_real + 0.5 * (F.relu(1.0 + fake).mean() + F.relu(1.0 + mismatch).mean())


def g_hinge_loss(fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: ``-E[D(G(z, s), s)]``."""
    return -fake.mean()


def ma_gradient_penalty(score: torch.Tensor, inputs: Sequence[torch.Tensor], k: float = 2.0,
                        p: float = 6.0) -> torch.Tensor:
    """Matching-aware gradient penalty (DF-GAN): ``k · mean(‖∇_(x, s) D(x, s)‖^p)`` on real pairs.

    The gradient is taken with respect to the image *and* the sentence embedding
    together (each sample's gradients flattened and joined), which smooths D around
    the real, matching pairs -- where G has to arrive.

    Args:
        score: D's scores of real images with their captions, shape (B,).
        inputs: the tensors the gradient is taken to (e.g. ``(images, s)``), each with
            ``requires_grad=True`` and in ``score``'s graph.
    """
    grads = torch.autograd.grad(score.sum(), list(inputs), create_graph=True)
    flat = torch.cat([g.flatten(1) for g in grads], dim=1)
    return k * flat.norm(2, dim=1).pow(p).mean()


def clip_distance(clip_model: nn.Module, images: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The article's CLIP loss, a cosine distance: ``mean(1 - cos(CLIP image embedding, text
    embedding))`` (not CLIP's own contrastive loss, which is ``clip.clip_loss``).

    ``images`` are generated float images in [-1, 1] (with their graph); the frozen CLIP
    passes gradients to them but is never updated. No image check here on purpose:
    this runs inside training on every step, on images straight from tanh.
    """
    from .clip import to_model_input

    x = to_model_input(clip_model, images)
    e = F.normalize(clip_model.encode_image(x), dim=-1)
    return (1.0 - (e * F.normalize(s, dim=-1)).sum(dim=-1)).mean()


clip_loss = renamed(clip_distance, "gan.clip_loss")


# =============================================================================
# 4. Training
# =============================================================================


class GANMethod(Method):
    """One ``fit`` step = one discriminator update, then one generator update: the course's
    one adversarial step, for notebook 03's GAN and (through the hooks below) GALIP.

    Discriminator: hinge with mismatched pairs, + MA-GP every ``ma_gp_every`` steps
    (lazy regularisation, scaled by ``ma_gp_every`` so its strength does not depend on
    how often it runs), on what D reads the images as (:meth:`d_inputs`). Generator:
    hinge + ``clip_weight`` × CLIP loss (:meth:`clip_term`). Adam with betas (0, 0.9) for
    both (DF-GAN); EMA of the generator if ``ema_decay``.

    A subclass changes what the discriminator reads (GALIP: the frozen CLIP's features)
    by overriding :meth:`d_inputs`, :meth:`g_inputs` and :meth:`clip_term`.
    """

    def __init__(self, model: nn.Module, encoder, config: Mapping):
        self.gan, self.encoder, self.config = model, encoder, dict(config)
        self.models = {"generator": model.generator, "discriminator": model.discriminator}
        betas = (0.0, 0.9)
        self.optimizers = {
            "generator": torch.optim.Adam(model.generator.parameters(), lr=config["lr_g"], betas=betas),
            "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=config["lr_d"],
                                              betas=betas),
        }
        self.schedulers = {}
        self.ema_decay = {"generator": config["ema_decay"]} if config.get("ema_decay") else {}

    # -- what the discriminator reads: the pixels themselves here
    def d_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's inputs for the real and the (detached) fake images of its update."""
        return real, fake

    def g_inputs(self, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's input for the generator's update (with gradient to G), and the CLIP image
        embedding of ``fake`` when that pass computes one (else None)."""
        return fake, None

    def clip_term(self, fake: torch.Tensor, embedding: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
        """The article's CLIP loss: 1 − cos(CLIP image embedding of the fakes, s)."""
        return clip_distance(self.encoder.clip, fake, s)

    def training_step(self, batch, ctx) -> dict:
        images, captions = batch[0], batch[1]
        G, D = self.models["generator"], self.models["discriminator"]
        core_d = unwrap(D)
        cfg = self.config
        s = self.encoder.pooled(list(captions)).to(images.device)
        z = torch.randn(len(images), cfg["noise_dim"], device=images.device)
        fake = G(z, s)

        # --- the discriminator
        real_in, fake_in = self.d_inputs(images, fake.detach())
        gp_now = cfg["ma_gp_weight"] > 0 and ctx.step % cfg["ma_gp_every"] == 0
        s_in = s
        if gp_now:       # MA-GP: the gradient of D's real score w.r.t. its inputs and the sentence
            real_in, s_in = real_in.detach().requires_grad_(True), s.detach().requires_grad_(True)
        # real and fake through D in one batch (fewer, larger operations: faster on a CPU)
        h_real, h_fake = D(torch.cat([real_in, fake_in])).chunk(2)
        real_score = core_d.score(h_real, s_in)
        mis_score = core_d.score(h_real, mismatched(s))
        fake_score = core_d.score(h_fake, s)
        loss_d = d_hinge_loss(real_score, fake_score, mis_score)
        out = {"loss_d": loss_d.detach()}
        if gp_now:
            gp = ma_gradient_penalty(real_score, (real_in, s_in), cfg["ma_gp_weight"], cfg["ma_gp_power"])
            loss_d = loss_d + cfg["ma_gp_every"] * gp
            out["ma_gp"] = gp.detach()
        ctx.optimize("discriminator", loss_d)

        # --- the generator
        for p in D.parameters():
            p.requires_grad_(False)
        g_in, embedding = self.g_inputs(fake)
        g_score = core_d.score(D(g_in), s)
        loss_g = g_hinge_loss(g_score)
        out["loss_g_adv"] = loss_g.detach()
        if cfg["clip_weight"] > 0:
            lc = self.clip_term(fake, embedding, s)
            loss_g = loss_g + cfg["clip_weight"] * lc
            out["clip_loss"] = lc.detach()
        ctx.optimize("generator", loss_g)
        for p in D.parameters():
            p.requires_grad_(True)
        out["loss_g"] = loss_g.detach()
        out["d_real"] = real_score.detach().mean()
        out["d_fake"] = fake_score.detach().mean()
        return out


def training_batches(dataset, batch_size: int, seed: int = 0):
    """Batches ``(images (B, 3, H, W) in [-1, 1], captions)`` from a WorldDataset, shuffled
    each epoch in an order fixed by ``seed``; captions drawn afresh from the world's
    templates every time (``captions="random"``)."""
    from .data import batch_loader

    return batch_loader(lambda i: dataset.batch(i)[:2], len(dataset), batch_size, seed)


def train_adversarial(model: nn.Module, encoder, method_class, *, config: Mapping | None = None,
                      profile=None, resume_path=None, steps: int | None = None,
                      max_minutes: float | None = None, plot=None, desc: str = "GAN", data=None):
    """Train a GAN-like ``model`` (``.generator``, ``.discriminator``, ``.config``) in place with
    ``method_class`` through :func:`course_lib.training.fit`; returns ``(history, method)``.
    The one training path of notebook 03's GAN and notebook 04's GALIP.

    Args:
        config: default ``model.config``. steps / max_minutes: default the config's; a config
            with ``steps=None`` trains for exactly ``max_minutes`` (notebook 03's twin).
        data: batches ``(images, captions)``; default the world's train split
            (:func:`training_batches`, captions drawn afresh every time).
    """
    from .data import WorldDataset

    p = get_profile(profile)
    cfg = dict(config or model.config)
    if data is None:
        train = WorldDataset("train", n=cfg["n_train"], image_size=cfg["image_size"],
                             captions="random", two_object_fraction=0.0, profile=p)
        data = training_batches(train, cfg["batch_size"], cfg["seed"])
    method = method_class(model, encoder, cfg)
    steps = cfg["steps"] if steps is None else steps        # None: train for max_minutes exactly
    minutes = cfg["max_minutes"] if max_minutes is None else max_minutes
    history = fit(method, data, steps=None if steps is None else int(steps),
                  max_seconds=None if minutes is None else 60.0 * minutes,
                  resume_path=resume_path, desc=desc, seed=cfg["seed"], log_every=10,
                  plot=p.plot_every_s if plot is None else plot, card={"config": cfg})
    model.eval()
    return history, method


def train_gan(gan: TextToImageGAN, encoder, *, config: Mapping | None = None, profile=None,
              resume_path=None, steps: int | None = None, max_minutes: float | None = None,
              plot=None, desc: str = "GAN", data=None):
    """Train ``gan`` in place (:func:`train_adversarial` with :class:`GANMethod`); returns
    ``(history, method)``."""
    return train_adversarial(gan, encoder, GANMethod, config=config, profile=profile,
                             resume_path=resume_path, steps=steps, max_minutes=max_minutes,
                             plot=plot, desc=desc, data=data)


def load_or_train_gan(profile=None, *, retrain: bool = False, config: Mapping | None = None,
                      name: str = CHECKPOINT, verbose: bool = True, **changes):
    """The profile's GAN: loaded from its checkpoint, or trained (minutes) and saved.

    Args:
        profile: a Profile, a name or None (active). retrain: train even if a checkpoint exists.
        config: default :func:`gan_config` of the profile (with ``changes`` applied), e.g.
            ``load_or_train_gan(name="gan-no-clip", clip_weight=0.0)`` for an ablation.
        name: the checkpoint's name.

    Returns:
        ``(gan, card)``: a :class:`TextToImageGAN` in eval mode with its text encoder
        attached (ready for :func:`sample`), and its checkpoint card
        (``card["metrics"]``: steps, minutes, stopped_by, loss curves).

    Raises:
        CheckpointMismatchError: a checkpoint of another config exists (retrain=True
            replaces it), or it was trained on another CLIP.
    """
    p = get_profile(profile)
    encoder = conditioning.text_encoder(p, verbose=verbose)
    config = dict(config or gan_config(p, encoder, **changes))

    def train(gan, resume_path):
        history, _ = train_gan(gan, encoder, config=config, profile=p, resume_path=resume_path)
        return {**history.summary(),
                "losses": {k: v for k, v in history.losses.items()}}

    gan, card = checkpoints.load_or_train(name, config=config, build=build_gan, train=train,
                                          profile=p, retrain=retrain, device=encoder.clip.logit_scale.device,
                                          verbose=verbose)
    conditioning.attach_text_encoder(gan, encoder, expected=card.get("config", config).get("clip"))
    gan.eval()
    return gan, card


# =============================================================================
# 5. Sampling
# =============================================================================


def draw_noise(n: int, dim: int, seed: int = 0, truncation: float = 1.0, device=None) -> torch.Tensor:
    """``n`` noise vectors from a seeded generator (the same seed, the same vectors),
    scaled by ``truncation`` (the truncation trick: ψ < 1 draws closer to the mean)."""
    if not (isinstance(truncation, (int, float)) and 0.0 < truncation <= 1.0):
        raise ValueError(f"truncation must be in (0, 1] (1 = none; smaller = less diverse, more "
                         f"typical images), got {truncation!r}")
    z = seeded_noise(n, dim, seed=seed) * float(truncation)
    return z.to(device) if device is not None else z


noise = renamed(draw_noise, "gan.noise")   # ``sample``'s keyword ``noise`` now means the tensor itself


@torch.no_grad()
def sample(model: TextToImageGAN, captions, *, seed: int = 0, noise: torch.Tensor | None = None,
           truncation: float = 1.0, embeddings: torch.Tensor | None = None,
           batch_size: int = 1024, z: torch.Tensor | None = None) -> torch.Tensor:
    """One image per caption: float ``(N, 3, H, W)`` in [-1, 1] (the course's convention).

    Args:
        model: a :class:`TextToImageGAN` with its text encoder (from :func:`load_or_train_gan`).
        captions: a list of captions (one str is a list of one).
        seed: the noise seed: the same seed and captions give the same images.
        noise: explicit z ``(N, noise_dim)`` instead of drawing it from ``seed``
            (interpolations); used as given (``truncation`` scales only drawn noise).
        truncation: ψ in (0, 1], see :func:`draw_noise`.
        embeddings: explicit sentence embeddings ``(N, D)`` instead of encoding
            ``captions`` (caption interpolation); then ``captions`` may be None.
        batch_size: images per forward pass.
        z: the old name of ``noise`` (deprecated).

    Raises:
        ValueError / TypeError: empty or non-string captions, a caption too long for
            CLIP (``CaptionError``), a truncation outside (0, 1], noise of the wrong shape
            (``conditioning.NoiseShapeError``).
    """
    if z is not None:
        warnings.warn("gan.sample(z=...) is now sample(noise=...), the name every generator uses.",
                      DeprecationWarning, stacklevel=2)
        noise = z if noise is None else noise
    seed = runtime.check_seed(seed)
    G = model.generator
    device = next(G.parameters()).device
    if embeddings is None:
        captions = conditioning.check_captions(captions, "sample(captions)")
        s = conditioning.get_text_encoder(model).pooled(captions).to(device)
    else:
        dim = conditioning.get_text_encoder(model).embed_dim
        s = conditioning.check_embeddings(embeddings, dim, "gan.sample(embeddings)").to(device, torch.float32)
    n = len(s)
    if noise is None:
        z = draw_noise(n, G.noise_dim, seed, truncation, device)
    else:
        z = conditioning.check_noise(noise, (n, G.noise_dim), "gan.sample(noise)")
    was = G.training
    G.eval()
    out = torch.cat([G(z[i:i + batch_size].to(device), s[i:i + batch_size])
                     for i in range(0, n, batch_size)])
    G.train(was)
    return conditioning.finish_samples(out, "gan.sample")




def interpolate_noise(model: TextToImageGAN, caption: str, n: int = 8, *, seed_a: int = 0,
                      seed_b: int = 1) -> torch.Tensor:
    """One caption, noise moving from seed ``seed_a`` to ``seed_b`` (slerp): ``n`` images."""
    G = model.generator
    n = runtime.check_count(n, "interpolate_noise(n)", minimum=2)
    za, zb = draw_noise(1, G.noise_dim, seed_a)[0], draw_noise(1, G.noise_dim, seed_b)[0]
    z = slerp(za, zb, torch.linspace(0, 1, n))
    return sample(model, [caption] * n, noise=z)


def interpolate_captions(model: TextToImageGAN, caption_a: str, caption_b: str, n: int = 8, *,
                         seed: int = 0) -> torch.Tensor:
    """One noise, the sentence embedding moving from ``caption_a`` to ``caption_b`` (slerp)."""
    n = runtime.check_count(n, "interpolate_captions(n)", minimum=2)
    enc = conditioning.get_text_encoder(model)
    sa, sb = enc.pooled(conditioning.check_captions([caption_a, caption_b]))
    s = slerp(sa.cpu(), sb.cpu(), torch.linspace(0, 1, n))
    z = draw_noise(1, model.generator.noise_dim, seed).expand(n, -1)
    return sample(model, None, noise=z, embeddings=s)
