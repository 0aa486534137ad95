"""course_lib.vae: the ELBO, the reparameterisation, each fusion, the autoencoder, bad inputs.

Tiny models and a tiny fake CLIP text encoder: every test runs in seconds and needs no
trained checkpoint."""
import math

import fakes
import pytest
import torch
from torch import nn

from course_lib import checkpoints, conditioning, vae
from course_lib.images import ImageBatchError
from course_lib.profiles import get_profile

EMBED = 8


def FakeTextEncoder(seed: int = 0):
    return fakes.FakeTextEncoder(embed_dim=EMBED, width=16, context_length=24, seed=seed,
                                 fingerprint=f"fake{seed}")


def tiny(fusion="cvae", **kw):
    torch.manual_seed(0)
    return vae.ClipVAE(fusion=fusion, latent_dim=4, width=8, text_dim=8, embed_dim=EMBED,
                       image_size=16, **kw)


def images(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- the loss


def test_gaussian_kl_matches_the_closed_form_by_hand():
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(0.5, 1) || N(0, 1)) = 0.125; KL(N(-1, 4) || N(0, 1)) = 0.5 * (4 + 1 - 1 - ln 4)
    want = torch.tensor([[0.125, 0.5 * (4 + 1 - 1 - math.log(4.0))]])
    assert torch.allclose(vae.gaussian_kl(mu, logvar), want, atol=1e-6)
    # against a non-standard prior N(1, 2): 0.5 * (ln 2 - ln 1 + (1 + 0.25) / 2 - 1)
    got = vae.gaussian_kl(mu[:, :1], logvar[:, :1], torch.tensor([[1.0]]),
                          torch.tensor([[math.log(2.0)]]))
    assert abs(float(got) - 0.5 * (math.log(2.0) + 1.25 / 2 - 1)) < 1e-6
    assert float(vae.gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).sum()) == 0.0


def test_elbo_against_a_hand_computation():
    x = torch.tensor([[[[0.0, 1.0]]]])           # one image of 2 pixels (1 channel is enough here)
    recon = torch.tensor([[[[0.5, 0.0]]]])
    mu, logvar = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    out = vae.elbo(x, recon, mu, logvar, beta=2.0)
    assert abs(float(out["recon"]) - (0.25 + 1.0)) < 1e-6     # sum of squared errors
    assert abs(float(out["kl"]) - 0.5) < 1e-6                 # 0.5 * mu^2
    assert abs(float(out["loss"]) - (1.25 + 2.0 * 0.5)) < 1e-6


def test_elbo_is_averaged_over_the_batch():
    x = torch.zeros(2, 1, 1, 2)
    recon = torch.stack([torch.zeros(1, 1, 2), torch.ones(1, 1, 2)])
    mu, logvar = torch.zeros(2, 1), torch.zeros(2, 1)
    assert abs(float(vae.elbo(x, recon, mu, logvar)["recon"]) - 1.0) < 1e-6   # (0 + 2) / 2


def test_reparameterisation_passes_gradients_to_mu_and_logvar():
    model = tiny("concat")
    x, t = images(4), FakeTextEncoder().pooled(["a", "b", "c", "d"])
    out = model(x, t)
    out["mu"].retain_grad()
    out["logvar"].retain_grad()
    loss = vae.elbo(x, out["recon"], out["mu"], out["logvar"])["loss"]
    loss.backward()
    assert out["mu"].grad is not None and out["mu"].grad.abs().sum() > 0
    assert out["logvar"].grad is not None and out["logvar"].grad.abs().sum() > 0
    # z = mu + sigma * eps: dz/dmu = 1, so z moves one-for-one with mu
    mu = torch.zeros(3, requires_grad=True)
    logvar = torch.zeros(3, requires_grad=True)
    eps = torch.randn(3)
    z = mu + eps * (0.5 * logvar).exp()
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(3))
    assert torch.allclose(logvar.grad, 0.5 * eps)


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("fusion", vae.FUSIONS)
def test_each_fusion_has_the_right_shapes(fusion):
    model = tiny(fusion)
    x, t = images(3), FakeTextEncoder().pooled(["a", "b", "c"])
    out = model(x, t)
    assert out["recon"].shape == (3, 3, 16, 16)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (3, 4)
    mu_p, logvar_p = model.prior(t)
    assert mu_p.shape == logvar_p.shape == (3, 4)
    if fusion != "cvae":
        assert float(mu_p.abs().sum()) == 0.0 and float(logvar_p.abs().sum()) == 0.0
    assert model.decode(torch.randn(3, 4), t).shape == (3, 3, 16, 16)


