"""course_lib.gan: shapes, the losses against hand-computed values, MA-GP's gradient, the
mismatched pairs, the output range, sampling determinism, training steps and bad inputs.

Everything runs on a tiny untrained CLIP (2 layers of width 32) and a tiny GAN, so the
file takes seconds; what the GAN *learns* is measured by notebook 03's self-check.
"""
import math

import pytest
import torch
from fakes import TINY_CLIP

from course_lib import checkpoints, clip, conditioning, gan
from course_lib.checkpoints import CheckpointMismatchError
from course_lib.images import check_images
from course_lib.training import TrainingDiverged, fit

CAPTIONS = ["a red circle", "a large blue square at the top", "a small green star", "a cyan diamond"]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return clip.FrozenTextEncoder(clip.build_clip(TINY_CLIP))


def tiny_config(encoder, **changes):
    cfg = {"noise_dim": 8, "g_width": 8, "d_width": 8, "d_head": "projection", "n_train": 64,
           "batch_size": 8, "steps": 4, "lr_g": 1e-3, "lr_d": 1e-3, "ma_gp_weight": 2.0,
           "ma_gp_power": 6.0, "ma_gp_every": 2, "clip_weight": 1.0, "ema_decay": 0.9,
           "max_minutes": None, "image_size": 32, "seed": 0, "clip": conditioning.clip_dependency(encoder)}
    cfg.update(changes)
    return cfg


@pytest.fixture
def model(encoder):
    torch.manual_seed(0)
    m = gan.build_gan(tiny_config(encoder))
    return conditioning.attach_text_encoder(m, encoder).eval()


# ----------------------------------------------------------------------------- parts


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("head", ["concat", "projection"])
def test_shapes(size, head):
    G = gan.Generator(noise_dim=8, cond_dim=16, width=8, image_size=size)
    D = gan.Discriminator(cond_dim=16, width=8, image_size=size, head=head)
    z, s = torch.randn(3, 8), torch.randn(3, 16)
    x = G(z, s)
    assert x.shape == (3, 3, size, size)
    feats = D(x)
    assert feats.shape[-2:] == (4, 4)
    assert D.score(feats, s).shape == (3,)


def test_bad_sizes_and_heads_are_clear_errors(encoder):
    with pytest.raises(ValueError, match=r"4 \* 2\^k"):
        gan.Generator(image_size=24)
    with pytest.raises(ValueError, match="concat"):
        gan.Discriminator(head="attention")


def test_generator_output_range_matches_the_data():
    """The data are in [-1, 1] with a dark-to-mid grey background; G's tanh covers exactly
    that range, and an untrained G starts near the middle (not saturated at one end)."""
    from course_lib.data import WorldDataset
    real = WorldDataset("train", n=64, profile="smoke").float_images()
    check_images(real)
    G = gan.Generator(noise_dim=8, cond_dim=16, width=8, image_size=32)
    with torch.no_grad():
        x = G(torch.randn(64, 8), torch.randn(64, 16))
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert abs(float(x.mean())) < 0.5 and float((x.abs() > 0.99).float().mean()) < 0.01
    # and it can reach both ends: tanh of a large pre-activation
    with torch.no_grad():
        G.to_rgb.bias.fill_(20.0)
        assert float(G(torch.randn(2, 8), torch.randn(2, 16)).min()) > 0.999


def test_film_starts_as_the_identity():
    a = gan.Affine(cond_dim=5, channels=4)
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(a(x, torch.randn(2, 5)), x)


# ----------------------------------------------------------------------------- losses


