"""unCLIP's second stage: the **decoder** P(x | z_i, y), CLIP image embedding -> image.

Notebook 06's latent diffusion model (course_lib.diffusion: the same UNet builder,
objective, training method and guided loop), conditioned on z_i the paper's two ways:

* through the timestep embedding: ``class_embed_type="projection"`` (diffusers adds a
  projection of ``class_labels`` = z_i to the timestep embedding);
* as ``context_tokens`` extra tokens projected from z_i, concatenated before the caption's
  token states that cross-attention reads.

For classifier-free guidance z_i is replaced by a learned null embedding 10% of the time
and the caption by the null caption 50% of the time (the paper's rates), so the decoder
also works with no caption at all: variations, interpolations and text diffs decode an
embedding alone.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .. import checkpoints, conditioning, runtime
from ..diffusion import (
    DiffusionMethod,
    DiffusionModel,
    check_sampling,
    data_shape,
    decode,
    denoise,
    diffusion_config,
    from_patches,
    make_scheduler,
    to_patches,
)
from ..profiles import get_profile, model_sizes, profile_of
from ..runtime import seeded_noise
from ..training import fit, unwrap
from .prior import check_embeddings, image_embeddings

__all__ = ["DECODER_CHECKPOINT", "decoder_config", "DecoderModel", "build_decoder", "DecoderMethod",
           "decoder_data", "train_decoder", "load_or_train_decoder", "decode_embeddings"]

DECODER_CHECKPOINT = "unclip-decoder"


def decoder_config(profile=None, encoder=None, autoencoder=None, **changes) -> dict:
    """The decoder's config: notebook 06's diffusion config (UNet sizes, schedule, latent
    space) with the ``decoder`` section's conditioning and budget on top."""
    p = get_profile(profile)
    own = model_sizes(p, "decoder", changes, "decoder_config")
    base = diffusion_config(p, encoder, autoencoder)
    # DiffusionMethod's dropout hook reads "caption_dropout": here it drops z_i
    return {**base, **own, "caption_dropout": own["z_dropout"]}


class DecoderModel(DiffusionModel):
    """notebook 06's model (UNet + null caption) plus z_i's two ways in and a null z_i."""

    def __init__(self, config: Mapping):
        d = int(config["clip"]["embed_dim"])
        super().__init__(config, class_embed_type="projection",
                         projection_class_embeddings_input_dim=d)
        width, k = int(config["clip"]["width"]), int(config["context_tokens"])
        self.embed_dim, self.k, self.width = d, k, width
        self.z_to_tokens = nn.Linear(d, k * width)
        # z_i's tokens normalised like the caption's (CLIP's last LayerNorm), so that
        # cross-attention weighs the two alike (see image_condition)
        self.z_norm = nn.LayerNorm(width)
        self.null_z = nn.Parameter(torch.zeros(1, d))

    def image_condition(self, z: torch.Tensor, tokens: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None) -> dict:
        """The UNet's keyword arguments for embeddings ``z`` (and a caption's token states;
        None: the null caption)."""
        n = len(z)
        if tokens is None:
            null = self.null_condition(n)
            tokens, mask = null["encoder_hidden_states"], null["encoder_attention_mask"]
        # A unit z_i has entries ~1/sqrt(D): projected as it is, its tokens are ~20x smaller than
        # the caption's (entries ~1 after CLIP's LayerNorm) and the decoder learns to ignore it.
        # Scaled to entries ~1 and its tokens normalised, it is heard (notebook 07's closing note).
        zs = z * self.embed_dim ** 0.5
        extra = self.z_norm(self.z_to_tokens(zs).view(n, self.k, self.width))
        ones = torch.ones(n, self.k, dtype=torch.bool, device=z.device)
        return {"encoder_hidden_states": torch.cat([extra, tokens], 1),
                "encoder_attention_mask": torch.cat([ones, mask.bool()], 1), "class_labels": zs}

    def null_image_condition(self, n: int) -> dict:
        return self.image_condition(self.null_z.expand(n, -1))


def build_decoder(config: Mapping) -> DecoderModel:
    return DecoderModel(config)


class DecoderMethod(DiffusionMethod):
    """notebook 06's training step through its two hooks: a batch is ``(x0, captions, z_i)``."""

    def conditioning(self, batch) -> dict:
        tokens, mask = self.encoder.tokens(list(batch[1]))
        return {"z": batch[2], "tokens": tokens, "mask": mask}

    def drop_conditioning(self, cond: dict, keep_mask: torch.Tensor) -> dict:
        """``keep_mask`` (drawn with ``caption_dropout`` = ``z_dropout``) keeps z_i; the caption
        is kept with its own probability 1 - ``text_dropout``."""
        core = unwrap(self.models["diffusion"])
        z, tokens, mask = cond["z"], cond["tokens"], cond["mask"]
        n = len(z)
        keep_z = keep_mask.to(z.device)
        keep_text = torch.rand(n, device=z.device) >= self.config["text_dropout"]
        null = core.null_condition(n)
        z = torch.where(keep_z[:, None], z, core.null_z.expand(n, -1))
        tokens = torch.where(keep_text[:, None, None], tokens, null["encoder_hidden_states"])
        mask = torch.where(keep_text[:, None], mask, null["encoder_attention_mask"])
        return core.image_condition(z, tokens, mask)


