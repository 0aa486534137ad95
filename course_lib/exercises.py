"""The exercise checks of notebooks 03-07: each recomputes the truth or runs the learner's code.

A notebook's exercise ends with ``check_N(answer_N)``, a one-line wrapper around one function
here, so that every check is written once and ``tests/test_exercises.py`` can prove, for every
exercise, that the solution passes and a wrong answer (0, a sign flip, a guess) does not. A check
never trusts a number it could measure: it measures it again (or calls the function the learner
wrote) and compares. It prints one line, ``Exercise N: correct!`` or what was expected, and
returns ``True``/``False``; it raises nothing (an exercise is not a self-check), and an answer
still ``None`` gets "not answered yet".

(Notebook 00's checks are written in the notebook: they are its lesson in how checks work.)
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["gan_losses", "interpolation_flip", "collapsed_sampler", "galip_gates", "prompts_off",
           "gaussian_kl", "temperature_sweep", "small_latents", "half_signal_step", "guidance_cost",
           "slerp_midpoint", "weakest_kept"]


def _say(n: int, ok: bool, good: str, bad: str) -> bool:
    print(f"Exercise {n}:", good if ok else bad)
    return bool(ok)


def _unanswered(n: int, *answers) -> bool:
    if any(a is None for a in answers):
        print(f"Exercise {n}: not answered yet.")
        return True
    return False


def _number(answer) -> float | None:
    """A finite float from a Python, numpy or 0-d torch number; None for anything else."""
    try:
        value = float(answer.item() if hasattr(answer, "item") else answer)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


# ============================================================================ notebook 03


def gan_losses(answer, n: int = 1) -> bool:
    """03 ex 1: ``(d_loss, g_loss)``, the learner's non-saturating D and G losses, against the same
    losses written as binary cross-entropy (softplus(-s) = BCE(s, 1), softplus(s) = BCE(s, 0))."""
    if _unanswered(n, answer):
        return False
    d_loss, g_loss = answer
    r, f = torch.tensor([3.0, -0.5, 0.2]), torch.tensor([-2.0, 0.7, 0.0])
    got_d, got_g = d_loss(r, f), g_loss(f)
    if _unanswered(n, got_d, got_g):
        return False
    bce = F.binary_cross_entropy_with_logits
    want_d = bce(r, torch.ones(3)) + bce(f, torch.zeros(3))
    want_g = bce(f, torch.ones(3))
    ok = (torch.is_tensor(got_d) and torch.is_tensor(got_g) and got_d.numel() == 1 == got_g.numel()
          and torch.allclose(got_d.float(), want_d) and torch.allclose(got_g.float(), want_g))
    return _say(n, ok, "correct!", f"not quite: expected D {want_d:.4f}, G {want_g:.4f}")


def interpolation_flip(answer, *, strip: torch.Tensor, judge, colour: str = "blue", n: int = 2) -> bool:
    """03 ex 2: the first step of an interpolation strip the judge reads as ``colour`` (-1: never)."""
    from .data import COLORS

    if _unanswered(n, answer):
        return False
    colours = judge.predict(strip)["color"].tolist()
    truth = next((i for i, c in enumerate(colours) if c == COLORS.index(colour)), -1)
    ok = _number(answer) is not None and float(answer) == truth
    return _say(n, ok, "correct!", f"not quite: the judge reads {[COLORS[c] for c in colours]}")


def collapsed_sampler(answer: Callable, *, captions: Sequence[str], judge, real_diversity: float,
                      count: int = 16, n: int = 3) -> bool:
    """03 ex 3: ``answer`` is the learner's collapsed sampler (captions -> images). The check runs
    it: ``count`` images of one caption must be one image (judge-feature diversity under 5% of
    the real images'), and it must still follow the caption (two captions, two images), since a
    sampler that returns a constant is collapsed but no generator."""
    from .images import check_images
    from .metrics import diversity

    if _unanswered(n, answer):
        return False
    if not callable(answer):
        return _say(n, False, "", f"answer_{n} should be the sampler itself (a function of the captions), "
                                  f"not {type(answer).__name__}")
    first, second = captions[0], next(c for c in captions if c != captions[0])
    one = check_images(answer([first] * count), f"answer_{n}([caption] * {count})")
    other = check_images(answer([second] * 2), f"answer_{n}([another caption] * 2)")
    div = diversity(one, judge)["feature"]
    follows = float((one[0] - other[0]).abs().mean()) > 1e-3
    ok = div < 0.05 * real_diversity and follows
    if div >= 0.05 * real_diversity:
        bad = (f"diversity {div:.2f} is not near 0 (real images: {real_diversity:.2f}): "
               "is the noise really the same row for every image?")
    else:
        bad = "one image for every caption: collapsed, but it ignores the caption too (pass the captions on)"
    return _say(n, ok, f"correct: collapsed! (diversity {div:.3f}, real images {real_diversity:.2f})", bad)


# ============================================================================ notebook 04


def galip_gates(answer: Mapping, *, model, n: int = 1) -> bool:
    """04 ex 1: ``{"merge.i": |beta_i|}`` of Mate-D's learned gates, read from the model."""
    truth = {f"merge.{i}": abs(b.beta.item()) for i, b in enumerate(model.discriminator.mate.merge)}
    if _unanswered(n, answer):
        return False
    ok = (isinstance(answer, Mapping) and set(answer) == set(truth)
          and all(_number(answer[k]) is not None and abs(float(answer[k]) - truth[k]) < 1e-6 for k in truth))
    return _say(n, ok, "correct!", f"not quite: the gates are {truth}")


def prompts_off(answer, *, model, judge, n: int = 2) -> bool:
    """04 ex 2: all-four alignment of 64 images of one caption with the bridge's prompts zeroed
    (the check zeroes them itself, draws with the same seed, and compares)."""
    from . import galip, metrics

    if _unanswered(n, answer):
        return False
    G = model.generator
    caps = ["a large red circle at the top"] * 64
    attrs = metrics.as_attributes({"shape": ["circle"] * 64, "color": ["red"] * 64, "size": ["large"] * 64,
                                   "position": ["top"] * 64})
    keep = G.prompts
    G.prompts = lambda c: None if keep(c) is None else torch.zeros_like(keep(c))
    try:
        truth = metrics.alignment(galip.sample(model, caps, seed=0), attrs, judge, split=False)["all"]
    finally:
        del G.prompts
    with_prompts = metrics.alignment(galip.sample(model, caps, seed=0), attrs, judge, split=False)["all"]
    ok = _number(answer) is not None and abs(float(answer) - truth) < 1e-9
    return _say(n, ok, f"correct! (with prompts: {with_prompts:.3f})",
                f"not quite: expected {truth:.3f} (with prompts: {with_prompts:.3f})")


# ============================================================================ notebook 05


def gaussian_kl(answer, n: int = 1) -> bool:
    """05 ex 1: KL(N((1, 0), diag(1, 0.25)) || N(0, I)), summed over the two dimensions."""
    import numpy as np

    from .vae import gaussian_kl as kl

    if _unanswered(n, answer):
        return False
    truth = float(kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, np.log(0.25)]])).sum())
    ok = _number(answer) is not None and abs(float(answer) - truth) < 1e-3
    return _say(n, ok, "correct!", f"not quite: it is {truth:.3f}")