def test_hinge_losses_against_hand_computation():
    real, fake, mis = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5]), torch.tensor([0.0, -1.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: 0, 1.5 -> 0.75; mismatch: 1, 0 -> 0.5
    assert gan.d_hinge_loss(real, fake, mis).item() == pytest.approx(0.25 + 0.5 * (0.75 + 0.5))
    assert gan.d_hinge_loss(real, fake).item() == pytest.approx(0.25 + 0.75)
    assert gan.g_hinge_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_ma_gp_matches_the_analytic_gradient():
    """D(x, s) = a·x + b·s has gradient (a, b) for every sample: the penalty is k·‖(a, b)‖^p."""
    a, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.5])
    x = torch.randn(4, 3, requires_grad=True)
    s = torch.randn(4, 2, requires_grad=True)
    score = x @ a + s @ b
    norm = math.sqrt(float((a ** 2).sum() + (b ** 2).sum()))
    gp = gan.ma_gradient_penalty(score, (x, s), k=2.0, p=6.0)
    assert gp.item() == pytest.approx(2.0 * norm ** 6, rel=1e-5)
    # image-only gradient: the sentence's part is missing
    assert gan.ma_gradient_penalty(score, (x,), k=1.0, p=2.0).item() == pytest.approx(
        float((a ** 2).sum()), rel=1e-5)
    # create_graph=True: the penalty can be trained through (D's weights get its gradient)
    w = torch.nn.Parameter(a.clone())
    gan.ma_gradient_penalty((x * x) @ w, (x,)).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_mismatched_pairs_give_every_image_another_caption():
    s = torch.arange(5.0)[:, None].expand(5, 3)
    m = gan.mismatched(s)
    assert m.shape == s.shape
    assert (m[:, 0] != s[:, 0]).all()
    assert sorted(m[:, 0].tolist()) == sorted(s[:, 0].tolist())    # the same captions, re-paired
    with pytest.raises(ValueError, match="at least 2"):
        gan.mismatched(s[:1])


def test_clip_distance_is_zero_for_an_image_at_its_own_embedding(encoder):
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    e = clip.encode_image(encoder.clip, images)
    assert gan.clip_distance(encoder.clip, images, e).item() == pytest.approx(0.0, abs=1e-5)
    assert gan.clip_distance(encoder.clip, images, -e).item() == pytest.approx(2.0, abs=1e-5)


# ----------------------------------------------------------------------------- training


