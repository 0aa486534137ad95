"""The CLIP-conditioned VAE: encoder -> (mu, log sigma^2) -> z -> decoder, with the text in.

Read top-down:

1. Config: :func:`vae_config` (sizes from ``profile.vae``), :data:`FUSIONS`.
2. The model: :class:`ClipVAE` -- a small convolutional encoder and decoder and one of
   four ways (``fusion=``) for the CLIP text embedding to enter:

   * ``"add"``    -- the source article's ``z = z + clip_proj(text_emb)``, then decode;
   * ``"concat"`` -- decode ``[z, text_proj(text_emb)]`` (the decoder keeps the two apart);
   * ``"film"``   -- decode ``z``; every decoder stage is scaled and shifted by the text
     (FiLM, Perez et al. 2018): ``h = h * (1 + gamma(t)) + beta(t)``;
   * ``"cvae"``   -- the textbook conditional VAE (Sohn et al. 2015): the encoder reads the
     text too, ``q(z | x, t)``; the prior is learned from the text, ``p(z | t)``; the
     decoder reads ``[z, t]``. The KL term then only charges for what the text does not say.
3. The loss: :func:`gaussian_kl`, :func:`elbo` (reconstruction + beta * KL, per image).
4. Training: :class:`VAEMethod` (a ``course_lib.training.Method``), :func:`training_data`,
   :func:`train_vae`, :func:`load_or_train_vae`.
5. Using it: :func:`sample` (the course's sampling convention), :func:`encode`,
   :func:`reconstruct`, :func:`decode`.

Explained in notebook 05 (``notebooks/05_clip_vae_and_the_autoencoder.ipynb``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints
from ..conditioning import (
    attach_text_encoder,
    check_captions,
    check_noise,
    clip_dependency,
    finish_samples,
    get_text_encoder,
    text_encoder,
)
from ..images import check_images
from ..profiles import NOTEBOOK_SETTINGS, get_profile
from ..runtime import check_seed, plain_number, seeded_noise
from ..training import Method, fit, warmup_cosine  # noqa: F401  (vae.warmup_cosine, as before)

__all__ = ["FUSIONS", "VAE_CHECKPOINT", "UnknownFusionError", "vae_config", "ClipVAE",
           "build_vae", "gaussian_kl", "elbo", "warmup_cosine", "VAEMethod", "training_data", "train_vae",
           "load_or_train_vae", "sample", "encode", "reconstruct", "decode"]

#: The ways the text can enter the VAE (see the module docstring).
FUSIONS = ("add", "concat", "film", "cvae")
#: Checkpoint name of the profile's VAE (variants get a suffix, e.g. ``vae-fusion=add``).
VAE_CHECKPOINT = "vae"
#: Version of the recipe (architecture + loss); in the config so old checkpoints never load silently.
VAE_RECIPE = 1


class UnknownFusionError(ValueError):
    """A ``fusion=`` that is not one of :data:`FUSIONS`."""


def _check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise UnknownFusionError(f"Unknown fusion {fusion!r}. Use one of {', '.join(FUSIONS)} "
                                 "(notebook 05, section 'Where does the text go?').")
    return fusion


# =============================================================================
# 1. Config
# =============================================================================


def vae_config(profile=None, encoder=None, **overrides) -> dict:
    """Everything that defines a CLIP-VAE of a profile (stored in and checked against its card).

    Args:
        profile: a Profile, a name or None (the active profile); sizes from ``profile.vae``.
        encoder: the frozen CLIP text encoder (default: :func:`course_lib.conditioning.text_encoder`).
        **overrides: any field of ``VaeSizes`` (``fusion="add"``, ``beta=0.1``, ``steps=400``).

    Returns:
        a JSON-able dict: the sizes, the training recipe, the image size and the CLIP it
        conditions on (``"clip"``: :func:`course_lib.conditioning.clip_dependency`).
    """
    p = get_profile(profile)
    v = p.vae
    unknown = sorted(set(overrides) - set(v.__dataclass_fields__))
    if unknown:
        raise TypeError(f"vae_config: unknown setting(s) {unknown}; the VAE's settings are "
                        f"{sorted(v.__dataclass_fields__)}.")
    sizes = {**{k: getattr(v, k) for k in v.__dataclass_fields__}, **overrides}
    for key in NOTEBOOK_SETTINGS["vae"]:       # how notebook 05 measures, not what the model is
        sizes.pop(key)
    _check_fusion(sizes["fusion"])
    encoder = text_encoder(p) if encoder is None else encoder
    return {**sizes, "image_size": p.data.image_size, "n_train": p.data.n_train,
            "seed": p.seed, "recipe": VAE_RECIPE, "clip": clip_dependency(encoder)}


# =============================================================================
# 2. The model
# =============================================================================


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _Up(nn.Module):
    """Decoder stage: x2 nearest upsampling, 3x3 conv, GroupNorm, optional FiLM, SiLU."""

    def __init__(self, cin: int, cout: int, film_dim: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = _norm(cout)
        self.film = nn.Linear(film_dim, 2 * cout) if film_dim else None

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        if self.film is not None:
            gamma, beta = self.film(t)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        return F.silu(h)


class ClipVAE(nn.Module):
    """A VAE for the course's images whose decoder follows a CLIP text embedding.

    Encoder: three stride-2 convolutions (S -> S/8), flattened, a linear layer to
    ``(mu, logvar)`` of a ``latent_dim`` vector. Decoder: a linear layer to a
    (4w, S/8, S/8) map, three upsampling stages, a 3x3 conv to RGB. The text embedding
    ``t`` (the CLIP's pooled, unit-length caption embedding) enters as ``fusion`` says
    (see the module docstring).

    Args:
        fusion: one of :data:`FUSIONS`.
        latent_dim: size of z. width: channels of the first encoder stage (x2 per stage).
        text_dim: size of the projected text (concat, film, cvae). embed_dim: CLIP's embedding size.
        image_size: side of the images (a multiple of 8).

    Inputs are float images (N, 3, S, S) in [-1, 1] and text embeddings (N, embed_dim).
    """

    def __init__(self, fusion: str = "cvae", latent_dim: int = 32, width: int = 32,
                 text_dim: int = 64, embed_dim: int = 64, image_size: int = 32):
        super().__init__()
        self.fusion = _check_fusion(fusion)
        if image_size % 8:
            raise ValueError(f"ClipVAE: image_size must be a multiple of 8, got {image_size}.")
        self.latent_dim, self.width, self.text_dim = int(latent_dim), int(width), int(text_dim)
        self.embed_dim, self.image_size = int(embed_dim), int(image_size)
        w, s = self.width, self.image_size // 8
        self.cells = 4 * w * s * s
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), _norm(w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), _norm(2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), _norm(4 * w), nn.SiLU(),
            nn.Flatten())
        enc_in = self.cells + (text_dim if fusion == "cvae" else 0)
        self.to_posterior = nn.Linear(enc_in, 2 * latent_dim)
        if fusion == "add":
            # the article: a linear projection of the text into z's space
            self.clip_proj = nn.Linear(embed_dim, latent_dim)
        else:
            self.text_proj = nn.Sequential(nn.Linear(embed_dim, text_dim), nn.SiLU(),
                                           nn.Linear(text_dim, text_dim))
        if fusion == "cvae":
            self.to_prior = nn.Linear(text_dim, 2 * latent_dim)
        dec_in = latent_dim + (text_dim if fusion in ("concat", "cvae") else 0)
        film = text_dim if fusion == "film" else None
        self.from_latent = nn.Linear(dec_in, self.cells)
        self.up = nn.ModuleList([_Up(4 * w, 2 * w, film), _Up(2 * w, w, film),
                                 _Up(w, max(w // 2, 8), film)])
        self.to_rgb = nn.Conv2d(max(w // 2, 8), 3, 3, padding=1)

    # -- the pieces -------------------------------------------------------------------------

    def _text(self, text_emb: torch.Tensor) -> torch.Tensor:
        if text_emb.ndim != 2 or text_emb.shape[1] != self.embed_dim:
            raise ValueError(f"ClipVAE: text embeddings must be (N, {self.embed_dim}), got "
                             f"{tuple(text_emb.shape)}. Use the CLIP the VAE was trained with "
                             "(get_text_encoder(model).pooled(captions)).")
        return self.text_proj(text_emb) if self.fusion != "add" else text_emb

    def encode(self, images: torch.Tensor, text_emb: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)`` (or ``q(z | x, t)`` for cvae): ``(mu, logvar)``, each (N, latent_dim)."""
        images = check_images(images, "ClipVAE.encode(images)", size=self.image_size)
        h = self.encoder(images)
        if self.fusion == "cvae":
            if text_emb is None:
                raise ValueError("ClipVAE(fusion='cvae').encode needs the text embeddings: "
                                 "its encoder is q(z | x, text).")
            h = torch.cat([h, self._text(text_emb)], dim=1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def prior(self, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(z | t)``: ``(mu, logvar)``; N(0, I) for every fusion but cvae."""
        n = text_emb.shape[0]
        if self.fusion != "cvae":
            zeros = text_emb.new_zeros(n, self.latent_dim)
            return zeros, zeros
        mu, logvar = self.to_prior(self._text(text_emb)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``p(x | z, t)``'s mean: images (N, 3, S, S), not clamped."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ClipVAE.decode: z must be (N, {self.latent_dim}) (latent_dim of this "
                             f"model), got {tuple(z.shape)}. Encode with this model, or draw "
                             f"torch.randn(n, {self.latent_dim}).")
        if text_emb.shape[0] != z.shape[0]:
            raise ValueError(f"ClipVAE.decode: {z.shape[0]} latents but {text_emb.shape[0]} captions.")
        t = self._text(text_emb)
        film = None
        if self.fusion == "add":
            h = z + self.clip_proj(t)                     # the article's fusion
        elif self.fusion in ("concat", "cvae"):
            h = torch.cat([z, t], dim=1)
        else:
            h, film = z, t
        s = self.image_size // 8
        h = F.silu(self.from_latent(h)).view(-1, 4 * self.width, s, s)
        for up in self.up:
            h = up(h, film)
        return self.to_rgb(h)

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode, reparameterise, decode: ``{"recon", "mu", "logvar", "prior_mu",
        "prior_logvar", "z"}``."""
        mu, logvar = self.encode(images, text_emb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()      # the reparameterisation trick
        prior_mu, prior_logvar = self.prior(text_emb)
        return {"recon": self.decode(z, text_emb), "mu": mu, "logvar": logvar,
                "prior_mu": prior_mu, "prior_logvar": prior_logvar, "z": z}


def build_vae(config: Mapping) -> ClipVAE:
    """An untrained :class:`ClipVAE` from a :func:`vae_config`."""
    return ClipVAE(fusion=config["fusion"], latent_dim=config["latent_dim"], width=config["width"],
                   text_dim=config["text_dim"], embed_dim=config["clip"]["embed_dim"],
                   image_size=config["image_size"])


# =============================================================================
# 3. The loss
# =============================================================================


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | None = None,
                prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """KL( N(mu, e^logvar) || N(prior_mu, e^prior_logvar) ), elementwise (same shape as mu).

    With no prior given it is N(0, I): ``0.5 * (mu^2 + e^logvar - 1 - logvar)``.
    """
    if prior_mu is None:
        prior_mu = torch.zeros_like(mu)
    if prior_logvar is None:
        prior_logvar = torch.zeros_like(logvar)
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu) ** 2) / prior_logvar.exp()
                  - 1.0)


def elbo(images: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
         beta: float = 1.0, prior_mu: torch.Tensor | None = None,
         prior_logvar: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The negative ELBO of a batch, per image (what the VAE minimises).

    .. math::
        \\mathcal{L} = \\underbrace{\\lVert x - \\hat x\\rVert^2}_{-\\log p(x|z) + c}
                      + \\beta\\,\\mathrm{KL}\\big(q(z|x)\\,\\Vert\\,p(z)\\big)

    The reconstruction term is the negative log-likelihood of a Gaussian decoder with a
    fixed variance of 1/2 (up to a constant): the sum of squared errors over pixels.
    Both terms are summed over their dimensions and averaged over the batch.

    Returns:
        ``{"loss", "recon", "kl"}`` (scalars; ``loss = recon + beta * kl``).
    """
    recon_err = (recon - images).pow(2).flatten(1).sum(1).mean()
    kl = gaussian_kl(mu, logvar, prior_mu, prior_logvar).sum(1).mean()
    return {"loss": recon_err + beta * kl, "recon": recon_err, "kl": kl}


# =============================================================================
# 4. Training
# =============================================================================


class VAEMethod(Method):
    """How a :class:`ClipVAE` trains (a :class:`course_lib.training.Method`).

    One step: images and caption embeddings in, the model's forward pass, :func:`elbo`,
    one AdamW step; the learning rate warms up, then follows a cosine (:func:`warmup_cosine`). Batches are
    ``(uint8 images (B, S, S, 3), text embeddings (B, D))`` (see :func:`training_data`).
    """

    def __init__(self, model: ClipVAE, *, lr: float, steps: int, beta: float = 1.0):
        from ..images import to_float

        self._to_float = to_float
        self.beta = float(beta)
        self.one_model_adamw("vae", model, lr=lr, steps=steps)

    def training_step(self, batch, ctx):
        pixels, text_emb = batch
        x = self._to_float(pixels).to(ctx.device)
        out = self.models["vae"](x, text_emb.to(ctx.device))
        losses = elbo(x, out["recon"], out["mu"], out["logvar"], beta=self.beta,
                      prior_mu=out["prior_mu"], prior_logvar=out["prior_logvar"])
        ctx.optimize("vae", losses["loss"], max_grad_norm=100.0)
        return losses


_EMBEDDINGS: dict[tuple, torch.Tensor] = {}


@torch.no_grad()
def _embed_captions(encoder, captions: list[str], batch_size: int = 1000) -> torch.Tensor:
    """Pooled CLIP embeddings of many captions, each distinct caption encoded once."""
    unique = sorted(set(captions))
    out = []
    for s in range(0, len(unique), batch_size):
        out.append(encoder.pooled(unique[s:s + batch_size]).float().cpu())
    table = torch.cat(out)
    index = {c: i for i, c in enumerate(unique)}
    return table[torch.tensor([index[c] for c in captions])]


def training_data(config: Mapping, encoder, profile=None, seed: int | None = None):
    """Batches ``(uint8 images, caption embeddings)`` of the world's train split.

    Every image has two captions, its canonical one and one varied caption (a template
    with synonyms); each batch picks one of the two per image at random. The CLIP
    embeddings are computed once up front (the text encoder is frozen), so a training
    step never runs CLIP.
    """
    from ..data import WorldDataset, batch_loader

    p = get_profile(profile)
    seed = config["seed"] if seed is None else seed
    train = WorldDataset("train", n=config["n_train"], image_size=config["image_size"],
                         captions="fixed", profile=p)
    key = (config["clip"]["fingerprint"], config["n_train"], config["image_size"], seed,
           train.two_object_fraction)
    embs = _EMBEDDINGS.get(key)
    if embs is None:       # once per process: every VAE of notebook 05 trains on the same captions
        embs = torch.stack([_embed_captions(encoder, train.canonical_captions),
                            _embed_captions(encoder, train.fixed_captions)])     # (2, N, D)
        _EMBEDDINGS.clear()
        _EMBEDDINGS[key] = embs

    def pairs(idx):               # one of each image's two captions, drawn per batch
        which = torch.randint(0, 2, (len(idx),))
        return train.images[idx], embs[which, idx]

    return batch_loader(pairs, len(train), config["batch_size"], seed)


def train_vae(model: ClipVAE, config: Mapping, *, encoder=None, profile=None, resume_path=None,
              plot: bool | float | None = None, desc: str | None = None):
    """Train ``model`` in place with ``config`` (a :func:`vae_config`); returns
    ``(history, method)`` (``history.measured["prepare_seconds"]``: encoding the captions).

    Stops after ``config["steps"]`` steps or ``config["max_minutes"]`` minutes, whichever
    comes first (the time budget of the profile).
    """
    p = get_profile(profile)
    encoder = text_encoder(p) if encoder is None else encoder
    t0 = time.perf_counter()
    data = training_data(config, encoder, p)
    prep = time.perf_counter() - t0
    method = VAEMethod(model, lr=config["lr"], steps=config["steps"], beta=config["beta"])
    history = fit(method, data, steps=config["steps"], max_seconds=60.0 * config["max_minutes"],
                  resume_path=resume_path, desc=desc or f"VAE ({config['fusion']})",
                  seed=config["seed"], plot=p.plot_every_s if plot is None else plot,
                  log_every=10, card={"config": dict(config)})
    model.eval()
    history.measured["prepare_seconds"] = prep
    return history, method


def _card_metrics(history) -> dict:
    return {**history.summary(), "final_loss": history.last("loss", 10),
            "final_recon": history.last("recon", 10), "final_kl": history.last("kl", 10),
            "loss_history": history.losses["loss"], "kl_history": history.losses["kl"]}


def _checkpoint_name(overrides: Mapping) -> str:
    if not overrides:
        return VAE_CHECKPOINT
    return checkpoints.variant_name(VAE_CHECKPOINT, overrides)


def load_or_train_vae(profile=None, *, retrain: bool = False, name: str | None = None,
                      device=None, verbose: bool = True, plot: bool | float | None = None,
                      **overrides) -> tuple[ClipVAE, dict]:
    """The profile's CLIP-VAE: loaded from its checkpoint, or trained (minutes) and saved.

    Args:
        profile: a Profile, a name or None (the active profile).
        retrain: train again even if a checkpoint exists.
        name: checkpoint name (default ``"vae"``, or ``"vae-fusion=add"`` etc. with overrides).
        **overrides: settings of ``VaeSizes`` to change, e.g. ``fusion="add", steps=400``.

    Returns:
        ``(model, card)``: the :class:`ClipVAE` in eval mode with its frozen text encoder
        attached (so ``sample(model, captions)`` needs nothing else), and its card
        (``card["metrics"]``: steps, minutes, seconds per step, loss curves).

    Raises:
        CheckpointMismatchError: a checkpoint of another config, or one trained on another CLIP.
    """
    p = get_profile(profile)
    encoder = text_encoder(p, device=device, verbose=verbose)
    config = vae_config(p, encoder=encoder, **overrides)
    model, card = checkpoints.load_or_train(
        name or _checkpoint_name(overrides), config=config, build=build_vae,
        train=lambda m, resume: _card_metrics(train_vae(m, config, encoder=encoder, profile=p,
                                                        resume_path=resume, plot=plot)[0]),
        profile=p, retrain=retrain, device=device, verbose=verbose)
    attach_text_encoder(model, encoder, expected=card["config"]["clip"])
    return model, card


# =============================================================================
# 5. Using it
# =============================================================================


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _noise(n: int, dim: int, seed: int, device) -> torch.Tensor:
    return seeded_noise(n, dim, seed=seed, device=device)


@torch.no_grad()
def sample(model: ClipVAE, captions, *, seed: int = 0, temperature: float = 1.0,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Images for captions: z from the prior, decoded with the text. One image per caption.

    Args:
        model: a trained :class:`ClipVAE` with its text encoder (:func:`load_or_train_vae`).
        captions: a list of captions (or one str).
        seed: the same seed and captions give the same images; the same seed and *other*
            captions keep the same noise (edit the text, keep "the rest").
        temperature: scales the prior's spread (0: its mean, the "average" image).
        noise: standard-normal noise ``(N, latent_dim)`` to use instead of drawing it;
            z = prior mean + prior std * temperature * noise.

    Returns:
        float (N, 3, S, S) in [-1, 1].
    """
    captions = check_captions(captions)
    seed = check_seed(seed)
    temperature = plain_number(temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature!r}: a finite number >= 0 (0: the prior's mean, "
                         "1: its full spread).")
    device = _device(model)
    text = get_text_encoder(model).pooled(captions).float().to(device)
    if noise is None:
        noise = _noise(len(captions), model.latent_dim, seed, device)
    else:
        noise = check_noise(noise, (len(captions), model.latent_dim), "vae.sample(noise)")
    mu, logvar = model.prior(text)
    z = mu + (0.5 * logvar).exp() * temperature * noise.to(device)
    return finish_samples(model.decode(z, text))


@torch.no_grad()
def encode(model: ClipVAE, images, captions) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, logvar)`` of real images (float (N, 3, S, S) in [-1, 1]) with their captions."""
    captions = check_captions(captions)
    x = check_images(images, "encode(images)", size=model.image_size).to(_device(model))
    if len(captions) != len(x):
        raise ValueError(f"encode: {len(x)} images but {len(captions)} captions.")
    text = get_text_encoder(model).pooled(captions).float().to(x.device)
    return model.encode(x, text)


@torch.no_grad()
def decode(model: ClipVAE, z: torch.Tensor, captions) -> torch.Tensor:
    """Images from latents ``z`` (N, latent_dim) and captions: float (N, 3, S, S) in [-1, 1]."""
    captions = check_captions(captions)
    text = get_text_encoder(model).pooled(captions).float().to(_device(model))
    return finish_samples(model.decode(z.to(text.device), text))


@torch.no_grad()
def reconstruct(model: ClipVAE, images, captions, captions_out=None) -> torch.Tensor:
    """Encode real images with their captions and decode them (with ``captions_out``, if
    given: the same z under another caption edits the image)."""
    mu, _ = encode(model, images, captions)
    return decode(model, mu, captions if captions_out is None else captions_out)
