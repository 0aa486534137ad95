"""Profiles: every size a notebook needs, chosen by one switch.

Three profiles exist:

* ``smoke`` -- CI: a few seconds per model, results only "clearly above chance".
* ``cpu``   -- a 2-core laptop: minutes per notebook, results recognisable.
* ``gpu``   -- one GPU (a workshop): good quality, minutes per notebook.

The switch is the environment variable ``COURSE_PROFILE``. Without it the
profile is detected: ``CI`` set -> smoke, CUDA available -> gpu, else cpu.
Notebooks call :func:`get_profile` and read sizes from it; they never
hard-code a size, so one notebook serves CI, a laptop and a workshop.

Each method module (clip, metrics, gan, ...) owns one section here, a small
frozen dataclass, so that a learner reads every size of one profile in one
place (``print(get_profile().describe())``).

Explained in notebook 00, section "Profiles".
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["Profile", "DataSizes", "ClipSizes", "JudgeSizes", "GanSizes", "VaeSizes",
           "AutoencoderSizes", "GalipSizes", "DiffusionSizes", "PriorSizes", "DecoderSizes", "PROFILES",
           "PROFILE_NAMES", "get_profile", "profile_of", "section_with", "detect_profile_name",
           "UnknownProfileError", "MAX_SEED", "check_seed", "seed_from_env"]


class UnknownProfileError(ValueError):
    """Raised for a profile name that is not one of smoke, cpu, gpu."""


@dataclass(frozen=True)
class DataSizes:
    """The generated world: how big and how many (course_lib.data)."""
    image_size: int = 32
    n_train: int = 50_000
    n_val: int = 2_000
    n_test: int = 2_000
    n_heldout: int = 1_000         # images of the held-out attribute combinations only
    two_object_fraction: float = 0.0  # share of scenes with a second object and a relation
    batch_size: int = 128
    num_workers: int = 0           # DataLoader workers; 0 is safe on Windows/macOS notebooks


@dataclass(frozen=True)
class ClipSizes:
    """The course's small CLIP (course_lib.clip, notebook 01)."""
    embed_dim: int = 128
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    patch_size: int = 8
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 24       # tokens; captions of the world are < 20 tokens
    steps: int = 1_000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 50
    max_minutes: float = 7.0       # a guard for a busy laptop, well above the steps' time: every later
                                   # model inherits a CLIP the guard cut short


@dataclass(frozen=True)
class JudgeSizes:
    """The attribute classifier that grades generated images (course_lib.metrics)."""
    width: int = 24
    n_train: int = 20_000
    steps: int = 1_000
    batch_size: int = 128
    lr: float = 4e-3
    max_minutes: float = 3.0
    n_eval: int = 2_000            # images per side for Fréchet distance and alignment


@dataclass(frozen=True)
class GanSizes:
    """The CLIP-conditioned GAN (course_lib.gan, notebook 03)."""
    noise_dim: int = 32
    g_width: int = 16              # generator channels at full size (x2, x4 towards the 4x4 start)
    d_width: int = 16              # discriminator channels at full size (x2, x4 towards 4x4)
    d_head: str = "projection"     # "concat" (DF-GAN) or "projection" (Miyato & Koyama)
    n_train: int = 50_000
    batch_size: int = 32
    steps: int = 1_000             # a few minutes on 2 cores; notebook 03 trains a twin for as long
    lr_g: float = 1e-3             # DF-GAN uses 1e-4 / 4e-4; faster here, where runs are minutes
    lr_d: float = 1e-3
    ma_gp_weight: float = 2.0      # k of MA-GP, k * mean(|grad|^p) (DF-GAN: 2, 6)
    ma_gp_power: float = 6.0
    ma_gp_every: int = 4           # lazy regularisation: every this many steps
    clip_weight: float = 1.0       # the article's CLIP loss in G's objective
    ema_decay: float = 0.0         # EMA of G's weights (0: none): no gain in runs this short
    max_minutes: float = 6.0       # a guard: the steps are sized to end well before it


