"""Run by tests/test_multiprocess.py under ``torchrun --nproc_per_node N`` (gloo, CPU).

A tiny regression trained through ``checkpoints.load_or_train`` + ``training.fit``, the path
every course model takes. Each process writes what it saw to ``<out>/rank<r>.json``:
its final weights, the checkpoint writes it made, and the batches it trained on.

    python two_process_fit.py OUT STEPS BATCH [--stop-after K]
"""
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

out = Path(sys.argv[1])
steps, batch = int(sys.argv[2]), int(sys.argv[3])
stop_after = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--stop-after" else None
os.environ["COURSE_DATA_DIR"] = str(out / "data")
torch.set_num_threads(1)

from course_lib import checkpoints, training  # noqa: E402  (after COURSE_DATA_DIR)
from course_lib.data import batch_loader  # noqa: E402
from course_lib.profiles import get_profile  # noqa: E402
from course_lib.runtime import get_accelerator  # noqa: E402

accelerator = get_accelerator("cpu")
rank = accelerator.process_index
writes: list[str] = []
_save = checkpoints.save_checkpoint


def logged_save(path, tensors, card):
    writes.append(Path(path).name)
    return _save(path, tensors, card)


checkpoints.save_checkpoint = logged_save

g = torch.Generator().manual_seed(0)
X = torch.randn(512, 8, generator=g)
W_true = torch.randn(8, 1, generator=g)
Y = X @ W_true + 0.01 * torch.randn(512, 1, generator=g)
seen: list[int] = []


class Regression(training.Method):
    def __init__(self, model):
        self.models = {"net": model}
        self.optimizers = {"net": torch.optim.SGD(model.parameters(), lr=0.05)}

    def training_step(self, b, ctx):
        i, x, y = b
        seen.extend(int(v) for v in i)
        loss = nn.functional.mse_loss(self.models["net"](x), y)
        ctx.optimize("net", loss)
        return {"loss": loss}


def build(config):
    torch.manual_seed(0)
    return nn.Linear(8, 1)


def train(model, resume_path):
    method = Regression(model)
    data = batch_loader(lambda i: (i, X[i], Y[i]), len(X), batch, seed=0)
    target = stop_after if stop_after is not None else steps
    history = training.fit(method, data, steps=target, resume_path=resume_path,
                           checkpoint_every=5, plot=False, desc="tiny")
    if stop_after is not None:        # an "interrupted" run: the resume state stays on disk
        raise _Stop(history.step)
    return {"final_loss": history.last("loss"), "steps": history.step}


class _Stop(Exception):
    def __init__(self, step):
        self.step = step


profile = get_profile("smoke")
try:
    model, card = checkpoints.load_or_train("tiny", config={"in": 8, "steps": steps},
                                            build=build, train=train, profile=profile,
                                            device="cpu", verbose=(rank == 0))
    result = {"weights": [float(v) for v in torch.cat([p.detach().flatten() for p in model.parameters()])],
              "card_steps": card.get("metrics", {}).get("steps"), "source": card.get("source")}
except _Stop as stop:
    result = {"stopped_at": stop.step}
result.update({"rank": rank, "world": accelerator.num_processes, "writes": writes, "seen": seen})
(out / f"rank{rank}.json").write_text(json.dumps(result))
