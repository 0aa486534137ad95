"""course_lib.training: the one loop, with toy steps of every kind the course uses."""
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import checkpoints as ck
from course_lib.training import History, Method, TrainingDiverged, fit


def toy_data(n=256, d=4, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.arange(1.0, d + 1) + 0.01 * torch.randn(n, generator=g)
    ds = torch.utils.data.TensorDataset(x, y[:, None])
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                       generator=torch.Generator().manual_seed(seed))


class Regression(Method):
    """One optimizer (the shape of a CLIP step)."""

    def __init__(self, lr=1e-2, fail_at=None, interrupt_at=None, sleep=0.0, grad_scale_at=None):
        torch.manual_seed(0)
        self.models = {"net": nn.Linear(4, 1)}
        self.optimizers = {"net": torch.optim.Adam(self.models["net"].parameters(), lr=lr)}
        self.fail_at, self.interrupt_at, self.sleep = fail_at, interrupt_at, sleep
        self.grad_scale_at = grad_scale_at or {}   # step -> factor the gradients are multiplied by

    def training_step(self, batch, ctx):
        if ctx.step == self.interrupt_at:
            raise KeyboardInterrupt
        if self.sleep:
            time.sleep(self.sleep)
        x, y = batch
        loss = F.mse_loss(self.models["net"](x), y)
        factor = self.grad_scale_at.get(ctx.step)
        hooks = [p.register_hook(lambda g: g * factor) for p in self.models["net"].parameters()
                 ] if factor is not None else []
        ctx.optimize("net", loss)       # the loss stays finite whatever the gradient is
        for h in hooks:
            h.remove()
        if ctx.step == self.fail_at:
            return {"loss": float("nan")}
        return {"loss": loss}


class Contrastive(Method):
    """A CLIP-shaped step: two towers, symmetric cross-entropy over a batch."""

    def __init__(self):
        torch.manual_seed(0)
        self.models = {"a": nn.Linear(4, 8), "b": nn.Linear(4, 8)}
        params = [*self.models["a"].parameters(), *self.models["b"].parameters()]
        self.optimizers = {"clip": torch.optim.Adam(params, lr=1e-2)}

    def training_step(self, batch, ctx):
        x, _ = batch
        za = F.normalize(self.models["a"](x), dim=-1)
        zb = F.normalize(self.models["b"](x + 0.05 * torch.randn_like(x)), dim=-1)
        logits = 10 * za @ zb.T
        labels = torch.arange(len(x))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        ctx.optimize("clip", loss)
        return {"loss": loss}


class GAN(Method):
    """Two optimizers, alternating discriminator and generator steps."""

    def __init__(self):
        torch.manual_seed(0)
        self.models = {"g": nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)),
                       "d": nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))}
        self.optimizers = {"g": torch.optim.Adam(self.models["g"].parameters(), 2e-3, betas=(0.5, 0.9)),
                           "d": torch.optim.Adam(self.models["d"].parameters(), 2e-3, betas=(0.5, 0.9))}

    def training_step(self, batch, ctx):
        _, real = batch
        g, d = self.models["g"], self.models["d"]
        fake = g(torch.randn(len(real), 2))
        d_loss = F.relu(1 - d(real)).mean() + F.relu(1 + d(fake.detach())).mean()   # hinge
        ctx.optimize("d", d_loss)
        g_loss = -d(g(torch.randn(len(real), 2))).mean()
        ctx.optimize("g", g_loss)
        return {"d_loss": d_loss, "g_loss": g_loss}


class VAE(Method):
    """One optimizer, reconstruction + KL."""

    def __init__(self):
        torch.manual_seed(0)
        self.models = {"enc": nn.Linear(4, 4), "dec": nn.Linear(2, 4)}
        params = [*self.models["enc"].parameters(), *self.models["dec"].parameters()]
        self.optimizers = {"vae": torch.optim.Adam(params, lr=1e-2)}

    def training_step(self, batch, ctx):
        x, _ = batch
        mu, logvar = self.models["enc"](x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = F.mse_loss(self.models["dec"](z), x)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1).mean()
        loss = rec + 0.01 * kl
        ctx.optimize("vae", loss)
        return {"loss": loss, "rec": rec, "kl": kl}