@dataclass(frozen=True)
class GalipSizes:
    """GALIP: the frozen course CLIP inside both players (course_lib.galip, notebook 04)."""
    noise_dim: int = 32
    code_channels: int = 32        # Mate-G's map before the bridge (GALIP: 64 at 7x7)
    mate_blocks: int = 2           # Mate-G's M-blocks (GALIP: 4)
    g_width: int = 16              # up-sampling channels at full size (x2, x4 towards the CLIP grid)
    d_channels: int = 64           # Mate-D's output channels (GALIP: 512)
    d_head: str = "concat"         # GALIP's (tiled sentence, two convs); "projection": notebook 03's
    prompts: bool = True           # text-predicted prompt tokens in the bridge (the ablation: False)
    code_from_text: bool = True    # Mate-G's first map from [noise, sentence] (GALIP: noise only)
    bridge_scale: float = 0.1      # h = f + 0.1 * CLIP_blocks(f, prompts) (GALIP's constant)
    n_train: int = 50_000
    batch_size: int = 32
    steps: int = 1_000             # as many as the GAN's, in less time (one GALIP step costs less)
    lr_g: float = 1e-3             # GALIP: 1e-4 / 4e-4, for days of training; minutes need faster
    lr_d: float = 4e-4             # (the trials behind these: notebook 04's closing note)
    ma_gp_weight: float = 2.0      # MA-GP on (CLIP features, sentence): 2 * mean(|grad|^6)
    ma_gp_power: float = 6.0
    ma_gp_every: int = 4           # lazy regularisation, as notebook 03
    clip_weight: float = 4.0       # GALIP's weight of the text-image similarity term
    ema_decay: float = 0.0
    max_minutes: float = 6.0       # a guard: the steps are sized to end well before it
    probes: int = 4                # alignment graded this many times during training (the curve)
    ablation_steps: int = 200      # each arm of notebook 04's ablation (with / without prompts), sized
                                   # to keep the notebook within its 9 minutes


@dataclass(frozen=True)
class VaeSizes:
    """The CLIP-conditioned VAE (course_lib.vae, notebook 05)."""
    fusion: str = "cvae"           # how the text enters: add | concat | film | cvae
    latent_dim: int = 32
    width: int = 32                # channels of the first encoder stage (x2 per stage)
    text_dim: int = 64             # the projected CLIP text embedding
    beta: float = 1.0              # weight of the KL term of the ELBO
    steps: int = 1_200             # a few minutes on 2 cores
    batch_size: int = 128
    lr: float = 2e-3
    max_minutes: float = 4.0
    compare_steps: int = 300       # each fusion of notebook 05's comparison table (and beta sweep)
    compare_minutes: float = 1.0


@dataclass(frozen=True)
class AutoencoderSizes:
    """The KL autoencoder, first stage of latent diffusion (course_lib.vae, notebooks 05-07)."""
    latent_channels: int = 4
    block_out_channels: tuple = (16, 32)   # one block per level: 2 levels = 32x32 -> 16x16
    layers_per_block: int = 1
    kl_weight: float = 1e-3
    steps: int = 800               # enough for the judge to read every attribute from its reconstructions
    batch_size: int = 32
    lr: float = 2e-3
    max_minutes: float = 2.5


@dataclass(frozen=True)
class DiffusionSizes:
    """Text-conditioned latent diffusion (course_lib.diffusion, notebook 06)."""
    space: str = "latent"          # "latent" (the autoencoder's 16x16x4) or "pixel" (32x32x3)
    patch: int = 2                 # fold patch x patch cells into channels: 16x16x4 -> 8x8x16
    block_out_channels: tuple = (64, 128)   # one UNet level each (cross-attention in every one)
    layers_per_block: int = 1
    attention_heads: int = 4
    prediction_type: str = "v_prediction"   # or "epsilon"
    beta_schedule: str = "squaredcos_cap_v2"
    train_timesteps: int = 1_000
    snr_gamma: float = 0.0         # min-SNR-gamma loss weights (0: the plain v loss); min-SNR down-weights
                                   # the noisy steps where the layout (position) is decided (notebook 06)
    caption_dropout: float = 0.15  # share of captions replaced by the null caption (guidance)
    ema_decay: float = 0.999
    n_train: int = 20_000          # images encoded once by the autoencoder, then a few epochs of them
    batch_size: int = 64
    lr: float = 1e-3
    steps: int = 600               # sized for a 9-minute notebook at 0.5 s/step (notebook 06's note)
    max_minutes: float = 7.0       # a guard: the steps are sized to end well before it
    sampler: str = "dpm"           # ddpm | ddim | dpm: the sampler of sample() and the report
    sample_steps: int = 20
    guidance: float = 3.0          # the trade of alignment against Fréchet distance notebook 06 measures
    guidance_rescale: float = 0.7  # phi of guidance rescale (Lin et al. 2024): keeps guided latents at the
                                   # data's spread, so the autoencoder decodes the right hue (notebook 06)
    n_eval: int = 200              # prompts of the main report
    n_curve: int = 48              # prompts of each point of the steps and guidance curves
    curve_steps: tuple = (5, 10, 25)        # DDIM and DPM steps of the curve (DDPM: twice as many)
    guidance_scales: tuple = (0.0, 1.5, 3.0, 5.0)
    cost_batch: int = 16           # batch of the pixel-vs-latent cost measurement
    stability_seeds: int = 3       # seeds of the stability runs (smoke-scale models)
    stability_steps: int = 60      # each stability run's steps, sized to keep the notebook in its budget
    reference_guidance: float = 1.5  # notebooks 06-07 grade the shipped references (trained longer) at this
                                   # scale: their best trade of alignment against Fréchet distance


