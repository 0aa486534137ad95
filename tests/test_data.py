"""Tests of the generated world (course_lib.data.world): attributes, captions,
splits, rendering, the cache and WorldDataset. Small n everywhere: fast on 2 cores."""
from __future__ import annotations

import hashlib
import itertools
import re
import warnings

import numpy as np
import pytest
import torch

from course_lib import paths
from course_lib.data import (
    ATTRIBUTES,
    COLOR_WORDS,
    COLORS,
    HELD_OUT_COMBOS,
    NUM_CLASSES,
    POSITION_WORDS,
    POSITIONS,
    RELATION_TEMPLATES,
    RELATION_WORDS,
    RELATIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    TEMPLATES,
    WorldDataset,
    attribute_names,
    cache_path,
    canonical_caption,
    caption_for,
    chance_levels,
    class_counts,
    load_split,
    make_loader,
    render_split,
    sample_attributes,
    sample_layout,
    splits,
    to_float,
    to_uint8,
    varied_caption,
    world,
)

N = 300


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """No test writes into the real data/cache/."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")


@pytest.fixture(scope="module")
def train_two():
    """A train split with two-object scenes (rendered once for several tests)."""
    return render_split("train", 600, seed=3, two_object_fraction=0.5)


def rows(attributes, n=None):
    n = len(attributes["shape"]) if n is None else n
    return [{key: int(attributes[key][i]) for key in ATTRIBUTES} for i in range(n)]


def pairs_in(attributes):
    """Every (color, shape) pair present, for object 1 and object 2."""
    found = set()
    for row in rows(attributes):
        names = attribute_names(row)
        found.add((names["color"], names["shape"]))
        if names["shape2"] is not None:
            found.add((names["color2"], names["shape2"]))
    return found


# ---------------------------------------------------------------------------
# attributes and generation
# ---------------------------------------------------------------------------

def test_constants():
    assert len(SHAPES) == 5 and len(COLORS) == 6 and len(SIZES) == 2
    assert len(POSITIONS) == 5 and len(RELATIONS) == 4
    assert ATTRIBUTES == ("shape", "color", "size", "position", "shape2", "color2", "size2",
                          "relation")
    for color, shape in HELD_OUT_COMBOS:
        assert color in COLORS and shape in SHAPES
    assert chance_levels()["shape"] == pytest.approx(0.2)
    assert chance_levels()["color"] == pytest.approx(1 / 6)


def test_shapes_dtypes_and_ranges():
    images, attrs = render_split("train", N, seed=0)
    assert images.shape == (N, 32, 32, 3) and images.dtype == np.uint8
    assert set(attrs) == set(ATTRIBUTES)
    for key, values in attrs.items():
        assert values.dtype == np.int64 and values.shape == (N,)
        assert values.max() < NUM_CLASSES[key]
    # single-object scenes only (default): object 2 and relation absent
    for key in ("shape2", "color2", "size2", "relation"):
        assert (attrs[key] == -1).all()
    assert (attrs["position"] >= 0).all()


def test_two_object_scenes(train_two):
    _, attrs = train_two
    two = attrs["relation"] >= 0
    assert 0.35 < two.mean() < 0.65
    assert (attrs["position"][two] == -1).all()            # documented convention
    assert (attrs["size"][two] == 0).all() and (attrs["size2"][two] == 0).all()
    assert (attrs["shape2"][two] >= 0).all() and (attrs["color2"][two] >= 0).all()
    same = (attrs["shape"] == attrs["shape2"]) & (attrs["color"] == attrs["color2"])
    assert not same[two].any()                              # the two objects differ


def test_deterministic_by_seed():
    a_images, a_attrs = render_split("val", N, seed=5)
    b_images, b_attrs = render_split("val", N, seed=5)
    np.testing.assert_array_equal(a_images, b_images)
    for key in ATTRIBUTES:
        np.testing.assert_array_equal(a_attrs[key], b_attrs[key])
    c_images, _ = render_split("val", N, seed=6)
    assert not np.array_equal(a_images, c_images)


def test_prefix_does_not_depend_on_n():
    short, short_attrs = render_split("train", 100, seed=1)
    long, long_attrs = render_split("train", 400, seed=1)
    np.testing.assert_array_equal(short, long[:100])
    np.testing.assert_array_equal(short_attrs["shape"], long_attrs["shape"][:100])


def test_splits_are_disjoint():
    def hashes(split):
        images, _ = render_split(split, N, seed=0, combos="all")
        return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}
    seen = {split: hashes(split) for split in world.SPLITS}
    for a, b in itertools.combinations(world.SPLITS, 2):
        assert not seen[a] & seen[b], f"{a} and {b} share images"
    assert len(seen["train"]) == N                           # no repeats inside a split either


def test_held_out_combos_never_in_train(train_two):
    _, attrs = train_two
    assert not pairs_in(attrs) & set(HELD_OUT_COMBOS)
    for split in ("val", "test"):
        _, attrs = render_split(split, N, seed=0, two_object_fraction=0.5)
        assert not pairs_in(attrs) & set(HELD_OUT_COMBOS)


def test_heldout_split_only_held_out_combos():
    _, attrs = render_split("heldout", N, seed=0, two_object_fraction=0.5)
    assert pairs_in(attrs) == set(HELD_OUT_COMBOS)


def test_combos_all_overrides():
    _, attrs = render_split("train", 600, seed=0, combos="all")
    assert pairs_in(attrs) & set(HELD_OUT_COMBOS)
    assert len(pairs_in(attrs)) == len(SHAPES) * len(COLORS)


def test_class_balance_roughly_uniform():
    _, attrs = render_split("train", 1500, seed=0, combos="all")
    counts = class_counts(attrs)
    for key in ("shape", "color", "size", "position"):
        expected = 1500 / NUM_CLASSES[key]
        assert counts[key].sum() == 1500
        assert (np.abs(counts[key] - expected) < 0.3 * expected).all(), (key, counts[key])
    assert counts["relation"].sum() == 0                    # absent values are not counted


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="split"):
        render_split("training", 10)
    with pytest.raises(ValueError, match="combos"):
        render_split("train", 10, combos="unseen")
    with pytest.raises(ValueError, match="captions"):
        WorldDataset("train", n=10, captions="nice")


def test_empty_split():
    images, attrs = render_split("test", 0)
    assert images.shape == (0, 32, 32, 3) and attrs["shape"].shape == (0,)


# ---------------------------------------------------------------------------
# rendering sanity
# ---------------------------------------------------------------------------

def fixed_attributes(n, **values):
    attrs = {key: np.full(n, -1, dtype=np.int64) for key in ATTRIBUTES}
    for key, value in values.items():
        attrs[key] = np.asarray(value, dtype=np.int64) * np.ones(n, dtype=np.int64)
    return attrs


def layout_and_cover(attrs, image_size=32, seed=0):
    layout = sample_layout(attrs, np.random.default_rng(seed), image_size)
    cover = world.coverage(layout["shape"], layout["x"], layout["y"], layout["radius"],
                           layout["rotation"], image_size)
    return layout, cover


def test_objects_differ_from_background():
    n = 200
    rng = np.random.default_rng(0)
    attrs = sample_attributes(n, rng, combos="all")
    layout, cover = layout_and_cover(attrs)
    images = world.render(layout, 32).astype(np.float32)
    for image, c in zip(images, cover):
        inside = image[c > 0.99].mean(axis=0)
        outside = image[c == 0].mean(axis=0)
        assert np.abs(inside - outside).max() > 40          # clearly visible, in 0..255


def test_objects_have_the_right_colour():
    n = 40
    dominant = {"red": "R", "green": "G", "blue": "B", "yellow": "RG", "cyan": "GB", "purple": "RB"}
    for code, color in enumerate(COLORS):
        attrs = fixed_attributes(n, shape=np.arange(n) % 5, color=code, size=1, position=4)
        layout, cover = layout_and_cover(attrs, seed=code)
        images = world.render(layout, 32).astype(np.float32)
        mean = np.array([image[c > 0.99].mean(axis=0) for image, c in zip(images, cover)]).mean(0)
        high = [i for i, ch in enumerate("RGB") if ch in dominant[color]]
        low = [i for i in range(3) if i not in high]
        assert mean[high].min() > mean[low].max() + 60, (color, mean)


def test_large_objects_cover_more_than_small_ones():
    n = 100
    shapes = np.arange(n) % 5
    _, small = layout_and_cover(fixed_attributes(n, shape=shapes, color=0, size=0, position=4))
    _, large = layout_and_cover(fixed_attributes(n, shape=shapes, color=0, size=1, position=4))
    for code in range(5):
        assert large[shapes == code].sum() > 2 * small[shapes == code].sum(), SHAPES[code]


def centroid(cover):
    ys, xs = np.mgrid[0:cover.shape[-2], 0:cover.shape[-1]]
    total = cover.sum(axis=(-2, -1))
    return (cover * xs).sum(axis=(-2, -1)) / total, (cover * ys).sum(axis=(-2, -1)) / total


def test_positions_and_relations_are_where_they_say():
    n = 50
    x, y = {}, {}
    for code, position in enumerate(POSITIONS):
        _, cover = layout_and_cover(fixed_attributes(n, shape=np.arange(n) % 5, color=1,
                                                     size=np.arange(n) % 2, position=code))
        x[position], y[position] = centroid(cover)
    assert x["left"].max() < x["centre"].min() < x["centre"].max() < x["right"].min()
    assert y["top"].max() < y["centre"].min() < y["centre"].max() < y["bottom"].min()
    for code, relation in enumerate(RELATIONS):
        attrs = fixed_attributes(n, shape=0, color=0, size=0, shape2=1, color2=2, size2=0,
                                 relation=code)
        layout, cover1 = layout_and_cover(attrs)
        cover2 = world.coverage(layout["shape2"], layout["x2"], layout["y2"], layout["radius2"],
                                layout["rotation2"], 32)
        (x1, y1), (x2, y2) = centroid(cover1), centroid(cover2)
        check = {"left of": x1 < x2 - 8, "right of": x1 > x2 + 8,
                 "above": y1 < y2 - 8, "below": y1 > y2 + 8}[relation]
        assert check.all(), relation


def test_objects_never_cut_by_the_border():
    n = 1000
    attrs = sample_attributes(n, np.random.default_rng(1), combos="all", two_object_fraction=0.5)
    layout, cover = layout_and_cover(attrs)
    two = attrs["relation"] >= 0
    cover2 = world.coverage(layout["shape2"][two], layout["x2"][two], layout["y2"][two],
                            layout["radius2"][two], layout["rotation2"][two], 32)
    for c in (cover, cover2):
        border = np.concatenate([c[:, 0], c[:, -1], c[:, :, 0], c[:, :, -1]], axis=1)
        assert border.max() == 0


def test_square_and_diamond_differ():
    """A square's corners are filled where a diamond's are empty (small rotation only)."""
    n, size = 40, 64
    for shape, expected in ((1, 1.0), (3, 0.0)):            # square, diamond
        layout, cover = layout_and_cover(
            fixed_attributes(n, shape=shape, color=0, size=1, position=4), image_size=size)
        # the pixel at 0.6 radius up and left of the centre
        col = np.floor((layout["x"] - 0.6 * layout["radius"]) * size).astype(int)
        row = np.floor((layout["y"] - 0.6 * layout["radius"]) * size).astype(int)
        assert (cover[np.arange(n), row, col] == expected).all(), SHAPES[shape]


def test_image_size_64_works():
    ds = WorldDataset("test", n=20, image_size=64, captions="canonical")
    image, caption, attrs = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert ds.images.shape == (20, 64, 64, 3)


# ---------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------

def mentions(text, phrase):
    return re.search(rf"(^|\W){re.escape(phrase)}($|\W)", text) is not None


def test_canonical_caption_names_every_attribute():
    assert caption_for("circle", "red", "small", "top") == "a small red circle at the top"
    assert caption_for(4, 2, 1, 4) == "a large blue star in the centre"
    assert (caption_for("circle", "red", "small", shape2="square", color2="blue", size2="small",
                        relation="left of")
            == "a small red circle to the left of a small blue square")
    _, attrs = render_split("train", 100, seed=0, two_object_fraction=0.5)
    for row in rows(attrs):
        names = attribute_names(row)
        caption = canonical_caption(row)
        for key in ("shape", "color", "size", "shape2", "color2", "size2"):
            if names[key] is not None:
                assert mentions(caption, names[key]), (caption, key)
        if names["relation"] is not None:
            assert RELATION_WORDS[names["relation"]][0] in caption
        else:
            assert caption.endswith(POSITION_WORDS[names["position"]][0])


def test_synonyms_do_not_overlap():
    for table in (SHAPE_WORDS, COLOR_WORDS, SIZE_WORDS, POSITION_WORDS, RELATION_WORDS):
        words = [w for synonyms in table.values() for w in synonyms]
        assert len(words) == len(set(words))
        assert all(len(synonyms) >= 2 for synonyms in table.values())
    assert len(TEMPLATES) >= 5 and len(RELATION_TEMPLATES) >= 3


def test_varied_captions_mention_the_right_words():
    rng = np.random.default_rng(0)
    _, attrs = render_split("train", 200, seed=0, combos="all")
    for row in rows(attrs):
        names = attribute_names(row)
        caption = varied_caption(row, rng)
        for key, table in (("shape", SHAPE_WORDS), ("color", COLOR_WORDS), ("size", SIZE_WORDS)):
            right = [w for w in table[names[key]] if mentions(caption, w)]
            wrong = [w for value, synonyms in table.items() if value != names[key]
                     for w in synonyms if mentions(caption, w)]
            assert right and not wrong, (caption, key)


def test_caption_variety():
    rng = np.random.default_rng(0)
    row = {"shape": 0, "color": 0, "size": 0, "position": 2}
    captions = {varied_caption(row, rng) for _ in range(300)}
    assert len(captions) >= 60
    ds = WorldDataset("train", n=200, captions="fixed")
    assert len(set(ds.fixed_captions)) >= 150


def test_captions_are_short_ascii():
    rng = np.random.default_rng(0)
    _, attrs = render_split("train", 200, seed=0, two_object_fraction=0.5)
    for row in rows(attrs):
        for caption in (canonical_caption(row), varied_caption(row, rng)):
            assert caption.isascii() and caption == caption.strip() and "  " not in caption
            assert len(caption.split()) <= 16


def test_captions_fit_in_20_clip_tokens():
    tokenizer = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    length = lambda text: len(tokenizer.encode(text))
    longest = {name: {k: max(v, key=length) for k, v in table.items()} for name, table in
               (("shape", SHAPE_WORDS), ("color", COLOR_WORDS), ("size", SIZE_WORDS),
                ("where", POSITION_WORDS), ("pos", world.POSITION_LABELS),
                ("rel", RELATION_WORDS))}
    worst = 0
    for template in TEMPLATES:
        for shape, color, size, position in itertools.product(SHAPES, COLORS, SIZES, POSITIONS):
            text = template.format(shape=longest["shape"][shape], color=longest["color"][color],
                                   size=longest["size"][size], where=longest["where"][position],
                                   pos=longest["pos"][position])
            worst = max(worst, length(text))
    # CLIP's BPE encodes each word on its own: the longest words give the longest caption
    shape = max(longest["shape"].values(), key=length)
    color = max(longest["color"].values(), key=length)
    size = max(longest["size"].values(), key=length)
    for template, relation in itertools.product(RELATION_TEMPLATES, RELATIONS):
        text = template.format(shape=shape, color=color, size=size, shape2=shape, color2=color,
                               size2=size, rel=longest["rel"][relation])
        worst = max(worst, length(text))
    assert worst <= 20


def test_caption_for_options():
    rng = np.random.default_rng(0)
    assert caption_for("star", "green", "small", "left", template=1) == "left: one small green star"
    assert caption_for("circle", "red", "large", "top", rng=rng, synonyms=False).count("red") == 1
    a = caption_for("circle", "red", "large", "top", rng=np.random.default_rng(1))
    b = caption_for("circle", "red", "large", "top", rng=np.random.default_rng(1))
    assert a == b
    # partial prompts for zero-shot classification
    assert caption_for(shape="star") == "a star"
    assert caption_for(shape="star", color="red") == "a red star"
    assert caption_for(color="blue", position="left") == "a blue shape on the left"
    assert caption_for(shape="circle", position="center") == "a circle in the centre"
    # the article follows the word: "an emerald", "an azure"
    for _ in range(50):
        text = caption_for("circle", "green", "small", "top", rng=rng)
        assert not re.search(r"\ba [aeiou]", text), text
    with pytest.raises(ValueError, match="shape"):
        caption_for("hexagon", "red", "small", "top")
    with pytest.raises(ValueError, match="out of range"):
        caption_for(9, 0, 0, 0)
    with pytest.raises(ValueError, match="relation"):
        caption_for("circle", "red", "small", shape2="star")
    assert caption_for(relation="above") == "a shape above a shape"


def test_attribute_names():
    row = {"shape": 4, "color": 4, "size": 1, "position": 0, "shape2": -1, "color2": -1,
           "size2": -1, "relation": -1}
    names = attribute_names(row)
    assert names["shape"] == "star" and names["color"] == "purple" and names["size"] == "large"
    assert names["position"] == "left" and names["relation"] is None
    assert world.is_held_out("purple", "star") and not world.is_held_out(0, 0)


# ---------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------

def test_to_float_and_back():
    images, _ = render_split("val", 8, seed=0)
    floats = to_float(images)
    assert floats.shape == (8, 3, 32, 32) and floats.dtype == torch.float32
    assert floats.min() >= -1 and floats.max() <= 1
    np.testing.assert_array_equal(to_uint8(floats), images)
    np.testing.assert_array_equal(to_uint8(to_float(images[0])), images[0])
    assert to_float(np.array([[[0, 255, 0]]], dtype=np.uint8)).flatten().tolist() == [-1, 1, -1]
    assert to_uint8(torch.full((3, 2, 2), 5.0)).max() == 255          # clipped


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------

def test_cache_round_trip(tmp_path, monkeypatch):
    images, attrs = load_split("val", 100, seed=0, cache_dir=tmp_path)
    path = cache_path("val", 100, seed=0, cache_dir=tmp_path)
    assert path.is_file() and path.suffix == ".npz"
    assert not list(tmp_path.glob("*.tmp"))
    with np.load(path, allow_pickle=False) as archive:     # nothing needs unpickling
        for key in archive.files:
            assert archive[key].dtype != object

    def no_rendering(*args, **kwargs):
        raise AssertionError("should have been read from the cache")
    monkeypatch.setattr(splits, "render_split", no_rendering)     # where load_split looks it up
    again, again_attrs = load_split("val", 100, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(images, again)
    for key in ATTRIBUTES:
        np.testing.assert_array_equal(attrs[key], again_attrs[key])


def test_cache_key_covers_every_parameter(tmp_path, monkeypatch):
    base = dict(split="train", n=100, seed=0, image_size=32, combos=None,
                two_object_fraction=0.0, cache_dir=tmp_path)
    paths_ = {cache_path(**base)}
    for change in ({"split": "val"}, {"n": 101}, {"seed": 1}, {"image_size": 64},
                   {"combos": "all"}, {"two_object_fraction": 0.5}):
        paths_.add(cache_path(**{**base, **change}))
    monkeypatch.setattr(splits, "RENDER_VERSION", splits.RENDER_VERSION + 1)
    paths_.add(cache_path(**base))
    assert len(paths_) == 8


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_params"])
def test_corrupt_cache_is_rendered_again(tmp_path, damage):
    images, _ = load_split("test", 60, seed=2, cache_dir=tmp_path)
    path = cache_path("test", 60, seed=2, cache_dir=tmp_path)
    if damage == "garbage":
        path.write_bytes(b"this is not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        other = cache_path("test", 61, seed=2, cache_dir=tmp_path)
        load_split("test", 61, seed=2, cache_dir=tmp_path)
        path.write_bytes(other.read_bytes())
    with pytest.warns(UserWarning, match="rendering it again"):
        again, _ = load_split("test", 60, seed=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(images, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # repaired: no warning now
        load_split("test", 60, seed=2, cache_dir=tmp_path)


def test_dataset_uses_course_cache_dir():
    WorldDataset("val", n=30)
    assert list((paths.CACHE_DIR).glob("world_val_30_32px_*.npz"))
    WorldDataset("val", n=31, cache=False)
    assert not list((paths.CACHE_DIR).glob("world_val_31_*"))


# ---------------------------------------------------------------------------
# WorldDataset and make_loader
# ---------------------------------------------------------------------------

def test_dataset_items():
    ds = WorldDataset("train", n=50, captions="canonical")
    image, caption, attrs = ds[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1
    assert isinstance(caption, str) and caption == ds.canonical_captions[3]
    assert set(attrs) == set(ATTRIBUTES) and all(type(v) is int for v in attrs.values())
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (50, 32, 32, 3)
    assert ds.attributes["shape"].dtype == torch.int64
    assert len(ds) == 50 and ds[-1][2] == ds.attributes_row(49)
    with pytest.raises(IndexError):
        ds[50]


def test_dataset_sizes_come_from_the_profile():
    ds = WorldDataset("heldout", profile="smoke")
    from course_lib.profiles import get_profile
    assert len(ds) == get_profile("smoke").data.n_heldout
    assert ds.image_size == get_profile("smoke").data.image_size
    assert ds.combos == "heldout"


def test_caption_modes():
    fixed = WorldDataset("train", n=40, captions="fixed")
    assert [fixed[i][1] for i in range(40)] == [fixed[i][1] for i in range(40)]
    random_ = WorldDataset("train", n=40, captions="random")
    torch.manual_seed(0)
    first = [random_[i][1] for i in range(40)]
    second = [random_[i][1] for i in range(40)]
    torch.manual_seed(0)
    assert first == [random_[i][1] for i in range(40)]       # repeatable with a seed
    assert first != second                                   # new captions on each access


def test_batch_without_loader():
    ds = WorldDataset("val", n=40, captions="canonical")
    images, captions, attrs = ds.batch([0, 5, 7])
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert captions == [ds.canonical_captions[i] for i in (0, 5, 7)]
    assert attrs["color"].tolist() == ds.attributes["color"][[0, 5, 7]].tolist()
    torch.testing.assert_close(ds.float_images([5])[0], ds[5][0])
    counts = ds.class_counts()
    assert counts["shape"].sum() == 40


def test_make_loader_collates_and_is_seeded():
    ds = WorldDataset("val", n=40, captions="canonical")
    loader = make_loader(ds, batch_size=16, shuffle=True, seed=1, num_workers=0)
    batches = list(loader)
    assert len(batches) == 2                                 # drop_last
    images, captions, attrs = batches[0]
    assert images.shape == (16, 3, 32, 32) and len(captions) == 16
    assert isinstance(attrs, dict) and attrs["shape"].dtype == torch.int64
    again = next(iter(make_loader(ds, batch_size=16, shuffle=True, seed=1, num_workers=0)))
    assert again[1] == captions
    assert make_loader(ds, profile="smoke").batch_size == 64


def test_batch_loader_gives_whole_shuffled_batches_fixed_by_seed():
    from course_lib.data import batch_loader
    seen = []
    loader = batch_loader(lambda i: (seen.append(type(i)), i)[1], n=10, batch_size=4, seed=1)
    first = [b.tolist() for b in loader]
    assert len(first) == 2 and all(len(b) == 4 for b in first)          # the last 2 are dropped
    assert len(set(sum(first, []))) == 8 and seen[0] is torch.Tensor
    again = [b.tolist() for b in batch_loader(lambda i: i, n=10, batch_size=4, seed=1)]
    assert again == first
    assert [b.tolist() for b in loader] != first                         # a new order each epoch
