"""The generator contract (course_lib.conditioning), held for every registered generator.

Each generator of ``registry.generators()`` is loaded through its own ``load_or_train``
on a tiny profile (a CLIP, an autoencoder and every generator trained for a few steps in
a temporary data folder, ~1 min in all) and sampled through its registered ``sample``. A
generator added to the table gets these tests without writing any.
"""
import copy

import fakes
import pytest
import torch

from course_lib import checkpoints, clip, conditioning, paths, registry
from course_lib.profiles import get_profile

CAPTIONS = ["a small red circle at the top", "a big blue star on the left", "a green square"]
TINY = fakes.TINY_PROFILE
GENERATORS = sorted(registry.generators())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny profile whose every model trains in seconds, in a temporary data folder."""
    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("CHECKPOINT_DIR", "SHIPPED_DIR", "CACHE_DIR"):
            mp.setattr(paths, name, root / name.lower())
        yield get_profile("smoke").replace(**TINY)


@pytest.fixture(scope="module")
def loaded(world):
    """Every generator, loaded or trained once: ``{name: (entry, model, card)}``."""
    out, entries = {}, registry.generators()
    for name in GENERATORS:
        entry = entries[name]
        result = entry.load_or_train(world, verbose=False)
        assert isinstance(result, tuple) and len(result) == 2, f"{name}: load_or_train must return (model, card)"
        out[name] = (entry, *result)
    return out


@pytest.mark.parametrize("name", GENERATORS)
def test_load_or_train_returns_a_model_and_its_card(loaded, world, name):
    entry, model, card = loaded[name]
    assert isinstance(model, torch.nn.Module)
    assert card["source"] in {"trained", "loaded"}
    assert isinstance(card["config"], dict) and isinstance(card["metrics"], dict)
    # the second call loads what the first saved: the same images
    again, card2 = entry.load_or_train(world, verbose=False)
    assert card2["source"] == "loaded"
    assert torch.equal(entry.sample(again, CAPTIONS, seed=3), entry.sample(model, CAPTIONS, seed=3))


@pytest.mark.parametrize("name", GENERATORS)
def test_images_are_floats_in_range_one_per_caption(loaded, world, name):
    entry, model, _ = loaded[name]
    size = world.data.image_size
    for captions in (CAPTIONS[:1], CAPTIONS):
        images = entry.sample(model, captions, seed=0)
        assert images.shape == (len(captions), 3, size, size) and images.dtype == torch.float32
        assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert entry.sample(model, CAPTIONS[0], seed=0).shape[0] == 1       # one str is one caption


@pytest.mark.parametrize("name", GENERATORS)
def test_the_seed_decides_the_images(loaded, name):
    entry, model, _ = loaded[name]
    a = entry.sample(model, CAPTIONS, seed=0)
    assert torch.equal(a, entry.sample(model, CAPTIONS, seed=0))
    assert not torch.equal(a, entry.sample(model, CAPTIONS, seed=1))


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("seed, error", [(1.5, TypeError), (None, TypeError), (True, TypeError), ("0", TypeError),
                                         (-1, ValueError), (2 ** 63, ValueError)])
def test_a_seed_that_is_not_a_whole_number_in_range_is_refused(loaded, name, seed, error):
    entry, model, _ = loaded[name]
    with pytest.raises(error, match=r"seed.*\[0, 2\*\*63\)"):
        entry.sample(model, CAPTIONS, seed=seed)


@pytest.mark.parametrize("name", GENERATORS)
def test_numpy_and_torch_seeds_work_as_python_ones_up_to_the_largest(loaded, name):
    import numpy as np
    entry, model, _ = loaded[name]
    a = entry.sample(model, CAPTIONS, seed=3)
    assert torch.equal(a, entry.sample(model, CAPTIONS, seed=np.int64(3)))
    assert torch.equal(a, entry.sample(model, CAPTIONS, seed=torch.tensor(3)))
    entry.sample(model, CAPTIONS, seed=2 ** 63 - 1)            # a derived seed (seed + 1) wraps inside the range


@pytest.mark.parametrize("name", GENERATORS)
def test_numpy_numbers_are_accepted_where_python_numbers_are(loaded, name):
    import inspect

    import numpy as np
    entry, model, _ = loaded[name]
    takes = inspect.signature(entry.sample).parameters
    if "steps" not in takes:
        pytest.skip(f"{name} has no steps or guidance")
    plain = entry.sample(model, CAPTIONS, seed=0, steps=2, guidance=3.0)
    assert torch.equal(plain, entry.sample(model, CAPTIONS, seed=0, steps=np.int64(2), guidance=np.float32(3)))
    assert torch.equal(plain, entry.sample(model, CAPTIONS, seed=0, steps=torch.tensor(2), guidance=torch.tensor(3.0)))


@pytest.mark.parametrize("name", GENERATORS)
def test_noise_of_the_wrong_shape_names_the_right_one(loaded, name):
    entry, model, _ = loaded[name]
    with pytest.raises(conditioning.NoiseShapeError, match=r"noise must have shape \(3, "):
        entry.sample(model, CAPTIONS, seed=0, noise=torch.zeros(3, 1))


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("captions, error, pattern", [
    ([], ValueError, "no captions"),
    (["a red circle", ""], ValueError, "caption 1 is empty"),
    (["a red circle", "\u200b\u200b"], ValueError, "caption 1 is empty"),      # zero-width spaces only
    (["\ufeff \u2060"], ValueError, "caption 0 is empty"),
    (["a red circle", 3], TypeError, "caption 1 is a int"),
    ({"a": 1}, TypeError, "list of strings"),
    (["a red circle " * 20], clip.CaptionError, "tokens"),
])
def test_bad_captions_are_the_courses_caption_errors(loaded, name, captions, error, pattern):
    entry, model, _ = loaded[name]
    with pytest.raises(error, match=pattern):
        entry.sample(model, captions, seed=0)


@pytest.mark.parametrize("name", GENERATORS)
def test_a_model_without_its_clip_says_how_to_attach_one(loaded, name):
    entry, model, _ = loaded[name]
    bare = copy.deepcopy(model)
    for part in bare.modules():
        if "_text_encoder" in vars(part):
            object.__delattr__(part, "_text_encoder")
    with pytest.raises(RuntimeError, match="attach_text_encoder"):
        entry.sample(bare, CAPTIONS, seed=0)


@pytest.mark.parametrize("name", GENERATORS)
def test_a_generator_beside_another_clip_is_refused_by_fingerprint(loaded, world, name, monkeypatch):
    entry, _, _ = loaded[name]
    mine = conditioning.text_encoder(world, verbose=False)
    key = next(k for k, v in conditioning._ENCODERS.items() if v is mine)
    torch.manual_seed(123)
    other_clip = clip.build_clip(clip.clip_config(world)).to(mine.clip.logit_scale.device).eval()
    other = clip.FrozenTextEncoder(other_clip)
    other.fingerprint = conditioning.clip_fingerprint(other_clip)
    assert other.fingerprint != mine.fingerprint
    monkeypatch.setitem(conditioning._ENCODERS, key, other)     # as if the CLIP had been retrained
    with pytest.raises(checkpoints.CheckpointMismatchError, match="fingerprint"):
        entry.load_or_train(world, verbose=False)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "1"])
def test_the_vae_refuses_a_temperature_outside_its_range(loaded, bad):
    entry, model, _ = loaded["vae"]
    with pytest.raises(ValueError, match=r"temperature=.*finite number >= 0"):
        entry.sample(model, CAPTIONS, seed=0, temperature=bad)



@pytest.mark.parametrize("options, error, pattern", [
    ({"guidance": 1e6}, ValueError, r"guidance=1000000.0: .*\[0, 100\]"),
    ({"steps": 0}, ValueError, "steps=0"),
    ({"steps": -3}, ValueError, "steps=-3"),
    ({"batch_size": 0}, ValueError, "batch_size=0: must be at least 1"),
    ({"batch_size": 1.5}, TypeError, "batch_size=1.5"),
])
def test_nonsense_diffusion_options_are_refused_before_any_work(loaded, options, error, pattern):
    entry, model, _ = loaded["diffusion"]
    with pytest.raises(error, match=pattern):
        entry.sample(model, CAPTIONS, seed=0, **options)


def test_unclip_edits_refuse_counts_below_their_range(loaded):
    from course_lib import unclip
    _, model, _ = loaded["unclip"]
    image = torch.zeros(1, 3, model.decoder.config["image_size"], model.decoder.config["image_size"])
    with pytest.raises(ValueError, match=r"variations\(n\)=0"):
        unclip.variations(model, image, n=0)
    with pytest.raises(ValueError, match=r"interpolate\(n\)=1: must be at least 2"):
        unclip.interpolate(model, image, image, n=1)
    with pytest.raises(ValueError, match=r"invert\(steps\)=-2"):
        unclip.invert(model, image, steps=-2)


def test_gan_embeddings_of_another_width_name_the_width(loaded):
    from course_lib import gan
    _, model, _ = loaded["gan"]
    dim = conditioning.get_text_encoder(model).embed_dim
    with pytest.raises(conditioning.EmbeddingError, match=rf"shape \(N, {dim}\)"):
        gan.sample(model, None, seed=0, embeddings=torch.zeros(2, dim + 3))
    with pytest.raises(conditioning.EmbeddingError, match="NaN"):
        gan.sample(model, None, seed=0, embeddings=torch.full((2, dim), float("nan")))