_DATA: dict[tuple, tuple] = {}


def decoder_data(config: Mapping, encoder, autoencoder, profile=None, batch_size: int | None = None):
    """Batches ``(x0, captions, z_i)``: the train split's latents (encoded once), a fresh
    caption, and the image's own CLIP image embedding (computed once)."""
    from ..data import WorldDataset, batch_loader
    from ..vae import encode_latents

    p = get_profile(profile)
    key = (config["clip"]["fingerprint"], id(autoencoder), config["n_train"], p.seed, config["image_size"])
    if key not in _DATA:
        train = WorldDataset("train", n=config["n_train"], image_size=config["image_size"],
                             captions="random", profile=p)
        images = train.float_images()
        _DATA[key] = (train, encode_latents(autoencoder, images).cpu(),
                      image_embeddings(encoder.clip, images).cpu())
    train, x0, z = _DATA[key]
    return batch_loader(lambda i: (x0[i], train.batch(i)[1], z[i]), len(train),
                        int(batch_size or config["batch_size"]), config["seed"])


def train_decoder(model: DecoderModel, encoder, autoencoder, *, config: Mapping, profile=None,
                  resume_path=None, plot=None):
    p = get_profile(profile)
    data = decoder_data(config, encoder, autoencoder, p)
    method = DecoderMethod(model, encoder, config)
    history = fit(method, data, steps=int(config["steps"]), max_seconds=60.0 * config["max_minutes"],
                  resume_path=resume_path, desc="unclip-decoder", seed=config["seed"], log_every=10,
                  plot=p.plot_every_s if plot is None else plot, card={"config": dict(config)})
    model.eval()
    return history, method


def load_or_train_decoder(profile=None, *, retrain: bool = False, verbose: bool = True, plot=None,
                          **changes):
    """The profile's unCLIP decoder: loaded, or trained and saved (with its text encoder and
    autoencoder attached, like notebook 06's model)."""
    from ..vae import load_or_train_autoencoder

    p = get_profile(profile)
    encoder = conditioning.text_encoder(p, verbose=verbose)
    autoencoder, _ = load_or_train_autoencoder(p, verbose=verbose)
    config = decoder_config(p, encoder, autoencoder, **changes)
    name = checkpoints.variant_name(DECODER_CHECKPOINT, changes)

    def train(model, resume_path):
        h, _ = train_decoder(model, encoder, autoencoder, config=config, profile=p,
                             resume_path=resume_path, plot=plot)
        return {**h.summary(), "loss_history": h.losses["loss"]}

    model, card = checkpoints.load_or_train(name, config=config, build=build_decoder, train=train,
                                            profile=p, retrain=retrain,
                                            device=encoder.clip.logit_scale.device, verbose=verbose)
    conditioning.attach_text_encoder(model, encoder, expected=card.get("config", config).get("clip"))
    object.__setattr__(model, "_autoencoder", autoencoder)
    model.eval()
    return model, card


@torch.no_grad()
def decode_embeddings(model: DecoderModel, z: torch.Tensor, captions=None, *, seed: int = 0,
                      noise: torch.Tensor | None = None, steps: int | None = None,
                      guidance: float | None = None, scheduler: str = "ddim",
                      guidance_rescale: float | None = None, return_latents: bool = False) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in [-1, 1] for CLIP image embeddings ``z`` ``(N, D)``.

    Args:
        captions: the captions beside z_i (None: the null caption, as for variations).
        noise: the starting latent noise ``(N, C, H, W)`` (e.g. from DDIM inversion);
            default: drawn from ``seed``.
        steps / guidance / guidance_rescale: default the profile's ``decoder`` section
            (``guidance_rescale``: φ of :func:`course_lib.diffusion.guided`).
    """
    section = profile_of(model.config).decoder
    steps = section.sample_steps if steps is None else steps
    guidance = section.guidance if guidance is None else guidance
    rescale = section.guidance_rescale if guidance_rescale is None else guidance_rescale
    steps, guidance, rescale = check_sampling(steps, guidance, model.config, guidance_rescale=rescale)
    runtime.check_seed(seed)
    device = model.null_z.device
    z = check_embeddings(z, model.embed_dim, "decode_embeddings(z)").to(device).float()
    n = len(z)
    shape = data_shape(model)
    if noise is None:
        noise = seeded_noise(n, *shape, seed=seed)
    else:
        noise = conditioning.check_noise(noise, (n, *shape), "decode_embeddings(noise)")
    tokens = mask = None
    if captions is not None:
        captions = conditioning.check_captions(captions, "decode_embeddings(captions)")
        if len(captions) != n:
            raise ValueError(f"decode_embeddings: {n} embeddings but {len(captions)} captions.")
        tokens, mask = conditioning.get_text_encoder(model).tokens(captions)
    cond = model.image_condition(z, tokens, mask)
    uncond = model.null_image_condition(n) if guidance != 1.0 else None
    patch = int(model.config["patch"])
    x = denoise(model, to_patches(noise.to(device), patch), cond, uncond,
                scheduler=make_scheduler(scheduler, model.config), steps=steps, guidance=guidance,
                guidance_rescale=rescale, generator=runtime.seeded_generator(seed, offset=1))
    latents = from_patches(x, patch)
    images = decode(model, latents)
    return (images, latents) if return_latents else images
