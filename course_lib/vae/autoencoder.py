"""The KL autoencoder: the first stage of latent diffusion (notebooks 06 and 07 diffuse in it).

Latent diffusion (Rombach et al., 2022; Stable Diffusion) does not diffuse pixels: a KL
autoencoder first compresses every image to a small latent map, trained once, with no
text; the diffusion model then learns to generate *latents*, and the decoder turns them
into pixels. The source article's diffusion code (``latents = torch.randn(batch, 4, 64,
64)``) assumes such an autoencoder. The course's is diffusers' ``AutoencoderKL`` made
small: 32x32x3 images -> 16x16x4 latents (``block_out_channels`` with two levels; three
levels give 8x8x4, which measurably loses the shapes, notebook 05).

Read top-down: :func:`autoencoder_config` -> :func:`build_autoencoder` ->
:class:`AutoencoderMethod` (reconstruction + a small KL) -> :func:`train_autoencoder`
-> :func:`load_or_train_autoencoder` (measures the latent scaling factor) ->
:func:`encode_latents` / :func:`decode_latents` (with the scaling factor) ->
:func:`latent_shape`, :func:`latent_statistics`.

**The scaling factor** (the Stable Diffusion convention): diffusion adds unit-variance
noise, so the latents it learns should have a standard deviation near 1. After training,
``scaling_factor = 1 / std(latents)`` of training images is measured and stored in the
model's config (``model.config.scaling_factor``) and card; :func:`encode_latents`
multiplies by it, :func:`decode_latents` divides by it.

Explained in notebook 05, section "The first stage of latent diffusion".
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .. import checkpoints
from ..conditioning import finish_samples
from ..images import check_images
from ..profiles import get_profile
from ..training import Method, fit, unwrap

__all__ = ["AUTOENCODER_CHECKPOINT", "LatentShapeError", "autoencoder_config", "build_autoencoder",
           "AutoencoderMethod", "train_autoencoder", "measure_scaling_factor",
           "load_or_train_autoencoder", "latent_shape", "encode_latents", "decode_latents",
           "reconstruct_images", "latent_statistics"]

#: Checkpoint name of the profile's autoencoder (notebooks 06-07 load it by this name).
AUTOENCODER_CHECKPOINT = "autoencoder"
AUTOENCODER_RECIPE = 1


class LatentShapeError(ValueError):
    """A latent batch of the wrong shape for this autoencoder (the message names the right one)."""


def autoencoder_config(profile=None, **overrides) -> dict:
    """The autoencoder's config: diffusers ``AutoencoderKL`` arguments plus the training recipe.

    Args:
        profile: a Profile, a name or None; sizes from ``profile.autoencoder``.
        **overrides: fields of ``AutoencoderSizes`` (e.g. ``block_out_channels=(16, 32, 32)``
            for 8x8 latents).
    """
    p = get_profile(profile)
    a = p.autoencoder
    unknown = sorted(set(overrides) - set(a.__dataclass_fields__))
    if unknown:
        raise TypeError(f"autoencoder_config: unknown setting(s) {unknown}; its settings are "
                        f"{sorted(a.__dataclass_fields__)}.")
    s = {**{k: getattr(a, k) for k in a.__dataclass_fields__}, **overrides}
    blocks = [int(c) for c in s["block_out_channels"]]
    size = p.data.image_size
    if size % 2 ** (len(blocks) - 1):
        raise ValueError(f"autoencoder: image_size {size} is not divisible by the "
                         f"{2 ** (len(blocks) - 1)}x downsampling of {len(blocks)} levels.")
    return {"model": {"in_channels": 3, "out_channels": 3,
                      "down_block_types": ["DownEncoderBlock2D"] * len(blocks),
                      "up_block_types": ["UpDecoderBlock2D"] * len(blocks),
                      "block_out_channels": blocks, "layers_per_block": int(s["layers_per_block"]),
                      "latent_channels": int(s["latent_channels"]),
                      "norm_num_groups": min(8, *blocks), "sample_size": size,
                      "mid_block_add_attention": False},
            "training": {"kl_weight": s["kl_weight"], "steps": s["steps"],
                         "batch_size": s["batch_size"], "lr": s["lr"],
                         "max_minutes": s["max_minutes"], "n_train": p.data.n_train,
                         "seed": p.seed, "recipe": AUTOENCODER_RECIPE}}


def build_autoencoder(config: Mapping):
    """An untrained diffusers ``AutoencoderKL`` from :func:`autoencoder_config`."""
    from diffusers import AutoencoderKL

    m = dict(config["model"])
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        m[key] = tuple(m[key])
    return AutoencoderKL(**m)


def _core(model: nn.Module) -> nn.Module:
    return unwrap(model)     # a DDP-wrapped model holds the real one


class AutoencoderMethod(Method):
    """One step: encode, sample the posterior, decode; loss = squared error summed per
    image + ``kl_weight`` * KL(q(z|x) || N(0, I)); AdamW, warm-up then cosine.
    Batches are uint8 images (B, S, S, 3)."""

    def __init__(self, model: nn.Module, *, lr: float, steps: int, kl_weight: float):
        from ..images import to_float

        self._to_float = to_float
        self.kl_weight = float(kl_weight)
        self.one_model_adamw("autoencoder", model, lr=lr, steps=steps)

    def training_step(self, batch, ctx):
        x = self._to_float(batch).to(ctx.device)
        ae = _core(self.models["autoencoder"])
        posterior = ae.encode(x).latent_dist
        recon = ae.decode(posterior.sample()).sample
        rec = (recon - x).pow(2).flatten(1).sum(1).mean()
        kl = posterior.kl().mean()
        loss = rec + self.kl_weight * kl
        ctx.optimize("autoencoder", loss, max_grad_norm=100.0)
        return {"loss": loss, "recon": rec, "kl": kl}


@torch.no_grad()
def measure_scaling_factor(model: nn.Module, images, n: int = 2000, seed: int = 0) -> dict:
    """``1 / std`` of posterior samples of up to ``n`` images (the Stable Diffusion
    convention), with the latents' mean and std before scaling."""
    from ..images import to_float

    x = images[:n]
    x = to_float(x) if x.dtype == torch.uint8 else x
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    lat = torch.cat([model.encode(x[s:s + 500].to(device)).latent_dist.sample(generator=g).cpu()
                     for s in range(0, len(x), 500)])
    std = float(lat.std())
    return {"scaling_factor": 1.0 / std, "latent_std": std, "latent_mean": float(lat.mean())}