def _batches(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    return [(images[i:i + 8], caps[i:i + 8]) for i in range(0, n, 8)]


def test_training_steps_update_both_players_but_never_clip(encoder, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(encoder)
    m = gan.build_gan(cfg)
    before_g = [p.detach().clone() for p in m.generator.parameters()]
    before_d = [p.detach().clone() for p in m.discriminator.parameters()]
    before_clip = {k: v.clone() for k, v in encoder.clip.state_dict().items()}
    method = gan.GANMethod(m, encoder, cfg)
    h = fit(method, _batches(), steps=4, resume_path=tmp_path / "r.safetensors", plot=False,
            log_every=1, checkpoint_every=2)
    assert h.step == 4 and all(math.isfinite(v) for _, v in h.losses["loss_d"])
    assert "ma_gp" in h.losses and "clip_loss" in h.losses
    assert any(not torch.equal(a, b) for a, b in zip(before_g, m.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, m.discriminator.parameters()))
    assert all(torch.equal(v, encoder.clip.state_dict()[k]) for k, v in before_clip.items())
    assert all(p.requires_grad for p in m.discriminator.parameters())    # switched back on after G's step
    # resume: a finished run is not trained again
    method2 = gan.GANMethod(gan.build_gan(cfg), encoder, cfg)
    h2 = fit(method2, _batches(), steps=4, resume_path=tmp_path / "r.safetensors", plot=False)
    assert h2.stopped_by == "already done" and h2.step == 4


def test_a_nan_mid_training_stops_with_the_divergence_guard(encoder, tmp_path):
    cfg = tiny_config(encoder, ma_gp_weight=0.0)
    method = gan.GANMethod(gan.build_gan(cfg), encoder, cfg)
    bad = _batches()
    bad[1] = (torch.full_like(bad[1][0], float("nan")), bad[1][1])
    with pytest.raises(TrainingDiverged, match="diverged at step 1"):
        fit(method, bad, steps=4, plot=False, resume_path=tmp_path / "r.safetensors", checkpoint_every=1)
    assert (tmp_path / "r.safetensors").exists()       # the last good state is kept


def test_a_checkpoint_of_another_config_is_a_clear_error(encoder, tmp_data):
    cfg = tiny_config(encoder)
    path = checkpoints.checkpoint_path("gan", "smoke")
    checkpoints.save_model(path, gan.build_gan(cfg), config=cfg, profile="smoke")
    other = tiny_config(encoder, g_width=16)
    with pytest.raises(CheckpointMismatchError, match="g_width"):
        checkpoints.load_or_train("gan", config=other, build=gan.build_gan, train=lambda m, r: {},
                                  profile="smoke")


def test_a_gan_beside_another_clip_is_a_clear_error(encoder):
    cfg = tiny_config(encoder)
    torch.manual_seed(1)
    other = clip.FrozenTextEncoder(clip.build_clip(TINY_CLIP))
    with pytest.raises(CheckpointMismatchError, match="another CLIP"):
        conditioning.attach_text_encoder(gan.build_gan(cfg), other, expected=cfg["clip"])


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_for_a_seed(model):
    a = gan.sample(model, CAPTIONS, seed=3)
    b = gan.sample(model, CAPTIONS, seed=3)
    c = gan.sample(model, CAPTIONS, seed=4)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    check_images(a)
    # batching does not change the pictures
    assert torch.allclose(gan.sample(model, CAPTIONS, seed=3, batch_size=3), a, atol=1e-6)
    assert gan.sample(model, "a red circle").shape == (1, 3, 32, 32)


def test_truncation_shrinks_the_noise(model):
    z1, z5 = gan.draw_noise(100, 8, seed=0), gan.draw_noise(100, 8, seed=0, truncation=0.5)
    assert torch.allclose(z5, 0.5 * z1)
    for bad in (0.0, -0.5, 1.5, "1"):
        with pytest.raises(ValueError, match=r"truncation must be in \(0, 1\]"):
            gan.sample(model, CAPTIONS, truncation=bad)


@pytest.mark.parametrize("captions, error, pattern", [
    ([], ValueError, "no captions"),
    (["a red circle", "  "], ValueError, "caption 1 is empty"),
    ([b"a red circle"], TypeError, "bytes"),
    ([3], TypeError, "caption 0 is a int"),
    (["a red circle " * 20], clip.CaptionError, "tokens"),
])
def test_bad_captions_are_clear_errors(model, captions, error, pattern):
    with pytest.raises(error, match=pattern):
        gan.sample(model, captions)


def test_noise_of_the_wrong_shape_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 8\)"):
        gan.sample(model, CAPTIONS[:2], noise=torch.randn(2, 5))


def test_a_model_without_text_encoder_says_how_to_get_one(encoder):
    with pytest.raises(RuntimeError, match="attach_text_encoder"):
        gan.sample(gan.build_gan(tiny_config(encoder)), CAPTIONS)


def test_slerp_endpoints_norm_and_parallel_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = gan.slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=-1), torch.ones(5), atol=1e-6)    # stays on the circle
    assert torch.allclose(path[2], torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-6)
    same = gan.slerp(a, a, torch.tensor([0.3]))
    assert torch.isfinite(same).all() and torch.allclose(same[0], a)


def test_interpolations_have_one_image_per_step(model):
    assert gan.interpolate_noise(model, "a red circle", n=5).shape == (5, 3, 32, 32)
    strip = gan.interpolate_captions(model, "a red circle", "a blue circle", n=4)
    assert strip.shape == (4, 3, 32, 32)


def test_a_twin_trained_for_a_time_is_finished_when_its_time_is_spent(encoder, tmp_data):
    """steps=None: the time budget is the plan (notebook 03's same-time twin), so the run is
    final -- not 'stopped short' and continued on the next call."""
    cfg = tiny_config(encoder, steps=None, max_minutes=0.02)
    calls = []

    def train(model, resume):
        calls.append(1)
        h, _ = gan.train_gan(model, encoder, config=cfg, profile="smoke", resume_path=resume,
                             data=_batches(), plot=False)
        assert h.stopped_by == "time" and h.step > 0
        return {"steps": h.step}

    checkpoints.load_or_train("twin", config=cfg, build=gan.build_gan, train=train, profile="smoke")
    _, card = checkpoints.load_or_train("twin", config=cfg, build=gan.build_gan, train=train, profile="smoke")
    assert calls == [1] and card["source"] == "loaded" and "training" not in card
