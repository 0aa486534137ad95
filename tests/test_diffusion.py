"""course_lib.diffusion: the loss against hand computations, add_noise, guidance, the
denoising loop with every scheduler, determinism, training through fit, bad inputs.

A tiny UNet on 8x8 "pixels" and a fake text encoder: every test runs in seconds and needs
no trained checkpoint."""
import math

import fakes
import pytest
import torch

from course_lib import clip, conditioning, diffusion
from course_lib.vae import LatentShapeError

WIDTH, CONTEXT = 16, 12


def FakeTextEncoder():
    return fakes.FakeTextEncoder(embed_dim=8, width=WIDTH, context_length=CONTEXT)


def tiny_config(**changes):
    cfg = dict(space="pixel", patch=2, block_out_channels=[16, 32], layers_per_block=1,
               attention_heads=2, prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2",
               train_timesteps=100, snr_gamma=5.0, caption_dropout=0.2, ema_decay=0.9, n_train=64,
               batch_size=8, lr=1e-3, steps=10, max_minutes=1.0, sampler="ddim", sample_steps=5,
               guidance=2.0, n_eval=8, n_curve=4, stability_seeds=1, stability_steps=2,
               image_size=8, seed=0, data_shape=[3, 8, 8],
               clip={"embed_dim": 8, "width": WIDTH, "context_length": CONTEXT, "fingerprint": "fake"})
    cfg.update(changes)
    return cfg


def tiny_model(**changes):
    torch.manual_seed(0)
    model = diffusion.build_diffusion(tiny_config(**changes))
    conditioning.attach_text_encoder(model, FakeTextEncoder())
    return model.eval()


CAPTIONS = ["a small red circle at the top", "a big blue star on the left"]


# ----------------------------------------------------------------------------- the forward process


def test_add_noise_agrees_with_the_closed_form():
    sched = diffusion.make_scheduler("ddpm", tiny_config())
    x0, eps = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 50, 99])
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    by_hand = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    assert torch.allclose(sched.add_noise(x0, eps, t), by_hand, atol=1e-5)
    # the schedule runs from almost clean to almost pure noise
    assert sched.alphas_cumprod[0] > 0.99 and sched.alphas_cumprod[-1] < 0.01


def test_epsilon_loss_is_the_mean_squared_error_to_the_noise():
    sched = diffusion.make_scheduler("ddpm", tiny_config(prediction_type="epsilon"))
    x0, eps, pred = torch.zeros(2, 1, 1, 2), torch.tensor([[[[1.0, -1.0]]], [[[0.0, 2.0]]]]), torch.zeros(2, 1, 1, 2)
    t = torch.tensor([3, 40])
    loss = diffusion.diffusion_loss(pred, x0, eps, t, sched, prediction_type="epsilon")
    assert abs(float(loss) - (1 + 1 + 0 + 4) / 4) < 1e-6


