"""course_lib.unclip: slerp, the prior's normalisation and mask, the guidance dropout masks,
DDIM inversion -> reconstruction, the text-diff direction, bad inputs.

Tiny models and a fake text encoder (pixel space, 8x8): seconds, no trained checkpoint."""
import math

import fakes
import pytest
import torch
import torch.nn.functional as F

from course_lib import conditioning, unclip
from course_lib.unclip.prior import EmbeddingError

D, WIDTH, CONTEXT = 8, 16, 12
CLIP_DEP = {"embed_dim": D, "width": WIDTH, "context_length": CONTEXT, "fingerprint": "fake"}


def FakeTextEncoder():
    return fakes.FakeTextEncoder(embed_dim=D, width=WIDTH, context_length=CONTEXT)


def prior_cfg(**changes):
    cfg = dict(layers=1, heads=2, head_dim=8, timesteps=100, beta_schedule="squaredcos_cap_v2",
               caption_dropout=0.1, ema_decay=0.0, n_train=64, batch_size=8, lr=1e-3, steps=5,
               max_minutes=1.0, image_size=8, seed=0, profile="smoke", train_timesteps=100,
               prediction_type="sample", clip=CLIP_DEP)
    cfg.update(changes)
    return cfg


def decoder_cfg(**changes):
    cfg = dict(space="pixel", patch=2, block_out_channels=[16, 32], layers_per_block=1,
               attention_heads=2, prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2",
               train_timesteps=100, snr_gamma=5.0, caption_dropout=0.1, z_dropout=0.1,
               text_dropout=0.5, context_tokens=4, ema_decay=0.0, n_train=64, batch_size=8,
               lr=1e-3, steps=5, max_minutes=1.0, image_size=8, seed=0, profile="smoke",
               data_shape=[3, 8, 8], clip=CLIP_DEP)
    cfg.update(changes)
    return cfg


def tiny_prior():
    torch.manual_seed(0)
    model = unclip.build_prior(prior_cfg())
    conditioning.attach_text_encoder(model, FakeTextEncoder())
    return model.eval()


def tiny_decoder(**changes):
    torch.manual_seed(0)
    model = unclip.build_decoder(decoder_cfg(**changes))
    conditioning.attach_text_encoder(model, FakeTextEncoder())
    return model.eval()


# ----------------------------------------------------------------------------- slerp


def test_slerp_matches_a_hand_computation():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = unclip.slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)
    third = unclip.slerp(a, b, 1 / 3)            # 30 degrees along the quarter circle
    assert torch.allclose(third, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]]), atol=1e-6)
    assert torch.allclose(unclip.slerp(a, b, 0.0), a) and torch.allclose(unclip.slerp(a, b, 1.0), b)


def test_slerp_keeps_unit_length_where_a_straight_line_does_not():
    g = torch.Generator().manual_seed(0)
    a, b = (F.normalize(torch.randn(1, 64, generator=g), dim=-1) for _ in range(2))
    path = unclip.slerp(a, b, torch.linspace(0, 1, 9))[:, 0]
    assert torch.allclose(path.norm(dim=-1), torch.ones(9), atol=1e-5)
    assert ((a + b) / 2).norm() < 0.9              # the straight line's middle is short


def test_slerp_nearly_parallel_and_opposite():
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = F.normalize(torch.tensor([[1.0, 1e-7, 0.0]]), dim=-1)
    out = unclip.slerp(a, b, 0.5)
    assert torch.isfinite(out).all() and torch.allclose(out, a, atol=1e-6)
    with pytest.raises(ValueError, match="opposite"):
        unclip.slerp(a, -a, 0.5)


@pytest.mark.parametrize("theta", [-0.1, 1.5, float("nan")])
def test_slerp_theta_outside_0_1_is_an_error(theta):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        unclip.slerp(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), theta)


# ----------------------------------------------------------------------------- the prior


