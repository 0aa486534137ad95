"""Measuring what an embedding learned: zero-shot classification with prompt strategies,
confusion matrices, retrieval recall, and the limits (swapped attributes).
Taught in notebook 01, sections 5-8.
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .embed import _device_of, encode_image, encode_text

__all__ = [
    "EVAL_ATTRIBUTES", "PROMPT_STRATEGIES", "all_captions", "caption_bank", "attribute_prompts",
    "zero_shot_classify", "evaluate_zero_shot", "ZeroShotResult", "confusion_matrix",
    "retrieval_recall", "swapped_captions", "caption_preference",
]


# =============================================================================
# 6. Measuring what the embedding learned
# =============================================================================

#: The attributes of a single-object scene, in the order the notebooks show them.
EVAL_ATTRIBUTES = ("color", "shape", "size", "position")

#: Ways to turn class names into text for zero-shot classification.
#:
#: * ``"one-word"``: one short prompt per class, e.g. "a red shape", "a star",
#:   "a small shape", "a shape at the top" (the world's ``caption_for`` with only
#:   that attribute).
#: * ``"ensemble"``: CLIP's prompt ensembling: the mean embedding of every full
#:   caption that names the class (for "red": the 50 red attribute combinations,
#:   each written with every one of the world's templates).
#: * ``"full-caption"``: score every full caption (the 300 attribute combinations,
#:   each embedded as the mean over the world's templates), turn the scores into
#:   probabilities with the model's temperature, and add up the probabilities of
#:   the captions that name each class.
PROMPT_STRATEGIES = ("one-word", "ensemble", "full-caption")


def _world():
    from ..data import world
    return world


def all_captions() -> tuple[list[str], dict[str, torch.Tensor]]:
    """Every canonical single-object caption (all colour-shape pairs, held-out ones too).

    Returns:
        ``(captions, attributes)``: 300 captions ("a small red circle on the left"...)
        and attribute -> int64 tensor of the codes each caption names.
    """
    w = _world()
    rows = list(itertools.product(range(len(w.SHAPES)), range(len(w.COLORS)),
                                  range(len(w.SIZES)), range(len(w.POSITIONS))))
    captions = [w.caption_for(shape=s, color=c, size=z, position=p) for s, c, z, p in rows]
    codes = torch.tensor(rows, dtype=torch.long)
    attrs = {name: codes[:, i] for i, name in enumerate(("shape", "color", "size", "position"))}
    return captions, attrs


def _template_captions() -> list[list[str]]:
    """Every row of :func:`all_captions`, written with each of the world's templates."""
    w = _world()
    _, attrs = all_captions()
    rows = zip(*(attrs[a].tolist() for a in ("shape", "color", "size", "position")))
    return [[w.caption_for(shape=s, color=c, size=z, position=p, template=t)
             for t in range(len(w.TEMPLATES))] for s, c, z, p in rows]


def caption_bank(model: nn.Module) -> torch.Tensor:
    """Text embeddings of the 300 rows of :func:`all_captions`, ``(300, embed_dim)``.

    Each row is the normalised mean of one attribute combination written with every
    template of the world ("a small red circle at the top", "top: one small red
    circle", ...): prompt ensembling per caption, as CLIP does with its 80 templates.
    Kept per model until its weights change; a long first encoding says how long.
    """
    # changes when the weights do (training, load_state_dict) or move
    version = (str(_device_of(model)), *(p._version for p in model.parameters()))
    cached = _CAPTION_BANKS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    groups = _template_captions()
    emb = encode_text(model, [c for g in groups for c in g])
    bank = F.normalize(emb.reshape(len(groups), len(groups[0]), -1).mean(dim=1), dim=-1)
    _CAPTION_BANKS[model] = (version, bank)
    return bank


#: model -> (its weights' version counters, its caption bank): a cell run again (or another
#: strategy) does not send the 2,400 prompts through a big text tower again.
_CAPTION_BANKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attribute_prompts(attribute: str, strategy: str = "ensemble") -> list[list[str]]:
    """The prompts of each class of ``attribute`` (index = the class code).

    Args:
        attribute: "color", "shape", "size" or "position".
        strategy: "one-word" (one prompt per class) or "ensemble"/"full-caption"
            (every full caption that names the class, in every template).
    """
    w = _world()
    if attribute not in EVAL_ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r}: use one of {', '.join(EVAL_ATTRIBUTES)}.")
    if strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: use one of {', '.join(PROMPT_STRATEGIES)}.")
    values = w.ATTRIBUTE_VALUES[attribute]
    if strategy == "one-word":
        return [[w.caption_for(**{attribute: v})] for v in values]
    _, attrs = all_captions()
    groups = _template_captions()
    return [[c for g, code in zip(groups, attrs[attribute].tolist()) if code == k for c in g]
            for k in range(len(values))]


