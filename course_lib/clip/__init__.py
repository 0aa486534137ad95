"""The course's CLIP: a contrastive image-text embedding, built with open_clip.

CLIP (Radford et al., 2021) trains two encoders side by side, one for images and
one for captions, so that an image and its caption land close together on the
unit sphere and mismatched pairs land far apart. Every later generator of the
course conditions on this embedding, so this module also gives them a frozen
text encoder.

The model *is* an ``open_clip.CLIP`` (a small ViT image tower and a causal text
transformer), the tokenizer is open_clip's byte-pair ``SimpleTokenizer`` (it works
offline), the loss is ``open_clip.ClipLoss``. This module only chooses sizes,
checks inputs, trains through the course's one loop and measures the result.

The package, one module per stage (read in this order; every name is importable from
``course_lib.clip`` as before):

* :mod:`course_lib.text` -- tokenizing with clear errors (outside the package: a leaf that
  ``course_lib.data`` uses too);
* :mod:`~course_lib.clip.embed` -- captions and images to unit vectors;
* :mod:`~course_lib.clip.model` -- config, build, the contrastive loss, training;
* :mod:`~course_lib.clip.probes` -- zero-shot, retrieval and the limits;
* :mod:`~course_lib.clip.pretrained` -- real open_clip weights;
* :mod:`~course_lib.clip.frozen` -- what the generators use.

Read top-down:

1. Config and build: :func:`clip_config` (sizes from the profile) ->
   :func:`build_clip` (an ``open_clip.CLIP``).
2. Tokenizing with clear errors: :func:`tokenize`, :func:`count_tokens`,
   :class:`CaptionError`.
3. The contrastive loss: :func:`clip_loss` (``open_clip.ClipLoss``),
   :func:`similarity`.
4. Training: :class:`ClipMethod` (a ``course_lib.training.Method``),
   :func:`train_clip`, :func:`load_or_train_clip`.
5. Embeddings: :func:`encode_text`, :func:`encode_image` (both L2-normalised).
6. Measuring: zero-shot classification with prompt strategies
   (:func:`attribute_prompts`, :func:`zero_shot_classify`, :func:`evaluate_zero_shot`),
   :func:`confusion_matrix`, :func:`retrieval_recall`, and the limits
   (:func:`swapped_captions`, :func:`caption_preference`).
7. Real weights: :func:`load_pretrained` (a local file first; by name only when
   online), :func:`save_open_clip_dir`.
8. For the generators: :class:`FrozenTextEncoder` (captions -> pooled embedding,
   captions -> per-token hidden states + mask) and :func:`image_intermediates`
   (the image tower's layer features through open_clip's ``forward_intermediates``).

Captions that are too long
--------------------------
A caption longer than the text encoder's context (``ClipSizes.context_length``
tokens, start and end markers included) is an error (:class:`CaptionError`) that
says how many tokens it has and how many fit. open_clip itself would silently cut
it, and a cut caption means something else ("a red circle to the left of a blue
square" cut after "left of" has lost its second object): a generator would then
draw the wrong thing without any sign why. Pass ``truncate=True`` to cut on
purpose; that warns once per call.

Non-ASCII text
--------------
open_clip's tokenizer works on UTF-8 bytes, so any text can be tokenized
("a café-coloured círcle 🙂" works). A character outside the course's world
costs several tokens and means nothing to a model trained on that world's
English captions; a pretrained open_clip model knows many of them.

Explained in notebook 01 (``notebooks/01_clip_contrastive_embedding.ipynb``).
"""
from __future__ import annotations

from ..text import (  # noqa: F401
    CaptionError,
    count_tokens,
    get_tokenizer,
    tokenize,
)
from .embed import (  # noqa: F401
    ANNOUNCE_AFTER_S,
    encode_image,
    encode_text,
    to_model_input,
)
from .frozen import (  # noqa: F401
    FrozenTextEncoder,
    image_intermediates,
    keep_world_tokens,
    world_token_ids,
)
from .model import (  # noqa: F401
    MAX_LOGIT_SCALE,
    TWO_OBJECT_FRACTION,
    VOCAB_SIZE,
    ClipMethod,
    build_clip,
    clip_config,
    clip_loss,
    count_parameters,
    load_or_train_clip,
    parameter_counts,
    similarity,
    train_clip,
    training_data,
)
from .pretrained import (  # noqa: F401
    PretrainedUnavailableError,
    downloads_allowed,
    load_pretrained,
    save_open_clip_dir,
)
from .probes import (  # noqa: F401
    EVAL_ATTRIBUTES,
    PROMPT_STRATEGIES,
    ZeroShotResult,
    all_captions,
    attribute_prompts,
    caption_bank,
    caption_preference,
    confusion_matrix,
    evaluate_zero_shot,
    retrieval_recall,
    swapped_captions,
    zero_shot_classify,
)

__all__ = [
    "VOCAB_SIZE",
    "TWO_OBJECT_FRACTION",
    "clip_config",
    "build_clip",
    "count_parameters",
    "parameter_counts",
    "CaptionError",
    "get_tokenizer",
    "tokenize",
    "count_tokens",
    "clip_loss",
    "similarity",
    "ClipMethod",
    "training_data",
    "train_clip",
    "load_or_train_clip",
    "encode_text",
    "encode_image",
    "EVAL_ATTRIBUTES",
    "PROMPT_STRATEGIES",
    "all_captions",
    "caption_bank",
    "attribute_prompts",
    "zero_shot_classify",
    "evaluate_zero_shot",
    "ZeroShotResult",
    "confusion_matrix",
    "retrieval_recall",
    "swapped_captions",
    "caption_preference",
    "PretrainedUnavailableError",
    "downloads_allowed",
    "load_pretrained",
    "save_open_clip_dir",
    "FrozenTextEncoder",
    "image_intermediates",
    "to_model_input",
]
