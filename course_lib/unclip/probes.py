"""Notebook 07's measurements, as functions (graded by the judge of notebook 02)."""
from __future__ import annotations

import torch

from .. import runtime
from ..data import COLORS, caption_for
from .decoder import decode_embeddings
from .edits import UnCLIP, embed_images, invert, slerp, text_direction

__all__ = ["kept_attributes", "variation_report", "text_diff_report", "inversion_report"]

FIXED = ("shape", "color", "size", "position")


def kept_attributes(judge, images: torch.Tensor, attributes: dict, keys=FIXED) -> dict:
    """Share of images whose judged attributes equal ``attributes`` (per key and all together)."""
    pred = judge.predict(images)
    right = {k: pred[k] == attributes[k].cpu() for k in keys}
    out = {k: float(v.float().mean()) for k, v in right.items()}
    out["all"] = float(torch.stack(list(right.values())).all(0).float().mean())
    return out


@torch.no_grad()
def variation_report(model: UnCLIP, images: torch.Tensor, attributes: dict, judge, *, n: int = 4,
                     seed: int = 0, guidance: float | None = None) -> dict:
    """Decode each image's z_i ``n`` times with fresh noise and no caption: how often the
    judge still reads the image's own attributes (what z_i keeps)."""
    z = embed_images(model, images).repeat_interleave(n, 0)
    out = decode_embeddings(model.decoder, z, None, seed=seed, guidance=guidance)
    attrs = {k: v.repeat_interleave(n, 0) for k, v in attributes.items()}
    return {"kept": kept_attributes(judge, out, attrs), "images": out}


@torch.no_grad()
def text_diff_report(model: UnCLIP, images: torch.Tensor, attributes: dict, judge, *,
                     theta: float = 0.5, seed: int = 0, noise: torch.Tensor | None = None,
                     guidance: float | None = None) -> dict:
    """For each image, move z_i along the text diff "a <colour> <shape>" -> "a <other colour>
    <shape>" by ``theta`` (slerp) and decode with one fixed noise per image: how often the
    judge reads the new colour (flipped) while shape, size and position stay (kept)."""
    n = len(images)
    z = embed_images(model, images)
    g = runtime.seeded_generator(seed)
    shift = torch.randint(1, len(COLORS), (n,), generator=g)
    target = (attributes["color"].cpu() + shift) % len(COLORS)
    edited = []
    for i in range(n):
        shape, col, new = int(attributes["shape"][i]), int(attributes["color"][i]), int(target[i])
        d = text_direction(model, caption_for(shape=shape, color=col, synonyms=False),
                           caption_for(shape=shape, color=new, synonyms=False)).to(z.device)
        edited.append(slerp(z[i:i + 1], d, float(theta)))
    zs = torch.nn.functional.normalize(torch.cat(edited), dim=-1)
    if noise is None:
        from ..diffusion import data_shape
        noise = torch.randn(n, *data_shape(model.decoder), generator=g)
    out = decode_embeddings(model.decoder, zs, None, noise=noise, guidance=guidance)
    pred = judge.predict(out)
    flipped = pred["color"] == target
    kept = torch.stack([pred[k] == attributes[k].cpu() for k in ("shape", "size", "position")]).all(0)
    return {"flipped": float(flipped.float().mean()), "kept others": float(kept.float().mean()),
            "flipped and kept": float((flipped & kept).float().mean()), "images": out, "target": target}


@torch.no_grad()
def inversion_report(model: UnCLIP, images: torch.Tensor, *, steps: int = 50) -> dict:
    """DDIM-invert each image under its own z_i and reconstruct it: mean absolute error,
    beside the autoencoder's own reconstruction error (the floor of any latent model)."""
    from ..vae import decode_latents, encode_latents

    dec = model.decoder
    recs, noises = [], []
    for i in range(len(images)):
        noise, z = invert(model, images[i:i + 1], steps=steps)
        recs.append(decode_embeddings(dec, z, noise=noise, guidance=1.0, steps=steps, scheduler="ddim"))
        noises.append(noise)
    rec = torch.cat(recs)
    ae = decode_latents(dec._autoencoder, encode_latents(dec._autoencoder, images))
    err = float((rec - images).abs().mean())
    ae_err = float((ae - images).abs().mean())
    return {"error": err, "autoencoder error": ae_err, "ratio": err / max(ae_err, 1e-8),
            "reconstructions": rec, "noise": torch.cat(noises)}