@dataclass(frozen=True)
class PriorSizes:
    """unCLIP's prior: caption -> CLIP image embedding (course_lib.unclip, notebook 07)."""
    layers: int = 2                # PriorTransformer blocks: 2 cost ~0.7x of 4, and the prior still
                                   # meets its targets (notebook 07)
    heads: int = 4
    head_dim: int = 32             # inner width = heads x head_dim
    timesteps: int = 1_000         # the prior's own DDPM schedule (predicts the clean z_i)
    beta_schedule: str = "squaredcos_cap_v2"
    caption_dropout: float = 0.1   # the paper's 10%: the unconditional prior for guidance
    ema_decay: float = 0.999
    n_train: int = 20_000          # (image, caption) pairs; the CLIP image embeddings are computed once
    batch_size: int = 128
    lr: float = 5e-4
    steps: int = 300               # the prior learns fast: its retrieval test is met well within these
    max_minutes: float = 3.0
    sample_steps: int = 25         # DDIM steps when sampling an embedding
    guidance: float = 2.0
    n_eval: int = 100              # captions of the prior's retrieval test


@dataclass(frozen=True)
class DecoderSizes:
    """unCLIP's decoder: CLIP image embedding (+ caption) -> image, a latent diffusion model
    built by course_lib.diffusion (its UNet sizes come from the ``diffusion`` section)."""
    context_tokens: int = 4        # extra context tokens projected from z_i (the paper: 4)
    z_dropout: float = 0.1         # the paper: z_i dropped 10% ...
    text_dropout: float = 0.5      # ... and the caption 50% of the time
    steps: int = 500               # notebook 06's UNet: sized so the two stages (and the MLP baseline)
                                   # fit notebook 07's budget
    max_minutes: float = 7.0       # a guard: the steps are sized to end well before it
    sample_steps: int = 20
    guidance: float = 3.0          # notebook 06 measured 3 as the best trade for its model
    guidance_rescale: float = 0.7  # as notebook 06's sampling (Lin et al. 2024's guidance rescale)
    n_probe: int = 64              # real images of notebook 07's variations and text diffs
    variations: int = 2            # decodings of each probe image's z_i (what z_i keeps)
    n_invert: int = 8              # real images DDIM-inverted (one at a time, the costliest probe)
    inversion_steps: int = 50      # DDIM steps of the inversion and of its reconstruction
    n_eval: int = 100              # prompts of notebook 07's text -> image table (three rows)