def test_prior_statistics_pitfall_and_fix():
    model = tiny_prior()
    x = torch.randn(4, D)
    # diffusers starts clip_mean/std at zero: every output would map to zero
    assert torch.count_nonzero(model.unstandardise(x)) == 0
    z = torch.randn(256, D) * 3 + 5
    unclip.set_statistics(model, z)
    assert torch.allclose(model.unstandardise(model.standardise(z)), z, atol=1e-4)
    assert model.standardise(z).mean().abs() < 0.1 and (model.standardise(z).std(0) - 1).abs().max() < 0.1


def test_prior_statistics_are_never_trained():
    model = tiny_prior().train()
    unclip.set_statistics(model, torch.randn(64, D) + 2)
    before = model.transformer.clip_mean.clone(), model.transformer.clip_std.clone()
    method = unclip.PriorMethod(model, FakeTextEncoder(), prior_cfg())
    trained = {id(p) for group in method.optimizers["prior"].param_groups for p in group["params"]}
    assert id(model.transformer.clip_mean) not in trained and id(model.transformer.clip_std) not in trained

    class Ctx:
        def optimize(self, name, loss, max_grad_norm=None):
            method.optimizers[name].zero_grad()
            loss.backward()
            method.optimizers[name].step()

    z = F.normalize(torch.randn(8, D), dim=-1)
    method.training_step((z, ["a red circle"] * 8), Ctx())
    assert torch.equal(before[0], model.transformer.clip_mean)
    assert torch.equal(before[1], model.transformer.clip_std)


def test_prior_always_uses_the_causal_mask():
    model = tiny_prior()
    cond = FakeTextEncoder()(["a red circle", "a blue star"])
    x, t = torch.randn(2, D), torch.tensor([5, 50])
    ours = model(x, t, **cond)
    tr = model.transformer
    with_mask = tr(x, t, proj_embedding=cond["pooled"], encoder_hidden_states=model.token_proj(cond["tokens"]),
                   attention_mask=cond["mask"]).predicted_image_embedding
    without = tr(x, t, proj_embedding=cond["pooled"], encoder_hidden_states=model.token_proj(cond["tokens"])
                 ).predicted_image_embedding
    assert torch.allclose(ours, with_mask) and not torch.allclose(ours, without, atol=1e-4)


def test_prior_caption_dropout_mask():
    model = tiny_prior()
    method = unclip.PriorMethod(model, FakeTextEncoder(), prior_cfg())
    cond = method.conditioning(["a red circle", "a blue star", "a green square"])
    keep = torch.tensor([True, False, True])
    out = method.drop_conditioning(cond, keep)
    null = model.null_condition(3)
    for k in ("pooled", "tokens", "mask"):
        assert torch.equal(out[k][0], cond[k][0]) and torch.equal(out[k][2], cond[k][2])
        assert torch.equal(out[k][1], null[k][1])


def test_prior_samples_are_unit_and_seeded():
    model = tiny_prior()
    unclip.set_statistics(model, torch.randn(64, D))
    a = unclip.sample_prior(model, ["a red circle", "a blue star"], seed=3, steps=4, guidance=2.0)
    b = unclip.sample_prior(model, ["a red circle", "a blue star"], seed=3, steps=4, guidance=2.0)
    assert a.shape == (2, D) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)


# ----------------------------------------------------------------------------- the decoder


def test_decoder_dropout_masks():
    model = tiny_decoder()
    cfg = decoder_cfg()
    captions = ["a red circle", "a blue star"]
    z = F.normalize(torch.randn(2, D), dim=-1)
    tokens, mask = FakeTextEncoder().tokens(captions)
    cond = {"z": z, "tokens": tokens, "mask": mask}
    method = unclip.DecoderMethod(model, FakeTextEncoder(), {**cfg, "text_dropout": 0.0})
    kept = method.drop_conditioning(cond, torch.tensor([True, False]))
    scale = D ** 0.5                     # z_i reaches the UNet with entries ~1 (DecoderModel.image_condition)
    assert torch.allclose(kept["class_labels"][0], z[0] * scale)
    assert torch.allclose(kept["class_labels"][1], model.null_z[0] * scale)
    assert torch.equal(kept["encoder_hidden_states"][:, 4:], tokens)       # captions all kept
    method = unclip.DecoderMethod(model, FakeTextEncoder(), {**cfg, "text_dropout": 1.0})
    dropped = method.drop_conditioning(cond, torch.tensor([True, True]))
    null = model.null_condition(2)["encoder_hidden_states"]
    assert torch.equal(dropped["encoder_hidden_states"][:, 4:], null)
    assert dropped["encoder_hidden_states"].shape == (2, 4 + CONTEXT, WIDTH)
    assert dropped["encoder_attention_mask"][:, :4].all()                 # z's tokens always seen


