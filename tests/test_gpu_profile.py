"""The gpu profile before a GPU sees it (course_lib.tooling.gpu_check).

Every registered model is built with the gpu profile's architecture and 64-pixel images,
trained two steps at batch 2 through ``training.fit``, saved, loaded again and sampled
with two denoising steps; the diffusion UNet's step runs once more under bf16 autocast.
The README's GPU memory table is what these runs measure (~1.5 min in all on 2 cores).
"""
import json
import os
import re
import subprocess
import sys

import pytest

from course_lib import paths, registry
from course_lib.profiles import PROFILES
from course_lib.tooling import gpu_check


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    profile = gpu_check.tiny_gpu_profile(2)
    return gpu_check.check_models(profile, tmp_path_factory.mktemp("gpu"))


def test_the_tiny_profile_keeps_the_gpu_architecture_and_image_size():
    gpu, tiny = PROFILES["gpu"], gpu_check.tiny_gpu_profile(2)
    assert tiny.data.image_size == gpu.data.image_size == 64
    for section in ("clip", "gan", "galip", "vae", "autoencoder", "diffusion", "prior"):
        for name in ("embed_dim", "vision_width", "vision_layers", "text_width", "g_width", "d_channels",
                     "mate_blocks", "block_out_channels", "layers_per_block", "attention_heads", "latent_dim",
                     "layers", "heads"):
            if hasattr(getattr(gpu, section), name):
                assert getattr(getattr(tiny, section), name) == getattr(getattr(gpu, section), name)
        if hasattr(getattr(gpu, section), "batch_size"):
            assert getattr(tiny, section).batch_size == 2


def test_every_registered_model_trains_saves_loads_and_samples_at_gpu_sizes(checked):
    assert set(checked) == set(registry.registered())
    for name, row in checked.items():
        assert row["parameters"] > 0, name
        if registry.registered()[name].sample is not None:
            assert "sample_s" in row, name


def test_the_diffusion_step_runs_under_bf16_and_its_activations_are_what_the_readme_says(checked, tmp_path):
    out = tmp_path / "bf16.json"
    env = {**os.environ, "COURSE_MIXED_PRECISION": "bf16", "COURSE_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "course_lib.tooling.gpu_check", "diffusion", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=paths.REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mixed_precision"] == "bf16"
    bf16, fp32 = result["models"]["diffusion"], checked["diffusion"]
    ratio = (bf16["saved_peak_big"] - bf16["saved_peak"]) / (fp32["saved_peak_big"] - fp32["saved_peak"])
    said = re.search(r"UNet's activations at ([0-9.]+)× these", (paths.REPO_ROOT / "README.md").read_text())
    assert said, "README: the bf16 sentence under the GPU memory table"
    assert ratio == pytest.approx(float(said.group(1)), abs=0.03)
    # the README's reading: more than a 16 GB card in fp32 at the profile's batch, fits one in bf16
    for row in gpu_check.memory_rows(checked):
        if row["name"] in ("diffusion", "unclip-decoder"):
            assert row["total_gib"] > 15.0
            assert row["total_gib"] - row["activations_gib"] * (1 - ratio) <= 15.0


def _readme_rows() -> dict[str, list[str]]:
    text = (paths.REPO_ROOT / "README.md").read_text()
    assert gpu_check.MEMORY_HEADER in text, "README: the GPU memory table (gpu_check's output)"
    table = text.split(gpu_check.MEMORY_HEADER, 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_readme_memory_table_is_what_the_check_measures(checked):
    rows = {r["name"]: r for r in gpu_check.memory_rows(checked)}
    readme = _readme_rows()
    assert set(readme) == set(rows), "README's GPU memory table lists other models than the check"
    for name, r in rows.items():
        batch, trained, frozen, states, activations, total, largest = readme[name]
        assert int(batch) == r["batch_size"], name
        assert float(trained.rstrip(" M")) == pytest.approx(r["parameters"] / 1e6, abs=0.006), name
        assert float(frozen.rstrip(" M")) == pytest.approx(r["frozen_parameters"] / 1e6, abs=0.006), name
        assert float(states) == pytest.approx(r["states_gib"], abs=0.006), name
        # activations are measured (saved tensors of a real step): CPU kernels may save a little
        # more or less on another machine, so 10% (and 0.05 GiB) is the tolerance
        assert float(activations) == pytest.approx(r["activations_gib"], rel=0.10, abs=0.05), name
        assert float(total) == pytest.approx(r["total_gib"], rel=0.10, abs=0.06), name
        assert int(largest) == pytest.approx(r["largest_batch"], rel=0.15, abs=2), name


def test_the_meter_counts_what_a_backward_pass_keeps():
    import torch
    x = torch.randn(64, 256, requires_grad=True)
    with gpu_check.ActivationMeter() as meter:
        y = (x * 2).sin()                   # sin saves its input: 64 x 256 floats
        del y
    assert meter.peak == 64 * 256 * 4 and meter.live == 0
    with gpu_check.ActivationMeter() as meter:
        a = x.sin()
        b = a.sin()                         # a saved once even though x.sin's output is reused
        (a * b).sum().backward()
    assert meter.live == 0 and meter.peak >= 3 * 64 * 256 * 4 - 1

