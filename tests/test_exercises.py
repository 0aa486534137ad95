"""Every exercise check tests the learner's answer: the solution passes, a wrong answer does not.

Notebook 00's checks live in the notebook: it runs once (smoke profile, ~15 s) with each
exercise's hidden solution put in place of ``answer_N = None``: every check must then say
"correct!", and a wrong answer given afterwards must not pass. The checks of notebooks 03-07
live in course_lib.exercises and are tested below one by one against each notebook's solution and wrong answers (0, a sign flip, a guess).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.tooling import kernel

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = re.compile(r"<summary>Solution</summary>\s*```python\n(.*?)```", re.S)


def with_solutions(path: Path, wrong: dict[int, str]):
    """The notebook with each ``answer_N = None`` cell answered by its solution, then a cell
    per exercise that calls its check with a wrong answer and records what happened."""
    nb = nbformat.read(path, as_version=4)
    solutions = [SOLUTION.search(c.source).group(1) for c in nb.cells
                 if c.cell_type == "markdown" and "<summary>Solution</summary>" in c.source]
    k = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and re.match(r"answer_\d+ = None", cell.source):
            cell.source = re.sub(r"answer_\d+ = None.*\n", solutions[k] + "\n", cell.source, count=1)
            k += 1
    assert k == len(solutions) > 0
    for n, answer in wrong.items():
        nb.cells.append(nbformat.v4.new_code_cell(
            f"try:\n    check_{n}({answer})\n    print('wrong answer {n}: no error')\n"
            f"except AssertionError as e:\n    print('wrong answer {n} refused:', e)"))
    return nb


@pytest.mark.skipif(os.environ.get("COURSE_SKIP_SLOW") == "1", reason="executes notebook 00")
def test_notebook_00_checks_accept_the_solutions_and_refuse_wrong_answers(tmp_path):
    from nbclient import NotebookClient

    nb = with_solutions(ROOT / "notebooks" / "00_welcome_and_the_world.ipynb",
                        {2: "'a small star that is yellow on the left'", 3: "0.123"})
    kernel.make_spec_findable()
    env = {**os.environ, "COURSE_PROFILE": "smoke", "COURSE_PROGRESS": "none"}
    NotebookClient(nb, timeout=300, kernel_name=kernel.KERNEL_NAME,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=env)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.get("output_type") == "stream")
    for n in (1, 2, 3):
        assert f"Exercise {n}: correct!" in text, f"exercise {n}'s solution is not accepted"
    assert "Exercise 2: not quite" in text                           # the wrong caption
    assert "wrong answer 3 refused: answer_3 = 12.3%, but shape_net reads" in text


# ============================================================================ notebooks 03-07
# Each check of course_lib.exercises against its notebook's solution (written out here as the
# notebook's "Solution" shows it) and against wrong answers: 0, a sign flip, a guess, a constant.

import math as _math
import time as _time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from course_lib import exercises, metrics
from course_lib.metrics import judge as judge_module


@pytest.fixture(scope="module")
def judge():
    """An untrained smoke judge: the checks grade with whatever judge the notebook has."""
    torch.manual_seed(0)
    return judge_module._build_judge(judge_module.judge_config("smoke")).eval()


def _caption_image(caption: str, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(map(ord, caption)))
    return torch.rand(3, size, size, generator=g) * 2 - 1


def test_gan_losses(capsys):
    def d_loss_ns(real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss_ns(fake):
        return F.softplus(-fake).mean()

    assert exercises.gan_losses((d_loss_ns, g_loss_ns))
    assert not exercises.gan_losses((lambda r, f: F.softplus(r).mean() + F.softplus(-f).mean(), g_loss_ns))
    assert not exercises.gan_losses((d_loss_ns, lambda f: F.softplus(f).mean()))      # sign flipped
    assert not exercises.gan_losses((lambda r, f: None, lambda f: None))
    assert "not answered yet" in capsys.readouterr().out


def test_interpolation_flip(judge):
    strip = torch.rand(8, 3, 32, 32) * 2 - 1
    colours = judge.predict(strip)["color"].tolist()
    from course_lib.data import COLORS
    truth = next((i for i, c in enumerate(colours) if COLORS[c] == "blue"), -1)
    assert exercises.interpolation_flip(truth, strip=strip, judge=judge)
    assert not exercises.interpolation_flip(truth + 1, strip=strip, judge=judge)
    assert not exercises.interpolation_flip(None, strip=strip, judge=judge)


def test_collapsed_sampler(judge):
    caps = ["a red circle", "a blue square"]
    real = torch.rand(16, 3, 32, 32) * 2 - 1
    real_div = metrics.diversity(real, judge)["feature"]

    def collapsed(captions):                       # the solution's sampler: one noise row, the caption's image
        return torch.stack([_caption_image(c) for c in captions])

    def diverse(captions):
        return torch.rand(len(captions), 3, 32, 32) * 2 - 1

    def constant(captions):                        # collapsed, but blind to the caption
        return torch.zeros(len(captions), 3, 32, 32)

    assert exercises.collapsed_sampler(collapsed, captions=caps, judge=judge, real_diversity=real_div)
    assert not exercises.collapsed_sampler(diverse, captions=caps, judge=judge, real_diversity=real_div)
    assert not exercises.collapsed_sampler(constant, captions=caps, judge=judge, real_diversity=real_div)
    assert not exercises.collapsed_sampler(0.0, captions=caps, judge=judge, real_diversity=real_div)


def test_galip_gates():
    merge = [SimpleNamespace(beta=torch.tensor(-0.3)), SimpleNamespace(beta=torch.tensor(0.7))]
    model = SimpleNamespace(discriminator=SimpleNamespace(mate=SimpleNamespace(merge=merge)))
    solution = {f"merge.{i}": abs(b.beta.item()) for i, b in enumerate(merge)}
    assert exercises.galip_gates(solution, model=model)
    assert not exercises.galip_gates({f"merge.{i}": b.beta.item() for i, b in enumerate(merge)}, model=model)
    assert not exercises.galip_gates(0, model=model)


def test_prompts_off(judge):
    from test_galip import _tiny_encoder, tiny_config

    from course_lib import galip
    encoder = _tiny_encoder()
    torch.manual_seed(0)
    model = galip.build_galip(tiny_config(encoder, code_channels=8), encoder).eval()
    caps = ["a large red circle at the top"] * 64
    attrs = metrics.as_attributes({"shape": ["circle"] * 64, "color": ["red"] * 64, "size": ["large"] * 64,
                                   "position": ["top"] * 64})
    G = model.generator                            # the solution: zero the prompts, sample, grade
    keep = G.prompts
    G.prompts = lambda c: None if keep(c) is None else torch.zeros_like(keep(c))
    try:
        solution = metrics.alignment(galip.sample(model, caps, seed=0), attrs, judge, split=False)["all"]
    finally:
        del G.prompts
    assert exercises.prompts_off(solution, model=model, judge=judge)
    assert not exercises.prompts_off(solution + 0.5, model=model, judge=judge)
    assert not hasattr(G.__dict__, "prompts") and "prompts" not in G.__dict__    # the check restores G


def test_gaussian_kl():
    solution = 0.5 * (1.0 + 0.0 + 0.25 + 1.0 - 2 - _math.log(0.25))     # sum of 1/2 (mu^2 + s^2 - 1 - log s^2)
    assert exercises.gaussian_kl(solution)
    assert not exercises.gaussian_kl(0)
    assert not exercises.gaussian_kl(-solution)


def test_temperature_sweep(monkeypatch, judge):
    from course_lib import vae

    def fake_sample(model, captions, *, seed=0, temperature=1.0, noise=None):
        g = torch.Generator().manual_seed(seed)
        base = torch.stack([_caption_image(c) for c in captions]) * 0.5
        return (base + 0.3 * temperature * torch.randn(base.shape, generator=g)).clamp(-1, 1)

    monkeypatch.setattr(vae, "sample", fake_sample)
    caps = [f"a {c} circle" for c in ("red", "green", "blue", "yellow")]
    attrs = metrics.as_attributes({"shape": ["circle"] * 4, "color": ["red", "green", "blue", "yellow"]})
    results = {}
    for T in (0.0, 0.5, 1.0):                      # the notebook's solution
        s = vae.sample(None, caps, seed=0, temperature=T)
        one = vae.sample(None, [caps[0]] * 8, seed=1, temperature=T)
        results[T] = (metrics.alignment(s, attrs, judge)["seen"]["all"], metrics.diversity(one)["pixel"])
    kw = dict(model=None, captions=caps, attributes=attrs, judge=judge)
    assert exercises.temperature_sweep(results, **kw)
    assert not exercises.temperature_sweep(1.0, **kw)                            # the old answer: a guess
    assert not exercises.temperature_sweep({T: (a, 0.0) for T, (a, d) in results.items()}, **kw)
    assert not exercises.temperature_sweep({0.0: results[0.0]}, **kw)


def test_small_latents(monkeypatch, tmp_data, judge):
    from course_lib import vae
    from course_lib.data import WorldDataset
    assert not exercises.small_latents(0.5, profile="smoke", judge=judge, reference_shape=0.9)   # not trained

    monkeypatch.setattr(exercises, "SMALL_LATENTS", {"block_out_channels": (8, 8), "steps": 2})
    model, _ = vae.load_or_train_autoencoder("smoke", verbose=False, block_out_channels=(8, 8), steps=2)
    held = WorldDataset("heldout", n=1000, profile="smoke", captions="canonical")
    solution = metrics.judge_accuracy(judge, vae.reconstruct_images(model, held.float_images()),
                                      held.attributes)["shape"]
    assert exercises.small_latents(solution, profile="smoke", judge=judge, reference_shape=0.9)
    assert not exercises.small_latents(0, profile="smoke", judge=judge, reference_shape=0.9) or solution == 0
    assert not exercises.small_latents(solution + 0.1, profile="smoke", judge=judge, reference_shape=0.9)


def test_half_signal_step():
    from diffusers import DDPMScheduler
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    solution = int((sched.alphas_cumprod < 0.5).nonzero()[0])
    assert exercises.half_signal_step(solution, scheduler=sched)
    assert not exercises.half_signal_step(0, scheduler=sched)
    assert not exercises.half_signal_step(500, scheduler=sched) or solution == 500


def test_guidance_cost():
    def fake_sample(model, captions, *, guidance=3.0):
        _time.sleep(0.05 if guidance == 1.0 else 0.09)

    def timed(w):
        start = _time.perf_counter()
        fake_sample(None, [], guidance=w)
        return _time.perf_counter() - start

    kw = dict(model=None, captions=["a red circle"], guidance=3.0, sample=fake_sample)
    assert exercises.guidance_cost((timed(1.0), timed(3.0)), **kw)
    assert not exercises.guidance_cost(1.8, **kw)                    # the old answer: a plausible guess
    assert not exercises.guidance_cost((1.0, 2.0), **kw)             # a guess of the times
    assert not exercises.guidance_cost((timed(3.0), timed(1.0)), **kw)   # swapped


def test_slerp_midpoint():
    from course_lib import unclip
    a, b = F.normalize(torch.randn(16), dim=0), F.normalize(torch.randn(16), dim=0)
    solution = (unclip.slerp(a[None], b[None], 0.5)[0], F.normalize(a + b, dim=0))
    assert exercises.slerp_midpoint(solution, a=a, b=b)
    assert not exercises.slerp_midpoint((solution[0], (a + b) / 2), a=a, b=b)    # the straight midpoint
    assert not exercises.slerp_midpoint(0.0, a=a, b=b)
    assert not exercises.slerp_midpoint(-1e-7, a=a, b=b)


def test_weakest_kept():
    kept = {"shape": 0.8, "color": 0.9, "size": 0.7, "position": 0.3}
    assert exercises.weakest_kept("position", kept=kept)
    assert not exercises.weakest_kept("size", kept=kept)


def test_every_exercise_of_03_to_07_calls_a_tested_check():
    """Each exercise cell (``answer_N = ...``) of notebooks 03-07 ends with ``check_N(answer_N)`` calling one
    function of course_lib.exercises, and each of those functions has a test above."""
    tested = {name[5:] for name in globals() if name.startswith("test_")}
    for path in sorted((ROOT / "notebooks").glob("0[3-7]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c.source for c in nb.cells if c.cell_type == "code" and re.search(r"^answer_\d+ = ", c.source, re.M)]
        solutions = [c.source for c in nb.cells if c.cell_type == "markdown" and "<summary>Solution</summary>" in c.source]
        assert cells and len(cells) == len(solutions), path.name
        for source in cells:
            n = re.search(r"^answer_(\d+) = ", source, re.M).group(1)
            assert source.rstrip().endswith(f"check_{n}(answer_{n})"), (path.name, n)
            called = re.findall(r"exercises\.(\w+)\(", source)
            assert len(called) == 1 and called[0] in exercises.__all__, (path.name, n, called)
            assert called[0] in tested, f"{path.name} exercise {n}: exercises.{called[0]} has no test"
