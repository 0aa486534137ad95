"""unCLIP (DALL·E 2) at course scale: a prior from captions to CLIP image embeddings and a
decoder from those embeddings to images (notebook 07).

* :mod:`~course_lib.unclip.prior` -- the diffusion prior (diffusers ``PriorTransformer``),
  the MLP and "no prior" baselines, their quality (cosine, retrieval).
* :mod:`~course_lib.unclip.decoder` -- the decoder: notebook 06's latent diffusion
  conditioned on z_i (timestep projection + extra context tokens).
* :mod:`~course_lib.unclip.edits` -- the two stages joined (``sample``; ``sample_no_prior``,
  the ablation), variations, interpolate (slerp), text diffs, DDIM inversion.
* :mod:`~course_lib.unclip.probes` -- notebook 07's measurements (what variations keep, text
  diffs' flips, inversion error), graded by the judge.
"""
from .decoder import (
    DECODER_CHECKPOINT,
    DecoderMethod,
    DecoderModel,
    build_decoder,
    decode_embeddings,
    decoder_config,
    decoder_data,
    load_or_train_decoder,
    train_decoder,
)
from .edits import (
    UnCLIP,
    as_images,
    embed_images,
    generate,
    generate_no_prior,
    interpolate,
    invert,
    joined_card,
    load_or_train_unclip,
    sample,
    sample_no_prior,
    slerp,
    text_diff,
    text_direction,
    variations,
)
from .prior import (
    MLP_CHECKPOINT,
    PRIOR_CHECKPOINT,
    EmbeddingError,
    MLPPrior,
    MLPPriorMethod,
    PriorMethod,
    PriorModel,
    build_prior,
    check_embeddings,
    image_embeddings,
    load_or_train_mlp_prior,
    load_or_train_prior,
    no_prior,
    prior_config,
    prior_data,
    prior_quality,
    sample_prior,
    set_statistics,
    train_prior,
)
from .probes import inversion_report, kept_attributes, text_diff_report, variation_report

__all__ = ["kept_attributes", "variation_report", "text_diff_report", "inversion_report",
           "DECODER_CHECKPOINT", "DecoderMethod", "DecoderModel", "build_decoder", "decode_embeddings",
           "decoder_config", "decoder_data", "load_or_train_decoder", "train_decoder",
           "UnCLIP", "as_images", "embed_images", "generate", "generate_no_prior", "interpolate", "invert",
           "load_or_train_unclip", "joined_card", "sample", "sample_no_prior", "slerp", "text_diff", "text_direction", "variations",
           "PRIOR_CHECKPOINT", "MLP_CHECKPOINT", "EmbeddingError", "PriorModel", "PriorMethod",
           "MLPPrior", "MLPPriorMethod", "build_prior", "check_embeddings", "image_embeddings",
           "prior_config", "prior_data", "set_statistics", "train_prior", "load_or_train_prior",
           "load_or_train_mlp_prior", "sample_prior", "no_prior", "prior_quality"]
