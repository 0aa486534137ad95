"""unCLIP's first stage: the **prior** P(z_i | y), caption -> CLIP *image* embedding.

DALL·E 2 (Ramesh et al., 2022) builds it as a diffusion model over one vector: a
decoder-only transformer (diffusers ``PriorTransformer``) reads the sequence
[caption tokens, caption embedding, timestep embedding, noised z_i, a final query] and
the query's output is the clean z_i (the paper predicts x0 directly, with MSE). The
caption is dropped 10% of the time so that sampling can use classifier-free guidance.

Two diffusers pitfalls this module handles (and tests):

* ``clip_mean`` / ``clip_std`` start at **zero**: ``post_process_latents`` would map every
  sample to zero. They are set from the training embeddings and frozen
  (:func:`set_statistics`); the model learns in the standardised space.
* the **causal mask** is applied only when an ``attention_mask`` is passed; the course
  always passes one (the caption's padding mask, or all-ones for the null caption), so
  the model is the same in training and sampling.

Baselines of the paper's ablation: :class:`MLPPrior` (regression from the caption
embedding) and "no prior" (:func:`no_prior`: use the caption's *text* embedding as if it
were an image embedding).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints, conditioning, runtime
from ..conditioning import EmbeddingError, check_embeddings  # noqa: F401  (unclip's names, as before)
from ..profiles import get_profile, model_sizes, profile_of
from ..training import Method, fit, unwrap

__all__ = ["PRIOR_CHECKPOINT", "MLP_CHECKPOINT", "prior_config", "PriorModel", "build_prior",
           "set_statistics", "PriorMethod", "MLPPrior", "MLPPriorMethod", "prior_data",
           "image_embeddings", "train_prior", "load_or_train_prior", "load_or_train_mlp_prior",
           "sample_prior", "no_prior", "prior_quality", "EmbeddingError"]

PRIOR_CHECKPOINT = "unclip-prior"
MLP_CHECKPOINT = "unclip-prior-mlp"


# =============================================================================
# Config
# =============================================================================


def prior_config(profile=None, encoder=None, **changes) -> dict:
    """Everything that defines the prior of a profile (the ``prior`` section + its CLIP)."""
    p = get_profile(profile)
    sizes = model_sizes(p, "prior", changes, "prior_config")
    encoder = encoder if encoder is not None else conditioning.text_encoder(p)
    return {**sizes, "image_size": p.data.image_size, "seed": p.seed, "profile": p.name,
            # diffusion's make_scheduler reads these three names
            "train_timesteps": sizes["timesteps"], "prediction_type": "sample",
            "clip": conditioning.clip_dependency(encoder)}


# =============================================================================
# The model
# =============================================================================


class PriorModel(nn.Module):
    """diffusers' ``PriorTransformer`` plus what the course adds around it: a projection of
    the caption's token states to the embedding size, and a learned **null caption**
    (token states and embedding) for caption dropout and guidance."""

    def __init__(self, config: Mapping):
        super().__init__()
        from diffusers import PriorTransformer

        self.config = dict(config)
        clip = config["clip"]
        d, width, length = int(clip["embed_dim"]), int(clip["width"]), int(clip["context_length"])
        self.embed_dim = d
        self.token_proj = nn.Linear(width, d)
        self.transformer = PriorTransformer(
            num_attention_heads=int(config["heads"]), attention_head_dim=int(config["head_dim"]),
            num_layers=int(config["layers"]), embedding_dim=d, num_embeddings=length,
            additional_embeddings=4, dropout=0.0, clip_embed_dim=d, norm_in_type="layer")
        self.null_tokens = nn.Parameter(torch.zeros(1, length, width))
        self.null_pooled = nn.Parameter(torch.zeros(1, d))
        # the pitfall: zero until set_statistics; never trained
        self.transformer.clip_mean.requires_grad_(False)
        self.transformer.clip_std.requires_grad_(False)

    def null_condition(self, n: int) -> dict:
        tokens = self.null_tokens.expand(n, -1, -1)
        return {"pooled": self.null_pooled.expand(n, -1), "tokens": tokens,
                "mask": torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)}

    def forward(self, x_t: torch.Tensor, t, *, pooled, tokens, mask) -> torch.Tensor:
        """The predicted clean (standardised) embedding for noised ``x_t`` ``(N, D)``."""
        out = self.transformer(x_t, t, proj_embedding=pooled,
                               encoder_hidden_states=self.token_proj(tokens),
                               attention_mask=mask)     # always a mask: the causal one applies
        return out.predicted_image_embedding

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.transformer.clip_mean) / self.transformer.clip_std

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer.post_process_latents(x)


def build_prior(config: Mapping) -> PriorModel:
    return PriorModel(config)


def set_statistics(model: PriorModel, z: torch.Tensor) -> None:
    """Set the (frozen) ``clip_mean`` / ``clip_std`` from training image embeddings ``z``."""
    with torch.no_grad():
        model.transformer.clip_mean.copy_(z.mean(0, keepdim=True))
        model.transformer.clip_std.copy_(z.std(0, keepdim=True).clamp(min=1e-4))


# =============================================================================
# Data
# =============================================================================

_EMBEDDED: dict[tuple, tuple] = {}


@torch.no_grad()
def image_embeddings(clip_model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Unit-length CLIP image embeddings ``(N, D)`` of float images in [-1, 1]."""
    from ..clip import encode_image
    return encode_image(clip_model, images, normalize=True, batch_size=batch_size).float()