class Denoiser(Method):
    """A diffusion-shaped step with an EMA of the weights."""
    ema_decay = {"net": 0.9}

    def __init__(self):
        torch.manual_seed(0)
        self.models = {"net": nn.Sequential(nn.Linear(5, 32), nn.SiLU(), nn.Linear(32, 4))}
        self.optimizers = {"net": torch.optim.Adam(self.models["net"].parameters(), lr=1e-2)}

    def training_step(self, batch, ctx):
        x, _ = batch
        t = torch.rand(len(x), 1)
        noise = torch.randn_like(x)
        xt = (1 - t).sqrt() * x + t.sqrt() * noise
        loss = F.mse_loss(self.models["net"](torch.cat([xt, t], -1)), noise)
        ctx.optimize("net", loss)
        return {"loss": loss}


@pytest.mark.parametrize("method_cls,key", [(Regression, "loss"), (Contrastive, "loss"),
                                            (VAE, "rec"), (Denoiser, "loss")])
def test_every_kind_of_step_learns(method_cls, key):
    method = method_cls()
    history = fit(method, toy_data(), steps=150, log_every=5, plot=False)
    first, last = history.losses[key][0][1], history.last(key, 5)
    assert history.step == 150 and history.stopped_by == "steps"
    assert last < 0.7 * first, f"{method_cls.__name__}: {key} {first:.3f} -> {last:.3f}"


def test_gan_alternates_two_optimizers():
    method = GAN()
    before = {n: [p.clone() for p in m.parameters()] for n, m in method.models.items()}
    history = fit(method, toy_data(), steps=60, log_every=1, plot=False)
    assert set(history.losses) == {"d_loss", "g_loss"}
    for name, model in method.models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], model.parameters())), name
    # both optimizers stepped once per training step
    for opt in method.optimizers.values():
        assert int(next(iter(opt.state_dict()["state"].values()))["step"]) == 60


def test_resume_continues_where_it_stopped(tmp_path):
    path = tmp_path / "run.resume.safetensors"
    first = fit(Regression(), toy_data(), steps=20, resume_path=path, plot=False)
    assert first.step == 20 and path.exists()
    method = Regression()
    second = fit(method, toy_data(), steps=40, resume_path=path, plot=False)
    assert second.resumed_from == 20 and second.step == 40
    # the optimizer state came back too: Adam counted all 40 steps
    state = method.optimizers["net"].state_dict()["state"][0]
    assert int(state["step"]) == 40
    assert ck.read_card(path)["step"] == 40
    # a finished run resumed again does nothing
    third = fit(Regression(), toy_data(), steps=40, resume_path=path, plot=False)
    assert third.stopped_by == "already done" and third.step == 40


def test_interrupt_saves_and_resumes(tmp_path):
    path = tmp_path / "run.resume.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(Regression(interrupt_at=15), toy_data(), steps=30, resume_path=path, plot=False)
    assert ck.read_card(path)["step"] == 15
    history = fit(Regression(), toy_data(), steps=30, resume_path=path, plot=False)
    assert history.resumed_from == 15 and history.step == 30


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.resume.safetensors"
    method = Regression(fail_at=12)
    with pytest.raises(TrainingDiverged, match=r"step 12: loss = nan.*step 10\) is kept"):
        fit(method, toy_data(), steps=30, resume_path=path, checkpoint_every=5, plot=False)
    tensors, card = ck.load_checkpoint(path)
    assert card["step"] == 10
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


def test_a_finite_loss_with_an_infinite_gradient_is_caught_and_never_saved(tmp_path):
    """Item 1: the guard looks at the weights a step leaves, not only at its loss."""
    path = tmp_path / "run.resume.safetensors"
    method = Regression(grad_scale_at={12: float("inf")})
    with pytest.raises(TrainingDiverged, match=r"step 12: .*non-finite weights.*step 10\) is kept"):
        fit(method, toy_data(), steps=30, resume_path=path, checkpoint_every=5, plot=False)
    tensors, card = ck.load_checkpoint(path)
    assert card["step"] == 10
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    # the model in memory was restored to that checkpoint, not left holding NaN
    for key, value in method.models["net"].state_dict().items():
        assert torch.equal(value, tensors[f"model.net.{key}"]), key
    # the advised re-run resumes a finite state and finishes
    history = fit(Regression(), toy_data(), steps=30, resume_path=path, plot=False)
    assert history.resumed_from == 10 and history.step == 30


