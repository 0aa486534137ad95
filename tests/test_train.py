"""The training command (python -m course_lib.train) and the reference checkpoints."""

import pytest
import torch

from course_lib import checkpoints, paths, registry, train
from course_lib.profiles import get_profile, profile_of


def test_unknown_model_is_a_clear_error(capsys):
    assert train.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'nope'" in err and "gan" in err and "clip" in err


def test_bad_numbers_are_refused(capsys):
    with pytest.raises(SystemExit):
        train.main(["gan", "--steps", "0"])
    for bad in ("-1", "0", "nan", "inf", "five"):
        with pytest.raises(SystemExit):
            train.main(["gan", "--minutes", bad])
        assert "--minutes" in capsys.readouterr().err, bad


def test_every_entry_has_a_working_section():
    profile = get_profile("cpu")
    for entry in registry.registered().values():
        if entry.section is not None:
            section = getattr(profile, entry.section)
            assert hasattr(section, "steps") and hasattr(section, "max_minutes"), entry.name
            profile.replace(**{entry.section: dict(entry.reference)})     # valid reference sizes


def test_only_the_asked_models_get_new_steps():
    entries = {e.name: e for e in registry.in_order(["gan"])}
    p = get_profile("smoke")
    assert train._section_changes(entries["gan"], p, steps=7) == {"steps": 7}
    assert train._section_changes(entries["clip"], p) == {}


def test_a_generator_without_training_of_its_own_names_its_parts():
    """unCLIP joins the prior and the decoder: `train unclip` grades them together, and steps
    given to it would be silently lost, so they are an error naming the parts."""
    entry = registry.registered()["unclip"]
    assert not entry.trains and set(entry.after) == {"unclip-prior", "unclip-decoder"}
    with pytest.raises(SystemExit, match="unclip-decoder"):
        train._section_changes(entry, get_profile("smoke"), steps=5)
    assert "unclip" not in {e.name for e in registry.in_order(["all"]) if e.trains}


def test_table_lists_every_column():
    text = train.format_table([{"model": "a", "steps": 3}, {"model": "b", "FD": 12.25}], "smoke")
    assert "model" in text and "FD" in text and "12.2" in text and "—" in text


@pytest.fixture(scope="module")
def shipped_chain(tmp_path_factory):
    """clip -> judge -> gan made as references (a few steps each) into a temporary data/."""
    root = tmp_path_factory.mktemp("ref")
    mp = pytest.MonkeyPatch()
    mp.setattr(paths, "CHECKPOINT_DIR", root / "checkpoints")
    mp.setattr(paths, "SHIPPED_DIR", root / "shipped")
    profile = get_profile("smoke")
    rows = train.train(["clip", "judge", "gan"], profile=profile, steps=40, reference=True,
                       eval_n=64, command="python -m course_lib.train gan --reference",
                       verbose=False)
    yield root, rows, mp
    mp.undo()


def test_references_are_sampling_only_fp16_with_a_card(shipped_chain):
    root, rows, _ = shipped_chain
    for name in ("clip", "judge", "gan"):
        path = root / "shipped" / f"{name}.safetensors"
        tensors, card = checkpoints.load_checkpoint(path)
        floats = [t for t in tensors.values() if t.is_floating_point()]
        assert floats and all(t.dtype == torch.float16 for t in floats), name
        assert not any("optimizer" in k or k.startswith("opt.") for k in tensors), name
        ref = card["reference"]
        for key in ("command", "commit", "device", "steps", "minutes", "metrics"):
            assert ref.get(key) not in (None, ""), (name, key)
        assert path.stat().st_size <= train.MAX_REFERENCE_MB * 1e6
    # the CLIP ships only the token rows the world uses (the others are zero)
    from course_lib.clip import world_token_ids
    clip_card = checkpoints.read_card(root / "shipped" / "clip.safetensors")
    assert list(clip_card[checkpoints.PACKED_KEY].values()) == [[49_408, 64]]
    table = checkpoints.load_checkpoint(root / "shipped" / "clip.safetensors")[0]["token_embedding.weight"]
    used = table.ne(0).any(dim=1).nonzero().flatten().tolist()
    assert set(used) <= set(world_token_ids()) and len(used) > 50
    assert (root / "shipped" / "clip.safetensors").stat().st_size < 0.2 * 49_408 * 64 * 2
    gan_card = checkpoints.read_card(root / "shipped" / "gan.safetensors")
    assert gan_card["reference"]["check"]["n"] == train.CHECK_N
    assert "all-four seen %" in gan_card["reference"]["check"]["metrics"]


def test_a_reference_reproduces_its_card_metrics(shipped_chain, capsys):
    """What every shipped reference must pass (see test_shipped_references_reproduce)."""
    root, _, _ = shipped_chain
    profile = get_profile("smoke").replace(use_shipped_checkpoints=True)
    _reproduce("gan", root / "shipped", profile)
    assert "Loaded the course reference 'gan'" in capsys.readouterr().out


