"""Training on several processes (accelerate under torchrun, gloo on CPU), as an instructor
does with `torchrun --nproc_per_node N -m course_lib.train all` on several GPUs.

Each case launches tests/multiprocess/two_process_fit.py: a tiny regression trained through
checkpoints.load_or_train + training.fit, the path every course model takes.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "multiprocess" / "two_process_fit.py"
STEPS, BATCH = 40, 16            # 512 rows: 16 steps per epoch at 2 x 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, nproc: int, batch: int, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", "--master_addr=127.0.0.1", str(SCRIPT),
           str(out), str(STEPS), str(batch), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COURSE_PROGRESS": "text"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    for r in range(nproc):
        (out / f"rank{r}.json").unlink()
    return results, done.stdout + done.stderr


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    return out, launch(out, 2, BATCH)


def test_two_processes_finish_and_only_rank0_writes(two_process_run):
    out, (ranks, _) = two_process_run
    assert [r["world"] for r in ranks] == [2, 2]
    assert "tiny.safetensors" in ranks[0]["writes"], ranks[0]["writes"]
    assert ranks[1]["writes"] == [], f"rank 1 wrote {ranks[1]['writes']}: only the main process may write"
    assert (out / "data" / "checkpoints" / "smoke" / "tiny.safetensors").exists()
    assert ranks[0]["card_steps"] == STEPS


def test_saved_weights_equal_every_rank(two_process_run):
    from safetensors.torch import load_file
    out, (ranks, _) = two_process_run
    saved = load_file(str(out / "data" / "checkpoints" / "smoke" / "tiny.safetensors"))
    flat = torch.cat([saved["weight"].flatten(), saved["bias"].flatten()])
    for r in ranks:
        assert torch.allclose(flat, torch.tensor(r["weights"]), atol=0), f"rank {r['rank']} differs"


def test_data_is_sharded_between_ranks(two_process_run):
    _, (ranks, _) = two_process_run
    per_epoch = 512 // (2 * BATCH) * BATCH
    first = [set(r["seen"][:per_epoch]) for r in ranks]
    assert len(ranks[0]["seen"]) == STEPS * BATCH
    assert not first[0] & first[1], "both ranks trained on the same rows in one epoch"
    assert len(first[0] | first[1]) == 512


def test_close_to_one_process_with_the_same_total_batch(two_process_run, tmp_path):
    _, (ranks, _) = two_process_run
    (one,), _ = launch(tmp_path, 1, 2 * BATCH)
    two = torch.tensor(ranks[0]["weights"])
    diff = (torch.tensor(one["weights"]) - two).abs().max().item()
    assert diff < 1e-3, f"2 processes x {BATCH} and 1 process x {2 * BATCH} ended {diff:.2g} apart"


def test_an_interrupted_two_process_run_resumes(tmp_path):
    stopped, _ = launch(tmp_path, 2, BATCH, "--stop-after", "20")
    assert [r["stopped_at"] for r in stopped] == [20, 20]
    resume = tmp_path / "data" / "checkpoints" / "smoke" / "tiny.resume.safetensors"
    assert resume.exists() and stopped[1]["writes"] == []
    ranks, log = launch(tmp_path, 2, BATCH)
    assert "Resuming 'tiny' from step 20" in log
    assert ranks[0]["card_steps"] == STEPS
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert not resume.exists(), "a finished run keeps no resume state"
