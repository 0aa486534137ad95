"""course_lib: the tested machinery behind the notebooks of the course
"Text-to-image generation with CLIP".

Notebooks teach; this package holds the training loops, models and samplers
they call. One notebook <-> one module, named alike:

=============  =========================================================
module         what it holds
=============  =========================================================
profiles       smoke / cpu / gpu sizes, chosen by COURSE_PROFILE
paths          where data, caches and checkpoints live (COURSE_DATA_DIR)
runtime        device, seeding, mixed precision, timers
data/          the generated world, one module per stage: vocabulary
               (attributes, captions), render, splits (and their
               cache), loaders; folder (ImageTextFolder, your own
               images)                                      (notebook 00)
images         the one image check: (N, 3, H, W) floats in [-1, 1];
               to_float / to_uint8
training       the one training loop (progress, EMA, checkpoints, resume)
checkpoints    safetensors + JSON card; load_or_train
viz            image grids, comparisons, loss curves, live plots
text           captions to tokens, with clear errors (CaptionError)
clip/          the course's small CLIP (open_clip): embed, model (config, loss, training), probes
               (zero-shot, retrieval), pretrained, frozen (the
               generators' text encoder)                    (notebook 01)
metrics/       the evaluation kit: inputs, judge, measures (alignment,
               Frechet distance, diversity, CLIP score, speed),
               report (evaluate(), Report)                  (notebook 02)
conditioning   the generator contract (load_or_train_<name> ->
               (model, card); sample(model, captions, *, seed,
               noise) -> images) and what every generator
               shares: the frozen CLIP text encoder, its
               fingerprint, caption and noise checks, slerp
gan            a CLIP-conditioned GAN (DF-GAN style): losses,
               training, sampling, interpolation           (notebook 03)
galip          GALIP: the frozen CLIP inside both players (Mate-D
               on CLIP features, Mate-G's bridge with prompts) (notebook 04)
vae/           the CLIP-conditioned VAE and its fusions; the KL
               autoencoder of latent diffusion              (notebook 05)
diffusion      text-conditioned latent diffusion: a diffusers UNet
               cross-attending to CLIP tokens, the loss, the
               guided sampling loop (ddpm/ddim/dpm)        (notebook 06)
unclip/        unCLIP (DALL-E 2): the PriorTransformer prior, the
               decoder on diffusion, variations, slerp, text diffs,
               DDIM inversion                               (notebook 07)
selfcheck      the notebooks' closing self-checks (bars, records)
exercises      the exercise checks of notebooks 03-07: each measures
               again or runs the learner's code
registry       one table of every model: load-or-train, what it
               needs first, its profile section, its sampler
train          python -m course_lib.train <name>|all: every model
               outside Jupyter, references, bundles
=============  =========================================================

How the course runs sits apart, in ``tooling/`` (no notebook imports it): run_course
(``make course``: every notebook headless, offline pages, times and self-checks), pages,
kernel (the ``clip-course`` Jupyter kernel), the pytest plugin (nbval in that kernel) and
gpu_check (the gpu profile's models trained two steps on any CPU, and their GPU memory).

Imports point down this table's layers (profiles, runtime, images, text at the bottom;
data, training, checkpoints; clip; metrics; conditioning; the generators; registry and
train on top), never in circles: ``tests/test_repo.py`` walks them.

A name ending in / is a package split by stage; it re-exports every public name, so
``from course_lib import clip; clip.encode_text`` works as for a module.

Submodules are imported on use (``from course_lib import data``) so that
``import course_lib`` stays fast.
"""
__version__ = "0.1.0"

__all__ = ["profiles", "runtime", "data", "images", "text", "training", "checkpoints", "viz", "paths", "clip",
           "metrics", "conditioning", "gan", "galip", "vae", "diffusion", "unclip", "selfcheck",
           "exercises", "registry",
           "train", "tooling"]
