"""The one call: ``evaluate`` grades a sampler with every measure on the standard prompts
(``evaluation_set``) and returns a ``Report`` table. Taught in notebook 02, section 7;
every generator notebook reports through it.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..data.world import (
    ATTRIBUTES,
    canonical_caption,
    render_attributes,
    to_float,
)
from ..images import check_images
from ..profiles import get_profile
from .inputs import as_attributes
from .judge import Judge, load_judge
from .measures import alignment, clip_score, diversity, fd_noise_floor, frechet_distance, images_per_second

__all__ = [
    "evaluation_set", "evaluate", "Report",
]


# ============================================================================ the one call


def evaluation_set(profile=None, n: int | None = None, held_out_share: float = 0.25,
                   seed: int = 0) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The standard prompts every generator is graded on: canonical captions and attributes.

    ``n`` (default: the profile's ``judge.n_eval``) scenes: ``1 - held_out_share`` of them
    from the test split (seen combinations) and the rest from the heldout split.
    Object layout follows the profile's data (two_object_fraction).
    """
    from ..data import WorldDataset

    p = get_profile(profile)
    n = p.judge.n_eval if n is None else int(n)
    if n < 2:
        raise ValueError(f"evaluation_set: n must be >= 2, got {n}")
    n_held = int(round(n * held_out_share))
    parts = [WorldDataset("test", n=n - n_held, seed=seed, captions="canonical", profile=p)]
    if n_held:
        parts.append(WorldDataset("heldout", n=n_held, seed=seed, captions="canonical", profile=p))
    attrs = {k: torch.cat([d.attributes[k] for d in parts]) for k in ATTRIBUTES}
    captions = [c for d in parts for c in d.canonical_captions]
    return captions, attrs


def _sample_all(sample_fn, captions: list[str], batch_size: int, *, range_check: bool = True) -> torch.Tensor:
    """Every caption's image from ``sample_fn``, checked.

    The check that tells [0, 1] images from [-1, 1] ones (no value below 0) is made once on
    the whole set, not per chunk: a few samples of one pale caption from a weakly trained
    generator can all be >= 0 and still be [-1, 1] images. ``range_check=False`` skips it
    (the diversity samples, drawn from a sampler whose range the main set already showed).
    """
    out = []
    for s in range(0, len(captions), batch_size):
        chunk = captions[s:s + batch_size]
        with torch.no_grad():
            images = sample_fn(chunk)
        images = check_images(images, "sample_fn(captions)", allow_unit_range=True)
        if len(images) != len(chunk):
            raise ValueError(f"sample_fn returned {len(images)} images for {len(chunk)} captions")
        out.append(images.detach().float().cpu())
    images = torch.cat(out)
    if range_check:
        check_images(images, "sample_fn(captions)")
    return images


