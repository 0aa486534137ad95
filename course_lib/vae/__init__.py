"""course_lib.vae: the CLIP-conditioned VAE, and the autoencoder that latent diffusion uses.

A package split by stage (one notebook, 05, teaches all of it):

* :mod:`course_lib.vae.clip_vae` -- the CLIP-VAE with its ``fusion=`` choice (the source
  article's ``z + clip_proj(text)``, concatenation, FiLM, a conditional prior), the ELBO,
  :class:`VAEMethod`, :func:`load_or_train_vae` and :func:`sample`.
* :mod:`course_lib.vae.autoencoder` -- the KL autoencoder (diffusers ``AutoencoderKL``), the
  first stage of notebooks 06-07: :func:`load_or_train_autoencoder`, :func:`encode_latents`,
  :func:`decode_latents`, the latent scaling factor.
* :mod:`course_lib.vae.measures` -- sharpness (:func:`high_frequency_energy`,
  :func:`equivalent_blur`); the smoothness of strips is ``course_lib.metrics.smoothness``.

Sampling follows the course convention: ``sample(model, captions, *, seed=0)`` returns float
images (N, 3, H, W) in [-1, 1]; ``load_or_train_vae(profile=None, *, retrain=False)``
returns ``(model, card)``.

Explained in notebook 05 (``notebooks/05_clip_vae_and_the_autoencoder.ipynb``).
"""
from .autoencoder import (
    AUTOENCODER_CHECKPOINT,
    AutoencoderMethod,
    LatentShapeError,
    autoencoder_config,
    build_autoencoder,
    decode_latents,
    encode_latents,
    latent_shape,
    latent_statistics,
    load_or_train_autoencoder,
    measure_scaling_factor,
    reconstruct_images,
    train_autoencoder,
)
from .clip_vae import (
    FUSIONS,
    VAE_CHECKPOINT,
    ClipVAE,
    UnknownFusionError,
    VAEMethod,
    build_vae,
    decode,
    elbo,
    encode,
    gaussian_kl,
    load_or_train_vae,
    reconstruct,
    sample,
    train_vae,
    training_data,
    vae_config,
)
from .measures import equivalent_blur, high_frequency_energy

__all__ = [
    # the CLIP-VAE
    "FUSIONS", "VAE_CHECKPOINT", "UnknownFusionError", "vae_config", "ClipVAE", "build_vae",
    "gaussian_kl", "elbo", "VAEMethod", "training_data", "train_vae", "load_or_train_vae",
    "sample", "encode", "reconstruct", "decode",
    # the autoencoder
    "AUTOENCODER_CHECKPOINT", "LatentShapeError", "autoencoder_config", "build_autoencoder",
    "AutoencoderMethod", "train_autoencoder", "measure_scaling_factor",
    "load_or_train_autoencoder", "latent_shape", "encode_latents", "decode_latents",
    "reconstruct_images", "latent_statistics",
    # measures
    "high_frequency_energy", "equivalent_blur",
]