@dataclass(frozen=True)
class Profile:
    """Every size one profile gives the course. Read-only: use :meth:`replace`."""
    name: str
    description: str
    data: DataSizes = field(default_factory=DataSizes)
    clip: ClipSizes = field(default_factory=ClipSizes)
    judge: JudgeSizes = field(default_factory=JudgeSizes)
    gan: GanSizes = field(default_factory=GanSizes)
    galip: GalipSizes = field(default_factory=GalipSizes)
    vae: VaeSizes = field(default_factory=VaeSizes)
    autoencoder: AutoencoderSizes = field(default_factory=AutoencoderSizes)
    diffusion: DiffusionSizes = field(default_factory=DiffusionSizes)
    prior: PriorSizes = field(default_factory=PriorSizes)
    decoder: DecoderSizes = field(default_factory=DecoderSizes)
    seed: int = 0
    #: Steps of the small demonstrations (notebook 00's tour of the training loop).
    demo_steps: int = 150
    #: Use checkpoints from data/shipped/ (trained once on a GPU) instead of training.
    use_shipped_checkpoints: bool = True
    #: Seconds between redraws of the live loss plot (notebooks only).
    plot_every_s: float = 5.0

    @property
    def checkpoint_folder(self) -> str:
        """The folder of this profile's checkpoints under ``data/checkpoints/``: the profile's
        name, and ``<name>-seed<N>`` for another seed (``COURSE_SEED``), so that runs with
        different seeds never load or overwrite each other's models."""
        return self.name if self.seed == 0 else f"{self.name}-seed{self.seed}"

    def replace(self, **changes) -> Profile:
        """A copy with some fields changed, e.g. ``p.replace(seed=1)``.

        A section can be changed with a dict: ``p.replace(clip={"steps": 10})``.

        Raises:
            ValueError: a name that is not a field (the valid ones are listed), or a
                value out of range (a negative step count, a batch size of 0).
            TypeError: a value of the wrong type (``clip="small"``, ``steps=1.5``).
        """
        for key, value in list(changes.items()):
            current = getattr(self, key, None)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                _check_names(f"profile.{key}", current, value)
                for name, v in value.items():
                    _check_value(f"profile.{key}.{name}", name, v, getattr(current, name))
                changes[key] = dataclasses.replace(current, **value)
        _check_names("profile", self, changes)
        for key, value in changes.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current):
                if type(value) is not type(current):
                    raise TypeError(
                        f"profile.{key} is a section of sizes: change it with a dict of its fields, "
                        f"e.g. profile.replace({key}={{'{dataclasses.fields(current)[0].name}': ...}}), "
                        f"not with a {type(value).__name__} ({value!r}).")
            else:
                _check_value(f"profile.{key}", key, value, current)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Plain-JSON form, stored in every checkpoint card."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """A readable table of every size in this profile."""
        lines = [f"profile {self.name!r}: {self.description}"]
        scalars = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                inner = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(value).items())
                lines.append(f"  {f.name:6s} {inner}")
            elif f.name not in ("name", "description"):
                scalars.append(f"{f.name}={value}")
        lines.append("  other  " + ", ".join(scalars))
        return "\n".join(lines)


def _check_names(where: str, obj, changes) -> None:
    valid = [f.name for f in dataclasses.fields(obj)]
    unknown = [k for k in changes if k not in valid]
    if unknown:
        import difflib
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
                 for k in unknown for close in [difflib.get_close_matches(k, valid, n=1)]]
        raise ValueError(f"{where} has no field {', '.join(hints)}. Its fields: {', '.join(valid)}.")


# Rules every section follows (sections added later get them for free): a value has the type
# of the default; counts and rates are never negative; these must be above zero; shares in [0, 1].
_POSITIVE_PARTS = ("batch_size", "image_size", "dim", "width", "heads", "layers", "patch_size",
                   "context_length", "n_train", "n_eval", "max_minutes", "plot_every_s")


def _check_value(where: str, name: str, value, default) -> None:
    if value is None and name.startswith("max_"):
        return                                    # a budget of None: no budget
    if isinstance(default, bool) or isinstance(default, str):
        ok = type(value) is type(default)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return
    if not ok:
        kind = type(default).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise TypeError(f"{where} must be {article} {kind} (like its default {default!r}), "
                        f"not a {type(value).__name__} ({value!r}).")
    if name == "seed":
        check_seed(value, where)
        return
    if isinstance(value, bool) or isinstance(value, str):
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{where} must be a finite number, not {value!r}.")
    if name.endswith("_fraction") or name.endswith("decay"):
        if not 0 <= value <= 1:
            raise ValueError(f"{where} is a share: it must be between 0 and 1, not {value!r}.")
    elif name == "lr" or name.startswith("lr_") or any(part in name for part in _POSITIVE_PARTS):
        if value <= 0:
            raise ValueError(f"{where} must be above 0, not {value!r}.")
    elif value < 0:
        raise ValueError(f"{where} must not be negative, not {value!r}.")


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI: seconds per model, results only clearly above chance",
        data=DataSizes(image_size=32, n_train=4_000, n_val=500, n_test=500, n_heldout=300,
                       batch_size=64),
        clip=ClipSizes(embed_dim=64, vision_width=64, vision_layers=2, vision_heads=2,
                       patch_size=8, text_width=64, text_layers=2, text_heads=2,
                       steps=800, batch_size=64, warmup_steps=20, max_minutes=1.0),
        judge=JudgeSizes(width=16, n_train=6_000, steps=800, batch_size=128, max_minutes=1.0,
                         n_eval=500),
        gan=GanSizes(g_width=8, d_width=8, n_train=4_000, steps=200, max_minutes=1.0),
        galip=GalipSizes(code_channels=16, mate_blocks=1, g_width=8, d_channels=32, n_train=4_000,
                         steps=200, max_minutes=1.0, probes=2, ablation_steps=40),
        vae=VaeSizes(latent_dim=16, width=16, text_dim=32, steps=400, batch_size=64, lr=3e-3,
                     max_minutes=0.5, compare_steps=100, compare_minutes=0.2),
        autoencoder=AutoencoderSizes(block_out_channels=(8, 16), steps=200, batch_size=32,
                                     lr=3e-3, max_minutes=0.4),
        diffusion=DiffusionSizes(block_out_channels=(32, 64), n_train=2_000, batch_size=32,
                                 lr=2e-3, ema_decay=0.0, steps=200, max_minutes=1.5,
                                 sample_steps=8, n_eval=64, n_curve=16,
                                 curve_steps=(3, 8), guidance_scales=(0.0, 1.5, 3.0),
                                 cost_batch=4, stability_steps=20),
        prior=PriorSizes(layers=2, heads=2, head_dim=32, n_train=4_000, batch_size=64, steps=150,
                         max_minutes=0.5, sample_steps=10, n_eval=50),
        decoder=DecoderSizes(steps=200, max_minutes=1.5, sample_steps=8, guidance=3.0, n_probe=16,
                             n_invert=3, inversion_steps=10, n_eval=48),
        demo_steps=60,
        use_shipped_checkpoints=False,
        plot_every_s=30.0,
    ),
    "cpu": Profile(
        name="cpu",
        description="a 2-core laptop: minutes per notebook, results recognisable",
    ),
    "gpu": Profile(
        name="gpu",
        description="one GPU: good quality, minutes per notebook",
        data=DataSizes(image_size=64, n_train=100_000, n_val=5_000, n_test=5_000,
                       n_heldout=2_000, batch_size=256, num_workers=0),
        clip=ClipSizes(embed_dim=256, vision_width=384, vision_layers=6, vision_heads=6,
                       patch_size=8, text_width=384, text_layers=6, text_heads=6,
                       steps=4_000, batch_size=256, lr=5e-4, warmup_steps=200,
                       max_minutes=10.0),
        judge=JudgeSizes(width=48, n_train=60_000, steps=3_000, batch_size=256,
                         max_minutes=5.0, n_eval=5_000),
        gan=GanSizes(g_width=32, d_width=32, n_train=100_000, batch_size=64, steps=8_000,
                     lr_g=4e-4, lr_d=4e-4, ema_decay=0.999, max_minutes=10.0),
        galip=GalipSizes(code_channels=64, mate_blocks=4, g_width=32, d_channels=256, n_train=100_000,
                         batch_size=64, steps=8_000, ema_decay=0.999, max_minutes=10.0),
        vae=VaeSizes(latent_dim=64, width=64, text_dim=128, steps=6_000, batch_size=256,
                     lr=1e-3, max_minutes=6.0, compare_steps=1_500, compare_minutes=1.5),
        autoencoder=AutoencoderSizes(block_out_channels=(64, 128), steps=4_000, batch_size=64,
                                     lr=1e-3, max_minutes=5.0),
        diffusion=DiffusionSizes(block_out_channels=(128, 256, 256), layers_per_block=2,
                                 attention_heads=8, patch=1, n_train=100_000, batch_size=128, lr=5e-4,
                                 steps=20_000, max_minutes=15.0, sample_steps=25, n_eval=2_000,
                                 n_curve=500, stability_steps=300),
        prior=PriorSizes(layers=6, heads=8, head_dim=32, n_train=100_000, batch_size=512,
                         steps=6_000, max_minutes=5.0),
        decoder=DecoderSizes(steps=20_000, max_minutes=15.0, sample_steps=25),
        use_shipped_checkpoints=False,
        plot_every_s=5.0,
    ),
}
PROFILE_NAMES = tuple(PROFILES)


#: Per profile section, the settings only a notebook reads (how it measures: side runs,
#: prompts, sampler settings of its reports). They are never part of a model's config, so
#: changing one never invalidates a trained checkpoint. :func:`model_sizes` drops them.
NOTEBOOK_SETTINGS: dict[str, tuple[str, ...]] = {
    "galip": ("ablation_steps",),
    "vae": ("compare_steps", "compare_minutes"),
    "diffusion": ("sampler", "sample_steps", "guidance", "guidance_rescale", "n_eval", "n_curve", "curve_steps",
                  "guidance_scales", "cost_batch", "stability_seeds", "stability_steps",
                  "reference_guidance"),
    "prior": ("sample_steps", "guidance", "n_eval"),
    "decoder": ("sample_steps", "guidance", "guidance_rescale", "n_probe", "variations", "n_invert", "inversion_steps", "n_eval"),
}


def model_sizes(profile: Profile, section: str, changes, where: str) -> dict:
    """:func:`section_with` without the section's :data:`NOTEBOOK_SETTINGS`: what a model's
    config starts from (a change to a notebook-only setting is checked as a field of the
    section, then left out: it changes how the notebook measures, not the model)."""
    sizes = section_with(profile, section, changes, where)
    for key in NOTEBOOK_SETTINGS.get(section, ()):
        sizes.pop(key)
    return sizes


def section_with(profile: Profile, section: str, changes, where: str) -> dict:
    """Profile ``section`` as a plain dict with ``changes`` applied: what every method's
    ``*_config`` starts from.

    Raises:
        KeyError: a change that is not a field of the section (the fields are listed).
    """
    sizes = dataclasses.asdict(getattr(profile, section))
    unknown = sorted(set(changes) - set(sizes))
    if unknown:
        raise KeyError(f"{where}: unknown setting(s) {unknown}; the {section} section has {sorted(sizes)}.")
    sizes.update(changes)
    return sizes


#: Seeds the course accepts for training (``COURSE_SEED``, ``profile.seed``): torch, NumPy and
#: the data loaders all take them, and a run may add its step count to one.
MAX_SEED = 2**31 - 1


def check_seed(value, where: str = "seed") -> int:
    """``value`` as a training seed, or a clear error naming ``where`` and the valid range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be a whole number from 0 to {MAX_SEED:,}, "
                        f"not a {type(value).__name__} ({value!r}).")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{where} must be a whole number from 0 to {MAX_SEED:,}, not {value!r}.")
    return int(value)