def _class_scores(model, image_emb, attribute, strategy, prompts=None, bank=None):
    """(N, n_classes) scores of every class for every image embedding."""
    if attribute not in EVAL_ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r}: use one of {', '.join(EVAL_ATTRIBUTES)}.")
    if prompts is None and strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: use one of {', '.join(PROMPT_STRATEGIES)}.")
    n = len(_world().ATTRIBUTE_VALUES[attribute])
    if prompts is not None or strategy == "one-word":
        prompts = prompts if prompts is not None else attribute_prompts(attribute, strategy)
        flat = [p for group in prompts for p in group]
        emb = encode_text(model, flat)
        owner = torch.tensor([k for k, group in enumerate(prompts) for _ in group], device=emb.device)
        centres = torch.zeros(len(prompts), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
        return image_emb @ F.normalize(centres, dim=-1).T
    _, attrs = all_captions()
    bank = caption_bank(model) if bank is None else bank
    owner = attrs[attribute].to(bank.device)
    if strategy == "ensemble":
        centres = torch.zeros(n, bank.shape[1], device=bank.device).index_add_(0, owner, bank)
        return image_emb @ F.normalize(centres, dim=-1).T
    probs = (model.logit_scale.exp().detach() * image_emb @ bank.T).softmax(dim=-1)
    return torch.zeros(len(probs), n, device=probs.device).index_add_(1, owner, probs)


def zero_shot_classify(model: nn.Module, images, attribute: str, strategy: str = "full-caption",
                       *, prompts: Sequence[Sequence[str]] | None = None,
                       image_emb: torch.Tensor | None = None) -> torch.Tensor:
    """Predict one attribute of each image from text prompts alone (no classifier trained).

    Args:
        model: a CLIP. images: float ``(N, 3, H, W)`` in [-1, 1] (ignored if ``image_emb``).
        attribute: "color", "shape", "size" or "position".
        strategy: one of :data:`PROMPT_STRATEGIES`.
        prompts: your own prompts per class (a list per class code); their mean
            embedding is each class's (overrides ``strategy``).
        image_emb: precomputed :func:`encode_image` output, to save time.

    Returns:
        int64 tensor ``(N,)`` of predicted class codes.
    """
    if image_emb is None:
        image_emb = encode_image(model, images)
    with torch.no_grad():
        return _class_scores(model, image_emb, attribute, strategy, prompts).argmax(dim=-1).cpu()


@dataclass
class ZeroShotResult:
    """Zero-shot predictions and accuracies per strategy and attribute."""
    #: strategy -> attribute -> accuracy in [0, 1]
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    #: strategy -> attribute -> predicted codes (N,)
    predictions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: attribute -> true codes (N,)
    truth: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean_accuracy(self, strategy: str) -> float:
        """Accuracy of one strategy averaged over the attributes."""
        accs = self.accuracy[strategy]
        return sum(accs.values()) / len(accs)

    def best_strategy(self) -> str:
        """The strategy with the highest accuracy averaged over the attributes."""
        return max(self.accuracy, key=self.mean_accuracy)

    def confusion(self, attribute: str, strategy: str | None = None) -> torch.Tensor:
        """Confusion matrix (rows: true class, columns: predicted) of one attribute."""
        strategy = strategy or self.best_strategy()
        n = len(_world().ATTRIBUTE_VALUES[attribute])
        return confusion_matrix(self.truth[attribute], self.predictions[strategy][attribute], n)

    def table(self) -> str:
        """Accuracies as a small text table (strategies x attributes)."""
        attrs = list(next(iter(self.accuracy.values())))
        lines = [f"{'strategy':14s}" + "".join(f"{a:>10s}" for a in attrs)]
        for s, accs in self.accuracy.items():
            lines.append(f"{s:14s}" + "".join(f"{100 * accs[a]:9.1f}%" for a in attrs))
        return "\n".join(lines)


def evaluate_zero_shot(model: nn.Module, images, attributes: Mapping[str, Any], *,
                       strategies: Sequence[str] = PROMPT_STRATEGIES,
                       attribute_names: Sequence[str] = EVAL_ATTRIBUTES,
                       image_emb: torch.Tensor | None = None) -> ZeroShotResult:
    """Zero-shot accuracy of every strategy on every attribute of single-object images.

    Args:
        model: a CLIP. images: float ``(N, 3, H, W)`` in [-1, 1] (ignored if ``image_emb``).
        attributes: attribute -> true codes (e.g. ``dataset.attributes``); only
            images with ``position >= 0`` (single-object scenes) are scored.
        strategies: subset of :data:`PROMPT_STRATEGIES`.
        attribute_names: which attributes to classify.
        image_emb: precomputed :func:`encode_image` output.
    """
    single = torch.as_tensor(np.asarray(attributes["position"])) >= 0
    if not bool(single.any()):
        raise ValueError("evaluate_zero_shot needs single-object images (position >= 0); "
                         "these are all two-object scenes.")
    if image_emb is None:
        image_emb = encode_image(model, images)
    image_emb = image_emb[single.to(image_emb.device)]
    result = ZeroShotResult()
    result.truth = {a: torch.as_tensor(np.asarray(attributes[a]))[single].long()
                    for a in attribute_names}
    bank = caption_bank(model) if set(strategies) - {"one-word"} else None
    with torch.no_grad():
        for s in strategies:
            result.predictions[s] = {}
            result.accuracy[s] = {}
            for a in attribute_names:
                pred = _class_scores(model, image_emb, a, s, bank=bank).argmax(-1).cpu()
                result.predictions[s][a] = pred
                result.accuracy[s][a] = float((pred == result.truth[a]).float().mean())
    return result


def confusion_matrix(truth, predicted, n_classes: int) -> torch.Tensor:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    truth = torch.as_tensor(np.asarray(truth)).long().reshape(-1)
    predicted = torch.as_tensor(np.asarray(predicted)).long().reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    return torch.bincount(truth * n_classes + predicted, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, ks: Sequence[int] = (1, 5),
                     keys: Sequence | None = None) -> dict[str, float]:
    """Recall@k of retrieval both ways; pair i is (image i, text i).

    Args:
        image_emb, text_emb: ``(N, D)`` normalised embeddings of N pairs.
        ks: the k's to report.
        keys: optional label per pair (e.g. the caption itself); a retrieved item
            counts as right when its key equals the query's (identical captions
            are then not counted as errors). Default: only the pair itself is right.

    Returns:
        ``{"image->text R@1": ..., "text->image R@1": ..., ...}`` in [0, 1].
    """
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb {tuple(image_emb.shape)} and text_emb "
                         f"{tuple(text_emb.shape)} must hold the same pairs")
    n = len(image_emb)
    sims = (image_emb @ text_emb.T).detach().float().cpu()
    if keys is None:
        same = torch.eye(n, dtype=torch.bool)
    else:
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        ids = torch.tensor([index[k] for k in keys])
        same = ids[:, None] == ids[None, :]
    out = {}
    for name, s, right in (("image->text", sims, same), ("text->image", sims.T, same.T)):
        order = s.argsort(dim=1, descending=True)
        hits = torch.gather(right, 1, order)
        for k in ks:
            out[f"{name} R@{k}"] = float(hits[:, :k].any(dim=1).float().mean())
    return out