def _reproduce(name, directory, profile, tolerance=5.0):
    entry = registry.registered()[name]
    card = checkpoints.read_card(directory / f"{name}.safetensors")
    check = card["reference"].get("check") or {}
    with checkpoints.use("reference"):
        model, _ = train._unpack(entry.load_or_train(profile))
        if not check:
            return
        numbers = train.summarise(entry, model, {}, profile, n=check["n"], seed=check["seed"],
                                  options=train.check_options(entry, check))
    for key, expected in check["metrics"].items():
        got = numbers[key]
        tol = tolerance if "%" in key else max(0.05 * abs(expected), 1.0)
        assert abs(got - expected) <= tol, f"{name}: {key} {got} vs card {expected} (± {tol})"


def test_own_and_reference_are_selectable(shipped_chain, capsys):
    root, _, _ = shipped_chain
    profile = get_profile("smoke").replace(use_shipped_checkpoints=True)
    entry = registry.registered()["judge"]
    with checkpoints.use("reference"):
        ref = train._unpack(entry.load_or_train(profile))[1]
    assert ref["source"] == "shipped" and "reference" in ref
    with checkpoints.use("own"):
        assert checkpoints.find_checkpoint("judge", profile) is None   # nothing of my own yet
    with pytest.raises(checkpoints.CheckpointError, match="never uses shipped"):
        with checkpoints.use("reference"):
            checkpoints.find_checkpoint("judge", get_profile("smoke"))
    with pytest.raises(checkpoints.CheckpointError, match="course_lib.train vae --reference"):
        with checkpoints.use("reference"):
            checkpoints.find_checkpoint("vae", profile)


def test_a_reference_that_no_longer_fits_names_the_command(shipped_chain):
    root, _, _ = shipped_chain
    path = root / "shipped" / "judge.safetensors"
    tensors, card = checkpoints.load_checkpoint(path)
    saved = path.read_bytes()
    try:
        card["config"]["renamed_field"] = card["config"].pop(next(iter(card["config"])))
        checkpoints.save_checkpoint(path, tensors, card)
        profile = get_profile("smoke").replace(use_shipped_checkpoints=True)
        with pytest.raises(checkpoints.CheckpointMismatchError,
                           match="python -m course_lib.train judge --reference"):
            with checkpoints.use("reference"):
                registry.registered()["judge"].load_or_train(profile)
    finally:
        path.write_bytes(saved)


def test_too_big_a_reference_is_refused(tmp_path):
    entry = registry.Trainable("big", lambda *a, **k: None)
    model = torch.nn.Linear(2_000, 3_000)        # 6M parameters: 12 MB in fp16
    with pytest.raises(ValueError, match="over the 10 MB"):
        train.export_reference(entry, model, {}, get_profile("smoke"), command="x",
                               minutes=1.0, directory=tmp_path)
    assert not list(tmp_path.iterdir())


SHIPPED = sorted(paths.SHIPPED_DIR.glob("*.safetensors"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_references_reproduce(path, monkeypatch):
    """Every reference committed to data/shipped/ still loads with today's code and gives
    its card's numbers: drift is caught the day it happens."""
    # the real folder, also when a module fixture above has pointed paths at a temporary one
    monkeypatch.setattr(paths, "SHIPPED_DIR", path.parent)
    card = checkpoints.read_card(path)
    if "reference" not in card:
        pytest.skip(f"{path.name} is an instructor's bundle, not a course reference")
    profile = profile_of(card["reference"])
    _reproduce(path.stem, path.parent, profile)
    assert path.stat().st_size <= train.MAX_REFERENCE_MB * 1e6


def test_bundle_is_fp16_and_sampling_only(tmp_data):
    import tarfile

    from safetensors.torch import load_file
    model = torch.nn.Linear(4, 3)
    folder = paths.CHECKPOINT_DIR / "smoke"
    checkpoints.save_model(folder / "tiny.safetensors", model, config={"n": 4})
    checkpoints.save_checkpoint(folder / "tiny.resume.safetensors", {"opt.x": torch.ones(3)}, {})
    out = train.make_bundle("smoke", tmp_data / "b.tar.gz")
    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
        tar.extractall(tmp_data / "unpacked")
    assert names == ["tiny.json", "tiny.safetensors"]
    tensors = load_file(str(tmp_data / "unpacked" / "tiny.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert torch.equal(tensors["weight"], model.weight.detach().half())
    with pytest.raises(ValueError, match="No checkpoints"):
        train.make_bundle("cpu", tmp_data / "c.tar.gz")


def test_clip_fingerprint_survives_fp16():
    from course_lib.conditioning import clip_fingerprint
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    before = clip_fingerprint(model)
    half = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    half.load_state_dict({k: v.half() for k, v in model.state_dict().items()})
    assert clip_fingerprint(half) == before
    with torch.no_grad():
        model[0].weight[0, 0] += 0.01
    assert clip_fingerprint(model) != before
