"""course_lib.checkpoints: round trips, atomic writes, clear errors, load-or-train."""
import json

import pytest
import torch
from torch import nn

from course_lib import checkpoints as ck
from course_lib.profiles import get_profile


def build(config):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(config["d_in"], config["hidden"]), nn.ReLU(),
                         nn.Linear(config["hidden"], 1))


CONFIG = {"d_in": 3, "hidden": 8}


def test_round_trip_keeps_weights_and_card(tmp_path):
    model = build(CONFIG)
    path = ck.save_model(tmp_path / "m.safetensors", model, config=CONFIG, profile="cpu",
                         metrics={"loss": 0.5})
    other = build(CONFIG)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    card = ck.load_model(path, other, config=CONFIG)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert card["config"] == CONFIG and card["profile"] == "cpu" and card["metrics"]["loss"] == 0.5
    assert "torch" in card["versions"] and card["date"]
    # the human-readable copy of the card matches the one inside the file
    assert json.loads(path.with_suffix(".json").read_text())["config"] == CONFIG


def test_mostly_zero_tables_are_stored_without_their_zero_rows(tmp_path):
    """How a shipped CLIP's token table (49,408 rows, ~90 used) fits the 10 MB a reference may take."""
    table = torch.zeros(5_000, 32)
    table[[0, 17, 4_999]] = torch.randn(3, 32)
    dense = torch.randn(300, 300)                    # no zero rows: stored as it is
    packed, shapes = ck.pack_zero_rows({"emb.weight": table, "w": dense})
    assert shapes == {"emb.weight": [5_000, 32]} and packed["emb.weight"].shape == (3, 32)
    assert packed["w"] is dense
    path = ck.save_checkpoint(tmp_path / "p.safetensors", packed, {ck.PACKED_KEY: shapes})
    assert path.stat().st_size < 300 * 300 * 4 + 50_000             # not 5,000 x 32 floats more
    tensors, _ = ck.load_checkpoint(path)
    assert set(tensors) == {"emb.weight", "w"}
    assert torch.equal(tensors["emb.weight"], table) and torch.equal(tensors["w"], dense)
    # a file whose rows do not fit its card is a clear error, not a wrong model
    packed["emb.weight.nonzero_rows"] = packed["emb.weight.nonzero_rows"][:2]
    ck.save_checkpoint(path, packed, {ck.PACKED_KEY: shapes})
    with pytest.raises(ck.CheckpointError, match="zero rows"):
        ck.load_checkpoint(path)


def test_killed_mid_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"w": torch.ones(4)}, {"step": 1})
    import safetensors.torch as st

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)        # a partial write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"w": torch.zeros(4)}, {"step": 2})
    tensors, card = ck.load_checkpoint(path)
    assert card["step"] == 1 and torch.equal(tensors["w"], torch.ones(4))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_names_the_problem(tmp_path, damage):
    path = ck.save_model(tmp_path / "m.safetensors", build(CONFIG), config=CONFIG)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="truncated, corrupt"):
        ck.load_model(path, build(CONFIG))


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(ck.CheckpointError, match="No checkpoint"):
        ck.read_card(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ck.CheckpointError, match="not a course checkpoint"):
        ck.read_card(tmp_path / "plain.safetensors")


def test_config_mismatch_names_the_key(tmp_path):
    path = ck.save_model(tmp_path / "m.safetensors", build(CONFIG), config=CONFIG)
    with pytest.raises(ck.CheckpointMismatchError, match="hidden: checkpoint has 8"):
        ck.load_model(path, build({"d_in": 3, "hidden": 16}), config={"d_in": 3, "hidden": 16})


def test_shape_mismatch_without_config_names_the_tensor(tmp_path):
    path = ck.save_model(tmp_path / "m.safetensors", build(CONFIG))
    with pytest.raises(ck.CheckpointMismatchError, match=r"0.weight: checkpoint \(8, 3\)"):
        ck.load_model(path, build({"d_in": 3, "hidden": 16}))
    with pytest.raises(ck.CheckpointMismatchError, match="missing from the checkpoint"):
        ck.load_model(path, nn.Sequential(build(CONFIG), nn.Linear(1, 1)))


def test_flatten_state_round_trips_an_optimizer():
    model = build(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, tree = ck.flatten_state(opt.state_dict(), "optim")
    json.dumps(tree)  # the non-tensor part is plain JSON
    restored = ck.unflatten_state(json.loads(json.dumps(tree)), tensors)
    opt2 = torch.optim.AdamW(build(CONFIG).parameters(), lr=1e-3)
    opt2.load_state_dict(restored)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][name])


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, model, resume_path):
        self.calls += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"train_minutes": 0.01}


def test_load_or_train_trains_once_then_loads(tmp_data, monkeypatch):
    profile = get_profile("smoke")
    train = Counter()
    model, card = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=profile,
                                   device="cpu")
    assert card["source"] == "trained" and train.calls == 1
    assert (tmp_data / "checkpoints" / "smoke" / "toy.safetensors").exists()

    def no_unpickling(*a, **k):
        raise AssertionError("torch.load (pickle) must never be called")
    monkeypatch.setattr(torch, "load", no_unpickling)
    model2, card2 = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=profile,
                                     device="cpu")
    assert card2["source"] == "loaded" and train.calls == 1
    assert all(torch.all(p == 0.5) for p in model2.parameters())
    _, card3 = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=profile,
                                retrain=True, device="cpu")
    assert card3["source"] == "trained" and train.calls == 2