def prior_data(config: Mapping, encoder, profile=None, batch_size: int | None = None):
    """``(dataset, z)`` embedded once per process, and batches ``(z_i, captions)``: the CLIP
    image embedding of a training image and a freshly drawn caption of it."""
    from ..data import WorldDataset, batch_loader

    p = get_profile(profile)
    key = (config["clip"]["fingerprint"], config["n_train"], p.seed, config["image_size"])
    if key not in _EMBEDDED:
        train = WorldDataset("train", n=config["n_train"], image_size=config["image_size"],
                             captions="random", profile=p)
        _EMBEDDED[key] = (train, image_embeddings(encoder.clip, train.float_images()).cpu())
    train, z = _EMBEDDED[key]
    loader = batch_loader(lambda i: (z[i], train.batch(i)[1]), len(train),
                          int(batch_size or config["batch_size"]), config["seed"])
    return train, z, loader


# =============================================================================
# Training
# =============================================================================


class PriorMethod(Method):
    """One step: noise the standardised z_i at random timesteps, predict it back (MSE),
    the caption replaced by the null caption with probability ``caption_dropout``."""

    def __init__(self, model: PriorModel, encoder, config: Mapping):
        from ..diffusion import make_scheduler

        self.model, self.encoder, self.config = model, encoder, dict(config)
        self.models = {"prior": model}
        params = [q for q in model.parameters() if q.requires_grad]
        self.optimizers = {"prior": torch.optim.AdamW(params, lr=config["lr"], weight_decay=0.0)}
        self.ema_decay = {"prior": config["ema_decay"]} if config.get("ema_decay") else {}
        self.noise_scheduler = make_scheduler("ddpm", config)

    def conditioning(self, captions) -> dict:
        out = self.encoder(list(captions))
        return {"pooled": out["pooled"], "tokens": out["tokens"], "mask": out["mask"]}

    def drop_conditioning(self, cond: dict, keep: torch.Tensor) -> dict:
        core = unwrap(self.models["prior"])
        null = core.null_condition(len(keep))
        return {"pooled": torch.where(keep[:, None], cond["pooled"], null["pooled"]),
                "tokens": torch.where(keep[:, None, None], cond["tokens"], null["tokens"]),
                "mask": torch.where(keep[:, None], cond["mask"], null["mask"])}

    def training_step(self, batch, ctx) -> dict:
        z, captions = batch
        core = unwrap(self.models["prior"])
        x0 = core.standardise(z)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(x0),), device=x0.device)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        keep = torch.rand(len(x0), device=x0.device) >= self.config["caption_dropout"]
        cond = self.drop_conditioning(self.conditioning(captions), keep)
        loss = F.mse_loss(self.models["prior"](x_t, t, **cond).float(), x0.float())
        ctx.optimize("prior", loss, max_grad_norm=1.0)
        return {"loss": loss.detach()}


class MLPPrior(nn.Module):
    """The simplest prior: a regression MLP from the caption embedding to a unit image
    embedding (deterministic: one image embedding per caption)."""

    def __init__(self, config: Mapping):
        super().__init__()
        self.config = dict(config)
        d = int(config["clip"]["embed_dim"])
        hidden = 4 * d
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, d))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(pooled + self.net(pooled), dim=-1)


class MLPPriorMethod(Method):
    def __init__(self, model: MLPPrior, encoder, config: Mapping):
        self.encoder, self.config = encoder, dict(config)
        self.models = {"mlp": model}
        self.optimizers = {"mlp": torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)}

    def training_step(self, batch, ctx) -> dict:
        z, captions = batch
        pred = self.models["mlp"](self.encoder.pooled(list(captions)))
        loss = (1 - (pred * z).sum(-1)).mean()           # cosine distance
        ctx.optimize("mlp", loss)
        return {"loss": loss.detach()}


def train_prior(model, encoder, *, config: Mapping, profile=None, resume_path=None, plot=None,
                method_class=PriorMethod, desc: str = "prior"):
    p = get_profile(profile)
    _, z, data = prior_data(config, encoder, p)
    if isinstance(model, PriorModel):
        set_statistics(model, z)
    method = method_class(model, encoder, config)
    history = fit(method, data, steps=int(config["steps"]), max_seconds=60.0 * config["max_minutes"],
                  resume_path=resume_path, desc=desc, seed=config["seed"], log_every=10,
                  plot=p.plot_every_s if plot is None else plot, card={"config": dict(config)})
    model.eval()
    return history, method


