"""course_lib.galip: the tapped blocks' feature shapes, prompt tokens added and removed, the
frozen CLIP unchanged by training (and not in GALIP's checkpoint), the one image
normalisation path, MA-GP on CLIP features, a CLIP-dependency mismatch error, sampling
determinism.

Everything runs on a tiny untrained CLIP (2 blocks of width 32, a 4×4 grid) and a tiny
GALIP, so the file takes seconds; what GALIP *learns* is measured by notebook 04's self-check.
"""
import math

import open_clip
import pytest
import torch
from fakes import TINY_CLIP

from course_lib import checkpoints, clip, conditioning, galip, gan
from course_lib.checkpoints import CheckpointMismatchError
from course_lib.images import check_images
from course_lib.training import fit

CAPTIONS = ["a red circle", "a large blue square at the top", "a small green star", "a cyan diamond"]


def _tiny_encoder(seed=0, layers=2):
    torch.manual_seed(seed)
    cfg = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "layers": layers}}
    return clip.FrozenTextEncoder(clip.build_clip(cfg))


@pytest.fixture(scope="module")
def encoder():
    return _tiny_encoder()


def tiny_config(encoder, **changes):
    sizes = {"noise_dim": 8, "code_channels": 8, "mate_blocks": 1, "g_width": 8, "d_channels": 8,
             "n_train": 64, "batch_size": 8, "steps": 4, "ma_gp_every": 1, "max_minutes": None}
    return galip.galip_config("smoke", encoder, **{**sizes, **changes})


@pytest.fixture
def model(encoder):
    torch.manual_seed(0)
    return galip.build_galip(tiny_config(encoder), encoder).eval()


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- config


def test_tapped_and_prompted_blocks_keep_the_papers_fractions():
    assert galip.tapped_blocks(12) == [1, 4, 8]                  # GALIP's code: selected = [1, 4, 8]
    assert galip.prompt_blocks(12) == list(range(1, 9))          # GALIP's code: selected = [1..8]
    assert galip.tapped_blocks(4) == [0, 1, 2]                   # the cpu CLIP: all but the last
    assert galip.tapped_blocks(2) == [0, 1]                      # the smoke CLIP: both
    assert galip.prompt_blocks(4) == [1, 2, 3] and galip.prompt_blocks(2) == [1]
    with pytest.raises(ValueError, match="nothing to tap"):
        galip.tapped_blocks(0)


def test_the_config_records_the_clip_and_rejects_unknown_settings(encoder):
    cfg = tiny_config(encoder)
    assert cfg["clip_width"] == 32 and cfg["clip_grid"] == 4 and cfg["taps"] == [0, 1]
    assert cfg["clip"] == conditioning.clip_dependency(encoder)
    assert tiny_config(encoder, prompts=False)["prompt_at"] == []
    with pytest.raises(KeyError, match="unknown setting"):
        tiny_config(encoder, prompt_tokens=3)
    with pytest.raises(ValueError, match="concat"):
        tiny_config(encoder, d_head="attention")


# ----------------------------------------------------------------------------- the discriminator


def test_features_of_the_tapped_blocks_have_the_patch_grid_shape(encoder):
    x = _images(3)
    feats = galip.clip_features(encoder.clip, x, [0, 1])
    assert feats.shape == (3, 2, 32, 4, 4)                       # (B, taps, width, grid, grid)
    # the same numbers as the course's image_intermediates (open_clip's forward_intermediates)
    ref = clip.image_intermediates(encoder.clip, x, indices=[0, 1])["image_intermediates"]
    assert torch.allclose(feats[:, 0], ref[0], atol=1e-6) and torch.allclose(feats[:, 1], ref[1], atol=1e-6)
    # block 0 differs from block 1: really two blocks, not one twice
    assert not torch.allclose(feats[:, 0], feats[:, 1])
    f2, emb = galip.clip_features(encoder.clip, x, [0], embedding=True)
    assert f2.shape == (3, 1, 32, 4, 4) and emb.shape == (3, 16)
    assert torch.allclose(emb, clip.encode_image(encoder.clip, x), atol=1e-5)