def test_load_or_train_refuses_to_overwrite_a_different_config(tmp_data):
    profile = get_profile("smoke")
    ck.load_or_train("toy", config=CONFIG, build=build, train=Counter(), profile=profile, device="cpu")
    with pytest.raises(ck.CheckpointMismatchError, match="retrain=True"):
        ck.load_or_train("toy", config={"d_in": 3, "hidden": 4}, build=build, train=Counter(),
                         profile=profile, device="cpu")


def test_shipped_checkpoint_is_used_with_its_own_config(tmp_data):
    shipped_config = {"d_in": 3, "hidden": 32}      # e.g. a bigger model trained on a GPU
    ck.save_model(tmp_data / "shipped" / "toy.safetensors", build(shipped_config),
                  config=shipped_config, profile="gpu")
    train = Counter()
    cpu = get_profile("cpu")
    model, card = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=cpu,
                                   device="cpu")
    assert card["source"] == "shipped" and card["profile"] == "gpu" and train.calls == 0
    assert model[0].out_features == 32
    # the smoke profile (CI) never uses shipped checkpoints: it trains
    _, card = ck.load_or_train("toy", config=CONFIG, build=build, train=train,
                               profile=get_profile("smoke"), device="cpu")
    assert card["source"] == "trained" and train.calls == 1


def test_a_course_reference_never_replaces_the_learners_own_run(tmp_data):
    """A committed course reference stands beside the learner's run (use("reference")):
    in the default mode a cpu learner trains their own, as the notebooks teach."""
    ck.save_model(tmp_data / "shipped" / "toy.safetensors", build(CONFIG), config=CONFIG,
                  profile="cpu-reference", reference={"command": "course_lib.train toy --reference"})
    train = Counter()
    cpu = get_profile("cpu")
    _, card = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=cpu, device="cpu")
    assert card["source"] == "trained" and train.calls == 1
    with ck.use("reference"):
        _, card = ck.load_or_train("toy", config=CONFIG, build=build, train=train, profile=cpu,
                                   device="cpu", verbose=False)
    assert card["source"] == "shipped" and train.calls == 1


def test_bad_names_are_refused(tmp_data):
    for bad in ["", "../x", "a/b", ".hidden"]:
        with pytest.raises(ValueError, match="plain name"):
            ck.checkpoint_path(bad, "cpu")


def test_a_card_that_is_json_but_not_an_object_is_a_clear_error(tmp_path):
    """Item 5."""
    from safetensors.torch import save_file
    path = tmp_path / "list.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={ck.CARD_KEY: "[1, 2]"})
    with pytest.raises(ck.CheckpointError, match="JSON but not an object"):
        ck.read_card(path)


@pytest.mark.parametrize("key", ["config", "metrics"])
def test_a_card_whose_config_is_not_an_object_is_a_clear_error(tmp_path, key):
    from safetensors.torch import save_file
    path = tmp_path / "odd.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={ck.CARD_KEY: json.dumps({key: [1, 2]})})
    with pytest.raises(ck.CheckpointError, match=f"'{key}' that is not an object"):
        ck.read_card(path)


def test_a_retired_config_key_in_an_old_card_is_no_difference():
    """A card written when a notebook-only knob was still part of the config keeps loading;
    any other difference, or a retired key the model asks for, still counts."""
    wanted = {"steps": 10, "lr": 1e-3}
    assert ck.config_diff(wanted, {**wanted, "ablation_steps": 200}) == []
    assert ck.config_diff(wanted, {**wanted, "coord_channels": False}) == []
    assert ck.config_diff(wanted, {**wanted, "unknown_knob": 1})
    assert ck.config_diff({**wanted, "compare_steps": 300}, {**wanted, "compare_steps": 200})


def test_a_shipped_card_with_a_retired_key_loads_and_an_unknown_key_is_refused(tmp_data):
    """The shipped references were exported while coord_channels was still in the config."""
    def strict_build(config):
        assert "coord_channels" not in config, "a retired key must not reach the model's build"
        return build(config)
    path = tmp_data / "shipped" / "toy.safetensors"
    ck.save_model(path, build(CONFIG), config={**CONFIG, "coord_channels": False}, profile="cpu")
    cpu = get_profile("cpu")
    _, card = ck.load_or_train("toy", config=CONFIG, build=strict_build, train=Counter(), profile=cpu,
                               device="cpu", verbose=False)
    assert card["source"] == "shipped"
    ck.save_model(path, build(CONFIG), config={**CONFIG, "unknown_knob": 1}, profile="cpu")
    with pytest.raises(ck.CheckpointMismatchError, match="unknown_knob"):
        ck.load_or_train("toy", config=CONFIG, build=build, train=Counter(), profile=cpu, device="cpu",
                         verbose=False)


def test_notebook_only_settings_stay_out_of_model_configs():
    from course_lib import profiles

    p = profiles.get_profile("smoke")
    for section, keys in profiles.NOTEBOOK_SETTINGS.items():
        sizes = profiles.model_sizes(p, section, {}, "test")
        assert not set(keys) & set(sizes), section
        assert set(keys) <= set(profiles.section_with(p, section, {}, "test")), section