TEMPERATURES = (0.0, 0.5, 1.0)


def temperature_sweep(answer: Mapping, *, model, captions: Sequence[str], attributes, judge,
                      n: int = 2) -> bool:
    """05 ex 2: ``{T: (all-four alignment on seen prompts, pixel diversity of 8 samples of the
    first caption)}`` for T in 0, 0.5, 1; the check samples both again with the solution's seeds."""
    from . import metrics, vae

    if _unanswered(n, answer):
        return False
    truth = {}
    for T in TEMPERATURES:
        s = vae.sample(model, captions, seed=0, temperature=T)
        one = vae.sample(model, [captions[0]] * 8, seed=1, temperature=T)
        truth[T] = (metrics.alignment(s, attributes, judge)["seen"]["all"], metrics.diversity(one)["pixel"])
    shown = {T: (round(a, 3), round(d, 3)) for T, (a, d) in truth.items()}

    def close(got, want) -> bool:
        try:
            return len(got) == 2 and all(_number(g) is not None and abs(float(g) - w) < 1e-4
                                         for g, w in zip(got, want))
        except TypeError:
            return False

    ok = (isinstance(answer, Mapping) and {float(T) for T in answer} == set(TEMPERATURES)
          and all(close(answer[T], truth[float(T)]) for T in answer))
    best = max(truth, key=lambda T: truth[T][0])
    return _say(n, ok, f"correct! Best aligned: T = {best}; at T = 0 the diversity is {truth[0.0][1]:.3f}.",
                f"not quite: measured {{T: (alignment, diversity)}} = {shown}")


SMALL_LATENTS = {"block_out_channels": (16, 32, 32)}