def train_autoencoder(model: nn.Module, config: Mapping, *, profile=None, resume_path=None,
                      plot: bool | float | None = None):
    """Train ``model`` in place; returns ``(history, method)``, the latent scaling factor in
    ``history.measured``."""
    from ..data import WorldDataset, batch_loader

    p = get_profile(profile)
    t = config["training"]
    train = WorldDataset("train", n=t["n_train"], image_size=config["model"]["sample_size"],
                         captions="canonical", profile=p)
    method = AutoencoderMethod(model, lr=t["lr"], steps=t["steps"], kl_weight=t["kl_weight"])
    images = train.images
    history = fit(method, batch_loader(lambda i: images[i], len(images), t["batch_size"], t["seed"]),
                  steps=t["steps"], max_seconds=60.0 * t["max_minutes"], resume_path=resume_path,
                  desc="autoencoder", seed=t["seed"], log_every=10,
                  plot=p.plot_every_s if plot is None else plot, card={"config": dict(config)})
    model.eval()
    history.measured.update(measure_scaling_factor(model, train.images, seed=t["seed"]))
    return history, method


def _card_metrics(history) -> dict:
    return {**history.summary(), "final_recon": history.last("recon", 10),
            "final_kl": history.last("kl", 10), "loss_history": history.losses["recon"]}


