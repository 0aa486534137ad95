"""course_lib.metrics: the judge and the yardsticks built on it.

The judge is trained ONCE per test session, with the *cpu* profile's sizes (the
issue's thresholds -- >= 99% clean, >= 95% blurred or noisy -- are stated for that
profile), into a temporary checkpoint folder. Everything else reuses it.
"""
import math
import time

import pytest
import torch

from course_lib import metrics as M
from course_lib import paths
from course_lib.data import (
    ATTRIBUTES,
    NUM_CLASSES,
    WorldDataset,
    canonical_caption,
    render_attributes,
    to_float,
)
from course_lib.profiles import get_profile

CPU = get_profile("cpu")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Checkpoints and the world cache in a temporary folder, for the whole module."""
    root = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "CHECKPOINT_DIR", root / "checkpoints")
        mp.setattr(paths, "SHIPPED_DIR", root / "shipped")
        mp.setattr(paths, "CACHE_DIR", root / "cache")
        yield root


@pytest.fixture(scope="module")
def judge(workdir):
    return M.load_judge(CPU, verbose=False)


def _world(split, n, combos=None, two=None, seed=0):
    return WorldDataset(split, n=n, combos=combos, two_object_fraction=two, profile=CPU,
                        captions="canonical", seed=seed)


@pytest.fixture(scope="module")
def seen(workdir):
    return _world("test", CPU.judge.n_eval)          # fresh images, seen combinations


@pytest.fixture(scope="module")
def heldout(workdir):
    return _world("heldout", CPU.data.n_heldout)     # only held-out combinations


@pytest.fixture(scope="module")
def two_objects(workdir):
    return _world("test", 1000, combos="all", two=1.0, seed=5)


# --------------------------------------------------------------------------- the judge


def test_judge_trains_within_its_budget(judge):
    metrics = judge.card["metrics"]
    assert judge.card["source"] == "trained"
    # it did all its steps (not cut short by the time budget) in at most 3 minutes
    assert metrics["stopped_by"] == "steps", metrics
    assert metrics["train_minutes"] <= 3.0, metrics


@pytest.mark.parametrize("which", ["seen", "heldout"])
def test_judge_is_exact_on_clean_real_images(judge, which, request):
    ds = request.getfixturevalue(which)
    acc = M.judge_accuracy(judge, ds.images, ds.attributes)
    for key in ("shape", "color", "size", "position"):
        assert acc[key] >= 0.99, f"{which} {key}: {acc}"


@pytest.mark.parametrize("which", ["seen", "heldout"])
@pytest.mark.parametrize("degrade", ["blur", "noise"])
def test_judge_is_robust_to_blur_and_noise(judge, which, degrade, request):
    ds = request.getfixturevalue(which)
    x = ds.float_images()
    x = M.blur(x, M.BLUR_SIGMA) if degrade == "blur" else M.add_noise(x, M.NOISE_STD, seed=3)
    acc = M.judge_accuracy(judge, x, ds.attributes)
    for key in ("shape", "color", "size", "position"):
        assert acc[key] >= 0.95, f"{which} {degrade} {key}: {acc}"


@pytest.mark.parametrize("degrade", ["clean", "blur", "noise"])
def test_judge_reads_two_object_scenes(judge, two_objects, degrade):
    x = two_objects.float_images()
    if degrade == "blur":
        x = M.blur(x, M.BLUR_SIGMA)
    elif degrade == "noise":
        x = M.add_noise(x, M.NOISE_STD, seed=4)
    acc = M.judge_accuracy(judge, x, two_objects.attributes)
    bar = 0.99 if degrade == "clean" else 0.95
    for key in ("shape", "color", "size", "shape2", "color2", "size2", "relation"):
        assert acc[key] >= bar, f"two objects, {degrade}, {key}: {acc}"
    assert "position" not in acc          # absent in two-object scenes: not graded


def test_judge_is_near_chance_on_pure_noise(judge, seen):
    noise = torch.rand((len(seen), 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    acc = M.alignment(noise, seen.attributes, judge, split=False)
    for key in ("shape", "color", "size", "position"):
        codes = seen.attributes[key]
        most_common = torch.bincount(codes, minlength=NUM_CLASSES[key]).max().item() / len(codes)
        # a judge that sees nothing can at best always name the most common value
        assert acc[key] <= most_common + 0.05, f"{key}: {acc[key]:.3f} on noise"
    assert acc["all"] <= 0.05


# --------------------------------------------------------------------------- alignment


def test_alignment_of_real_images_is_perfect_and_drops_to_chance_when_shuffled(judge, seen, heldout):
    attrs = {k: torch.cat([seen.attributes[k], heldout.attributes[k]]) for k in ATTRIBUTES}
    images = torch.cat([seen.images, heldout.images])
    right = M.alignment(images, attrs, judge)
    assert right["seen"]["all"] >= 0.99 and right["held-out"]["all"] >= 0.99
    assert right["seen"]["n"] == len(seen) and right["held-out"]["n"] == len(heldout)

    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    shuffled = {k: v[perm] for k, v in attrs.items()}
    wrong = M.alignment(images, shuffled, judge, split=False)
    chance = M.shuffled_chance(shuffled)
    for key in ("shape", "color", "size", "position"):
        assert abs(wrong[key] - chance[key]) < 0.04, f"{key}: {wrong[key]:.3f} vs chance {chance[key]:.3f}"
    assert wrong["all"] < 0.02


def test_alignment_grades_two_object_captions_in_either_order(judge):
    # "a red circle left of a blue square" == "a blue square right of a red circle"
    a = {"shape": [0], "color": [0], "size": [0], "position": [-1],
         "shape2": [1], "color2": [2], "size2": [0], "relation": [0]}
    b = {"shape": [1], "color": [2], "size": [0], "position": [-1],
         "shape2": [0], "color2": [0], "size2": [0], "relation": [1]}
    image = render_attributes(a, seed=3)
    assert M.alignment(image, a, judge, split=False)["all"] == 1.0
    assert M.alignment(image, b, judge, split=False)["all"] == 1.0
    swapped = dict(a, relation=[1])     # "a red circle RIGHT of a blue square": wrong
    assert M.alignment(image, swapped, judge, split=False)["all"] == 0.0


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_is_near_zero_for_halves_and_grows_with_damage(judge):
    ds = _world("test", 4000, combos="all", seed=1)
    x = ds.float_images()
    a, b = x[:2000], x[2000:]
    feats = judge.embed(a).double()
    spread = torch.cov(feats.T).trace().item()       # the features' total variance
    halves = M.frechet_distance(a, b, judge)
    assert halves < 0.02 * spread, f"two real halves: {halves:.1f} (feature variance {spread:.0f})"
    blurred = [halves] + [M.frechet_distance(a, M.blur(b, s), judge) for s in (1.0, 2.0, 3.0)]
    noisy = [halves] + [M.frechet_distance(a, M.add_noise(b, s), judge) for s in (0.2, 0.4, 0.6)]
    assert all(p < q for p, q in zip(blurred, blurred[1:])), f"blur: {blurred}"
    assert all(p < q for p, q in zip(noisy, noisy[1:])), f"noise: {noisy}"
    assert blurred[1] > 5 * halves and noisy[1] > 5 * halves
    # collapse to one image is the worst of all
    assert M.frechet_distance(a, M.collapse(b), judge) > max(blurred + noisy)


def test_frechet_distance_noise_floor_shrinks_with_sample_size(judge):
    small = M.fd_noise_floor(judge, n=250, repeats=2, profile=CPU)
    large = M.fd_noise_floor(judge, n=2000, repeats=2, profile=CPU)
    assert large["n"] == 2000 and small["n"] == 250
    assert 0 <= large["mean"] < small["mean"]


def test_frechet_distance_rejects_bad_inputs(judge):
    x = torch.zeros(4, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(x[:1], x, judge)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        M.frechet_distance(x + 100, x, judge)


# --------------------------------------------------------------------------- diversity


def test_diversity_is_zero_for_a_constant_sampler(judge, seen):
    one = seen.float_images([0]).expand(8, -1, -1, -1)
    d = M.diversity(one, judge)
    assert d["pixel"] == pytest.approx(0.0, abs=1e-6) and d["feature"] == pytest.approx(0.0, abs=1e-4)
    assert all(v == 1 for v in d["distinct"].values())
    assert all(v == 0.0 for v in d["entropy"].values())


def test_diversity_counts_what_the_caption_leaves_free(judge):
    n = 24
    gen = torch.Generator().manual_seed(0)
    rows = {"shape": torch.full((n,), 0), "color": torch.randint(0, 6, (n,), generator=gen),
            "size": torch.full((n,), 1), "position": torch.full((n,), 4)}
    attrs = {k: rows.get(k, torch.full((n,), -1)) for k in ATTRIBUTES}
    images = render_attributes(attrs, seed=2)           # "a large circle in the centre", any colour
    d = M.diversity(images, judge, asked={"shape": 0, "size": 1, "position": 4})
    assert set(d["distinct"]) == {"color"}
    assert d["distinct"]["color"] == len(torch.unique(rows["color"]))
    want = torch.bincount(rows["color"], minlength=6).double() / n          # the judge reads real colours right
    want = float(-(want[want > 0] * want[want > 0].log()).sum() / math.log(6))
    assert d["entropy"]["color"] == pytest.approx(want, abs=0.08)
    assert 0.7 < d["entropy"]["color"] <= 1.0
    assert d["pixel"] > 0.05 and d["feature"] > 1.0


# --------------------------------------------------------------------------- evaluate


def test_evaluate_tells_a_perfect_sampler_from_a_collapsed_one(judge, workdir):
    captions, attrs = M.evaluation_set(CPU, n=240)
    lookup = {c: i for i, c in enumerate(captions)}

    def perfect(batch):                 # real renderings of exactly what was asked
        idx = torch.tensor([lookup[c] for c in batch])
        return to_float(render_attributes({k: v[idx] for k, v in attrs.items()},
                                          seed=int(idx.sum())))

    first = perfect(captions[:1])

    def collapsed(batch):
        return first.expand(len(batch), -1, -1, -1)

    good = M.evaluate(perfect, captions, attrs, name="perfect", judge=judge, profile=CPU,
                      batch_size=64, speed=False)
    bad = M.evaluate(collapsed, captions, attrs, name="collapsed", judge=judge, profile=CPU,
                     batch_size=64, speed=False)
    g, b = good["perfect"], bad["collapsed"]
    assert g["all right (seen)"] >= 0.99 and g["all right (held-out)"] >= 0.99
    assert b["all right (seen)"] < 0.1
    assert g["FD"] < 3 * g["FD floor"] + 1 < b["FD"]
    assert b["diversity pixel"] == pytest.approx(0.0, abs=1e-6) and g["diversity pixel"] > 0
    table = (good | bad).to_markdown()
    assert "perfect" in table and "collapsed" in table and "FD floor" in table


def test_a_judge_cut_short_warns_when_loaded(workdir):
    tiny = get_profile("smoke").replace(judge={"steps": 3, "n_train": 512, "batch_size": 32},
                                        data={"n_val": 100})
    with pytest.warns(RuntimeWarning, match="not reliable"):
        M.load_judge(tiny, verbose=False)                 # trained: 3 steps cannot read shapes
    with pytest.warns(RuntimeWarning, match="retrain=True"):
        M.load_judge(tiny, verbose=False)                 # loaded: warns again


def test_judge_refuses_images_of_another_size(judge):
    with pytest.raises(ValueError, match="reads 32x32 images"):
        judge.predict(torch.zeros(2, 3, 64, 64))


def test_evaluate_leaves_out_fd_when_prompts_leave_attributes_open(judge):
    attrs = {"shape": [0, 1, 2, 3], "color": [0, 1, 2, 3]}          # "a red circle", ...
    images = torch.zeros(4, 3, 32, 32)
    with pytest.warns(UserWarning, match="FD is left out"):
        report = M.evaluate(lambda c: images[:len(c)], attributes=attrs, judge=judge, profile=CPU,
                            speed=False, diversity_prompts=0)
    row = report["model"]
    assert "FD" not in row and "shape (seen)" in row and "position (seen)" not in row


def test_evaluate_needs_attributes_with_captions(judge):
    with pytest.raises(ValueError, match="attributes"):
        M.evaluate(lambda c: None, ["a red circle"], judge=judge, profile=CPU)


def test_evaluate_checks_what_the_sampler_returns(judge):
    attrs = {"shape": [0, 1], "color": [0, 1], "size": [0, 1], "position": [0, 1]}
    with pytest.raises(ValueError, match="returned 1 images for 2 captions"):
        M.evaluate(lambda c: torch.zeros(1, 3, 32, 32), attributes=attrs, judge=judge, profile=CPU,
                   speed=False, diversity_prompts=0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        M.evaluate(lambda c: torch.full((len(c), 3, 32, 32), 200.0), attributes=attrs, judge=judge,
                   profile=CPU, speed=False, diversity_prompts=0)


# --------------------------------------------------------------------------- no judge needed


def test_per_image_shift_and_blur_matches_torchvision():
    from torchvision.transforms.v2.functional import gaussian_blur

    x = torch.rand(6, 3, 32, 32) * 2 - 1
    zero = torch.zeros(6)
    ours = M.judge._shift_and_blur(x, zero, zero, torch.full((6,), 1.0))
    assert torch.allclose(ours, gaussian_blur(x, [7, 7], [1.0, 1.0]), atol=1e-5)
    moved = M.judge._shift_and_blur(x, torch.ones(6), zero, zero)      # one pixel, no blur
    assert torch.allclose(moved[..., :-1], x[..., 1:], atol=1e-6)
    assert torch.allclose(M.blur(x, 1.0), gaussian_blur(x, [7, 7], [1.0, 1.0]))


def test_augment_keeps_images_valid_and_is_repeatable():
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    a = M.augment(x, torch.Generator().manual_seed(0), p=1.0)
    b = M.augment(x, torch.Generator().manual_seed(0), p=1.0)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.allclose(a, x)
    assert torch.allclose(M.augment(x, p=0.0), x, atol=1e-6)


def test_degradations_do_what_they_say():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(M.wrong_colors(x)[:, 0], x[:, 1])
    assert torch.equal(M.collapse(x)[3], x[0])
    assert torch.equal(M.shift(x, 2)[..., 2:, 2:], x[..., :-2, :-2])
    assert M.add_noise(x, 0.0).equal(x) and not M.add_noise(x, 0.1).equal(x)
    assert M.blur(x, 2.0).std() < x.std()
    with pytest.raises(ValueError):
        M.blur(x, -1.0)


def test_canonical_order_puts_the_left_or_upper_object_first():
    attrs = {"shape": [0, 0, 0], "color": [0, 0, 0], "size": [0, 0, 1], "position": [-1, -1, 2],
             "shape2": [1, 1, -1], "color2": [2, 2, -1], "size2": [0, 0, -1], "relation": [1, 3, -1]}
    c = M.canonical_order(attrs)
    assert c["relation"].tolist() == [0, 2, -1]            # right of -> left of, below -> above
    assert c["shape"].tolist() == [1, 1, 0] and c["shape2"].tolist() == [0, 0, -1]
    assert c["color"].tolist() == [2, 2, 0] and c["position"].tolist() == [-1, -1, 2]


def test_attributes_in_any_form_and_clear_errors():
    rows = [{"shape": "star", "color": "purple", "size": 0, "position": "center"}]
    a = M.as_attributes(rows)
    assert a["shape"].tolist() == [4] and a["position"].tolist() == [4] and a["relation"].tolist() == [-1]
    assert M.held_out_mask(a).tolist() == [True]           # purple star is held out
    with pytest.raises(KeyError, match="shape"):
        M.as_attributes({"color": [0]})
    with pytest.raises(ValueError, match="'color' has 2 values"):
        M.as_attributes({"shape": [0], "color": [0, 1]})
    with pytest.raises(ValueError, match="out of|codes must be"):
        M.as_attributes({"shape": [7], "color": [0]})
    with pytest.raises(ValueError, match="unknown shape"):
        M.as_attributes({"shape": ["hexagon"], "color": [0]})
    with pytest.raises(ValueError, match="describe 1 images but there are 2"):
        M.as_attributes({"shape": [0], "color": [0]}, n=2)


def test_images_are_checked_with_a_hint():
    with pytest.raises(ValueError, match=r"x \* 2 - 1"):
        M.inputs._check_images(torch.rand(2, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        M.inputs._check_images(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError):
        M.inputs._check_images([[0.0]])
    pixels = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    assert M.inputs._check_images(pixels).shape == (1, 3, 8, 8) and M.inputs._check_images(pixels).max() == 1.0
    with pytest.raises(ValueError, match="outside"):                     # a little over: the sampler clamps
        M.inputs._check_images(torch.full((1, 3, 4, 4), 1.2))
    with pytest.raises(ValueError, match=r"\[0, 1\] images"):           # torchvision's range is caught
        M.inputs._check_images(torch.rand(2, 3, 4, 4))


def test_speed_timer_measures_a_known_sleep():
    def sampler(captions):
        time.sleep(0.1)
        return torch.zeros(len(captions), 3, 32, 32)

    out = M.images_per_second(sampler, batch_size=20, warmup=1, repeats=3, device="cpu")
    assert out["images_per_s"] == pytest.approx(200.0, rel=0.10)
    assert out["seconds_per_batch"] == pytest.approx(0.1, rel=0.10)


def test_time_to_target_counts_training_time_only():
    state = {"rounds": 0}

    def train_round():
        time.sleep(0.05)
        state["rounds"] += 1

    def score():
        time.sleep(0.05)                  # evaluation time must not be counted
        return state["rounds"] / 10

    result = M.time_to_target(train_round, score, target=0.4, max_seconds=5)
    assert result.reached and len(result.curve) == 4
    assert result.seconds == pytest.approx(0.2, rel=0.10)
    never = M.time_to_target(train_round, lambda: 0.0, target=1.0, max_seconds=0.12)
    assert not never.reached and never.seconds is None


class _ColourClip:
    """A duck-typed 'CLIP' that knows one thing: the colour word of a caption."""
    words = ("red", "green", "blue")

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) + 1          # mean R, G, B (in [0, 2])

    def encode_text(self, captions):
        return torch.stack([torch.eye(3)[[w in c for w in self.words].index(True)] for c in captions])


def test_clip_score_with_any_clip_like_model():
    images = -torch.ones(3, 3, 8, 8)
    for i in range(3):
        images[i, i] = 1.0                           # pure red, green, blue images
    captions = ["a red square", "a green star", "a blue circle"]
    right = M.clip_score(_ColourClip(), images, captions)
    wrong = M.clip_score(_ColourClip(), images, captions[1:] + captions[:1])
    assert right == pytest.approx(1.0) and wrong < right
    with pytest.raises(TypeError, match="needs a method encode_image"):
        M.clip_score(object(), images, captions)
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        M.clip_score(_ColourClip(), images, captions[:2])


def test_clip_score_takes_the_course_clip():
    from course_lib import clip

    model = clip.build_clip(clip.clip_config("smoke"))
    ds = WorldDataset("test", n=8, profile="smoke", captions="canonical", cache=False)
    value = M.clip_score(model, ds.images, ds.canonical_captions)
    assert -1.0 <= value <= 1.0 and math.isfinite(value)


def test_report_is_a_small_table():
    r = M.Report({"GAN": {"FD": 12.345, "all right (seen)": 0.5}}) | M.Report({"VAE": {"FD": 30.0}})
    assert r["GAN"]["FD"] == 12.345 and len(r) == 2 and r.columns == ["FD", "all right (seen)"]
    md = r.to_markdown(transpose=False)
    assert md.splitlines()[0] == "| model | FD | all right (seen) |"
    assert "| VAE | 30 | - |" in md
    assert "| FD | 12.3 | 30 |" in r.to_markdown(transpose=True)
    assert r._repr_markdown_() == r.to_markdown()


def test_evaluation_set_mixes_seen_and_held_out(workdir):
    captions, attrs = M.evaluation_set(get_profile("smoke"), n=40)
    held = M.held_out_mask(attrs)
    assert len(captions) == 40 and int(held.sum()) == 10
    assert captions[0] == canonical_caption({k: int(v[0]) for k, v in attrs.items()})


def test_smoothness_sees_a_jump(judge):
    """An even fade between two images is smooth; the same strip with a sudden switch is not."""
    from course_lib.data import WorldDataset
    ds = WorldDataset("test", n=2, profile="cpu")
    a, b = ds.float_images()
    t = torch.linspace(0, 1, 8)[:, None, None, None]
    fade = (1 - t) * a + t * b
    jump = torch.stack([a] * 4 + [b] * 4)
    s_fade, s_jump = M.smoothness(fade, judge), M.smoothness(jump, judge)
    assert s_jump["evenness"] == pytest.approx(1 / 7, rel=1e-4)      # one step carries it all
    assert s_fade["evenness"] > s_jump["evenness"]
    assert M.smoothness(torch.stack([a] * 4), judge)["evenness"] == 1.0     # nothing moves: even
    assert s_fade["path"] >= s_fade["direct"] - 1e-4
    with pytest.raises(ValueError, match="at least 3"):
        M.smoothness(fade[:2], judge)


def test_sampled_images_range_is_checked_on_the_whole_set_not_per_chunk():
    """A pale caption's few samples can all be >= 0 (seen from a smoke GAN in CI); the
    [0, 1]-images check looks at everything sampled, and still refuses a [0, 1] sampler."""
    from course_lib.images import ImageBatchError
    from course_lib.metrics.report import _sample_all

    def pale_then_dark(caps):
        x = torch.full((len(caps), 3, 8, 8), 0.5)
        if caps[0] == "dark":
            x[:, :, 0, 0] = -0.9
        return x

    out = _sample_all(pale_then_dark, ["pale"] * 4 + ["dark"] * 4, batch_size=4)
    assert out.shape == (8, 3, 8, 8)
    assert _sample_all(pale_then_dark, ["pale"] * 8, batch_size=4, range_check=False).shape[0] == 8
    with pytest.raises(ImageBatchError, match=r"\[0, 1\]"):
        _sample_all(lambda caps: torch.rand(len(caps), 3, 8, 8), ["a"] * 8, batch_size=4)
    with pytest.raises(ImageBatchError):
        _sample_all(lambda caps: torch.full((len(caps), 3, 8, 8), float("nan")), ["a"] * 4, batch_size=4,
                    range_check=False)