def test_a_non_finite_optimizer_state_is_never_saved(tmp_path):
    """Item 1: a gradient of 1e30 overflows Adam's second moment while the weights stay finite."""
    path = tmp_path / "run.resume.safetensors"
    method = Regression(grad_scale_at={7: 1e30})
    with pytest.raises(TrainingDiverged, match=r"non-finite values in optim\.net.*before saving"):
        fit(method, toy_data(), steps=30, resume_path=path, checkpoint_every=5, plot=False)
    tensors, card = ck.load_checkpoint(path)
    assert card["step"] == 5
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_without_a_checkpoint_the_divergence_message_says_the_weights_are_not_finite():
    with pytest.raises(TrainingDiverged, match="hold non-finite weights"):
        fit(Regression(grad_scale_at={3: float("inf")}), toy_data(), steps=10, plot=False)


def test_time_budget_stops_early():
    history = fit(Regression(sleep=0.02), toy_data(), steps=10_000, max_seconds=0.3, plot=False)
    assert history.stopped_by == "time" and 1 <= history.step < 100


def test_ema_is_tracked_saved_and_copied(tmp_path):
    path = tmp_path / "ema.resume.safetensors"
    method = Denoiser()
    fit(method, toy_data(), steps=30, resume_path=path, plot=False, copy_ema=False)
    raw = [p.clone() for p in method.models["net"].parameters()]
    tensors, _ = ck.load_checkpoint(path)
    ema = [tensors[f"ema.net.{i}"] for i in range(len(raw))]
    assert any(not torch.allclose(a, b) for a, b in zip(raw, ema)), "EMA equals raw weights"
    # resume to the end with copy_ema: the model now holds the EMA weights
    method2 = Denoiser()
    fit(method2, toy_data(), steps=40, resume_path=path, plot=False, copy_ema=True)
    tensors, card = ck.load_checkpoint(path)
    for i, p in enumerate(method2.models["net"].parameters()):
        assert torch.allclose(p, tensors[f"ema.net.{i}"])
    assert card["ema_steps"]["net"] == 40


def test_resume_with_other_models_is_a_clear_error(tmp_path):
    path = tmp_path / "run.resume.safetensors"
    fit(Regression(), toy_data(), steps=5, resume_path=path, plot=False)
    with pytest.raises(ck.CheckpointMismatchError, match="delete"):
        fit(VAE(), toy_data(), steps=10, resume_path=path, plot=False)


def test_empty_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no batch"):
        fit(Regression(), [], steps=5, plot=False)


class UnreducedLoss(Regression):
    def training_step(self, batch, ctx):
        x, y = batch
        ctx.optimize("net", F.mse_loss(self.models["net"](x), y, reduction="none"))   # forgot .mean()
        return {"loss": 0.0}


def test_a_loss_that_is_not_one_number_names_the_method_and_the_fix():
    with pytest.raises(TypeError, match=r"UnreducedLoss: optimize\('net'\) needs one number.*loss.mean\(\)"):
        fit(UnreducedLoss(), toy_data(), steps=2, plot=False)


def test_history_round_trip():
    h = History()
    h.log(1, {"loss": 2.0})
    h.log(2, {"loss": 1.0})
    h2 = History.from_dict(h.as_dict())
    assert h2.losses == h.losses and math.isclose(h2.last("loss", 2), 1.5)


class SlowRegression(Method):
    """A regression step on a given model that takes at least ``sleep`` seconds."""

    def __init__(self, model, sleep=0.02):
        self.models = {"net": model}
        self.optimizers = {"net": torch.optim.Adam(model.parameters(), lr=1e-2)}
        self.sleep = sleep

    def training_step(self, batch, ctx):
        time.sleep(self.sleep)
        x, y = batch
        loss = F.mse_loss(self.models["net"](x), y)
        ctx.optimize("net", loss)
        return {"loss": loss}