@pytest.mark.parametrize("fusion", vae.FUSIONS)
def test_the_decoder_reads_the_text(fusion):
    model = tiny(fusion)
    z = torch.randn(2, 4)
    enc = FakeTextEncoder()
    a = model.decode(z, enc.pooled(["red", "red"]))
    b = model.decode(z, enc.pooled(["blue", "blue"]))
    assert not torch.allclose(a, b)


def test_the_article_fusion_only_sees_the_sum_of_z_and_text():
    """z + clip_proj(t): the decoder cannot tell a change of text from a change of z."""
    model = tiny("add")
    t1, t2 = FakeTextEncoder().pooled(["a red circle", "a blue square"]).chunk(2)
    z = torch.randn(1, 4)
    with torch.no_grad():
        moved = z + model.clip_proj(t1) - model.clip_proj(t2)
        torch.testing.assert_close(model.decode(z, t1), model.decode(moved, t2))


def test_cvae_encoder_needs_the_text():
    with pytest.raises(ValueError, match="q\\(z | x, text\\)"):
        tiny("cvae").encode(images(2))


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(vae.UnknownFusionError, match="add, concat, film, cvae"):
        vae.ClipVAE(fusion="sum")
    with pytest.raises(vae.UnknownFusionError):
        vae.vae_config("smoke", encoder=FakeTextEncoder(), fusion="multiply")


def test_wrong_images_are_clear_errors():
    model = tiny("concat")
    t = FakeTextEncoder().pooled(["a", "b"])
    with pytest.raises(ImageBatchError, match="16x16 are needed"):
        model(images(2, size=32), t)
    with pytest.raises(ImageBatchError, match="\\(N, 3, H, W\\)"):
        model(torch.zeros(2, 1, 16, 16), t)
    with pytest.raises(ImageBatchError, match="x \\* 2 - 1"):
        model(torch.rand(2, 3, 16, 16), t)                     # [0, 1] images


def test_a_latent_of_the_wrong_shape_is_a_clear_error():
    model = tiny("film")
    t = FakeTextEncoder().pooled(["a", "b"])
    with pytest.raises(ValueError, match=r"z must be \(N, 4\)"):
        model.decode(torch.randn(2, 5), t)
    with pytest.raises(ValueError, match="2 latents but 1 captions"):
        model.decode(torch.randn(2, 4), t[:1])
    with pytest.raises(ValueError, match=f"\\(N, {EMBED}\\)"):
        model.decode(torch.randn(2, 4), torch.randn(2, EMBED + 1))