def _load_or_train(name, build, method_class, profile, retrain, verbose, plot, changes):
    p = get_profile(profile)
    encoder = conditioning.text_encoder(p, verbose=verbose)
    config = prior_config(p, encoder, **changes)
    if changes:
        name = checkpoints.variant_name(name, changes)

    def train(model, resume_path):
        h, _ = train_prior(model, encoder, config=config, profile=p, resume_path=resume_path, plot=plot,
                           method_class=method_class, desc=name)
        return {**h.summary(), "loss_history": h.losses["loss"]}

    model, card = checkpoints.load_or_train(name, config=config, build=build, train=train, profile=p,
                                            retrain=retrain, device=encoder.clip.logit_scale.device,
                                            verbose=verbose)
    conditioning.attach_text_encoder(model, encoder, expected=card.get("config", config).get("clip"))
    model.eval()
    return model, card


def load_or_train_prior(profile=None, *, retrain: bool = False, verbose: bool = True, plot=None,
                        **changes):
    """The profile's diffusion prior (``PriorTransformer``): loaded, or trained and saved."""
    return _load_or_train(PRIOR_CHECKPOINT, build_prior, PriorMethod, profile, retrain, verbose, plot,
                          changes)


def load_or_train_mlp_prior(profile=None, *, retrain: bool = False, verbose: bool = True, plot=None,
                            **changes):
    """The regression baseline (:class:`MLPPrior`), trained on the same pairs."""
    return _load_or_train(MLP_CHECKPOINT, MLPPrior, MLPPriorMethod, profile, retrain, verbose, plot,
                          changes)


# =============================================================================
# Sampling
# =============================================================================


@torch.no_grad()
def sample_prior(model, captions, *, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, scheduler: str = "ddim") -> torch.Tensor:
    """Unit CLIP image embeddings ``(N, D)`` for captions: the diffusion prior's samples
    (guided; diffusion's loop), the MLP's regression, or the text embeddings for ``None``
    (the "no prior" baseline needs a text encoder: use :func:`no_prior`)."""
    from ..diffusion import check_sampling, denoise, make_scheduler

    captions = conditioning.check_captions(captions, "sample_prior(captions)")
    encoder = conditioning.get_text_encoder(model)
    if isinstance(model, MLPPrior):
        return model(encoder.pooled(captions))
    section = profile_of(model.config).prior
    steps = section.sample_steps if steps is None else steps
    guidance = section.guidance if guidance is None else guidance
    steps, guidance, _ = check_sampling(steps, guidance, model.config)
    runtime.check_seed(seed)
    out = encoder(captions)
    cond = {"pooled": out["pooled"], "tokens": out["tokens"], "mask": out["mask"]}
    uncond = model.null_condition(len(captions)) if guidance != 1.0 else None
    g = runtime.seeded_generator(seed)
    noise = torch.randn(len(captions), model.embed_dim, generator=g).to(out["pooled"].device)
    x0 = denoise(model, noise, cond, uncond, scheduler=make_scheduler(scheduler, model.config),
                 steps=steps, guidance=guidance, generator=runtime.seeded_generator(seed, offset=1))
    return F.normalize(model.unstandardise(x0), dim=-1)


def no_prior(encoder, captions) -> torch.Tensor:
    """The paper's "no prior" ablation: the caption's unit *text* embedding stands in for an
    image embedding (CLIP's two towers meet in one space, but not at the same points)."""
    return encoder.pooled(conditioning.check_captions(captions, "no_prior(captions)"))


@torch.no_grad()
def prior_quality(predict, encoder, profile=None, *, n: int = 100, seed: int = 7) -> dict:
    """How good a prior is on ``n`` held-aside images of ``n`` *different* captions:
    mean cosine of its embedding to the true image embedding, and retrieval (is the true
    image embedding the nearest of the ``n``?). ``predict(captions) -> (n, D)``."""
    from ..data import WorldDataset

    p = get_profile(profile)
    pool = WorldDataset("test", n=max(4 * n, 400), image_size=p.data.image_size, seed=seed,
                        captions="canonical", profile=p)
    caps, rows = [], []
    for i, c in enumerate(pool.canonical_captions):
        if c not in caps:
            caps.append(c)
            rows.append(i)
        if len(caps) == n:
            break
    if len(caps) < n:
        raise ValueError(f"prior_quality: only {len(caps)} different captions in the pool; ask for fewer.")
    z_true = image_embeddings(encoder.clip, pool.float_images()[rows])
    z_pred = F.normalize(predict(caps).float(), dim=-1)
    cos = (z_pred * z_true).sum(-1)
    sims = z_pred @ z_true.T
    retrieval = (sims.argmax(1) == torch.arange(n)).float().mean()
    return {"cosine": float(cos.mean()), f"retrieval@{n}": float(retrieval)}