def test_mate_d_gates_start_closed_and_the_score_is_one_number_per_pair(model):
    D = model.discriminator
    feats = torch.randn(5, 2, 32, 4, 4)
    other = feats.clone()
    other[:, 1] += 10.0                                          # a later block's map changes...
    assert torch.allclose(D(feats), D(other))                    # ...but its gate starts at 0
    with torch.no_grad():
        D.mate.merge[0].beta.fill_(1.0)
    assert not torch.allclose(D(feats), D(other))
    assert D.score(D(feats), torch.randn(5, 16)).shape == (5,)


# ----------------------------------------------------------------------------- the generator


def test_prompt_tokens_are_added_at_the_prompted_blocks_and_removed_after_each():
    enc = _tiny_encoder(layers=4)
    visual = enc.clip.visual
    seen = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, (i[0].shape[1], o.shape[1])))
             for k, blk in enumerate(visual.transformer.resblocks)]
    feature, prompts = torch.randn(2, 32, 4, 4), torch.randn(2, 2, 32)
    out = galip.bridge(visual, feature, prompts, prompt_at=[1, 3])
    for h in hooks:
        h.remove()
    # 16 patches + the class token; one more in the prompted blocks, in and out
    assert seen == {0: (17, 17), 1: (18, 18), 2: (17, 17), 3: (18, 18)}
    assert out.shape == feature.shape                            # removed again: back to the patch map
    # the prompts matter, and only through the blocks they are appended to
    assert not torch.allclose(out, galip.bridge(visual, feature, prompts + 1.0, prompt_at=[1, 3]))
    assert torch.allclose(galip.bridge(visual, feature, None, prompt_at=[]),
                          galip.bridge(visual, feature, prompts + 1.0, prompt_at=[]))
    with pytest.raises(ValueError, match="need 2 prompts"):
        galip.bridge(visual, feature, prompts[:, :1], prompt_at=[1, 3])


def test_the_bridge_without_prompts_is_the_vit_after_its_patch_convolution(encoder):
    """A bridge feature stands where CLIP's patch embeddings stand: fed conv1(image) and no
    prompts, the bridge gives exactly CLIP's last-block patch tokens of that image."""
    visual, x = encoder.clip.visual, _images(2)
    patches = visual.conv1(clip.to_model_input(encoder.clip, x))
    last = len(visual.transformer.resblocks) - 1
    ref = galip.clip_features(encoder.clip, x, [last])[:, 0]
    assert torch.allclose(galip.bridge(visual, patches, None, []), ref, atol=1e-5)


def test_generator_output_is_a_course_image(model):
    with torch.no_grad():
        x = model.generator(torch.randn(3, 8), torch.randn(3, 16))
    assert x.shape == (3, 3, 32, 32)
    check_images(x)


def test_a_player_without_its_clip_says_how_to_get_one(encoder):
    bare = galip.GALIP(tiny_config(encoder))
    with pytest.raises(RuntimeError, match="load_or_train_galip"):
        bare.generator(torch.randn(1, 8), torch.randn(1, 16))


# ----------------------------------------------------------------------------- the image path


def test_images_reach_clip_through_one_mapping():
    """[-1, 1] -> CLIP's normalisation exactly once. For the course CLIP (mean = std = 0.5)
    that is the identity; for a CLIP with OpenAI's statistics, undoing its normalisation
    gives back (x + 1) / 2, all of [0, 1]. GALIP's code maps twice and squeezes into [0.5, 1]."""
    course = _tiny_encoder().clip
    x = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    assert torch.equal(galip.clip_input(course, x), x)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    course.visual.preprocess_cfg = {"size": 32, "mean": mean, "std": std}
    try:
        y = galip.clip_input(course, x)
    finally:
        course.visual.preprocess_cfg = {}
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    seen = y * s + m                                             # the [0, 1] picture CLIP sees
    assert torch.allclose(seen, (x + 1) / 2, atol=1e-6)
    assert float(seen.min()) == pytest.approx(0.0, abs=1e-6) and float(seen.max()) == pytest.approx(1.0, abs=1e-6)
    paper = ((x * 0.5 + 0.5) + 1) * 0.5                          # GALIP's transf_to_CLIP_input before (-mean)/std
    assert float(paper.min()) == pytest.approx(0.5) and not torch.allclose(paper, seen)


# ----------------------------------------------------------------------------- losses and training


