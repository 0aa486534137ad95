"""Text-conditioned latent diffusion on the course CLIP (notebook 06).

The source article's "CLIP + Diffusion", Stable Diffusion's design made small: a diffusers
``UNet2DConditionModel`` cross-attends to the course CLIP's per-token text states
(``encoder_hidden_states``, with the padding mask), learns to denoise the latents of
notebook 05's KL autoencoder under a DDPM noise schedule, and is sampled by a scheduler
loop with classifier-free guidance. Notebook 07 (unCLIP's decoder) reuses the UNet
builder, the loss, the training method (through its hooks) and the guided loop.

Read top-down:

1. Config: :func:`diffusion_config` (the profile's ``diffusion`` section, the CLIP and the
   autoencoder it depends on), :func:`make_scheduler` (``"ddpm" | "ddim" | "dpm"``).
2. The model: :func:`build_unet` (diffusers ``UNet2DConditionModel``), :func:`to_patches` /
   :func:`from_patches` (2x2 latent cells folded into channels), :class:`DiffusionModel`
   (the UNet and the learned null caption: one checkpoint).
3. The objective: :func:`diffusion_loss` (epsilon or v prediction, min-SNR weights).
4. Training: :class:`DiffusionMethod` for :func:`course_lib.training.fit` (hooks
   ``conditioning`` and ``drop_conditioning``), :func:`train_diffusion`,
   :func:`load_or_train_diffusion`.
5. Sampling: :func:`guided` (the guidance arithmetic), :func:`predicted_x0`,
   :func:`denoise` (the guided loop, written once), :func:`sample` (the course's convention).

Everything a library does is the library's: diffusers' UNet, schedulers
(``add_noise``, ``get_velocity``, ``step``), ``AutoencoderKL`` and ``EMAModel`` (inside
``fit``). What is written here is what diffusers leaves to a training script: the loss
with its weights, caption dropout and the guidance loop.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints, conditioning, runtime
from .profiles import NOTEBOOK_SETTINGS as _NOTEBOOK_SETTINGS
from .profiles import get_profile, model_sizes, profile_of
from .runtime import renamed
from .training import Method, fit, unwrap

__all__ = [
    # 1. config
    "CHECKPOINT", "SCHEDULERS", "PREDICTION_TYPES", "NOTEBOOK_SETTINGS", "UnknownSchedulerError", "diffusion_config",
    "make_scheduler",
    # 2. the model
    "build_unet", "to_patches", "from_patches", "fold", "unfold", "DiffusionModel", "build_diffusion", "data_shape",
    # 3. the objective
    "min_snr_weights", "diffusion_loss",
    # 4. training
    "DiffusionMethod", "training_data", "train_diffusion", "load_or_train_diffusion", "measure_cost",
    "machine_speed",
    # 5. sampling
    "check_sampling", "sampling_defaults", "guided", "predicted_x0", "denoise", "encode_captions", "sample", "decode",
]

#: Name of the checkpoint (data/checkpoints/<profile>/diffusion.safetensors).
CHECKPOINT = "diffusion"
#: Sampler names and the diffusers schedulers behind them.
SCHEDULERS = ("ddpm", "ddim", "dpm")
PREDICTION_TYPES = ("epsilon", "v_prediction")
#: Fields of the profile's ``diffusion`` section that size notebook 06's measurements and the
#: sampler's defaults; kept out of the model's config, so changing them never forces a retrain.
NOTEBOOK_SETTINGS = _NOTEBOOK_SETTINGS["diffusion"]


class UnknownSchedulerError(ValueError):
    """A sampler name that is not one of :data:`SCHEDULERS`."""


# =============================================================================
# 1. Config
# =============================================================================


def diffusion_config(profile=None, encoder=None, autoencoder=None, **changes) -> dict:
    """Everything that defines a diffusion model of a profile (stored in its card).

    Args:
        profile: a Profile, a name or None (active).
        encoder: the frozen text encoder (default :func:`course_lib.conditioning.text_encoder`).
        autoencoder: the first stage (default notebook 05's ``load_or_train_autoencoder``);
            only read for ``space="latent"``; its latent shape and scaling factor are recorded.
        changes: overrides of the profile's ``diffusion`` section (e.g. ``steps=300``).
    """
    p = get_profile(profile)
    sizes = model_sizes(p, "diffusion", changes, "diffusion_config")
    sizes["block_out_channels"] = list(sizes["block_out_channels"])
    if sizes["space"] not in ("latent", "pixel"):
        raise ValueError(f"space={sizes['space']!r}: use 'latent' (the autoencoder's latents) or 'pixel'.")
    if sizes["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={sizes['prediction_type']!r}: use one of {PREDICTION_TYPES}.")
    _scheduler_class(changes.get("sampler", p.diffusion.sampler))
    encoder = encoder if encoder is not None else conditioning.text_encoder(p)
    config = {**sizes, "image_size": p.data.image_size, "seed": p.seed, "profile": p.name,
              "clip": conditioning.clip_dependency(encoder)}
    if sizes["space"] == "latent":
        if autoencoder is None:
            from .vae import load_or_train_autoencoder
            autoencoder, _ = load_or_train_autoencoder(p, verbose=False)
        from .vae import latent_shape
        config["data_shape"] = list(latent_shape(autoencoder))
        config["autoencoder"] = {"scaling_factor": float(autoencoder.config.scaling_factor),
                                 "block_out_channels": list(autoencoder.config.block_out_channels)}
    else:
        config["data_shape"] = [3, p.data.image_size, p.data.image_size]
    c, h, w = config["data_shape"]
    if h % sizes["patch"] or w % sizes["patch"]:
        raise ValueError(f"patch={sizes['patch']} must divide the data's side {h}.")
    return config


def _scheduler_class(name: str):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    if name not in classes:
        raise UnknownSchedulerError(f"Unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)} "
                                    "(DDPM's ancestral sampling, DDIM, or DPM-Solver++ multistep).")
    return classes[name]


def make_scheduler(name: str, config: Mapping):
    """A fresh diffusers scheduler ``name`` ("ddpm" | "ddim" | "dpm") for a model's config.

    Every one shares the training schedule (``train_timesteps``, ``beta_schedule``,
    ``prediction_type``), so any of them samples a model trained with the DDPM one.
    ``clip_sample=False``: latents are not bounded by [-1, 1] as pixels are.
    ``timestep_spacing="trailing"``: a few steps still start at pure noise (t = T - 1).
    """
    cls = _scheduler_class(name)
    kwargs = dict(num_train_timesteps=int(config["train_timesteps"]),
                  beta_schedule=config["beta_schedule"], prediction_type=config["prediction_type"],
                  timestep_spacing="trailing")
    if name in ("ddpm", "ddim"):
        kwargs["clip_sample"] = False
    return cls(**kwargs)


# =============================================================================
# 2. The model
# =============================================================================


def build_unet(config: Mapping, **extra) -> nn.Module:
    """The denoiser: a diffusers ``UNet2DConditionModel`` sized by ``config``.

    Every level has cross-attention to the text tokens (``CrossAttnDownBlock2D``); the
    UNet sees the data folded by ``config["patch"]`` (:func:`to_patches`). ``extra`` goes to
    the UNet unchanged, e.g. ``class_embed_type="projection",
    projection_class_embeddings_input_dim=128`` for unCLIP's decoder (notebook 07).
    """
    from diffusers import UNet2DConditionModel

    c, h, _ = config["data_shape"]
    patch = int(config["patch"])
    levels = len(config["block_out_channels"])
    kwargs = dict(sample_size=h // patch, in_channels=c * patch * patch, out_channels=c * patch * patch,
                  block_out_channels=tuple(config["block_out_channels"]),
                  down_block_types=("CrossAttnDownBlock2D",) * levels,
                  up_block_types=("CrossAttnUpBlock2D",) * levels,
                  layers_per_block=int(config["layers_per_block"]),
                  cross_attention_dim=int(config["clip"]["width"]),
                  attention_head_dim=int(config["attention_heads"]),   # diffusers: the number of heads
                  norm_num_groups=min(32, min(config["block_out_channels"]) // 4))
    kwargs.update(extra)
    return UNet2DConditionModel(**kwargs)


def to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C·p², H/p, W/p)``: each p×p cell becomes p² channels
    (``pixel_unshuffle``; torch's ``F.fold`` is something else, im2col's inverse).

    The UNet then works on a 4× smaller map (p = 2), which costs ~4× less per step, and
    every 2×2 cell is still seen whole (the trick of pixel-space trials with 32×32 images).
    """
    return F.pixel_unshuffle(x, patch) if patch > 1 else x


def from_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of :func:`to_patches` (``pixel_shuffle``)."""
    return F.pixel_shuffle(x, patch) if patch > 1 else x


fold = renamed(to_patches, "diffusion.fold")
unfold = renamed(from_patches, "diffusion.unfold")


def data_shape(model) -> tuple[int, int, int]:
    """``(C, H, W)`` of what the model generates (latents, or pixels for ``space="pixel"``)."""
    return tuple(int(v) for v in model.config["data_shape"])


class DiffusionModel(nn.Module):
    """The UNet and the learned **null caption** (one checkpoint).

    The null caption stands in for "no text" (caption dropout in training, the
    unconditional half of classifier-free guidance): ``(1, L, width)`` token states,
    learned, with every position attended. A learned one instead of the empty string's
    CLIP states, because the course tokenizer (rightly) refuses empty captions.
    The text encoder and the autoencoder travel beside the model, never inside it.
    """

    def __init__(self, config: Mapping, **unet_extra):
        super().__init__()
        self.config = dict(config)
        self.unet = build_unet(config, **unet_extra)
        clip = config["clip"]
        self.null_tokens = nn.Parameter(torch.zeros(1, int(clip["context_length"]), int(clip["width"])))

    def null_condition(self, n: int) -> dict:
        """The null caption for ``n`` samples, in the UNet's keyword arguments."""
        tokens = self.null_tokens.expand(n, -1, -1)
        return {"encoder_hidden_states": tokens,
                "encoder_attention_mask": torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """The UNet's prediction for folded noisy data ``x_t`` at timesteps ``t``."""
        return self.unet(x_t, t, **cond).sample


def build_diffusion(config: Mapping) -> DiffusionModel:
    return DiffusionModel(config)


# =============================================================================
# 3. The objective
# =============================================================================


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al., 2023), one per timestep.

    SNR(t) = ᾱ_t / (1 − ᾱ_t). The weight caps what the easy, low-noise steps count:
    ``min(SNR, γ) / SNR`` for epsilon prediction, ``min(SNR, γ) / (SNR + 1)`` for v.
    """
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = abar / (1 - abar)
    capped = snr.clamp(max=gamma)
    return capped / (snr + 1) if prediction_type == "v_prediction" else capped / snr


def diffusion_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor, scheduler, *, prediction_type: str = "epsilon",
                   snr_gamma: float | None = None) -> torch.Tensor:
    """The denoising objective: mean squared error to the target, optionally min-SNR weighted.

    Targets: ``epsilon`` -> the noise ε; ``v_prediction`` -> v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀
    (``scheduler.get_velocity``). With ``snr_gamma`` each sample's error is weighted by
    :func:`min_snr_weights`; else the plain mean.
    """
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    else:
        raise ValueError(f"prediction_type={prediction_type!r}: use one of {PREDICTION_TYPES}.")
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if snr_gamma:
        per_sample = per_sample * min_snr_weights(scheduler, timesteps, snr_gamma, prediction_type)
    return per_sample.mean()


# =============================================================================
# 4. Training
# =============================================================================


class DiffusionMethod(Method):
    """One ``fit`` step: noise a batch at random timesteps, predict, weighted MSE.

    A batch is ``(x0, captions)``: ``x0`` the data (scaled latents, or pixels) unfolded,
    ``(N, C, H, W)``. Two hooks a subclass overrides (notebook 07's decoder does):

    * :meth:`conditioning` ``(batch) -> dict`` of the UNet's keyword arguments
      (here the caption's CLIP token states and padding mask);
    * :meth:`drop_conditioning` ``(cond, keep_mask) -> dict``: rows where ``keep_mask``
      is False get the null condition (caption dropout, which teaches the model the
      unconditional prediction that guidance needs).
    """

    def __init__(self, model: DiffusionModel, encoder, config: Mapping):
        self.model, self.encoder, self.config = model, encoder, dict(config)
        self.models = {"diffusion": model}
        self.optimizers = {"diffusion": torch.optim.AdamW(model.parameters(), lr=config["lr"],
                                                          weight_decay=0.0)}
        self.schedulers = {}
        self.ema_decay = {"diffusion": config["ema_decay"]} if config.get("ema_decay") else {}
        self.noise_scheduler = make_scheduler("ddpm", config)

    def conditioning(self, batch) -> dict:
        tokens, mask = self.encoder.tokens(list(batch[1]))
        return {"encoder_hidden_states": tokens, "encoder_attention_mask": mask}

    def drop_conditioning(self, cond: dict, keep_mask: torch.Tensor) -> dict:
        core = unwrap(self.models["diffusion"])
        null = core.null_condition(len(keep_mask))
        keep = keep_mask.to(cond["encoder_hidden_states"].device)
        return {"encoder_hidden_states": torch.where(keep[:, None, None], cond["encoder_hidden_states"],
                                                     null["encoder_hidden_states"]),
                "encoder_attention_mask": torch.where(keep[:, None], cond["encoder_attention_mask"],
                                                      null["encoder_attention_mask"])}

    def training_step(self, batch, ctx) -> dict:
        cfg, sched = self.config, self.noise_scheduler
        x0 = to_patches(batch[0], int(cfg["patch"]))
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=x0.device)
        x_t = sched.add_noise(x0, noise, t)
        cond = self.conditioning(batch)
        keep = torch.rand(len(x0), device=x0.device) >= cfg["caption_dropout"]
        cond = self.drop_conditioning(cond, keep)
        pred = self.models["diffusion"](x_t, t, **cond)
        loss = diffusion_loss(pred, x0, noise, t, sched, prediction_type=cfg["prediction_type"],
                              snr_gamma=cfg["snr_gamma"] or None)
        ctx.optimize("diffusion", loss, max_grad_norm=1.0)
        return {"loss": loss.detach()}


_ENCODED: dict[tuple, torch.Tensor] = {}


def training_data(config: Mapping, profile=None, autoencoder=None, batch_size: int | None = None):
    """Batches ``(x0, captions)``: the train split encoded once by the autoencoder (posterior
    means, scaled), captions drawn afresh from the world's templates in every batch.

    The encoded split is kept for the process (the stability runs of notebook 06 train three
    models on the same latents: encoding is paid once)."""
    from .data import WorldDataset, batch_loader

    p = get_profile(profile)
    train = WorldDataset("train", n=config["n_train"], image_size=config["image_size"],
                         captions="random", profile=p)      # the world: the same for every seed
    if config["space"] == "latent":
        from .vae import encode_latents
        key = (id(autoencoder), float(autoencoder.config.scaling_factor), len(train), train.seed,
               train.image_size, p.name)
        if key not in _ENCODED:
            _ENCODED[key] = encode_latents(autoencoder, train.float_images()).cpu()
        x0 = _ENCODED[key]
    else:
        x0 = train.float_images()
    return batch_loader(lambda i: (x0[i], train.batch(i)[1]), len(train),
                        int(batch_size or config["batch_size"]), config["seed"])


def train_diffusion(model: DiffusionModel, encoder, *, config: Mapping | None = None, profile=None,
                    autoencoder=None, resume_path=None, plot=None, desc: str = "diffusion",
                    method_class=DiffusionMethod, data=None):
    """Train ``model`` in place through :func:`course_lib.training.fit`; returns ``(history, method)``."""
    p = get_profile(profile)
    cfg = dict(config or model.config)
    if data is None:
        data = training_data(cfg, p, autoencoder)
    method = method_class(model, encoder, cfg)
    history = fit(method, data, steps=int(cfg["steps"]), max_seconds=60.0 * cfg["max_minutes"],
                  resume_path=resume_path, desc=desc, seed=cfg["seed"], log_every=10,
                  plot=p.plot_every_s if plot is None else plot, card={"config": cfg})
    model.eval()
    return history, method


def load_or_train_diffusion(profile=None, *, retrain: bool = False, name: str | None = None,
                            seed: int | None = None, verbose: bool = True, plot=None, **changes):
    """The profile's text-conditioned latent diffusion model: loaded, or trained and saved.

    Args:
        profile: a Profile, a name or None (active). retrain: train even if a checkpoint exists.
        name: the checkpoint's name (default ``"diffusion"``, suffixed with any ``changes``).
        seed: the training seed (default the profile's); the stability runs of notebook 06
            train the same model with seeds 0, 1, 2.
        changes: overrides of the profile's ``diffusion`` section, e.g.
            ``steps=300, block_out_channels=(32, 64)``.

    Returns:
        ``(model, card)``: a :class:`DiffusionModel` in eval mode with its text encoder and
        autoencoder attached (ready for :func:`sample`), and its card (``card["metrics"]``:
        steps, minutes, seconds per step, the loss curve).
    """
    p = get_profile(profile)
    encoder = conditioning.text_encoder(p, verbose=verbose)
    autoencoder = None
    if changes.get("space", p.diffusion.space) == "latent":
        from .vae import load_or_train_autoencoder
        autoencoder, _ = load_or_train_autoencoder(p, verbose=verbose)
    config = diffusion_config(p, encoder, autoencoder, **changes)
    named = dict(changes)
    if seed is not None:
        config["seed"] = named["seed"] = int(seed)
    if name is None:
        name = checkpoints.variant_name(CHECKPOINT, named)

    def train(model, resume_path):
        history, _ = train_diffusion(model, encoder, config=config, profile=p, autoencoder=autoencoder,
                                     resume_path=resume_path, plot=plot)
        return {**history.summary(),
                "loss_history": history.losses["loss"]}

    model, card = checkpoints.load_or_train(name, config=config, build=build_diffusion, train=train,
                                            profile=p, retrain=retrain,
                                            device=encoder.clip.logit_scale.device, verbose=verbose)
    conditioning.attach_text_encoder(model, encoder, expected=card.get("config", config).get("clip"))
    object.__setattr__(model, "_autoencoder", autoencoder)     # beside, like the text encoder
    model.eval()
    return model, card


def measure_cost(config: Mapping, batch_size: int = 32, repeats: int = 2) -> dict:
    """Seconds per training step and per sampling step (a guided step: a doubled batch) of
    an untrained model of ``config`` on this machine: what a data space costs, before any
    training (notebook 06's pixel-vs-latent measurement)."""
    import time

    torch.manual_seed(0)
    model = DiffusionModel(config)
    method = DiffusionMethod(model, None, config)
    sched = method.noise_scheduler
    c, h, w = config["data_shape"]
    x0 = to_patches(torch.randn(batch_size, c, h, w), int(config["patch"]))
    cond = model.null_condition(batch_size)
    opt = method.optimizers["diffusion"]

    def train_step():
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,))
        noise = torch.randn_like(x0)
        loss = diffusion_loss(model(sched.add_noise(x0, noise, t), t, **cond), x0, noise, t, sched,
                              prediction_type=config["prediction_type"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sample_step():
        with torch.no_grad():
            model(torch.cat([x0, x0]), 500, **_cat_cond(cond, cond))

    out = {"parameters": sum(p.numel() for p in model.parameters()),
           "unet input": tuple(x0.shape[1:])}
    for key, fn in (("train s/step", train_step), ("sample s/step", sample_step)):
        fn()                                            # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[key] = (time.perf_counter() - t0) / repeats
    return out


def machine_speed(repeats: int = 3) -> float:
    """The course's one yardstick of a machine's speed: seconds per training step of the cpu
    profile's diffusion UNet at batch 64 (untrained, the same arithmetic as a real step).

    Notebook times are given with it (``make course`` measures it before and after its run),
    because the same 2-core machine is 20-50% faster on some days than on others: the cpu
    notebooks are sized for 9 minutes at 0.5 s/step."""
    from .profiles import PROFILES

    p = PROFILES["cpu"]
    sizes = model_sizes(p, "diffusion", {}, "machine_speed")
    side = p.data.image_size // 2 ** (len(p.autoencoder.block_out_channels) - 1)
    config = {**sizes, "data_shape": [p.autoencoder.latent_channels, side, side],
              "clip": {"width": p.clip.text_width, "context_length": p.clip.context_length}}
    return measure_cost(config, batch_size=64, repeats=repeats)["train s/step"]


# =============================================================================
# 5. Sampling
# =============================================================================


#: The largest guidance scale a sampler accepts: far past the useful 1-10, short of nonsense.
MAX_GUIDANCE = 100.0


def check_sampling(steps: int, guidance: float, config: Mapping, *, guidance_rescale: float = 0.0
                   ) -> tuple[int, float, float]:
    """Clear errors for a step count, guidance scale or guidance rescale the model cannot use;
    returns them as Python numbers (numpy and 0-d torch numbers are accepted as such)."""
    steps, guidance = runtime.plain_number(steps), runtime.plain_number(guidance)
    guidance_rescale = runtime.plain_number(guidance_rescale)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: give a whole number of denoising steps >= 1 "
                         "(e.g. 20 for 'dpm', 50 for 'ddim').")
    if steps > int(config["train_timesteps"]):
        raise ValueError(f"steps={steps} is more than the training schedule's "
                         f"{config['train_timesteps']} timesteps: a sampler can visit each at most "
                         f"once. Use steps <= {config['train_timesteps']}.")
    if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not math.isfinite(guidance) \
            or not 0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance={guidance!r}: the guidance scale must be a number in [0, {MAX_GUIDANCE:g}] "
                         "(0: unconditional, 1: conditional without guidance, ~1.5-3: guided; far above 10 "
                         "every image saturates).")
    if not isinstance(guidance_rescale, (int, float)) or isinstance(guidance_rescale, bool) \
            or not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale={guidance_rescale!r}: the share of the rescaled guided prediction "
                         "must be a number in [0, 1] (0: plain guidance, 0.7: Lin et al.'s choice).")
    return int(steps), float(guidance), float(guidance_rescale)


def guided(cond_pred: torch.Tensor, uncond_pred: torch.Tensor, guidance: float, rescale: float = 0.0
           ) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans, 2022): ``u + w·(c − u)``.

    w = 0 is the unconditional prediction, w = 1 the conditional one, w > 1 goes past it,
    away from "any image" and towards "this caption".

    ``rescale`` φ (Lin et al. 2024, *Common Diffusion Noise Schedules and Sample Steps are
    Flawed*, section 3.4): w > 1 also inflates the prediction's spread, and with it the
    generated latents' (at w = 3, ~1.2x the real latents' standard deviation here), which
    an autoencoder's decoder may turn into the wrong hue (blue drawn purple). The guided
    prediction is scaled back to the conditional one's standard deviation per sample, and
    mixed: ``φ·rescaled + (1 − φ)·guided``. diffusers has this as ``rescale_noise_cfg``,
    but only inside its Stable Diffusion pipelines, which need ``transformers``: these
    four lines are its formula.
    """
    out = uncond_pred + guidance * (cond_pred - uncond_pred)
    if rescale:
        dims = list(range(1, out.ndim))
        rescaled = out * (cond_pred.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True))
        out = rescale * rescaled + (1 - rescale) * out
    return out


def predicted_x0(scheduler, x_t: torch.Tensor, t, prediction: torch.Tensor) -> torch.Tensor:
    """The clean data the model's prediction implies at ``x_t`` (x̂₀, the film strip's frames).

    ε: x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ;  v: x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v̂.
    """
    abar = scheduler.alphas_cumprod.to(x_t.device)[int(t)].float()
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return a * x_t - s * prediction
    return (x_t - s * prediction) / a


def _cat_cond(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


@torch.no_grad()
def denoise(unet: Callable, noise: torch.Tensor, cond: dict, uncond: dict | None = None, *, scheduler,
            steps: int, guidance: float = 1.0, guidance_rescale: float = 0.0,
            generator: torch.Generator | None = None, on_step: Callable | None = None) -> torch.Tensor:
    """The guided denoising loop, on diffusers' scheduler API; returns x₀ (folded, as ``noise``).

    Args:
        unet: ``unet(x_t, t, **cond) -> prediction`` (a :class:`DiffusionModel`, or a
            wrapper around a diffusers UNet).
        noise: the starting noise ``(N, C, h, w)`` (the UNet's input shape).
        cond / uncond: the UNet's keyword arguments for the caption and for "no caption";
            ``uncond=None`` samples without guidance.
        scheduler: a diffusers scheduler (:func:`make_scheduler`); it is reset to ``steps``.
        guidance: the scale w of :func:`guided` (ignored without ``uncond``).
        guidance_rescale: φ of :func:`guided` (0: plain guidance).
        generator: for the schedulers that add fresh noise at each step (DDPM).
        on_step: ``on_step(i, t, x_t, x0_hat)`` after each prediction (a film strip).
    """
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        if uncond is None or guidance == 1.0:
            pred = unet(x_in, t, **cond)
        elif guidance == 0.0:
            pred = unet(x_in, t, **uncond)
        else:       # both halves in one batch: one UNet call per step
            c, u = unet(torch.cat([x_in, x_in]), t, **_cat_cond(cond, uncond)).chunk(2)
            pred = guided(c, u, guidance, guidance_rescale)
        if on_step is not None:
            on_step(i, t, x, predicted_x0(scheduler, x, t, pred))
        x = scheduler.step(pred, t, x, generator=generator).prev_sample
    return x


def encode_captions(model: DiffusionModel, captions) -> dict:
    """Captions -> the UNet's keyword arguments (token states and padding mask)."""
    captions = conditioning.check_captions(captions, "sample(captions)")
    tokens, mask = conditioning.get_text_encoder(model).tokens(captions)
    return {"encoder_hidden_states": tokens, "encoder_attention_mask": mask}


def sampling_defaults(model) -> dict:
    """``{"scheduler", "steps", "guidance", "guidance_rescale"}`` that :func:`sample` uses when
    not given: the profile's (``sampler``, ``sample_steps``, ``guidance``, ``guidance_rescale``
    of its ``diffusion`` section), or the model config's own where it has them."""
    cfg = model.config
    section = profile_of(cfg).diffusion
    return {"scheduler": cfg.get("sampler", section.sampler),
            "steps": int(cfg.get("sample_steps", section.sample_steps)),
            "guidance": float(cfg.get("guidance", section.guidance)),
            "guidance_rescale": float(cfg.get("guidance_rescale", section.guidance_rescale))}


@torch.no_grad()
def sample(model: DiffusionModel, captions, *, seed: int = 0, noise: torch.Tensor | None = None,
           steps: int | None = None, guidance: float | None = None, scheduler: str | None = None,
           guidance_rescale: float | None = None, batch_size: int = 256,
           on_step: Callable | None = None, return_latents: bool = False) -> torch.Tensor:
    """One image per caption: float ``(N, 3, H, W)`` in [-1, 1] (the course's convention).

    Args:
        model: a :class:`DiffusionModel` from :func:`load_or_train_diffusion`.
        captions: a list of captions (one str is a list of one).
        seed: the noise seed: the same seed, captions and settings give the same images.
        noise: the starting noise ``(N, *data_shape(model))`` instead of drawing it from
            ``seed`` (e.g. one noise for every caption); the sampler's own noise (stochastic
            schedulers) still comes from ``seed``.
        steps / guidance / scheduler: default :func:`sampling_defaults` (the profile's
            ``sample_steps``, ``guidance``, ``sampler``); scheduler one of :data:`SCHEDULERS`.
        guidance_rescale: φ of :func:`guided`, default the profile's ``guidance_rescale``.
        batch_size: captions per loop (each batch gets its own slice of the seeded noise).
        on_step: see :func:`denoise` (called per batch).
        return_latents: also return the generated latents (before decoding).

    Raises:
        ValueError: steps < 1 or above the training schedule, guidance < 0, an unknown
            scheduler name (``UnknownSchedulerError``), empty captions, a caption longer
            than CLIP's context (``CaptionError``), noise of another shape
            (``conditioning.NoiseShapeError``).
    """
    cfg = model.config
    defaults = sampling_defaults(model)
    steps = defaults["steps"] if steps is None else steps
    guidance = defaults["guidance"] if guidance is None else guidance
    name = defaults["scheduler"] if scheduler is None else scheduler
    rescale = defaults["guidance_rescale"] if guidance_rescale is None else guidance_rescale
    sched = make_scheduler(name, cfg)
    steps, guidance, rescale = check_sampling(steps, guidance, cfg, guidance_rescale=rescale)
    runtime.check_seed(seed)
    batch_size = runtime.check_count(batch_size, "batch_size")
    captions = conditioning.check_captions(captions, "sample(captions)")
    device = model.null_tokens.device
    patch = int(cfg["patch"])
    shape = data_shape(model)
    if noise is None:
        noise = torch.randn(len(captions), *shape, generator=runtime.seeded_generator(seed))
    else:
        noise = conditioning.check_noise(noise, (len(captions), *shape), "diffusion.sample(noise)")
    step_gen = runtime.seeded_generator(seed, offset=1)
    was = model.training
    model.eval()
    outs = []
    for s in range(0, len(captions), batch_size):
        chunk = captions[s:s + batch_size]
        cond = encode_captions(model, chunk)
        uncond = model.null_condition(len(chunk)) if guidance != 1.0 else None
        z = denoise(model, to_patches(noise[s:s + batch_size].to(device), patch), cond, uncond,
                    scheduler=sched, steps=steps, guidance=guidance, guidance_rescale=rescale,
                    generator=step_gen, on_step=on_step)
        outs.append(from_patches(z, patch))
    model.train(was)
    latents = torch.cat(outs)
    images = decode(model, latents)
    return (images, latents) if return_latents else images


def decode(model: DiffusionModel, x0: torch.Tensor) -> torch.Tensor:
    """Generated data -> images in [-1, 1]: the autoencoder's decoder (latent space) or a clamp.

    Raises:
        LatentShapeError: latents of another shape than the model generates.
    """
    from .vae import LatentShapeError

    want = data_shape(model)
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4 or tuple(x0.shape[1:]) != want:
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise LatentShapeError(f"decode: this model generates (N, {want[0]}, {want[1]}, {want[2]}), "
                               f"got {got}. Pass what sample(..., return_latents=True) returns.")
    if model.config["space"] == "pixel":
        return conditioning.finish_samples(x0, "diffusion.sample")
    from .vae import decode_latents
    ae = getattr(model, "_autoencoder", None)
    if ae is None:
        raise RuntimeError("This diffusion model has no autoencoder attached: load it with "
                           "load_or_train_diffusion, or set it with object.__setattr__(model, "
                           "'_autoencoder', autoencoder).")
    return conditioning.finish_samples(decode_latents(ae, x0), "diffusion.sample")


#: The reference (``python -m course_lib.train diffusion --reference --profile cpu``, shipped in
#: data/shipped/ for notebook 06's side-by-side): the cpu model trained 5x longer on twice the
#: images: the notebook's few-minute run stays below the course's targets.
REFERENCE = {"steps": 3_000, "n_train": 40_000, "max_minutes": 60.0}