def load_or_train_autoencoder(profile=None, *, retrain: bool = False, name: str | None = None,
                              device=None, verbose: bool = True, plot: bool | float | None = None,
                              **overrides):
    """The profile's KL autoencoder (diffusers ``AutoencoderKL``): loaded or trained and saved.

    Args:
        profile: a Profile, a name or None (the active profile).
        retrain: train again even if a checkpoint exists.
        name: checkpoint name (default ``"autoencoder"``; with overrides a suffixed one).
        **overrides: fields of ``AutoencoderSizes``.

    Returns:
        ``(model, card)``: the ``AutoencoderKL`` in eval mode, its measured scaling factor
        in ``model.config.scaling_factor`` and ``card["metrics"]["scaling_factor"]``.
        Use :func:`encode_latents` / :func:`decode_latents`, which apply it.
    """
    p = get_profile(profile)
    config = autoencoder_config(p, **overrides)
    if name is None:
        name = checkpoints.variant_name(AUTOENCODER_CHECKPOINT, overrides)
    model, card = checkpoints.load_or_train(
        name, config=config, build=build_autoencoder,
        train=lambda m, resume: _card_metrics(train_autoencoder(m, config, profile=p, resume_path=resume,
                                                                plot=plot)[0]),
        profile=p, retrain=retrain, device=device, verbose=verbose)
    scale = card.get("metrics", {}).get("scaling_factor")
    if scale is None:
        raise checkpoints.CheckpointError(
            f"Autoencoder checkpoint '{name}' has no measured scaling factor in its card. "
            "Fix: retrain it (load_or_train_autoencoder(retrain=True)).")
    model.register_to_config(scaling_factor=float(scale))
    for param in model.parameters():
        param.requires_grad_(False)
    return model, card


def latent_shape(model) -> tuple[int, int, int]:
    """``(channels, height, width)`` of this autoencoder's latents (e.g. (4, 16, 16))."""
    c = model.config
    side = c.sample_size // 2 ** (len(c.block_out_channels) - 1)
    return (int(c.latent_channels), side, side)


@torch.no_grad()
def encode_latents(model, images, *, sample: bool = False, seed: int = 0,
                   batch_size: int = 500) -> torch.Tensor:
    """Images -> scaled latents (N, C, h, w) with std ~1: what diffusion learns to generate.

    Args:
        model: an ``AutoencoderKL`` from :func:`load_or_train_autoencoder`.
        images: float (N, 3, S, S) in [-1, 1] or uint8 (N, S, S, 3), S the model's size.
        sample: draw from the posterior (seeded) instead of taking its mean.
    """
    size = int(model.config.sample_size)
    x = check_images(images, "encode_latents(images)", size=size)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    for s in range(0, len(x), batch_size):
        dist = model.encode(x[s:s + batch_size].to(device)).latent_dist
        out.append(dist.sample(generator=g) if sample else dist.mode())
    return torch.cat(out) * float(model.config.scaling_factor)


@torch.no_grad()
def decode_latents(model, latents: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> images float (N, 3, S, S) in [-1, 1].

    Raises:
        LatentShapeError: latents of another shape than :func:`latent_shape` (the message
            names both); a missing batch axis is named too.
    """
    want = latent_shape(model)
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise TypeError("decode_latents: expected a float tensor of latents "
                        f"(N, {', '.join(map(str, want))}).")
    if latents.ndim != 4 or tuple(latents.shape[1:]) != want:
        hint = " Add the batch axis with latents[None]." if tuple(latents.shape) == want else ""
        raise LatentShapeError(
            f"decode_latents: this autoencoder's latents are (N, {want[0]}, {want[1]}, {want[2]}), "
            f"got {tuple(latents.shape)}.{hint} Latents come from encode_latents of the same "
            "autoencoder, or from a diffusion model trained on them (course_lib.vae.latent_shape).")
    device = next(model.parameters()).device
    z = latents.to(device) / float(model.config.scaling_factor)
    out = [model.decode(z[s:s + batch_size]).sample for s in range(0, len(z), batch_size)]
    return finish_samples(torch.cat(out), "decode_latents")


def reconstruct_images(model, images, batch_size: int = 500) -> torch.Tensor:
    """Encode (posterior mean) and decode: float (N, 3, S, S) in [-1, 1]."""
    return decode_latents(model, encode_latents(model, images, batch_size=batch_size), batch_size)


@torch.no_grad()
def latent_statistics(model, images) -> dict:
    """Mean and std of the scaled latents of ``images``, overall and per channel."""
    lat = encode_latents(model, images).cpu()
    return {"mean": float(lat.mean()), "std": float(lat.std()),
            "channel_mean": lat.mean(dim=(0, 2, 3)).tolist(),
            "channel_std": lat.std(dim=(0, 2, 3)).tolist()}