def swapped_captions(attributes: Mapping[str, Any], kind: str = "colors"
                     ) -> tuple[list[str], list[str], torch.Tensor]:
    """Right and deliberately wrong captions of two-object scenes, to test binding and order.

    Args:
        attributes: attribute -> codes of some images (e.g. ``dataset.attributes``).
        kind: ``"colors"``: swap the two colours ("a red circle left of a blue
            square" -> "a blue circle left of a red square"): the same words, bound
            the other way. ``"objects"``: swap the two objects ("a blue square left of
            a red circle"): the same words in another order, which says the opposite.

    Returns:
        ``(right, wrong, index)``: canonical captions, and the indices of the
        images used (two-object scenes whose swap changes the caption).
    """
    w = _world()
    if kind not in ("colors", "objects"):
        raise ValueError(f"kind={kind!r}: use 'colors' or 'objects'.")
    a = {k: torch.as_tensor(np.asarray(v)).long() for k, v in attributes.items()}
    right, wrong, used = [], [], []
    for i in range(len(a["shape"])):
        row = {k: int(v[i]) for k, v in a.items()}
        if row["relation"] < 0:
            continue
        if kind == "colors":
            swap = {**row, "color": row["color2"], "color2": row["color"]}
        else:
            swap = {**row, "shape": row["shape2"], "color": row["color2"], "size": row["size2"],
                    "shape2": row["shape"], "color2": row["color"], "size2": row["size"]}
        r, s = w.canonical_caption(row), w.canonical_caption(swap)
        if r != s:
            right.append(r)
            wrong.append(s)
            used.append(i)
    return right, wrong, torch.tensor(used, dtype=torch.long)


def caption_preference(model: nn.Module, images, right: Sequence[str], wrong: Sequence[str],
                       *, image_emb: torch.Tensor | None = None) -> float:
    """How often each image is closer to its right caption than to a wrong one.

    Args:
        model: a CLIP. images: ``(N, 3, H, W)`` (ignored if ``image_emb``).
        right, wrong: one caption each per image.
        image_emb: precomputed :func:`encode_image` output.

    Returns:
        The fraction in [0, 1]; 0.5 is a coin toss.
    """
    if len(right) != len(wrong):
        raise ValueError(f"{len(right)} right captions but {len(wrong)} wrong ones")
    if image_emb is None:
        image_emb = encode_image(model, images)
    if len(image_emb) != len(right):
        raise ValueError(f"{len(image_emb)} images but {len(right)} caption pairs")
    with torch.no_grad():
        r = (image_emb * encode_text(model, list(right))).sum(-1)
        s = (image_emb * encode_text(model, list(wrong))).sum(-1)
    return float((r > s).float().mean())


