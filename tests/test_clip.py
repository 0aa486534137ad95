"""course_lib.clip: loss, shapes, tokenizer errors, measuring, loading, generator interfaces.

Models here are tiny (a few layers of width 32) so the file runs in seconds. The
zero-shot and retrieval code is checked with an *oracle* CLIP whose embeddings
are known exactly (one-hot attribute codes), so its accuracies must be exactly 1
or exactly what the construction implies: a mistake in class indexing or in how
prompts are pooled shows up as a wrong number, not as noise.
"""
import math
import time

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import checkpoints, clip, paths
from course_lib.data import world
from course_lib.profiles import get_profile

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        "text_cfg": {"context_length": 24, "vocab_size": clip.VOCAB_SIZE, "width": 32, "heads": 2,
                     "layers": 2}}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return clip.build_clip(TINY)


def images(n=6, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- loss


def loss_from_scratch(image_features, text_features, logit_scale):
    """The notebook's few lines: symmetric cross-entropy over the similarity matrix."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("scale", [1.0, 14.285, 100.0])
def test_loss_from_scratch_equals_open_clip(scale):
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(32, 16, generator=g), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(32, 16, generator=g), dim=-1)
    ours = loss_from_scratch(img, txt, scale)
    theirs = open_clip.ClipLoss()(img, txt, torch.tensor(scale))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(clip.clip_loss(img, txt, torch.tensor(scale)), theirs, atol=1e-5)


def test_loss_is_low_for_matching_pairs_and_log_n_for_none():
    img = torch.eye(8)
    assert clip.clip_loss(img, img, 100.0) < 1e-3                 # perfect pairs
    same = F.normalize(torch.ones(8, 8), dim=-1)                   # everything alike
    assert math.isclose(float(clip.clip_loss(same, same, 10.0)), math.log(8), rel_tol=1e-5)


def test_loss_on_model_features_equals_open_clip():
    model = tiny_model()
    tokens = clip.tokenize(["a red circle", "a blue star", "a small green square"], 24)
    img, txt, scale = model(images(3), tokens)[:3]
    assert torch.allclose(loss_from_scratch(img, txt, scale), open_clip.ClipLoss()(img, txt, scale),
                          atol=1e-5)


# ----------------------------------------------------------------------------- config, shapes


def test_config_follows_the_profile():
    for name in ("smoke", "cpu", "gpu"):
        p = get_profile(name)
        cfg = clip.clip_config(p)
        assert cfg["embed_dim"] == p.clip.embed_dim
        assert cfg["vision_cfg"]["image_size"] == p.data.image_size
        assert cfg["vision_cfg"]["width"] == p.clip.vision_width
        assert cfg["text_cfg"]["context_length"] == p.clip.context_length
        assert cfg["training"]["steps"] == p.clip.steps


def test_config_rejects_indivisible_heads():
    p = get_profile("smoke").replace(clip={"vision_width": 66, "vision_heads": 4})
    with pytest.raises(ValueError, match="divisible"):
        clip.clip_config(p)


def test_build_gives_an_open_clip_model_with_the_course_preprocessing():
    model = tiny_model()
    assert isinstance(model, open_clip.CLIP)
    assert model.context_length == 24
    assert open_clip.get_model_preprocess_cfg(model)["mean"] == (0.5, 0.5, 0.5)
    counts = clip.parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_embeddings_have_the_right_shape_and_unit_length():
    model = tiny_model()
    e_img = clip.encode_image(model, images(5))
    e_txt = clip.encode_text(model, ["a red circle", "a large blue star at the top"])
    assert e_img.shape == (5, 16) and e_txt.shape == (2, 16)
    assert torch.allclose(e_img.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(e_txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    raw = clip.encode_image(model, images(5), normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(5), atol=1e-3)
    assert torch.allclose(F.normalize(raw, dim=-1), e_img, atol=1e-6)
    assert not e_img.requires_grad                              # no graph unless asked
    assert clip.encode_image(model, images(2), grad=True).requires_grad


def test_uint8_images_and_batching_give_the_same_embeddings():
    model = tiny_model()
    x = images(7)
    pixels = world.to_uint8(x)                                  # (N, H, W, 3) uint8
    a = clip.encode_image(model, world.to_float(pixels))
    b = clip.encode_image(model, pixels, batch_size=3)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        clip.encode_image(model, torch.zeros(2, 1, 32, 32))


def test_similarity_matrix_shape_and_scale():
    model = tiny_model()
    sims = clip.similarity(model, images(4), ["a red circle", "a star", "a box"])
    assert sims.shape == (4, 3) and float(sims.abs().max()) <= 1 + 1e-5
    scaled = clip.similarity(model, images(4), ["a red circle", "a star", "a box"], scaled=True)
    assert torch.allclose(scaled, sims * model.logit_scale.exp(), atol=1e-4)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_caption_is_a_clear_error(bad):
    with pytest.raises(clip.CaptionError, match="empty"):
        clip.tokenize(["a red circle", bad])
    with pytest.raises(clip.CaptionError, match="Caption 0"):
        clip.encode_text(tiny_model(), bad)


def test_no_captions_and_non_strings_are_clear_errors():
    with pytest.raises(clip.CaptionError, match="No captions"):
        clip.tokenize([])
    with pytest.raises(TypeError, match="Caption 1 is a int"):
        clip.tokenize(["a red circle", 3])


def test_caption_longer_than_the_context_says_how_long():
    long = "a small red circle to the left of a large blue square " * 3
    n = clip.count_tokens(long)[0]
    assert n > 24
    with pytest.raises(clip.CaptionError) as err:
        clip.tokenize(["a red circle", long], context_length=24)
    message = str(err.value)
    assert f"Caption 1 has {n} tokens" in message and "at most 24" in message
    assert "Shorten it" in message and "truncate=True" in message
    with pytest.raises(clip.CaptionError, match="at most 24"):
        clip.encode_text(tiny_model(), long)


def test_truncate_cuts_with_a_warning_and_keeps_the_end_marker():
    long = "a small red circle to the left of a large blue square " * 3
    with pytest.warns(UserWarning, match="Cutting over-long captions"):
        ids = clip.tokenize(long, context_length=24, truncate=True)
    assert ids.shape == (1, 24)
    tok = clip.get_tokenizer(24)
    assert ids[0, 0] == tok.sot_token_id and ids[0, -1] == tok.eot_token_id
    with pytest.warns(UserWarning):
        assert clip.encode_text(tiny_model(), long, truncate=True).shape == (1, 16)


def test_a_caption_that_fits_exactly_is_accepted():
    tok = clip.get_tokenizer(24)
    text = "a red circle"
    n = clip.count_tokens(text)[0]
    ids = clip.tokenize(text, context_length=n)                 # exactly the context: fine
    assert ids.shape == (1, n) and ids[0, -1] == tok.eot_token_id
    with pytest.raises(clip.CaptionError):
        clip.tokenize(text, context_length=n - 1)


def test_non_ascii_captions_work():
    text = "a café-coloured círcle 🙂"
    ids = clip.tokenize(text, 24)
    n = clip.count_tokens(text)[0]
    assert int((ids[0] > 0).sum()) == n
    tok = clip.get_tokenizer(24)
    decoded = tok.decode(ids[0, 1:n - 1].tolist()).strip()
    assert decoded.replace(" ", "") == text.lower().replace(" ", "")   # nothing lost
    e = clip.encode_text(tiny_model(), [text, "ein rötlicher Kreis"])
    assert e.shape == (2, 16) and torch.isfinite(e).all()


# ----------------------------------------------------------------------------- an oracle CLIP


class OracleCLIP(nn.Module):
    """A 'CLIP' with known embeddings: one-hot blocks for colour, shape, size, position.

    A caption's embedding has a 1 in the block of every attribute word it names
    (so "a red shape" only fills the colour block); an image carries its attribute
    codes in its first pixels and embeds as its full caption would.
    """
    ORDER = ("color", "shape", "size", "position")

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        self.context_length = 24
        self.visual = nn.Module()
        self.visual.image_size = 32
        self.visual.preprocess_cfg = {"size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3}
        self.tok = clip.get_tokenizer(24)
        self.sizes = [len(world.ATTRIBUTE_VALUES[a]) for a in self.ORDER]
        self.offsets = np.cumsum([0] + self.sizes[:-1])

    def _vector(self, codes):
        v = torch.zeros(sum(self.sizes))
        for a, code in enumerate(codes):
            if code is not None and code >= 0:
                v[self.offsets[a] + code] = 1.0
        return v

    def encode_text(self, tokens):
        out = []
        for row in tokens.tolist():
            text = " " + self.tok.decode([t for t in row[1:] if t not in (0, self.tok.eot_token_id)]) + " "
            codes = []
            for a in self.ORDER:
                words = {"color": world.COLOR_WORDS, "shape": world.SHAPE_WORDS, "size": world.SIZE_WORDS,
                         "position": {k: (k,) for k in world.POSITIONS}}[a]
                hit = [k for k, (name, *_) in enumerate(words.values()) if f" {name} " in text]
                codes.append(hit[0] if hit else None)
            out.append(self._vector(codes))
        return torch.stack(out)

    def encode_image(self, x):
        codes = ((x[:, 0, 0, :4] + 1) * 10).round().long() - 1      # stored as (code + 1) / 10 - 1
        return torch.stack([self._vector(row.tolist()) for row in codes])


def oracle_images(attrs):
    x = torch.zeros(len(attrs["color"]), 3, 32, 32)
    for j, a in enumerate(OracleCLIP.ORDER):
        x[:, 0, 0, j] = (torch.as_tensor(attrs[a]).float() + 1) / 10 - 1
    return x


def sample_attrs(n=120, seed=0, two=0.0):
    return {k: torch.from_numpy(v) for k, v in world.sample_attributes(
        n, np.random.default_rng(seed), "all", two).items()}


def test_prompts_per_strategy():
    one = clip.attribute_prompts("color", "one-word")
    assert [p[0] for p in one] == ["a red shape", "a green shape", "a blue shape", "a yellow shape",
                                   "a purple shape", "a cyan shape"]
    full = clip.attribute_prompts("shape", "ensemble")
    n_templates = len(world.TEMPLATES)                    # 6 colours x 2 sizes x 5 places, every template
    assert len(full) == 5 and all(len(group) == 60 * n_templates for group in full)
    assert all("star" in c for c in full[world.SHAPES.index("star")])
    assert "a small red star on the left" in full[world.SHAPES.index("star")]
    captions, attrs = clip.all_captions()
    assert len(captions) == len(set(captions)) == 300
    with pytest.raises(ValueError, match="attribute"):
        clip.attribute_prompts("relation")
    with pytest.raises(ValueError, match="strategy"):
        clip.attribute_prompts("color", "guess")


def test_zero_shot_is_perfect_for_an_oracle_with_every_strategy():
    model, attrs = OracleCLIP(), sample_attrs()
    result = clip.evaluate_zero_shot(model, oracle_images(attrs), attrs)
    for strategy in clip.PROMPT_STRATEGIES:
        for a in clip.EVAL_ATTRIBUTES:
            assert result.accuracy[strategy][a] == 1.0, (strategy, a)
    conf = result.confusion("color")
    assert conf.shape == (6, 6) and int(conf.sum()) == 120
    assert torch.equal(conf, torch.diag(torch.diag(conf)))
    assert "one-word" in result.table()
    pred = clip.zero_shot_classify(model, oracle_images(attrs), "shape", "ensemble")
    assert torch.equal(pred, attrs["shape"])


def test_caption_bank_averages_the_templates():
    model = tiny_model()
    bank = clip.caption_bank(model)
    captions, _ = clip.all_captions()
    assert bank.shape == (300, 16)
    assert torch.allclose(bank.norm(dim=-1), torch.ones(300), atol=1e-5)
    i = 7
    variants = [world.caption_for(**{a: int(v[i]) for a, v in clip.all_captions()[1].items()}, template=t)
                for t in range(len(world.TEMPLATES))]
    assert variants[0] == captions[i]
    assert torch.allclose(bank[i], F.normalize(clip.encode_text(model, variants).mean(0), dim=-1), atol=1e-5)


def test_unknown_strategy_or_attribute_is_a_clear_error():
    model, attrs = OracleCLIP(), sample_attrs(10)
    with pytest.raises(ValueError, match="strategy"):
        clip.zero_shot_classify(model, oracle_images(attrs), "color", "guess")
    with pytest.raises(ValueError, match="attribute"):
        clip.zero_shot_classify(model, oracle_images(attrs), "relation")


def test_zero_shot_with_wrong_prompts_is_measured_as_wrong():
    model, attrs = OracleCLIP(), sample_attrs()
    # prompts in the wrong order: class k gets the prompt of class k+1
    prompts = [[f"a {world.COLORS[(k + 1) % 6]} shape"] for k in range(6)]
    pred = clip.zero_shot_classify(model, oracle_images(attrs), "color", prompts=prompts)
    assert torch.equal(pred, (attrs["color"] - 1) % 6)


def test_zero_shot_scores_only_single_object_scenes():
    model, attrs = OracleCLIP(), sample_attrs(two=0.5)
    result = clip.evaluate_zero_shot(model, oracle_images(attrs), attrs, strategies=("ensemble",))
    assert len(result.truth["color"]) == int((attrs["position"] >= 0).sum())
    only_two = {k: v[attrs["position"] < 0] for k, v in attrs.items()}
    with pytest.raises(ValueError, match="single-object"):
        clip.evaluate_zero_shot(model, oracle_images(only_two), only_two)


def test_best_strategy_is_the_best_on_average():
    r = clip.ZeroShotResult(accuracy={"one-word": {"color": 0.9, "shape": 0.9},
                                      "ensemble": {"color": 1.0, "shape": 0.85},
                                      "full-caption": {"color": 0.5, "shape": 1.0}})
    assert r.best_strategy() == "ensemble" and r.mean_accuracy("ensemble") == pytest.approx(0.925)


def test_confusion_matrix_counts():
    conf = clip.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_retrieval_recall_exact_values():
    e = torch.eye(4)
    r = clip.retrieval_recall(e, e, ks=(1, 2))
    assert r == {"image->text R@1": 1.0, "image->text R@2": 1.0,
                 "text->image R@1": 1.0, "text->image R@2": 1.0}
    # texts 0 and 1 swapped: those two pairs fail at @1 and succeed at @2
    txt = F.normalize(e[[1, 0, 2, 3]] + 0.1 * e, dim=-1)
    r = clip.retrieval_recall(e, txt, ks=(1, 2))
    assert r["image->text R@1"] == 0.5 and r["image->text R@2"] == 1.0
    assert r["text->image R@1"] == 0.5
    # identical keys: a swap between equal captions is not an error
    assert clip.retrieval_recall(e, txt, ks=(1,), keys=["a", "a", "b", "c"])["image->text R@1"] == 1.0


def test_retrieval_with_the_oracle_on_distinct_captions():
    model, attrs = OracleCLIP(), sample_attrs(300, seed=3)
    caps = [world.canonical_caption({k: int(v[i]) for k, v in attrs.items()}) for i in range(300)]
    first = list({c: i for i, c in reversed(list(enumerate(caps)))}.values())[:50]
    sub = {k: v[first] for k, v in attrs.items()}
    r = clip.retrieval_recall(clip.encode_image(model, oracle_images(sub)),
                              clip.encode_text(model, [caps[i] for i in first]))
    assert r["image->text R@1"] == 1.0 and r["text->image R@1"] == 1.0


def test_swapped_captions_swap_what_they_say():
    attrs = sample_attrs(200, seed=1, two=1.0)
    right, wrong, used = clip.swapped_captions(attrs, "colors")
    assert len(right) == len(wrong) == len(used) > 100
    i = int(used[0])
    row = {k: int(v[i]) for k, v in attrs.items()}
    assert right[0] == world.canonical_caption(row)
    assert wrong[0] == world.canonical_caption({**row, "color": row["color2"], "color2": row["color"]})
    assert sorted(right[0].split()) == sorted(wrong[0].split())          # same words, other binding
    right, wrong, _ = clip.swapped_captions(attrs, "objects")
    assert all(r != w and sorted(r.split()) == sorted(w.split()) for r, w in zip(right, wrong))
    assert len(clip.swapped_captions(sample_attrs(50), "colors")[0]) == 0   # no two-object scenes


def test_caption_preference_with_the_oracle():
    model, attrs = OracleCLIP(), sample_attrs(40)
    rows = [{k: int(v[i]) for k, v in attrs.items()} for i in range(40)]
    right = [world.canonical_caption(r) for r in rows]
    wrong = [world.canonical_caption({**r, "color": (r["color"] + 1) % 6}) for r in rows]
    assert clip.caption_preference(model, oracle_images(attrs), right, wrong) == 1.0
    assert clip.caption_preference(model, oracle_images(attrs), wrong, right) == 0.0
    # a bag of words cannot tell a colour swap: equal scores are not a win
    two = sample_attrs(60, seed=2, two=1.0)
    r, w, used = clip.swapped_captions(two, "colors")
    emb = F.normalize(torch.ones(len(used), 18), dim=-1)
    assert clip.caption_preference(model, None, r, w, image_emb=emb) == 0.0


# ----------------------------------------------------------------------------- training


class ListData:
    """A few fixed batches of (images, captions)."""

    def __init__(self, n_batches=2, batch=8):
        attrs = sample_attrs(n_batches * batch, seed=5)
        pixels = world.render_attributes({k: v.numpy() for k, v in attrs.items()}, 32, seed=5)
        x = world.to_float(pixels)
        caps = [world.canonical_caption({k: int(v[i]) for k, v in attrs.items()})
                for i in range(len(x))]
        self.batches = [(x[i:i + batch], caps[i:i + batch]) for i in range(0, len(x), batch)]

    def __iter__(self):
        return iter(self.batches)


def test_train_clip_lowers_the_loss_and_clamps_the_temperature():
    model = tiny_model()
    p = get_profile("smoke")
    cfg = {**TINY, "training": {**clip.clip_config(p)["training"], "lr": 3e-3, "warmup_steps": 2}}
    with torch.no_grad():
        model.logit_scale.fill_(math.log(99.9))                  # right under the clamp
    history, method = clip.train_clip(model, config=cfg, profile=p, data=ListData(), steps=30,
                                      max_minutes=2.0, plot=False)
    assert history.step == 30 and history.stopped_by == "steps"
    losses = [v for _, v in history.losses["loss"]]
    assert losses[-1] < losses[0] - 0.5
    assert float(model.logit_scale.detach().exp()) <= 100.0 + 1e-3
    assert not model.training


def test_frozen_temperature_stays_frozen():
    model = tiny_model()
    p = get_profile("smoke")
    cfg = {**TINY, "training": clip.clip_config(p)["training"]}
    _, method = clip.train_clip(model, config=cfg, profile=p, data=ListData(1), steps=3, plot=False,
                                freeze_logit_scale=1.0)
    assert float(model.logit_scale.exp()) == pytest.approx(1.0)
    assert all(s == pytest.approx(1.0) for _, s in method.scale_history)


def test_learning_rate_warms_up_then_decays_by_steps_or_time():
    method = clip.ClipMethod(tiny_model(), steps=110, lr=1e-3, warmup_steps=10)
    assert method.learning_rate(0) == pytest.approx(1e-4)
    assert method.learning_rate(9) == pytest.approx(1e-3)
    assert method.learning_rate(60) == pytest.approx(0.5e-3)
    assert method.learning_rate(110) == pytest.approx(0.0, abs=1e-12)
    timed = clip.ClipMethod(tiny_model(), steps=1000, lr=1e-3, warmup_steps=10, max_seconds=10.0)
    timed._t0 = __import__("time").perf_counter() - 10.0           # the budget is spent
    assert timed.learning_rate(20) == pytest.approx(0.0, abs=1e-12)


def test_load_or_train_trains_once_then_loads(tmp_data, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_data / "cache")
    p = get_profile("smoke").replace(
        data={"n_train": 64, "batch_size": 16},
        clip={"embed_dim": 16, "vision_width": 32, "vision_layers": 1, "vision_heads": 2,
              "text_width": 32, "text_layers": 1, "text_heads": 2, "steps": 4, "batch_size": 16,
              "warmup_steps": 1})
    model, card = clip.load_or_train_clip(p, verbose=False, device="cpu")
    assert card["source"] == "trained" and card["metrics"]["steps"] == 4
    again, card2 = clip.load_or_train_clip(p, verbose=False, device="cpu")
    assert card2["source"] == "loaded"
    x = images(3)
    assert torch.allclose(clip.encode_image(model, x), clip.encode_image(again, x), atol=1e-6)


# ----------------------------------------------------------------------------- load_pretrained


def test_load_pretrained_reads_a_course_checkpoint(tmp_path):
    model = tiny_model(seed=3)
    path = checkpoints.save_model(tmp_path / "tiny.safetensors", model, config=TINY)
    loaded = clip.load_pretrained(path, device="cpu")
    caps = ["a red circle", "a small blue star at the top"]
    assert torch.allclose(clip.encode_text(model, caps), clip.encode_text(loaded, caps), atol=1e-6)
    assert torch.allclose(clip.encode_image(model, images(2)), clip.encode_image(loaded, images(2)),
                          atol=1e-6)


def test_load_pretrained_reads_an_open_clip_folder_and_file(tmp_path):
    model = tiny_model(seed=4)
    folder = clip.save_open_clip_dir(model, tmp_path / "tiny-open-clip", config=TINY)
    assert (folder / "open_clip_config.json").is_file()
    caps = ["a large green diamond in the centre"]
    want_t, want_i = clip.encode_text(model, caps), clip.encode_image(model, images(2))
    for source in (folder, folder / "open_clip_model.safetensors", str(folder)):
        loaded = clip.load_pretrained(source, device="cpu")
        assert isinstance(loaded, open_clip.CLIP)
        assert torch.allclose(clip.encode_text(loaded, caps), want_t, atol=1e-6)
        assert torch.allclose(clip.encode_image(loaded, images(2)), want_i, atol=1e-6)
    # open_clip itself reads the folder: the course model is a plain open_clip model
    direct, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    assert torch.allclose(F.normalize(direct.encode_text(clip.tokenize(caps, 24)), dim=-1), want_t,
                          atol=1e-6)
    # without its open_clip_config.json a weights file needs its architecture
    (tmp_path / "bare").mkdir()
    bare = tmp_path / "bare" / "weights.safetensors"
    bare.write_bytes((folder / "open_clip_model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="arch="):
        clip.load_pretrained(bare)
    arch_cfg = tmp_path / "cfgs"
    arch_cfg.mkdir()
    (arch_cfg / "course-test-tiny.json").write_text(
        __import__("json").dumps({k: TINY[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}))
    open_clip.add_model_config(arch_cfg)
    loaded = clip.load_pretrained(bare, arch="course-test-tiny", device="cpu")
    assert torch.allclose(clip.encode_text(loaded, caps), want_t, atol=1e-6)


def test_load_pretrained_missing_paths_and_offline_names(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match="No file or folder"):
        clip.load_pretrained(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        clip.load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a file or folder .* nor an open_clip architecture"):
        clip.load_pretrained("ViT-Q-99")
    monkeypatch.setattr(clip.pretrained, "_cached_weights", lambda *a, **k: None)
    monkeypatch.delenv("COURSE_ALLOW_DOWNLOADS", raising=False)

    def no_network(*a, **k):
        raise AssertionError("the network must not be touched unless downloads are asked for")
    monkeypatch.setattr(clip.pretrained, "_online", no_network)
    with pytest.raises(clip.PretrainedUnavailableError, match="downloads are off"):
        clip.load_pretrained("ViT-B-32", tag="openai")
    assert clip.load_pretrained("ViT-B-32", missing_ok=True) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "COURSE_ALLOW_DOWNLOADS=1" in out
    # asked for, but offline: one clear line too
    monkeypatch.setattr(clip.pretrained, "_online", lambda *a, **k: False)
    with pytest.raises(clip.PretrainedUnavailableError, match="cannot be fetched offline"):
        clip.load_pretrained("ViT-B-32", tag="openai", download=True)
    monkeypatch.setenv("COURSE_ALLOW_DOWNLOADS", "1")
    assert clip.load_pretrained("ViT-B-32", missing_ok=True) is None
    assert "cannot be fetched offline" in capsys.readouterr().out


def test_hf_hub_offline_means_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert clip.pretrained._online() is False


# ----------------------------------------------------------------------------- for the generators


def test_frozen_text_encoder_has_no_grads_and_right_shapes():
    model = tiny_model()
    enc = clip.FrozenTextEncoder(model)
    assert all(not p.requires_grad for p in enc.parameters())
    caps = ["a red circle", "a small blue star to the left of a large green square"]
    out = enc(caps)
    assert out["pooled"].shape == (2, enc.embed_dim) == (2, 16)
    assert out["tokens"].shape == (2, 24, enc.width) == (2, 24, 32)
    assert out["mask"].dtype == torch.bool
    assert out["mask"].sum(1).tolist() == clip.count_tokens(caps)
    assert not any(t.requires_grad for t in out.values())
    assert torch.allclose(out["pooled"], clip.encode_text(model, caps), atol=1e-6)
    hidden, mask = enc.tokens(caps)
    assert torch.equal(mask, out["mask"])
    # a trainable head on top gets gradients; the encoder does not
    head = nn.Linear(32, 1)
    head(hidden).sum().backward()
    assert head.weight.grad is not None
    assert all(p.grad is None for p in enc.parameters())
    enc.train()
    assert not enc.training and not model.training
    with pytest.raises(clip.CaptionError):
        enc([""])


def test_frozen_text_tokens_match_open_clip_hidden_state():
    model = tiny_model()
    enc = clip.FrozenTextEncoder(model)
    ids = clip.tokenize(["a yellow triangle at the bottom"], 24)
    x = model.token_embedding(ids) + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    assert torch.allclose(enc.tokens(["a yellow triangle at the bottom"])[0], x, atol=1e-5)


def test_image_intermediates_shapes_and_grads():
    model = tiny_model()
    x = images(3)
    out = clip.image_intermediates(model, x)
    feats = out["image_intermediates"]
    assert len(feats) == 2 and all(f.shape == (3, 32, 4, 4) for f in feats)
    assert torch.allclose(out["image_features"], clip.encode_image(model, x), atol=1e-5)
    last = clip.image_intermediates(model, x, indices=1)["image_intermediates"]
    assert len(last) == 1 and torch.allclose(last[0], feats[-1], atol=1e-6)
    x = x.clone().requires_grad_(True)
    clip.image_intermediates(model, x, grad=True)["image_intermediates"][0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- item 5: clear errors


@pytest.mark.parametrize("captions, pattern", [
    (None, "not a NoneType"), (3, "not a int"), (b"a red circle", "bytes.*decode"),
    ({"a red circle": 1}, "a dict"), (["a red circle", b"a star"], "Caption 1 is bytes"),
])
def test_captions_of_the_wrong_kind_are_clear_errors(captions, pattern):
    with pytest.raises(TypeError, match=pattern):
        clip.encode_text(tiny_model(), captions)


def test_load_pretrained_errors_name_the_file_and_the_fix(tmp_path):
    model = tiny_model(seed=5)
    folder = clip.save_open_clip_dir(model, tmp_path / "oc", config=TINY)
    weights = (folder / "open_clip_model.safetensors").read_bytes()
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(weights)
    with pytest.raises(ValueError, match=r"Cannot load .*bare\.safetensors.* as open_clip 'ViT-B-32'"):
        clip.load_pretrained(bare, arch="ViT-B-32", device="cpu")          # the wrong architecture
    with pytest.raises(ValueError, match="Unknown open_clip architecture arch='ViT-Q-1'"):
        clip.load_pretrained(bare, arch="ViT-Q-1", device="cpu")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights[:500])
    for arch in (None, "ViT-B-32"):
        with pytest.raises(checkpoints.CheckpointError, match=r"truncated\.safetensors.*truncated"):
            clip.load_pretrained(truncated, arch=arch, device="cpu")
    course = checkpoints.save_model(tmp_path / "course.safetensors", model, config=TINY)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available here"):
            clip.load_pretrained(course, device="cuda")
    with pytest.raises(FileNotFoundError, match="'my_weights' is neither a file or folder"):
        clip.load_pretrained("my_weights")                  # a missing file without a suffix


def test_a_long_text_encoding_says_how_long_and_the_caption_bank_is_kept(monkeypatch, capsys):
    """Item 16: a real ViT-B-32 took 5 silent minutes for the 2,400 prompts of an ensemble."""
    model = tiny_model(seed=6)
    calls = []
    original = model.encode_text

    def slow_encode_text(tokens, *a, **k):
        calls.append(len(tokens))
        time.sleep(0.0002 * len(tokens))           # a big text tower on a slow CPU
        return original(tokens, *a, **k)

    monkeypatch.setattr(model, "encode_text", slow_encode_text)
    monkeypatch.setattr(clip.embed, "ANNOUNCE_AFTER_S", 0.1)
    clip.encode_text(model, ["a red circle"] * 10)
    assert capsys.readouterr().out == ""                                # few captions: no line
    bank = clip.caption_bank(model)
    out = capsys.readouterr().out
    n = len(calls)
    assert "Encoding 2,400 captions" in out and out.count("\n") == 1
    assert clip.caption_bank(model) is bank and len(calls) == n        # kept: no second encoding
    with torch.no_grad():
        next(model.parameters()).add_(0.1)                              # new weights: encoded again
    assert clip.caption_bank(model) is not bank and len(calls) > n
