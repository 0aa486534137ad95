"""The evaluation kit: the numbers every generator notebook reports.

Every image of the generated world has known attributes, so whether a generated
image shows what its caption asked for can be *graded*, not guessed. This module
holds the grader and the yardsticks built on it:

* **The judge** (:class:`Judge`, :func:`load_judge`): a small CNN with one head per
  attribute (shape, colour, size, position; object 2 and the relation in
  two-object scenes). It is trained on real images of *every* colour-shape
  combination, the held-out ones included (it is the grader, not a student),
  with augmentations that mimic how generators err -- blur, noise, small shifts,
  mild colour shifts -- so that a blurry but correct triangle still counts as a
  triangle. It is trained once per profile through :func:`course_lib.training.fit`
  and cached as the checkpoint ``judge`` (:func:`course_lib.checkpoints.load_or_train`);
  every notebook of a profile uses the same judge.
* **Alignment** (:func:`alignment`): accuracy per attribute and the share of images
  with every attribute right, on seen and on held-out combinations separately.
* **Quality** (:func:`frechet_distance`): the Fréchet distance between generated and
  real images, measured on the judge's penultimate features. This is an
  *in-domain* FID, not the Inception FID of papers: Inception-v3 was trained on
  photographs at 299x299 and knows nothing of 32x32 coloured shapes (and its
  weights would have to be downloaded); the judge's features describe exactly the
  things this world varies. Numbers are therefore comparable within the course
  only, never with published FIDs. The computation is torchmetrics'
  ``FrechetInceptionDistance`` with the judge as its feature extractor.
  :func:`fd_noise_floor` measures the distance between two real samples of the
  same size: differences smaller than that floor mean nothing.
* **Diversity** (:func:`diversity`): for one caption, the mean pairwise distance
  between samples (pixels and judge features) and how many distinct values an
  attribute the caption leaves free takes. Mode collapse shows as ~0.
* **CLIP score** (:func:`clip_score`): cosine similarity between a CLIP's image and
  text embeddings (the metric GALIP reports). With the course CLIP it is *the
  course CLIP's* opinion, trained on this world, not OpenAI's CLIP.
* **Speed** (:func:`images_per_second`, :func:`time_to_target`): images per second
  of a sampler (warm-up, synchronised timing), and training time until a score
  (e.g. the judge's alignment) reaches a target.
* **One call** (:func:`evaluate`): all of the above for a ``sample_fn``, returned
  as a small :class:`Report` table (one row per model; ``.to_markdown()``).

Degraded images for sanity checks (:func:`blur`, :func:`add_noise`,
:func:`shift`, :func:`wrong_colors`, :func:`collapse`) show that each number
moves the way it should before a learner trusts it.

The package, one module per stage (every name is importable from ``course_lib.metrics``
as before):

* :mod:`~course_lib.metrics.inputs` -- constants, attribute tables, the image check;
* :mod:`~course_lib.metrics.judge` -- the grader and its training;
* :mod:`~course_lib.metrics.measures` -- alignment, Fréchet distance, diversity, CLIP score, speed;
* :mod:`~course_lib.metrics.report` -- ``evaluate`` and the ``Report`` table.

Explained in notebook 02 ("Measuring generators: the course's yardstick").
"""
from __future__ import annotations

from .inputs import (  # noqa: F401
    BLUR_SIGMA,
    FEATURE_DIM,
    JUDGE_CHECKPOINT,
    JUDGE_RECIPE,
    JUDGE_TWO_OBJECT_FRACTION,
    NOISE_STD,
    as_attributes,
    canonical_order,
    held_out_mask,
)
from .judge import (  # noqa: F401
    Judge,
    JudgeTraining,
    augment,
    judge_config,
    judge_loader,
    load_judge,
    load_or_train_judge,
    train_judge,
)
from .measures import (  # noqa: F401
    TimeToTarget,
    add_noise,
    alignment,
    blur,
    clip_score,
    collapse,
    diversity,
    fd_noise_floor,
    frechet_distance,
    images_per_second,
    judge_accuracy,
    shift,
    shuffled_chance,
    smoothness,
    time_to_target,
    wrong_colors,
)
from .report import (  # noqa: F401
    Report,
    evaluate,
    evaluation_set,
)

__all__ = [
    "Judge",
    "JudgeTraining",
    "judge_loader",
    "judge_config",
    "train_judge",
    "load_judge",
    "load_or_train_judge",
    "judge_accuracy",
    "augment",
    "canonical_order",
    "JUDGE_CHECKPOINT",
    "JUDGE_TWO_OBJECT_FRACTION",
    "FEATURE_DIM",
    "blur",
    "add_noise",
    "shift",
    "wrong_colors",
    "collapse",
    "BLUR_SIGMA",
    "NOISE_STD",
    "as_attributes",
    "held_out_mask",
    "alignment",
    "shuffled_chance",
    "frechet_distance",
    "fd_noise_floor",
    "diversity",
    "smoothness",
    "clip_score",
    "images_per_second",
    "time_to_target",
    "TimeToTarget",
    "evaluation_set",
    "evaluate",
    "Report",
]
