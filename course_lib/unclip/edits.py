"""What the decoder gives besides text -> image: generate, variations, interpolations, text
diffs and DDIM inversion (the paper's sections 3 and its figures), as plain functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import conditioning
from ..images import check_images
from ..runtime import check_count, renamed, seeded_noise
from .decoder import DecoderModel, decode_embeddings, load_or_train_decoder
from .prior import PriorModel, check_embeddings, image_embeddings, load_or_train_prior, no_prior, sample_prior

__all__ = ["UnCLIP", "load_or_train_unclip", "joined_card", "sample", "sample_no_prior", "generate",
           "generate_no_prior", "as_images",
           "embed_images", "slerp", "variations", "interpolate", "text_direction", "text_diff", "invert"]


class UnCLIP(nn.Module):
    """The two stages side by side: ``prior`` (caption -> z_i) and ``decoder`` (z_i -> image)."""

    def __init__(self, prior: PriorModel, decoder: DecoderModel):
        super().__init__()
        self.prior, self.decoder = prior, decoder

    @property
    def clip(self):
        return conditioning.get_text_encoder(self.decoder).clip


def load_or_train_unclip(profile=None, *, retrain: bool = False, verbose: bool = True, plot=None,
                         prior: dict | None = None, decoder: dict | None = None) -> tuple[UnCLIP, dict]:
    """Both stages of the profile, each loaded or trained and saved: ``(UnCLIP, card)``.

    Args:
        prior / decoder: changes to the profile's ``prior`` / ``decoder`` section, e.g.
            ``decoder={"steps": 400}`` (each stage's own checkpoint name then says so).

    Returns:
        ``(model, card)``: the card joins the two stages' cards: ``card["prior"]`` and
        ``card["decoder"]`` are theirs; ``source`` is "trained" if either stage was trained
        now (else both stages' common source, or e.g. "loaded+shipped"); ``config`` and
        ``metrics`` hold each stage's under its name, and ``metrics["train_minutes"]`` their sum.
    """
    prior_model, prior_card = load_or_train_prior(profile, retrain=retrain, verbose=verbose, plot=plot,
                                                  **(prior or {}))
    decoder_model, decoder_card = load_or_train_decoder(profile, retrain=retrain, verbose=verbose,
                                                        plot=plot, **(decoder or {}))
    return UnCLIP(prior_model, decoder_model), joined_card(prior_card, decoder_card)


def joined_card(prior_card: dict, decoder_card: dict) -> dict:
    """One card for the two stages (see :func:`load_or_train_unclip`)."""
    sources = [prior_card.get("source", "?"), decoder_card.get("source", "?")]
    source = "trained" if "trained" in sources else sources[0] if sources[0] == sources[1] \
        else "+".join(sources)
    metrics = {"prior": prior_card.get("metrics", {}), "decoder": decoder_card.get("metrics", {})}
    metrics["train_minutes"] = sum(float(m.get("train_minutes") or 0.0) for m in metrics.values())
    return {"name": "unclip", "source": source,
            "config": {"prior": prior_card.get("config", {}), "decoder": decoder_card.get("config", {})},
            "metrics": metrics, "prior": prior_card, "decoder": decoder_card}


@torch.no_grad()
def sample(model: UnCLIP, captions, *, seed: int = 0, noise: torch.Tensor | None = None,
           prior_guidance: float | None = None, guidance: float | None = None,
           steps: int | None = None, guidance_rescale: float | None = None) -> torch.Tensor:
    """Text -> image: z_i ~ prior(caption), then image ~ decoder(z_i, caption).
    Float ``(N, 3, H, W)`` in [-1, 1], the course's convention.

    Args:
        seed: seeds the prior's noise and the decoder's (the same seed, the same images).
        noise: the decoder's starting noise ``(N, C, H, W)`` instead of drawing it from
            ``seed`` (the prior's noise still comes from ``seed``).
        prior_guidance / guidance / steps / guidance_rescale: the prior's guidance, the
            decoder's guidance, steps and guidance rescale (default: the profile's ``prior``
            and ``decoder`` sections).
    """
    captions = conditioning.check_captions(captions, "unclip.sample(captions)")
    z = sample_prior(model.prior, captions, seed=seed, guidance=prior_guidance)
    return decode_embeddings(model.decoder, z, captions, seed=seed, noise=noise, guidance=guidance,
                             steps=steps, guidance_rescale=guidance_rescale)


generate = renamed(sample, "unclip.generate")       # the name notebook 07 first used


@torch.no_grad()
def sample_no_prior(decoder: DecoderModel, captions, *, seed: int = 0, noise: torch.Tensor | None = None,
                    guidance: float | None = None, steps: int | None = None,
                    guidance_rescale: float | None = None) -> torch.Tensor:
    """The paper's "no prior" ablation, a generator of its own: the decoder on the captions'
    *text* embeddings (:func:`~course_lib.unclip.prior.no_prior`). Also how the training
    command grades a decoder alone, and what a shipped decoder's card check reproduces."""
    captions = conditioning.check_captions(captions, "unclip.sample_no_prior(captions)")
    z = no_prior(conditioning.get_text_encoder(decoder), captions)
    return decode_embeddings(decoder, z, captions, seed=seed, noise=noise, guidance=guidance, steps=steps,
                             guidance_rescale=guidance_rescale)


generate_no_prior = renamed(sample_no_prior, "unclip.generate_no_prior")       # notebook 07's first name


def as_images(images, size: int) -> torch.Tensor:
    """A PIL image, a list of them, or a tensor/array the course's image check accepts ->
    float ``(N, 3, size, size)`` in [-1, 1]. PIL images are converted as the course's
    folder loader does (RGB, centre square, resized)."""
    from PIL import Image

    from ..data.folder import center_square, to_rgb

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, Image.Image) for i in images):
        import numpy as np
        arrays = [np.asarray(center_square(to_rgb(i)).resize((size, size), Image.Resampling.LANCZOS),
                             dtype=np.uint8) for i in images]
        images = np.stack(arrays)
    return check_images(images, "unclip images", size=size, single=True)