def test_training_lowers_the_loss():
    model = tiny("cvae")
    method = vae.VAEMethod(model, lr=1e-2, steps=60)
    enc = FakeTextEncoder()
    colours = torch.rand(16, 3, 1, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = colours.expand(16, 3, 16, 16)                       # flat colours: learnable in a few steps
    pixels = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    t = enc.pooled([str(i % 4) for i in range(16)])

    class Ctx:
        device = torch.device("cpu")

        def optimize(self, name, loss, max_grad_norm=None):
            opt = method.optimizers[name]
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.schedulers[name].step()

    torch.manual_seed(0)
    first = method.training_step((pixels, t), Ctx())["loss"].item()
    for _ in range(59):
        last = method.training_step((pixels, t), Ctx())["loss"].item()
    assert last < 0.7 * first


# ----------------------------------------------------------------------------- sampling


@pytest.fixture
def attached():
    model = tiny("cvae").eval()
    conditioning.attach_text_encoder(model, FakeTextEncoder())
    return model


def test_sample_follows_the_convention_and_is_deterministic(attached):
    caps = ["a red circle", "a blue square", "a green star"]
    a = vae.sample(attached, caps, seed=3)
    b = vae.sample(attached, caps, seed=3)
    c = vae.sample(attached, caps, seed=4)
    assert a.shape == (3, 3, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    one = vae.sample(attached, "a red circle", seed=3)
    assert one.shape == (1, 3, 16, 16)


def test_sample_keeps_the_noise_when_the_caption_changes(attached):
    noise = torch.randn(2, 4)
    a = vae.sample(attached, ["x", "x"], noise=noise)
    b = vae.sample(attached, ["x", "x"], noise=noise)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 4\)"):
        vae.sample(attached, ["x", "y"], noise=torch.randn(2, 3))


def test_sample_bad_captions_and_missing_encoder(attached):
    with pytest.raises(ValueError, match="no captions"):
        vae.sample(attached, [])
    with pytest.raises(RuntimeError, match="no text encoder"):
        vae.sample(tiny("add"), ["a"])


def test_encode_reconstruct_and_edit(attached):
    x = images(2)
    mu, logvar = vae.encode(attached, x, ["a", "b"])
    assert mu.shape == (2, 4)
    assert vae.reconstruct(attached, x, ["a", "b"]).shape == (2, 3, 16, 16)
    edited = vae.reconstruct(attached, x, ["a", "b"], captions_out=["c", "c"])
    assert edited.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        vae.encode(attached, x, ["a"])


# ----------------------------------------------------------------------------- config and checkpoints


def test_config_records_the_clip_and_rejects_unknown_settings():
    cfg = vae.vae_config("smoke", encoder=FakeTextEncoder(), fusion="add", beta=0.5)
    assert cfg["fusion"] == "add" and cfg["beta"] == 0.5
    assert cfg["clip"]["fingerprint"] == "fake0" and cfg["clip"]["embed_dim"] == EMBED
    with pytest.raises(TypeError, match="unknown setting"):
        vae.vae_config("smoke", encoder=FakeTextEncoder(), latent=3)


def test_load_or_train_vae_trains_then_loads_and_refuses_another_config(tmp_data, monkeypatch):
    monkeypatch.setattr(vae.clip_vae, "text_encoder", lambda *a, **k: FakeTextEncoder())
    p = get_profile("smoke").replace(
        data={"n_train": 64, "image_size": 16},
        vae={"steps": 3, "batch_size": 16, "latent_dim": 4, "width": 8, "text_dim": 8})
    model, card = vae.load_or_train_vae(p, plot=False, verbose=False)
    assert card["source"] == "trained" and card["metrics"]["steps"] == 3
    assert vae.sample(model, ["a small red circle"]).shape == (1, 3, 16, 16)
    again, card2 = vae.load_or_train_vae(p, plot=False, verbose=False)
    assert card2["source"] == "loaded"
    torch.testing.assert_close(vae.sample(again, ["a"], seed=1), vae.sample(model, ["a"], seed=1))
    # the same checkpoint name with another config: a clear error naming the fix
    with pytest.raises(checkpoints.CheckpointMismatchError, match="retrain=True"):
        vae.load_or_train_vae(p.replace(vae={"steps": 3, "batch_size": 16, "latent_dim": 4,
                                             "width": 8, "text_dim": 8, "beta": 0.5}),
                              name="vae", plot=False, verbose=False)
    # a VAE trained on another CLIP
    monkeypatch.setattr(vae.clip_vae, "text_encoder", lambda *a, **k: FakeTextEncoder(seed=1))
    with pytest.raises(checkpoints.CheckpointMismatchError, match="fingerprint"):
        vae.load_or_train_vae(p, plot=False, verbose=False)


# ----------------------------------------------------------------------------- the autoencoder


def tiny_autoencoder(tmp_data=None, levels=2):
    p = get_profile("smoke").replace(
        data={"n_train": 64, "image_size": 16},
        autoencoder={"block_out_channels": (8,) * levels, "steps": 3, "batch_size": 16})
    return p


def test_autoencoder_round_trip_shape_and_scaling_factor(tmp_data):
    p = tiny_autoencoder()
    ae, card = vae.load_or_train_autoencoder(p, plot=False, verbose=False)
    assert card["source"] == "trained"
    assert vae.latent_shape(ae) == (4, 8, 8)
    scale = card["metrics"]["scaling_factor"]
    assert scale > 0 and ae.config.scaling_factor == pytest.approx(scale)
    assert scale == pytest.approx(1 / card["metrics"]["latent_std"])
    x = images(5)
    lat = vae.encode_latents(ae, x)
    assert lat.shape == (5, 4, 8, 8)
    raw = ae.encode(x).latent_dist.mode()
    torch.testing.assert_close(lat, raw * scale)                  # the SD convention
    out = vae.decode_latents(ae, lat)
    assert out.shape == (5, 3, 16, 16) and float(out.abs().max()) <= 1
    torch.testing.assert_close(vae.reconstruct_images(ae, x), out)
    # loaded again: same scaling factor, same latents
    again, card2 = vae.load_or_train_autoencoder(p, plot=False, verbose=False)
    assert card2["source"] == "loaded" and again.config.scaling_factor == pytest.approx(scale)
    torch.testing.assert_close(vae.encode_latents(again, x), lat)
    stats = vae.latent_statistics(ae, x)
    assert len(stats["channel_std"]) == 4


def test_scaling_factor_gives_unit_std():
    class Dist:
        def __init__(self, z):
            self.z = z

        def sample(self, generator=None):
            return self.z

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def encode(self, x):
            return type("O", (), {"latent_dist": Dist(x[:, :1] * 5.0)})()

    x = images(50, size=4)
    s = vae.measure_scaling_factor(Fake(), x)
    assert s["latent_std"] == pytest.approx(float((x[:, :1] * 5).std()), rel=1e-5)
    assert s["scaling_factor"] * s["latent_std"] == pytest.approx(1.0)


def test_autoencoder_bad_inputs(tmp_data):
    p = tiny_autoencoder()
    ae, _ = vae.load_or_train_autoencoder(p, plot=False, verbose=False)
    with pytest.raises(vae.LatentShapeError, match=r"\(N, 4, 8, 8\)"):
        vae.decode_latents(ae, torch.randn(2, 4, 16, 16))
    with pytest.raises(vae.LatentShapeError, match="batch axis"):
        vae.decode_latents(ae, torch.randn(4, 8, 8))
    with pytest.raises(ImageBatchError, match="16x16 are needed"):
        vae.encode_latents(ae, images(2, size=32))
    with pytest.raises(ImageBatchError, match="channels look last"):
        vae.encode_latents(ae, images(2).permute(0, 2, 3, 1).contiguous())
    with pytest.raises(TypeError, match="unknown setting"):
        vae.autoencoder_config(p, channels=3)
    with pytest.raises(checkpoints.CheckpointMismatchError, match="retrain=True"):
        vae.load_or_train_autoencoder(p.replace(autoencoder={"block_out_channels": (8, 8),
                                                             "steps": 3, "batch_size": 16,
                                                             "kl_weight": 0.5}),
                                      name="autoencoder", plot=False, verbose=False)


# ----------------------------------------------------------------------------- measures


def test_high_frequency_energy_falls_with_blur():
    from course_lib import metrics

    x = images(8, size=32)
    sharp = vae.high_frequency_energy(x)
    blurred = vae.high_frequency_energy(metrics.blur(x, 1.0).clamp(-1, 1))
    assert sharp > blurred > 0
    assert vae.high_frequency_energy(torch.zeros(2, 3, 8, 8)) == 0.0
    assert vae.equivalent_blur(sharp * 2, x) == 0.0
    sigma = vae.equivalent_blur(blurred, x)
    assert 0.75 <= sigma <= 1.25