def test_a_run_stopped_by_its_time_budget_continues_when_asked_again(tmp_data, capsys):
    """Item 18: a checkpoint cut short by time is not cached as finished."""
    from course_lib.profiles import get_profile

    profile, steps = get_profile("smoke"), 40

    def build(config):
        torch.manual_seed(0)
        return nn.Linear(4, 1)

    def train(model, resume_path):
        h = fit(SlowRegression(model), toy_data(), steps=steps, max_seconds=0.25,
                resume_path=resume_path, plot=False)
        return {"steps": h.step, "stopped_by": h.stopped_by, "budget_s": h.budget_seconds,
                "total_s": h.seconds}

    def ask():
        return ck.load_or_train("slow", config={"d": 4}, build=build, train=train, profile=profile,
                                device="cpu")

    _, card = ask()
    first = card["metrics"]["steps"]
    assert card["metrics"]["stopped_by"] == "time" and first < steps
    assert card["training"] == {"stopped_by": "time", "step": first, "steps": steps}
    resume = ck.checkpoint_path("slow", profile).with_name("slow.resume.safetensors")
    assert resume.exists()
    capsys.readouterr()
    _, card = ask()
    out = capsys.readouterr().out
    assert f"stopped by its time budget at step {first} of {steps}: training continues" in out
    assert card["source"] == "trained" and card["metrics"]["steps"] > first   # a fresh budget
    assert card["metrics"]["budget_s"] < 0.25 + 0.2 < card["metrics"]["total_s"] + 0.2
    assert card["metrics"]["budget_s"] < card["metrics"]["total_s"]
    for _ in range(10):               # each call gets one more time budget until the steps are done
        if "training" not in card:
            break
        _, card = ask()
    assert card["metrics"]["steps"] == steps and card["metrics"]["stopped_by"] == "steps"
    assert "training" not in card
    assert not resume.exists()
    _, card = ask()
    assert card["source"] == "loaded"


def test_a_shortened_checkpoint_without_its_resume_state_says_how_to_continue(tmp_data, capsys):
    from course_lib.profiles import get_profile

    profile = get_profile("smoke")
    path = ck.checkpoint_path("short", profile)
    ck.save_model(path, nn.Linear(4, 1), config={"d": 4}, profile=profile,
                  training={"stopped_by": "time", "step": 20, "steps": 800})
    _, card = ck.load_or_train("short", config={"d": 4}, build=lambda c: nn.Linear(4, 1),
                               train=lambda m, r: {}, profile=profile, device="cpu")
    assert card["source"] == "loaded"
    note = ck.shortened_note(card, "short")
    assert "after 20 of 800 steps" in note and "retrain=True" in note
    assert note in capsys.readouterr().out
    assert ck.shortened_note({"metrics": {}}) == ""


class Returns(Method):
    """A learner-written method whose training_step returns ``make(loss)``."""

    def __init__(self, make):
        self.models = {"net": nn.Linear(4, 1)}
        self.optimizers = {"net": torch.optim.SGD(self.models["net"].parameters(), lr=0.01)}
        self.make = make

    def training_step(self, batch, ctx):
        x, y = batch
        loss = F.mse_loss(self.models["net"](x), y)
        ctx.optimize("net", loss)
        return self.make(loss)


@pytest.mark.parametrize("make, pattern", [
    (lambda loss: "loss", r"returned a str; it must return a dict"),
    (lambda loss: loss, r"returned a Tensor; it must return a dict"),
    (lambda loss: {"loss": "low"}, r"'loss' = 'low' \(a str\)"),
    (lambda loss: {"loss": loss * torch.ones(3)}, r"'loss' with shape \(3,\).*loss.mean\(\)"),
])
def test_a_training_step_that_returns_no_scalar_losses_is_a_clear_error(make, pattern):
    """Item 5."""
    with pytest.raises(TypeError, match=pattern):
        fit(Returns(make), toy_data(), steps=3, plot=False)