def seed_from_env() -> int | None:
    """``COURSE_SEED`` as a training seed (model initialisation and data order; the world's
    images stay the same), or None when it is not set."""
    raw = os.environ.get("COURSE_SEED", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"COURSE_SEED={raw!r} is not a whole number. Set e.g. `export COURSE_SEED=1` "
                         f"(seeds from 0 to {MAX_SEED:,}), or unset it for the course's seed 0.") from None
    return check_seed(value, "COURSE_SEED")


def detect_profile_name() -> str:
    """The profile to use when ``COURSE_PROFILE`` is not set.

    ``CI`` set (any value but "" / "0" / "false") -> smoke; CUDA -> gpu; else cpu.
    """
    ci = os.environ.get("CI", "").strip().lower()
    if ci not in ("", "0", "false", "no"):
        return "smoke"
    try:
        import torch
        if torch.cuda.is_available():
            return "gpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "cpu"


def profile_of(config) -> Profile:
    """The profile a model's config was made in (its ``"profile"`` entry), e.g. for the
    sampling defaults of its section. A reference made by ``python -m course_lib.train
    --reference`` says ``"cpu-reference"``: the cpu profile's sections (changed only in
    training budget) apply. No entry: the active profile."""
    name = config.get("profile") if config else None
    return get_profile(name.removesuffix("-reference") if isinstance(name, str) else None)