def small_latents(answer, *, profile, judge, reference_shape: float, n: int = 3) -> bool:
    """05 ex 3: held-out shape accuracy of the 8x8x4 autoencoder's reconstructions. The check loads
    the learner's trained autoencoder (it does not train one) and grades it again."""
    from . import checkpoints, data, metrics, vae

    if _unanswered(n, answer):
        return False
    name = checkpoints.variant_name(vae.AUTOENCODER_CHECKPOINT, SMALL_LATENTS)
    if checkpoints.find_checkpoint(name, profile) is None:
        return _say(n, False, "", "train the 8x8x4 autoencoder first (the solution's first line), then answer")
    ae8, _ = vae.load_or_train_autoencoder(profile, verbose=False, **SMALL_LATENTS)
    held = data.WorldDataset("heldout", n=1000, profile=profile, captions="canonical")
    truth = metrics.judge_accuracy(judge, vae.reconstruct_images(ae8, held.float_images()), held.attributes)["shape"]
    ok = _number(answer) is not None and abs(float(answer) - truth) < 1e-6
    return _say(n, ok, f"correct! 8x8x4: shape {truth:.1%} against the 16x16x4 autoencoder's {reference_shape:.1%}",
                f"not quite: the 8x8x4 autoencoder's held-out shape accuracy is {truth:.3f}")


# ============================================================================ notebook 06


def half_signal_step(answer, *, scheduler, n: int = 1) -> bool:
    """06 ex 1: the first timestep whose alpha-bar (signal share of the variance) is below 0.5."""
    if _unanswered(n, answer):
        return False
    truth = int((scheduler.alphas_cumprod < 0.5).nonzero()[0])
    ok = _number(answer) is not None and float(answer) == truth
    return _say(n, ok, "correct!", f"not quite: it is t = {truth}")


def guidance_cost(answer, *, model, captions: Sequence[str], guidance: float, sample: Callable | None = None,
                  tolerance: float = 0.5, n: int = 2) -> bool:
    """06 ex 2: ``(seconds unguided, seconds guided)`` of one ``sample`` call on ``captions``.
    The check times both once itself: each must be within ``tolerance`` (a share, for a machine
    whose speed varies) of its own, and the guided one the slower."""
    if sample is None:
        from .diffusion import sample
    if _unanswered(n, answer):
        return False
    try:
        got = [_number(a) for a in answer]
    except TypeError:
        got = [None]
    if len(got) != 2 or None in got or min(got) <= 0:
        return _say(n, False, "", f"answer_{n} should be two positive numbers: (seconds unguided, seconds guided)")
    measured = []
    for w in (1.0, guidance):
        start = time.perf_counter()
        sample(model, list(captions), guidance=w)
        measured.append(time.perf_counter() - start)
    within = all(abs(g - m) <= tolerance * m for g, m in zip(got, measured))
    ok = within and got[1] > got[0]
    return _say(n, ok, f"plausible: guided / unguided = {got[1] / got[0]:.2f} (the check measured "
                       f"{measured[1] / measured[0]:.2f})",
                f"the check measured {measured[0]:.2f} s and {measured[1]:.2f} s (ratio "
                f"{measured[1] / measured[0]:.2f}): time both again on a quiet machine")


# ============================================================================ notebook 07


def slerp_midpoint(answer, *, a: torch.Tensor, b: torch.Tensor, n: int = 1) -> bool:
    """07 ex 1: ``(slerp at 1/2, normalised sum)`` of the unit vectors ``a`` and ``b``: each is
    computed again, and the two must agree."""
    from .unclip import slerp

    if _unanswered(n, answer):
        return False
    want_slerp = slerp(a[None], b[None], 0.5)[0]
    want_sum = F.normalize(a + b, dim=0)
    try:
        got = [torch.as_tensor(x, dtype=want_sum.dtype).reshape(want_sum.shape) for x in answer]
    except (TypeError, ValueError, RuntimeError):
        got = []
    if len(got) != 2:
        return _say(n, False, "", f"answer_{n} should be two vectors: (slerp at 0.5, normalised a + b)")
    ok = torch.allclose(got[0], want_slerp, atol=1e-5) and torch.allclose(got[1], want_sum, atol=1e-5)
    gap = float((got[0] - got[1]).abs().max())
    return _say(n, ok, f"correct! They differ by at most {gap:.1e}: the same vector.",
                f"not quite: slerp(a, b, 0.5) starts {want_slerp[:3].tolist()}, the normalised sum "
                f"{want_sum[:3].tolist()} (the plain midpoint (a + b) / 2 is shorter: inside the sphere)")


def weakest_kept(answer, *, kept: Mapping[str, float], n: int = 2) -> bool:
    """07 ex 2: the attribute that variations kept least often."""
    if _unanswered(n, answer):
        return False
    truth = min(("shape", "color", "size", "position"), key=lambda k: kept[k])
    return _say(n, answer == truth, "correct!", f"not quite: it is {truth}")