def evaluate(sample_fn: Callable, captions: Sequence[str] | None = None, attributes=None, *,
             name: str = "model", judge: Judge | None = None, profile=None, n: int | None = None,
             batch_size: int | None = None, clip_model=None, diversity_prompts: int = 4,
             samples_per_prompt: int = 8, speed: bool = True, real_seed: int = 1) -> Report:
    """Grade a text-to-image sampler with every metric of the course; one call.

    Args:
        sample_fn: ``sample_fn(list of captions) -> images`` (float (B, 3, H, W) in
            [-1, 1] or uint8 (B, H, W, 3)), one image per caption.
        captions, attributes: the prompts and what they ask for. Give both, or only
            ``attributes`` (captions are then the canonical ones), or neither (the
            standard :func:`evaluation_set` of the profile, seen and held-out).
        name: the row name in the report (e.g. "GAN").
        judge: default :func:`load_judge` of the profile.
        profile: a Profile, a name or None (the active profile).
        n: number of prompts of the standard set (default ``judge.n_eval``).
        batch_size: captions per ``sample_fn`` call (default ``data.batch_size``).
        clip_model: a CLIP (``encode_image``/``encode_text``) for the CLIP score; None skips it.
        diversity_prompts, samples_per_prompt: diversity is measured on this many of
            the prompts, each sampled this many times (0 skips it).
        speed: time ``sample_fn`` (:func:`images_per_second`) at ``batch_size``.
        real_seed: seed of the real reference images (rendered for the same attributes).

    Returns:
        a :class:`Report` with one row ``name``; its columns: alignment ("all right"
        and per attribute, seen and held-out), "FD" (to fresh real renderings of the same
        prompts; only when every prompt names shape, colour, size and position or a
        relation) and "FD floor" (two real renderings of them), "diversity pixel" /
        "diversity feature" (mean over the diversity prompts) with "diversity feature
        (real)" for reference, "CLIP score" (with ``clip_model``), "sampling s" (time
        to sample all prompts) and "images/s" (with ``speed``).

    Raises:
        ValueError: captions without attributes; a sampler returning the wrong number of
            images, values outside [-1, 1], or images of another size than the judge's.
    """
    p = get_profile(profile)
    if judge is None:
        judge = load_judge(p)
    batch_size = int(batch_size or p.data.batch_size)
    if captions is not None and attributes is None:
        raise ValueError("evaluate: the judge needs to know what each caption asks for; pass "
                         "attributes= as well (build captions from attributes with "
                         "course_lib.data.caption_for), or pass only attributes.")
    if attributes is None:
        captions, attrs = evaluation_set(p, n)
    else:
        attrs = as_attributes(attributes)
        if captions is None:
            captions = [canonical_caption({k: int(v[i]) for k, v in attrs.items()})
                        for i in range(len(attrs["shape"]))]
    captions = list(captions)
    attrs = as_attributes(attrs, len(captions))

    t0 = time.perf_counter()
    fake = _sample_all(sample_fn, captions, batch_size)
    sampling_s = time.perf_counter() - t0
    row: dict[str, float] = {}
    align = alignment(fake, attrs, judge)
    for group in ("seen", "held-out"):
        if group in align:
            row[f"all right ({group})"] = align[group]["all"]
    for group in ("seen", "held-out"):
        for key in ATTRIBUTES:
            if key in align.get(group, {}):
                row[f"{key} ({group})"] = align[group][key]

    # the real reference: fresh renderings of exactly the same prompts
    complete = (all(bool((attrs[k] >= 0).all()) for k in ("shape", "color", "size"))
                and bool(((attrs["position"] >= 0) | (attrs["relation"] >= 0)).all()))
    if complete:
        real = to_float(render_attributes(attrs, image_size=fake.shape[-1], seed=real_seed))
        row["FD"] = frechet_distance(real, fake, judge)
        floor = fd_noise_floor(judge, attrs, repeats=1, profile=p, seed=real_seed + 10)
        row["FD floor"] = floor["mean"]
    else:
        warnings.warn("evaluate: some prompts leave shape, colour, size or position open, so no "
                      "real reference images can be rendered for them: FD is left out.", stacklevel=2)

    if diversity_prompts and samples_per_prompt >= 2:
        order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))
        div_pix, div_feat, real_feat = [], [], []
        for i in order[:diversity_prompts].tolist():
            rep = {k: v[i].repeat(samples_per_prompt) for k, v in attrs.items()}
            same = _sample_all(sample_fn, [captions[i]] * samples_per_prompt, batch_size, range_check=False)
            d = diversity(same, judge)
            div_pix.append(d["pixel"])
            div_feat.append(d["feature"])
            ref = render_attributes(rep, image_size=same.shape[-1], seed=real_seed + i)
            real_feat.append(diversity(ref, judge)["feature"])
        row["diversity pixel"] = float(np.mean(div_pix))
        row["diversity feature"] = float(np.mean(div_feat))
        row["diversity feature (real)"] = float(np.mean(real_feat))

    if clip_model is not None:
        row["CLIP score"] = clip_score(clip_model, fake, captions)

    row["sampling s"] = sampling_s
    if speed:
        row["images/s"] = images_per_second(sample_fn, min(batch_size, len(captions)),
                                            captions[:batch_size], warmup=1, repeats=3)["images_per_s"]
    return Report({name: row})


class Report:
    """A small table of metrics: one row per model, one column per metric.

    ``report.rows`` is a plain dict ``{model: {metric: value}}``; ``report[model]``
    one row. Combine reports with ``a | b`` (or :meth:`merge`) for the comparison
    notebook; show one with ``print(report)`` or ``report.to_markdown()``. In a
    notebook, a report at the end of a cell renders as a table. (pandas is not a
    dependency of the course; ``pandas.DataFrame(report.rows).T`` works if you have it.)
    """

    def __init__(self, rows: Mapping[str, Mapping[str, float]] | None = None):
        self.rows: dict[str, dict[str, float]] = {str(k): dict(v) for k, v in (rows or {}).items()}

    def __getitem__(self, name: str) -> dict[str, float]:
        return self.rows[name]

    def __len__(self) -> int:
        return len(self.rows)

    def __or__(self, other: Report) -> Report:
        return self.merge(other)

    def merge(self, *others: Report) -> Report:
        """A new report with the rows of this one and of ``others`` (later rows win)."""
        rows = dict(self.rows)
        for other in others:
            rows.update(other.rows)
        return Report(rows)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows.values():
            cols += [c for c in row if c not in cols]
        return cols

    def to_markdown(self, columns: Sequence[str] | None = None, digits: int = 3,
                    transpose: bool | None = None) -> str:
        """A Markdown table.

        Args:
            columns: metrics to show (default all, in first-seen order).
            digits: significant digits.
            transpose: metrics as rows and models as columns (default: when there are
                more metrics than models, which keeps a one-model report readable).
        """
        cols = list(columns) if columns is not None else self.columns
        names = list(self.rows)
        if transpose is None:
            transpose = len(cols) > len(names)

        def fmt(v):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            if isinstance(v, float):
                return f"{v:.{digits}g}"
            return str(v)

        if transpose:
            header, body = ["metric", *names], [[c, *[fmt(self.rows[m].get(c)) for m in names]]
                                               for c in cols]
        else:
            header, body = ["model", *cols], [[m, *[fmt(self.rows[m].get(c)) for c in cols]]
                                             for m in names]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"Report({len(self.rows)} rows x {len(self.columns)} metrics)\n{self.to_markdown()}"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()