def test_v_loss_and_min_snr_weights_by_hand():
    sched = diffusion.make_scheduler("ddpm", tiny_config())
    x0, eps, pred = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    t = torch.tensor([1, 30, 90])
    abar = sched.alphas_cumprod[t]
    v = abar.sqrt().view(-1, 1, 1, 1) * eps - (1 - abar).sqrt().view(-1, 1, 1, 1) * x0
    per = (pred - v).pow(2).flatten(1).mean(1)
    plain = diffusion.diffusion_loss(pred, x0, eps, t, sched, prediction_type="v_prediction")
    assert abs(float(plain) - float(per.mean())) < 1e-5
    snr = abar / (1 - abar)
    w = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)
    weighted = diffusion.diffusion_loss(pred, x0, eps, t, sched, prediction_type="v_prediction", snr_gamma=5.0)
    assert abs(float(weighted) - float((w * per).mean())) < 1e-5
    # epsilon: min(snr, gamma) / snr, so noisy steps (snr < gamma) keep weight 1
    w_eps = diffusion.min_snr_weights(sched, t, 5.0, "epsilon")
    assert torch.allclose(w_eps, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert float(w_eps[-1]) == pytest.approx(1.0)


def test_predicted_x0_recovers_the_clean_data_from_the_true_target():
    for kind in ("epsilon", "v_prediction"):
        sched = diffusion.make_scheduler("ddim", tiny_config(prediction_type=kind))
        x0, eps, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([60, 60])
        x_t = sched.add_noise(x0, eps, t)
        target = eps if kind == "epsilon" else sched.get_velocity(x0, eps, t)
        assert torch.allclose(diffusion.predicted_x0(sched, x_t, 60, target), x0, atol=1e-4)


# ----------------------------------------------------------------------------- guidance and the loop


def test_guidance_arithmetic():
    c, u = torch.tensor([3.0]), torch.tensor([1.0])
    assert float(diffusion.guided(c, u, 0.0)) == 1.0          # unconditional
    assert float(diffusion.guided(c, u, 1.0)) == 3.0          # conditional
    assert float(diffusion.guided(c, u, 2.5)) == 1.0 + 2.5 * 2.0


def test_guidance_rescale_brings_the_spread_back_to_the_conditional_one():
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(4, 16, 8, 8, generator=g), torch.randn(4, 16, 8, 8, generator=g)
    plain = diffusion.guided(c, u, 3.0)
    assert torch.equal(diffusion.guided(c, u, 3.0, 0.0), plain)
    full = diffusion.guided(c, u, 3.0, 1.0)
    dims = (1, 2, 3)
    assert torch.allclose(full.std(dims), c.std(dims), atol=1e-5)          # each sample: the conditional spread
    assert torch.allclose(full / full.std(dims, keepdim=True), plain / plain.std(dims, keepdim=True), atol=1e-5)
    assert plain.std(dims).min() > c.std(dims).max()                      # w = 3 inflated it
    half = diffusion.guided(c, u, 3.0, 0.7)
    assert torch.allclose(half, 0.7 * full + 0.3 * plain, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.7", True])
def test_a_guidance_rescale_outside_0_1_is_refused(bad):
    config = {"train_timesteps": 1000}
    with pytest.raises(ValueError, match="guidance_rescale"):
        diffusion.check_sampling(10, 3.0, config, guidance_rescale=bad)


def test_denoise_calls_the_unet_once_per_step_with_both_halves():
    calls = []

    def unet(x, t, **cond):
        calls.append((x.shape[0], cond["encoder_hidden_states"][:, 0, 0].tolist()))
        return torch.zeros_like(x)

    cond = {"encoder_hidden_states": torch.ones(2, 1, 1), "encoder_attention_mask": torch.ones(2, 1, dtype=torch.bool)}
    uncond = {"encoder_hidden_states": torch.zeros(2, 1, 1), "encoder_attention_mask": torch.ones(2, 1, dtype=torch.bool)}
    seen = []
    sched = diffusion.make_scheduler("ddim", tiny_config())
    diffusion.denoise(unet, torch.randn(2, 3, 4, 4), cond, uncond, scheduler=sched, steps=4, guidance=2.0,
                      on_step=lambda i, t, x, x0: seen.append(i))
    assert seen == [0, 1, 2, 3]
    assert len(calls) == 4 and all(n == 4 and states == [1.0, 1.0, 0.0, 0.0] for n, states in calls)
    calls.clear()
    diffusion.denoise(unet, torch.randn(2, 3, 4, 4), cond, None, scheduler=sched, steps=3)
    assert [n for n, _ in calls] == [2, 2, 2]


@pytest.mark.parametrize("name", diffusion.SCHEDULERS)
def test_every_scheduler_samples_images_of_the_convention(name):
    model = tiny_model()
    out = diffusion.sample(model, CAPTIONS, seed=0, steps=3, scheduler=name)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    assert float(out.min()) >= -1 and float(out.max()) <= 1 and torch.isfinite(out).all()


def test_sampling_is_deterministic_for_a_seed_and_differs_across_seeds():
    model = tiny_model()
    for name in diffusion.SCHEDULERS:           # DDPM adds noise at every step: seeded too
        a = diffusion.sample(model, CAPTIONS, seed=3, steps=4, scheduler=name)
        b = diffusion.sample(model, CAPTIONS, seed=3, steps=4, scheduler=name)
        c = diffusion.sample(model, CAPTIONS, seed=4, steps=4, scheduler=name)
        assert torch.equal(a, b), name
        assert not torch.allclose(a, c), name
    # the batch size does not change the images
    assert torch.allclose(diffusion.sample(model, CAPTIONS, seed=3, steps=4, batch_size=1),
                          diffusion.sample(model, CAPTIONS, seed=3, steps=4), atol=1e-5)


def test_ddim_with_1_step_and_50_steps_gives_the_same_shapes():
    model = tiny_model()
    one, z1 = diffusion.sample(model, CAPTIONS, steps=1, scheduler="ddim", return_latents=True)
    fifty, z50 = diffusion.sample(model, CAPTIONS, steps=50, scheduler="ddim", return_latents=True)
    assert one.shape == fifty.shape == (2, 3, 8, 8)
    assert z1.shape == z50.shape == (2, 3, 8, 8)
    assert not torch.allclose(z1, z50)


def test_fold_and_unfold_are_inverse():
    x = torch.randn(2, 4, 16, 16)
    assert diffusion.to_patches(x, 2).shape == (2, 16, 8, 8)
    assert torch.equal(diffusion.from_patches(diffusion.to_patches(x, 2), 2), x)
    assert torch.equal(diffusion.to_patches(x, 1), x)


def test_build_unet_passes_extra_arguments_through_for_unclip():
    unet = diffusion.build_unet(tiny_config(), class_embed_type="projection",
                                projection_class_embeddings_input_dim=8)
    assert unet.config.class_embed_type == "projection"
    out = unet(torch.randn(1, 12, 4, 4), 5, encoder_hidden_states=torch.randn(1, CONTEXT, WIDTH),
               class_labels=torch.randn(1, 8)).sample
    assert out.shape == (1, 12, 4, 4)


# ----------------------------------------------------------------------------- training


def test_drop_conditioning_replaces_exactly_the_dropped_rows_with_the_null_caption():
    model = tiny_model()
    with torch.no_grad():
        model.null_tokens.fill_(7.0)
    method = diffusion.DiffusionMethod(model, FakeTextEncoder(), tiny_config())
    cond = method.conditioning((None, CAPTIONS))
    assert cond["encoder_hidden_states"].shape == (2, CONTEXT, WIDTH)
    out = method.drop_conditioning(cond, torch.tensor([True, False]))
    assert torch.equal(out["encoder_hidden_states"][0], cond["encoder_hidden_states"][0])
    assert torch.equal(out["encoder_hidden_states"][1], torch.full((CONTEXT, WIDTH), 7.0))
    assert out["encoder_attention_mask"][1].all() and not out["encoder_attention_mask"][0].all()


def test_training_through_fit_lowers_the_loss_and_trains_the_null_caption(monkeypatch):
    monkeypatch.setenv("COURSE_PROGRESS", "none")
    model = tiny_model(steps=60, lr=3e-3, ema_decay=0.0)
    x0 = torch.randn(1, 3, 8, 8).clamp(-1, 1).repeat(8, 1, 1, 1)       # one image to learn
    data = [(x0, ["a red circle"] * 8)]
    history, method = diffusion.train_diffusion(model, FakeTextEncoder(), config=model.config,
                                                plot=False, data=data)
    losses = [v for _, v in history.losses["loss"]]
    assert history.step == 60 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert model.null_tokens.abs().sum() > 0           # dropped captions trained it
    assert not model.training


# ----------------------------------------------------------------------------- bad inputs


def test_bad_sampling_arguments_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="guidance"):
        diffusion.sample(model, CAPTIONS, guidance=-1.0)
    with pytest.raises(ValueError, match="steps"):
        diffusion.sample(model, CAPTIONS, steps=0)
    with pytest.raises(ValueError, match="training schedule"):
        diffusion.sample(model, CAPTIONS, steps=101)
    with pytest.raises(diffusion.UnknownSchedulerError, match="ddpm, ddim, dpm"):
        diffusion.sample(model, CAPTIONS, scheduler="euler")
    with pytest.raises(diffusion.UnknownSchedulerError):
        diffusion.make_scheduler("DDIM ", tiny_config())
    with pytest.raises(ValueError, match="empty"):
        diffusion.sample(model, ["a red circle", " "])
    with pytest.raises(clip.CaptionError, match="at most 12"):
        diffusion.sample(model, ["a very small red circle at the top left of the picture on a white ground"])


def test_latents_of_the_wrong_shape_are_a_clear_error():
    model = tiny_model()
    with pytest.raises(LatentShapeError, match=r"\(N, 3, 8, 8\)"):
        diffusion.decode(model, torch.zeros(2, 4, 8, 8))
    with pytest.raises(LatentShapeError):
        diffusion.decode(model, torch.zeros(3, 8, 8))


def test_config_rejects_unknown_settings_and_names():
    with pytest.raises(KeyError, match="unknown setting"):
        diffusion.diffusion_config("smoke", encoder=FakeTextEncoder(), bogus=1)
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion.diffusion_config("smoke", encoder=FakeTextEncoder(), space="pixel", prediction_type="x0")
    with pytest.raises(diffusion.UnknownSchedulerError):
        diffusion.diffusion_config("smoke", encoder=FakeTextEncoder(), space="pixel", sampler="euler")
    cfg = diffusion.diffusion_config("smoke", encoder=FakeTextEncoder(), space="pixel")
    assert cfg["data_shape"] == [3, 32, 32] and cfg["clip"]["fingerprint"] == "fake"