def embed_images(model: UnCLIP | DecoderModel, images) -> torch.Tensor:
    """Unit CLIP image embeddings of images (any form :func:`as_images` accepts)."""
    decoder = model.decoder if isinstance(model, UnCLIP) else model
    clip = conditioning.get_text_encoder(decoder).clip
    x = as_images(images, int(decoder.config["image_size"]))
    return image_embeddings(clip, x.to(decoder.null_z.device))


def slerp(a: torch.Tensor, b: torch.Tensor, theta) -> torch.Tensor:
    """Spherical interpolation of unit embeddings, the angle from the *whole* vectors
    (course_lib.conditioning.slerp; a public community pipeline took acos element-wise, a bug).

    Raises:
        ValueError: θ outside [0, 1], or opposite vectors (no unique great circle).
    """
    t = torch.as_tensor(theta, dtype=torch.float32)
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"slerp: θ must lie in [0, 1] (0: a, 1: b), got {theta!r}.")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"slerp: vectors of sizes {a.shape[-1]} and {b.shape[-1]} (another CLIP?).")
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)
    if (cos < -1 + 1e-6).any():
        raise ValueError("slerp: the two vectors point in opposite directions: every great circle "
                         "joins them, so the path is not defined. Pick another pair.")
    return conditioning.slerp(a, b, t.to(a.dtype))


@torch.no_grad()
def variations(model: UnCLIP, images, n: int = 4, *, seed: int = 0, guidance: float | None = None):
    """``n`` decodings of each image's CLIP embedding with fresh noise (no caption):
    ``(N * n, 3, H, W)``, the variations of image i in rows ``i*n .. i*n+n-1``."""
    z = embed_images(model, images).repeat_interleave(check_count(n, "variations(n)"), dim=0)
    return decode_embeddings(model.decoder, z, None, seed=seed, guidance=guidance)


def _same_noise(decoder: DecoderModel, n: int, seed: int) -> torch.Tensor:
    from ..diffusion import data_shape
    one = seeded_noise(1, *data_shape(decoder), seed=seed)
    return one.expand(n, -1, -1, -1).clone()


@torch.no_grad()
def interpolate(model: UnCLIP, image_a, image_b, n: int = 8, *, seed: int = 0,
                noise: torch.Tensor | None = None, guidance: float | None = None):
    """Decode ``slerp(z_a, z_b, θ)`` for ``n`` θ from 0 to 1 with one fixed noise: a strip."""
    n = check_count(n, "interpolate(n)", minimum=2)
    za, zb = embed_images(model, image_a)[:1], embed_images(model, image_b)[:1]
    z = slerp(za, zb, torch.linspace(0, 1, int(n)))[:, 0]           # (n, D)
    noise = _same_noise(model.decoder, int(n), seed) if noise is None else noise.expand(int(n), -1, -1, -1)
    return decode_embeddings(model.decoder, z, None, noise=noise, guidance=guidance)