def test_ma_gp_is_taken_on_clip_features_and_the_sentence(model, encoder):
    """The penalty of the training step = k·mean(‖(∇_feats D, ∇_s D)‖^p), per sample
    (checked against a per-sample loop), and it trains D's weights."""
    D = model.discriminator
    feats = galip.clip_features(encoder.clip, _images(3), [0, 1]).requires_grad_(True)
    s = encoder.pooled(CAPTIONS[:3]).requires_grad_(True)
    score = D.score(D(feats), s)
    gp = gan.ma_gradient_penalty(score, (feats, s), k=2.0, p=6.0)
    norms = []
    for i in range(3):
        fi, si = feats[i:i + 1].detach().requires_grad_(True), s[i:i + 1].detach().requires_grad_(True)
        gf, gs = torch.autograd.grad(D.score(D(fi), si).sum(), [fi, si])
        norms.append(math.sqrt(float((gf ** 2).sum() + (gs ** 2).sum())))
    assert gp.item() == pytest.approx(2.0 * sum(n ** 6 for n in norms) / 3, rel=1e-4)
    gp.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def _batches(n=16, seed=0):
    images = _images(n, seed)
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    return [(images[i:i + 8], caps[i:i + 8]) for i in range(0, n, 8)]


def test_training_updates_both_players_never_the_frozen_clip(encoder, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(encoder)
    m = galip.build_galip(cfg, encoder)
    before_g = {k: v.clone() for k, v in m.generator.state_dict().items()}
    before_d = {k: v.clone() for k, v in m.discriminator.state_dict().items()}
    before_clip = {k: v.clone() for k, v in encoder.clip.state_dict().items()}
    h = fit(galip.GALIPMethod(m, encoder, cfg), _batches(), steps=3, plot=False, log_every=1,
            resume_path=tmp_path / "r.safetensors")
    assert h.step == 3 and all(math.isfinite(v) for _, v in h.losses["loss_d"])
    assert {"ma_gp", "clip_loss", "loss_g_adv"} <= set(h.losses)
    assert any(not torch.equal(v, m.generator.state_dict()[k]) for k, v in before_g.items())
    assert any(not torch.equal(v, m.discriminator.state_dict()[k]) for k, v in before_d.items())
    # Mate-G's first layers are updated: G's gradient came back through the frozen CLIP blocks
    assert not torch.equal(before_g["mate.fc.weight"], m.generator.state_dict()["mate.fc.weight"])
    assert all(torch.equal(v, encoder.clip.state_dict()[k]) for k, v in before_clip.items())
    assert not any(p.requires_grad for p in encoder.clip.parameters())
    assert all(p.requires_grad for p in m.discriminator.parameters())   # switched back on after G's step


def test_the_checkpoint_holds_galip_only_and_names_its_clip(encoder, tmp_data):
    cfg = tiny_config(encoder)
    m = galip.build_galip(cfg, encoder)
    clip_names = set(encoder.clip.state_dict())
    own = m.state_dict()
    assert not any(k.split(".", 1)[-1] in clip_names for k in own)       # no CLIP weight inside
    clip_storage = {v.data_ptr() for v in encoder.clip.state_dict().values()}
    assert not any(v.data_ptr() in clip_storage for v in own.values())
    counts = galip.parameter_counts(m, encoder.clip)
    assert counts["trainable"] == sum(p.numel() for p in m.parameters())
    assert counts["frozen CLIP"] == sum(p.numel() for p in encoder.clip.parameters())
    path = checkpoints.checkpoint_path("galip", "smoke")
    checkpoints.save_model(path, m, config=cfg, profile="smoke")
    assert checkpoints.read_card(path)["config"]["clip"]["fingerprint"] == cfg["clip"]["fingerprint"]


def test_galip_beside_another_clip_is_a_clear_error(encoder):
    cfg = tiny_config(encoder)
    other = _tiny_encoder(seed=1)
    with pytest.raises(CheckpointMismatchError, match="another CLIP"):
        galip.build_galip(cfg, other)
    with pytest.raises(CheckpointMismatchError, match="fingerprint"):
        galip.GALIP(cfg).attach_clip(other, expected=cfg["clip"])


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_for_a_seed(model):
    a = galip.sample(model, CAPTIONS, seed=3)
    b = galip.sample(model, CAPTIONS, seed=3)
    c = galip.sample(model, CAPTIONS, seed=4)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    check_images(a)
    assert torch.allclose(galip.sample(model, CAPTIONS, seed=3, batch_size=3), a, atol=1e-6)
    assert galip.interpolate_captions(model, "a red circle", "a blue circle", n=4).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="no captions"):
        galip.sample(model, [])