def test_a_run_ended_by_its_time_budget_closes_its_bar_neutral_and_says_so(monkeypatch, capsys):
    """Item 8: tqdm's notebook bar turns red when closed short of its total."""
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    from course_lib import training

    bars = []

    def progress(total, initial, desc):
        bars.append(notebook_tqdm(total=total, initial=initial, desc=desc))
        return bars[-1]

    monkeypatch.setattr(training, "_progress", progress)
    history = fit(Regression(sleep=0.02), toy_data(), steps=1000, max_seconds=0.2, plot=False, desc="toy")
    assert history.stopped_by == "time"
    assert bars[-1].container.children[1].bar_style == "info"          # not "danger" (red)
    out = capsys.readouterr().out
    assert f"'toy' stopped by its time budget (0.00333 min) at step {history.step} of 1000" in out
    assert "give it more time (max_minutes) or fewer steps" in out     # no resume path: no resuming
    # an interrupted run stays red
    with pytest.raises(KeyboardInterrupt):
        fit(Regression(interrupt_at=3), toy_data(), steps=10, plot=False)
    assert bars[-1].container.children[1].bar_style == "danger"


def test_steps_none_trains_for_the_time_budget_and_needs_one():
    """fit(steps=None): the time budget is the plan, not a guard."""
    net = nn.Linear(2, 1)

    class M(Method):
        def __init__(self):
            self.models = {"net": net}
            self.optimizers = {"net": torch.optim.SGD(net.parameters(), 0.01)}

        def training_step(self, batch, ctx):
            loss = net(batch).pow(2).mean()
            ctx.optimize("net", loss)
            return {"loss": loss}

    with pytest.raises(ValueError, match="max_seconds"):
        fit(M(), [torch.randn(4, 2)], steps=None, plot=False)
    h = fit(M(), [torch.randn(4, 2)], steps=None, max_seconds=0.2, plot=False)
    assert h.stopped_by == "time" and h.step > 1


class OutOfMemory(Regression):
    """A step that runs out of GPU memory, as a batch too big for the card does."""

    def training_step(self, batch, ctx):
        if ctx.step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(batch, ctx)


def test_running_out_of_memory_names_the_batch_size_to_set(tmp_path):
    with pytest.raises(torch.OutOfMemoryError, match=r"batches of 32\. Fix: set batch_size 16") as info:
        fit(OutOfMemory(), toy_data(batch=32), steps=10, resume_path=tmp_path / "r.safetensors",
            checkpoint_every=2, plot=False, desc="toy")
    assert "'toy' ran out of" in str(info.value) and "resumes" in str(info.value)
    assert "Tried to allocate 2.00 GiB" in str(info.value)        # torch's own words are kept


class Noisy(Regression):
    """A step that draws from the global torch RNG (as diffusion's noise and dropout do)."""

    def training_step(self, batch, ctx):
        x, y = batch
        x = x + 0.1 * torch.randn_like(x)
        loss = F.mse_loss(self.models["net"](x), y)
        ctx.optimize("net", loss)
        return {"loss": loss}


def test_a_resumed_run_takes_the_steps_of_the_uninterrupted_one(tmp_path):
    """Data order and RNG continue: the batches already trained on are skipped and the saved
    torch RNG is put back, so stopping at 13 and resuming ends bit-equal to one straight run
    (epochs of 8 batches: the stop falls mid-epoch)."""
    straight = Noisy()
    fit(straight, toy_data(), steps=30, plot=False, seed=3)
    path = tmp_path / "run.resume.safetensors"
    first = Noisy()
    fit(first, toy_data(), steps=13, resume_path=path, plot=False, seed=3)
    second = Noisy()
    fit(second, toy_data(), steps=30, resume_path=path, plot=False, seed=3)
    for a, b in zip(straight.models["net"].parameters(), second.models["net"].parameters()):
        assert torch.equal(a, b)


def test_an_interrupted_step_is_taken_again_with_its_own_random_draws(tmp_path):
    class Interrupted(Noisy):
        def training_step(self, batch, ctx):
            if ctx.step == 9 and not getattr(self, "done", False):
                torch.randn(5)                        # draws, then the interrupt
                self.done = True
                raise KeyboardInterrupt
            return super().training_step(batch, ctx)

    straight = Noisy()
    fit(straight, toy_data(), steps=20, plot=False)
    path = tmp_path / "run.resume.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(Interrupted(), toy_data(), steps=20, resume_path=path, plot=False)
    resumed = Noisy()
    fit(resumed, toy_data(), steps=20, resume_path=path, plot=False)
    for a, b in zip(straight.models["net"].parameters(), resumed.models["net"].parameters()):
        assert torch.equal(a, b)
