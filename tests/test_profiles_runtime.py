"""course_lib.profiles and course_lib.runtime."""
import time

import pytest
import torch

from course_lib import profiles, runtime


def test_three_profiles_grow_from_smoke_to_gpu():
    smoke, cpu, gpu = (profiles.get_profile(n) for n in ("smoke", "cpu", "gpu"))
    assert smoke.data.n_train < cpu.data.n_train <= gpu.data.n_train
    assert smoke.clip.steps < cpu.clip.steps < gpu.clip.steps
    assert smoke.judge.steps < cpu.judge.steps <= gpu.judge.steps
    assert not smoke.use_shipped_checkpoints          # CI always trains
    assert "clip" in cpu.describe() and "image_size" in cpu.describe()


@pytest.mark.parametrize("env,expected", [({"COURSE_PROFILE": "cpu", "CI": "true"}, "cpu"),
                                          ({"COURSE_PROFILE": " GPU "}, "gpu"),
                                          ({"CI": "true"}, "smoke"),
                                          ({"CI": "false"}, "cpu"),
                                          ({}, "cpu")])
def test_switch_and_detection(monkeypatch, env, expected):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert profiles.get_profile().name == expected


def test_cuda_is_detected_as_gpu(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profiles.detect_profile_name() == "gpu"


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(profiles.UnknownProfileError, match="smoke, cpu, gpu"):
        profiles.get_profile()


def test_replace_changes_one_section_and_is_json():
    import json
    p = profiles.get_profile("cpu").replace(clip={"steps": 7}, seed=3)
    assert p.clip.steps == 7 and p.seed == 3
    assert p.clip.batch_size == profiles.get_profile("cpu").clip.batch_size
    json.dumps(p.as_dict())


def test_device_choice_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert runtime.get_device().type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"
    if not torch.cuda.is_available():
        monkeypatch.setenv("COURSE_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.get_device()


def test_seeding_makes_cpu_runs_repeatable():
    runtime.seed_everything(5)
    a = torch.randn(3), torch.nn.Linear(2, 2).weight.clone()
    runtime.seed_everything(5)
    b = torch.randn(3), torch.nn.Linear(2, 2).weight.clone()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mixed_precision_choice(monkeypatch):
    monkeypatch.delenv("COURSE_MIXED_PRECISION", raising=False)
    assert runtime.mixed_precision_for("cpu") == "no"
    monkeypatch.setenv("COURSE_MIXED_PRECISION", "fp8")
    with pytest.raises(ValueError, match="no, fp16, bf16"):
        runtime.mixed_precision_for("cpu")


def test_fp16_on_a_cpu_is_refused_not_reported_as_active(monkeypatch):
    """Item 4: accelerate trains in fp32 when asked for fp16 on a CPU; say so instead."""
    monkeypatch.setenv("COURSE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="fp16 needs a GPU.*bf16"):
        runtime.mixed_precision_for("cpu")
    assert runtime.mixed_precision_for("mps") == "fp16"
    monkeypatch.setenv("COURSE_MIXED_PRECISION", "bf16")
    assert runtime.mixed_precision_for("cpu") == "bf16"       # CPU autocast runs bf16


def test_timer_measures_a_sleep():
    with runtime.Timer() as t:
        time.sleep(0.2)
    assert 0.18 < t.seconds < 0.4


def test_workers_are_zero_where_spawn_breaks_notebooks(monkeypatch):
    import platform
    monkeypatch.setattr(platform, "system", lambda: "Windows")
    assert runtime.default_num_workers(4) == 0
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert runtime.default_num_workers(1) == 1


def test_get_profile_passes_a_profile_through():
    p = profiles.get_profile("cpu").replace(seed=9)
    assert profiles.get_profile(p) is p


# ----------------------------------------------------------------------------- item 5: clear errors


@pytest.mark.parametrize("changes, error, pattern", [
    ({"clip": {"batchsize": 3}}, ValueError,
     r"profile.clip has no field 'batchsize' \(did you mean 'batch_size'"),
    ({"clipp": {"steps": 3}}, ValueError, "profile has no field 'clipp'"),
    ({"clip": {"steps": -5}}, ValueError, "profile.clip.steps must not be negative"),
    ({"clip": {"batch_size": 0}}, ValueError, "batch_size must be above 0"),
    ({"clip": "small"}, TypeError, "profile.clip is a section"),
    ({"clip": {"lr": "1e-3"}}, TypeError, "profile.clip.lr must be a float"),
    ({"seed": 1.5}, TypeError, "profile.seed must be an int"),
    ({"data": {"two_object_fraction": 1.5}}, ValueError, "between 0 and 1"),
])
def test_profile_replace_refuses_what_it_cannot_use(changes, error, pattern):
    with pytest.raises(error, match=pattern):
        profiles.get_profile("smoke").replace(**changes)


def test_every_built_in_profile_passes_the_replace_checks():
    import dataclasses
    for p in profiles.PROFILES.values():
        for f in dataclasses.fields(p):
            value = getattr(p, f.name)
            p.replace(**{f.name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value})
    assert profiles.get_profile("smoke").replace(clip={"max_minutes": None}).clip.max_minutes is None


def test_get_profile_of_a_non_name_is_a_clear_error():
    with pytest.raises(TypeError, match="expected a profile name"):
        profiles.get_profile(3)


@pytest.mark.parametrize("name, hint", [("gpu", "did you mean 'cuda'"), ("tpu", "Use 'cpu', 'cuda'")])
def test_unknown_devices_are_clear_errors(monkeypatch, name, hint):
    monkeypatch.setenv("COURSE_DEVICE", name)
    with pytest.raises(ValueError, match=f"COURSE_DEVICE='{name}' is not a device.*{hint}"):
        runtime.get_device()
    monkeypatch.delenv("COURSE_DEVICE")
    with pytest.raises(ValueError, match=f"device='{name}'"):
        runtime.get_device(name)


def test_a_reference_config_reads_its_base_profile():
    """A model trained by `python -m course_lib.train ... --reference` stores "cpu-reference":
    its sampling defaults are the cpu profile's (get_profile alone refuses that name)."""
    from course_lib.profiles import UnknownProfileError, profile_of
    assert profile_of({"profile": "cpu-reference"}).name == "cpu"
    assert profile_of({"profile": "smoke"}).name == "smoke"
    with pytest.raises(UnknownProfileError):
        profiles.get_profile("cpu-reference")
    with pytest.raises(UnknownProfileError):
        profile_of({"profile": "nope-reference"})


def test_course_seed_switch_changes_the_training_seed_and_its_checkpoint_folder(monkeypatch):
    from course_lib import checkpoints
    monkeypatch.setenv("COURSE_SEED", "2")
    p = profiles.get_profile("smoke")
    assert p.seed == 2 and p.checkpoint_folder == "smoke-seed2"
    assert checkpoints.checkpoint_path("clip", p).parent.name == "smoke-seed2"
    assert profiles.get_profile(p) is p
    monkeypatch.setenv("COURSE_SEED", "0")
    assert profiles.get_profile("smoke").checkpoint_folder == "smoke"
    for bad, pattern in (("1.5", "not a whole number"), ("x", "not a whole number"),
                         ("-1", "from 0 to"), (str(2**40), "from 0 to")):
        monkeypatch.setenv("COURSE_SEED", bad)
        with pytest.raises(ValueError, match=pattern):
            profiles.get_profile("smoke")
    monkeypatch.delenv("COURSE_SEED")
    # the world is the same for every seed: the seed orders the data, never renders it
    from course_lib import clip
    cfg = clip.clip_config("smoke")
    cfg["training"]["n_train"] = 64
    first = {s: clip.training_data(cfg, "smoke", seed=s) for s in (0, 5)}
    assert (first[0].dataset.images == first[5].dataset.images).all()
    assert not torch.equal(next(iter(first[0]))[0], next(iter(first[5]))[0])     # another order
