"""Every trained model of the registry, killed with SIGKILL mid-training, resumes to its steps.

For each model (tiny sizes, 8 steps, a resumable checkpoint after every step): a child
process (``os.fork``) trains it through its own ``load_or_train`` and is killed with SIGKILL
inside a seeded-random optimizer call, three times at later and later points; after each
kill the resume checkpoint loads and holds only finite numbers; the last run finishes the
planned steps. Its saved weights then equal, bit for bit, those of one uninterrupted run:
``training.fit`` skips the batches already trained on and puts back the torch RNG saved with
the checkpoint, and any generator a method keeps (on a CPU, in one process, with one thread
here so that no reduction order differs between runs). What is not bit-exact elsewhere: on a
GPU the CUDA RNG is not saved; under several processes each shard's order continues but the
processes' RNGs are not saved; the CLIP's cosine schedule follows the clock when its time budget
runs short.
"""
import copy
import os
import random
import shutil
import signal

import fakes
import pytest
import torch

from course_lib import checkpoints, paths, registry, training
from course_lib.profiles import get_profile

STEPS = 8
SIZES = copy.deepcopy(fakes.TINY_PROFILE)
for _section in ("clip", "gan", "galip", "vae", "autoencoder", "diffusion", "prior", "decoder"):
    SIZES[_section]["steps"] = STEPS
SIZES["clip"]["warmup_steps"] = 2
# The CLIP's cosine follows the clock when its time budget would end before its steps (the
# learning rate at step s is the larger of the step's and the clock's progress); a budget of
# days makes the clock's share vanish, so the two runs' rates agree to the bit.
SIZES["clip"]["max_minutes"] = 1e5
SIZES["judge"] = {"width": 8, "n_train": 64, "steps": STEPS, "batch_size": 16, "n_eval": 16}
SIZES["diffusion"]["ema_decay"] = 0.9        # the EMA is part of what is resumed
SIZES["prior"]["ema_decay"] = 0.9
TRAINED = [e.name for e in registry.in_order() if e.trains]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Every model trained once without interruption: ``(profile, root)``."""
    root = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            _point_at(mp, root)
            profile = get_profile("smoke").replace(**SIZES)
            for entry in registry.in_order():
                entry.load_or_train(profile, verbose=False)
        yield profile, root
    finally:
        torch.set_num_threads(threads)


def _point_at(mp, root):
    for name in ("CHECKPOINT_DIR", "SHIPPED_DIR", "CACHE_DIR"):
        mp.setattr(paths, name, root / name.lower())
    # A model's initial weights come from the global torch RNG as it stands when it is built,
    # which depends on what the process did before (a CLIP loaded or found in the cache): both
    # runs seed it at the build, so that they start from the same weights.
    load_or_train = checkpoints.load_or_train

    def seeded(name, *, build, **kwargs):
        def build_seeded(config):
            torch.manual_seed(0)
            return build(config)
        return load_or_train(name, build=build_seeded, **kwargs)

    mp.setattr(checkpoints, "load_or_train", seeded)


def _killed_run(entry, profile, root, kill_at_call: int, per_step: int = 1) -> int:
    """Train ``entry`` in a forked child killed at optimizer call ``kill_at_call`` of the
    whole run (``step * per_step + i`` for the i-th call of a step, counted across resumes);
    returns the child's exit status (-SIGKILL when the kill came first)."""
    pid = os.fork()
    if pid == 0:                                   # the child: train until killed
        code = 1
        try:
            with pytest.MonkeyPatch.context() as mp:
                _point_at(mp, root)
                mp.setattr(training, "CHECKPOINT_EVERY_S", 0.0)      # a resume checkpoint every step
                calls: dict[int, int] = {}
                optimize = training.StepContext.optimize

                def optimize_then_die(self, *args, **kwargs):
                    calls[self.step] = calls.get(self.step, 0) + 1
                    if self.step * per_step + calls[self.step] == kill_at_call:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return optimize(self, *args, **kwargs)

                mp.setattr(training.StepContext, "optimize", optimize_then_die)
                entry.load_or_train(profile, verbose=False)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@pytest.mark.parametrize("name", TRAINED)
def test_killed_three_times_resumes_to_the_uninterrupted_weights(straight, tmp_path, name):
    profile, root = straight
    entry = registry.registered()[name]
    folder = profile.checkpoint_folder
    # the same upstream models as the straight run (copies of its checkpoints), not this one
    shutil.copytree(root / "checkpoint_dir", tmp_path / "checkpoint_dir")
    (tmp_path / "checkpoint_dir" / folder / f"{name}.safetensors").unlink()
    resume = tmp_path / "checkpoint_dir" / folder / f"{name}.resume.safetensors"
    rng = random.Random(name)
    per_step = 2 if name in ("gan", "galip") else 1                  # D and G each step
    calls = sorted(rng.sample(range(2, STEPS * per_step), 3))         # three points, later and later
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for call in calls:
            status = _killed_run(entry, profile, tmp_path, call, per_step)
            assert status == -signal.SIGKILL, f"{name}: not killed at call {call} (status {status})"
            tensors, card = checkpoints.load_checkpoint(resume)          # always loads
            assert card["kind"] == "resume" and 0 < card["step"] < STEPS
            assert not training.nonfinite(tensors.items()), f"{name}: a non-finite value was saved"
        assert _killed_run(entry, profile, tmp_path, 10 ** 6) == 0      # the last run finishes
    finally:
        torch.set_num_threads(threads)
    assert not resume.exists(), f"{name}: a finished run keeps no resume state"
    done, card = checkpoints.load_checkpoint(tmp_path / "checkpoint_dir" / folder / f"{name}.safetensors")
    want, want_card = checkpoints.load_checkpoint(root / "checkpoint_dir" / folder / f"{name}.safetensors")
    assert card["metrics"]["steps"] == want_card["metrics"]["steps"] == STEPS
    assert set(done) == set(want)
    differ = [k for k in want if not torch.equal(done[k], want[k])]
    assert not differ, f"{name}: resumed weights differ from the uninterrupted run's in {differ[:4]}"


def test_a_kill_that_never_comes_is_a_finished_run(straight, tmp_path):
    """The harness itself: a child not killed exits 0 (so a status of -SIGKILL means the kill)."""
    profile, root = straight
    shutil.copytree(root / "checkpoint_dir", tmp_path / "checkpoint_dir")
    assert _killed_run(registry.registered()["judge"], profile, tmp_path, 10 ** 6) == 0