def text_direction(model: UnCLIP | DecoderModel, caption_from: str, caption_to: str) -> torch.Tensor:
    """The unit text diff: normalize(text(caption_to) - text(caption_from)), ``(1, D)``."""
    decoder = model.decoder if isinstance(model, UnCLIP) else model
    enc = conditioning.get_text_encoder(decoder)
    t = enc.pooled([caption_from, caption_to])
    d = t[1] - t[0]
    if d.norm() < 1e-6:
        raise ValueError(f"text_diff: {caption_from!r} and {caption_to!r} have the same CLIP "
                         "embedding: there is no direction to move along. Use two different captions.")
    return F.normalize(d, dim=-1)[None]


@torch.no_grad()
def text_diff(model: UnCLIP, image, caption_from: str, caption_to: str, thetas=(0.0, 0.25, 0.5), *,
              seed: int = 0, noise: torch.Tensor | None = None, guidance: float | None = None,
              steps: int | None = None, scheduler: str = "ddim"):
    """The paper's text diffs: z_θ = slerp(z_i, d, θ) with d the unit text diff, decoded with
    one fixed noise (e.g. the image's DDIM inversion). Returns ``(len(thetas), 3, H, W)``.

    From inverted noise, decode as the inversion did (``guidance=1.0``, its ``steps``, DDIM):
    then θ = 0 *is* the inversion's reconstruction, and each θ > 0 changes only what the
    text diff moves. ``guidance``/``steps`` default to the profile's decoder section."""
    z = embed_images(model, image)[:1]
    d = text_direction(model, caption_from, caption_to).to(z.device)
    thetas = torch.as_tensor(thetas, dtype=torch.float32).flatten()
    zs = torch.cat([slerp(z, d, float(t)) for t in thetas])
    k = len(thetas)
    noise = _same_noise(model.decoder, k, seed) if noise is None else noise.expand(k, -1, -1, -1)
    return decode_embeddings(model.decoder, F.normalize(zs, dim=-1), None, noise=noise, guidance=guidance,
                             steps=steps, scheduler=scheduler)


@torch.no_grad()
def invert(model: UnCLIP | DecoderModel, image, *, steps: int = 50, z: torch.Tensor | None = None):
    """DDIM inversion (diffusers ``DDIMInverseScheduler``, ``clip_sample=False``): the latent
    noise that the decoder, run deterministically (DDIM, no guidance) under the image's own
    z_i, turns back into the image. Returns ``(noise (1, C, H, W), z (1, D))``; decode with
    ``decode_embeddings(decoder, z, noise=noise, guidance=1.0, steps=steps)``."""
    from diffusers import DDIMInverseScheduler

    from ..diffusion import from_patches, to_patches
    from ..vae import encode_latents

    decoder = model.decoder if isinstance(model, UnCLIP) else model
    steps = check_count(steps, "invert(steps)")
    if steps > int(decoder.config["train_timesteps"]):
        raise ValueError(f"invert(steps={steps}): at most the training schedule's {decoder.config['train_timesteps']} steps.")
    x = as_images(image, int(decoder.config["image_size"]))[:1].to(decoder.null_z.device)
    z = embed_images(decoder, x) if z is None else check_embeddings(z, decoder.embed_dim, "invert(z)")
    cfg = decoder.config
    inverse = DDIMInverseScheduler(num_train_timesteps=int(cfg["train_timesteps"]),
                                   beta_schedule=cfg["beta_schedule"], prediction_type=cfg["prediction_type"],
                                   clip_sample=False, timestep_spacing="trailing")
    inverse.set_timesteps(int(steps), device=x.device)
    patch = int(cfg["patch"])
    start = x if cfg["space"] == "pixel" else encode_latents(decoder._autoencoder, x)
    latent = to_patches(start, patch)
    cond = decoder.image_condition(z)
    for t in inverse.timesteps:
        latent = inverse.step(decoder(latent, t, **cond), t, latent).prev_sample
    return from_patches(latent, patch), z