def test_ddim_inversion_reconstructs_on_a_tiny_model():
    model = tiny_decoder()
    image = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    z = F.normalize(torch.randn(1, D), dim=-1)
    noise, _ = unclip.invert(model, image, steps=50, z=z)
    assert noise.shape == (1, 3, 8, 8) and noise.std() > 0.5        # it reached noise
    rec = unclip.decode_embeddings(model, z, noise=noise, guidance=1.0, steps=50)
    err = (rec - image).abs().mean().item()
    other = unclip.decode_embeddings(model, z, seed=1, guidance=1.0, steps=50)
    assert err < 0.05, err
    assert (other - image).abs().mean().item() > 5 * err              # fresh noise does not


def test_decoding_is_seeded_and_checked():
    model = tiny_decoder()
    z = F.normalize(torch.randn(2, D), dim=-1)
    a = unclip.decode_embeddings(model, z, ["a red circle", "a blue star"], seed=0, steps=3, guidance=2.0)
    assert a.shape == (2, 3, 8, 8) and a.abs().max() <= 1
    assert torch.equal(a, unclip.decode_embeddings(model, z, ["a red circle", "a blue star"], seed=0,
                                                   steps=3, guidance=2.0))
    with pytest.raises(EmbeddingError, match="another CLIP"):
        unclip.decode_embeddings(model, torch.randn(2, D + 1), steps=3)
    with pytest.raises(ValueError, match="2 embeddings but 1 captions"):
        unclip.decode_embeddings(model, z, ["a red circle"], steps=3)
    with pytest.raises(ValueError, match="guidance"):
        unclip.decode_embeddings(model, z, steps=3, guidance=-1.0)


def test_text_direction_is_the_unit_difference():
    model = tiny_decoder()
    d = unclip.text_direction(model, "a red circle", "a blue circle")
    t = FakeTextEncoder().pooled(["a red circle", "a blue circle"])
    assert torch.allclose(d[0], F.normalize(t[1] - t[0], dim=-1), atol=1e-6)
    with pytest.raises(ValueError, match="same CLIP embedding"):
        unclip.text_direction(model, "a red circle", "a red circle")


def test_images_of_the_wrong_size_or_mode_are_converted_or_refused():
    from PIL import Image
    pil = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    x = unclip.as_images(pil, 8)
    assert x.shape == (1, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError):
        unclip.as_images(torch.rand(1, 3, 16, 16) * 2 - 1, 8)           # wrong size
    with pytest.raises(ValueError):
        unclip.as_images(torch.rand(1, 3, 8, 8), 8)                     # a [0, 1] batch


def test_decoder_hears_z_as_loudly_as_the_caption():
    """A unit z_i (entries ~1/sqrt(D)) projected as it was gave context tokens ~20x smaller than
    the caption's and the decoder learned to ignore it; its tokens now match the caption's scale
    and its timestep term sees entries ~1."""
    model = tiny_decoder()
    z = F.normalize(torch.randn(3, D), dim=-1)
    tokens, mask = FakeTextEncoder().tokens(["a red circle", "a blue star", "a small green square"])
    with torch.no_grad():
        cond = model.image_condition(z, tokens, mask)
    extra = cond["encoder_hidden_states"][:, :model.k]
    ratio = float(extra.pow(2).mean().sqrt() / tokens.pow(2).mean().sqrt())
    assert 0.3 < ratio < 3.0, f"z_i's tokens are {ratio:.2f}x the caption's in size"
    assert cond["class_labels"].pow(2).mean().sqrt() == pytest.approx(1.0, rel=1e-4)
    assert cond["encoder_attention_mask"][:, :model.k].all()