def get_profile(name: str | Profile | None = None) -> Profile:
    """The active profile.

    Args:
        name: ``"smoke"``, ``"cpu"`` or ``"gpu"``; a :class:`Profile` is returned as it
            is (so every function can take a profile, its name, or None alike).
            ``None`` reads ``COURSE_PROFILE`` and falls back to :func:`detect_profile_name`.
            A name or None gets the seed ``COURSE_SEED`` when it is set.

    Raises:
        UnknownProfileError: for any other name, listing the valid ones.
    """
    if isinstance(name, Profile):
        return name
    if name is not None and not isinstance(name, str):
        raise TypeError(f"get_profile: expected a profile name ({', '.join(map(repr, PROFILE_NAMES))}), "
                        f"a Profile or None, not a {type(name).__name__} ({name!r}).")
    if name is None:
        name = os.environ.get("COURSE_PROFILE", "").strip() or detect_profile_name()
    key = name.strip().lower()
    if key not in PROFILES:
        raise UnknownProfileError(
            f"Unknown course profile {name!r}. Valid profiles: {', '.join(PROFILE_NAMES)}. "
            "Set one with e.g. `export COURSE_PROFILE=cpu` (or unset COURSE_PROFILE to detect it).")
    seed = seed_from_env()
    if seed is not None and seed != PROFILES[key].seed:
        return PROFILES[key].replace(seed=seed)
    return PROFILES[key]
