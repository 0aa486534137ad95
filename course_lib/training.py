"""The one training loop every method of the course trains through.

A *method* (CLIP, a GAN, a VAE, a diffusion model) says what one training step
is; :func:`fit` does everything around it, the same way for all of them:

* device placement and mixed precision through Hugging Face ``accelerate``, so the
  same code runs on a CPU, Apple MPS, one GPU, or several GPUs under
  ``accelerate launch`` / ``torchrun``;
* a progress bar (``tqdm.auto``) and, in a notebook, a live loss plot;
* an exponential moving average (EMA) of weights where the method asks for one,
  with ``diffusers.training_utils.EMAModel``;
* a budget of steps and of wall-clock seconds (both come from the profile);
* periodic checkpoints of everything needed to resume (weights, optimizer state,
  EMA, step, loss history, RNG), written atomically with safetensors; an
  interrupted run (Ctrl-C, the stop button, a killed kernel) continues where
  the last checkpoint left it when ``fit`` is called again with the same path;
* a divergence guard: a NaN or infinite loss, or a step that leaves a weight
  non-finite (a finite loss with an infinite gradient does that), stops training
  with a message that says what happened and where the last good checkpoint is;
  nothing non-finite (weights, optimizer state, EMA) is ever written to a
  checkpoint, and after the stop the models in memory are restored to that last
  good checkpoint (or the message says they hold non-finite weights).

A method looks like this (a one-optimizer example; a GAN calls
``ctx.optimize`` twice per step, once for each player)::

    class Regression(Method):
        def __init__(self, model):
            self.models = {"net": model}
            self.optimizers = {"net": torch.optim.Adam(model.parameters(), 1e-3)}

        def training_step(self, batch, ctx):
            x, y = batch
            loss = F.mse_loss(self.models["net"](x), y)
            ctx.optimize("net", loss)
            return {"loss": loss}

Always reach the models through ``self.models[...]`` inside ``training_step``:
during :func:`fit` they are the accelerate-prepared versions.

Explained in notebook 00 ("The training loop") and used by every later notebook.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints
from .runtime import get_accelerator, seed_everything

__all__ = ["Method", "StepContext", "History", "TrainingDiverged", "fit", "unwrap", "count_parameters", "warmup_cosine",
           "load_resume_state", "nonfinite"]


class TrainingDiverged(RuntimeError):
    """A loss, a weight or an optimizer state became NaN or infinite; the last good
    checkpoint was kept (and, where there is one, restored into the models)."""


class Method:
    """Base class for what a model family gives the training loop.

    Attributes a subclass sets in ``__init__``:
        models: name -> ``nn.Module`` (everything that is trained or checkpointed).
        optimizers: name -> optimizer (``ctx.optimize(name, loss)`` steps it).
        schedulers: name -> learning-rate scheduler, stepped after its optimizer (optional).
        ema_decay: model name -> EMA decay, e.g. ``{"unet": 0.999}`` (optional).
    """
    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any] = {}
    ema_decay: dict[str, float] = {}

    def training_step(self, batch: Any, ctx: StepContext) -> Mapping[str, torch.Tensor | float]:
        """One step: compute losses, call ``ctx.optimize`` and return the losses to log."""
        raise NotImplementedError

    def one_model_adamw(self, name: str, model: nn.Module, *, lr: float, steps: int,
                        weight_decay: float = 1e-4) -> None:
        """The usual set-up of one trained model: AdamW, the learning rate warmed up and then
        down a cosine (:func:`warmup_cosine`), under ``name``."""
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.models = {name: model}
        self.optimizers = {name: opt}
        self.schedulers = {name: warmup_cosine(opt, steps)}


def warmup_cosine(optimizer, steps: int, warmup: float = 0.05, final: float = 0.05):
    """Learning-rate schedule: linear warm-up over ``warmup`` of the steps, then a cosine
    down to ``final`` times the peak (works for any number of steps, even 1)."""
    steps = max(int(steps), 1)
    ramp = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = min(1.0, (step - ramp) / max(1, steps - ramp))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class StepContext:
    """What a training step may use: the step number, the device, and ``optimize``."""
    step: int
    accelerator: Any
    method: Method
    max_grad_norm: float | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def optimize(self, name: str, loss: torch.Tensor, *, max_grad_norm: float | None = None,
                 retain_graph: bool = False) -> None:
        """Zero the gradients of optimizer ``name``, back-propagate ``loss``,
        clip gradients (if asked), step the optimizer and its scheduler."""
        try:
            opt = self.method.optimizers[name]
        except KeyError:
            raise KeyError(f"optimize({name!r}): the method has optimizers "
                           f"{sorted(self.method.optimizers)}") from None
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TypeError(f"{type(self.method).__name__}: optimize({name!r}) needs one number to minimise, got "
                            f"{got}. Return the loss reduced to a scalar (e.g. loss.mean()).")
        opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss, retain_graph=retain_graph)
        norm = max_grad_norm if max_grad_norm is not None else self.max_grad_norm
        if norm is not None:
            params = [p for group in opt.param_groups for p in group["params"]]
            self.accelerator.clip_grad_norm_(params, norm)
        opt.step()
        scheduler = self.method.schedulers.get(name)
        if scheduler is not None:
            scheduler.step()


@dataclass
class History:
    """Losses per step, and how the run ended.

    ``losses[name]`` is a list of ``(step, value)`` pairs.
    ``stopped_by`` is ``"steps"`` (all steps done), ``"time"`` (time budget spent),
    or ``"already done"`` (resumed a finished run). ``budget_start`` is the value of
    ``seconds`` at which the current time budget began: 0, or where a run that its
    time budget stopped was asked to continue.
    """
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    step: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    resumed_from: int | None = None
    budget_start: float = 0.0
    #: numbers measured after training that the model's card keeps (the judge's validation
    #: accuracy, the autoencoder's latent scaling factor): every ``train_<name>`` returns
    #: ``(history, method)``, and its ``load_or_train_<name>`` writes the card from them
    measured: dict = field(default_factory=dict)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.losses.setdefault(name, []).append((step, float(value)))

    @property
    def budget_seconds(self) -> float:
        """Seconds spent within the current time budget (what ``max_seconds`` limits)."""
        return self.seconds - self.budget_start

    def last(self, name: str, n: int = 1) -> float:
        """Mean of the last ``n`` logged values of ``name``."""
        values = [v for _, v in self.losses[name][-n:]]
        return sum(values) / len(values)

    def summary(self) -> dict:
        """The training record every model's card keeps: steps, minutes, what stopped the
        run ("steps", "time" or "diverged") and seconds per step, then :attr:`measured`."""
        return {"steps": self.step, "train_minutes": self.seconds / 60.0, "stopped_by": self.stopped_by,
                "seconds_per_step": self.seconds / max(1, self.step), **self.measured}

    def as_dict(self) -> dict:
        return {"losses": {k: [list(p) for p in v] for k, v in self.losses.items()},
                "step": self.step, "seconds": self.seconds, "stopped_by": self.stopped_by,
                "resumed_from": self.resumed_from, "budget_start": self.budget_start}

    @classmethod
    def from_dict(cls, d: Mapping) -> History:
        return cls(losses={k: [(int(s), float(v)) for s, v in pts] for k, pts in d["losses"].items()},
                   step=int(d["step"]), seconds=float(d["seconds"]),
                   stopped_by=d.get("stopped_by", ""), resumed_from=d.get("resumed_from"),
                   budget_start=float(d.get("budget_start", 0.0)))


# ----------------------------------------------------------------------------- resume state


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a distributed wrapper (DDP's ``.module``), or the model itself: what
    a Method reads its own sub-networks' attributes from while several processes train it."""
    return getattr(model, "module", model)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """How many parameters a module has (by default only those that train)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _unwrap(accelerator, model: nn.Module) -> nn.Module:
    return accelerator.unwrap_model(model) if accelerator is not None else model


def _resume_state(method: Method, emas: dict, history: History, accelerator,
                  extra_card: Mapping | None = None,
                  rng: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and card of a resume checkpoint (read back by :func:`load_resume_state`)."""
    tensors: dict[str, torch.Tensor] = {}
    card: dict[str, Any] = {"kind": "resume", "step": history.step, "history": history.as_dict(),
                            "models": sorted(method.models), **(extra_card or {})}
    for name, model in method.models.items():
        for key, value in _unwrap(accelerator, model).state_dict().items():
            tensors[f"model.{name}.{key}"] = value
    # optimizer and scheduler states are nested dicts: tensors to safetensors, the rest to the card
    for kind, prefix, objects in (("optimizers", "optim", method.optimizers),
                                  ("schedulers", "sched", method.schedulers)):
        card[kind] = {}
        for name, obj in objects.items():
            t, tree = checkpoints.flatten_state(obj.state_dict(), f"{prefix}.{name}")
            tensors.update(t)
            card[kind][name] = tree
    for name, ema in emas.items():
        for i, p in enumerate(ema.shadow_params):
            tensors[f"ema.{name}.{i}"] = p
    card["ema_steps"] = {name: int(ema.optimization_step) for name, ema in emas.items()}
    for key, state in (_rng_states(method) if rng is None else rng).items():
        tensors[key] = state
    return tensors, card


def _rng_states(method: Method) -> dict[str, torch.Tensor]:
    """The random streams a run draws from: the global torch RNG, and any ``torch.Generator``
    a method keeps as an attribute (e.g. the judge's augmentation), so a resumed run goes
    on drawing what the uninterrupted one would."""
    states = {"rng.torch": torch.get_rng_state()}
    for name, value in sorted(vars(method).items()):
        if isinstance(value, torch.Generator):
            states[f"rng.method.{name}"] = value.get_state()
    return states


def nonfinite(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity.

    One fused reduction per device (``torch._foreach_norm`` with ``ord=inf``, which
    cannot overflow), so checking every weight after every step costs little.
    """
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, t in named_tensors:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            by_device.setdefault(t.device, []).append((name, t.detach()))
    bad: list[str] = []
    for items in by_device.values():
        norms = torch._foreach_norm([t for _, t in items], float("inf"))
        finite = torch.isfinite(torch.stack([n.float() for n in norms])).cpu()
        bad += [name for (name, _), ok in zip(items, finite.tolist()) if not ok]
    return bad


def _describe_names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_resume_state(path: str | Path, method: Method, emas: dict | None = None,
                      accelerator=None) -> History:
    """Restore a method (and its EMAs) from a resume checkpoint written by :func:`fit`.

    Raises:
        CheckpointMismatchError: the checkpoint was written for other models.
    """
    path = Path(path)
    tensors, card = checkpoints.load_checkpoint(path)
    if card.get("kind") != "resume":
        raise checkpoints.CheckpointError(f"{path} is not a training (resume) checkpoint.")
    if sorted(card.get("models", [])) != sorted(method.models):
        raise checkpoints.CheckpointMismatchError(
            f"Resume checkpoint {path} holds models {card.get('models')}, but this method has "
            f"{sorted(method.models)}. Fix: delete {path} (or pass resume=False) to start afresh.")
    for name, model in method.models.items():
        prefix = f"model.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        checkpoints._load_state_strict(_unwrap(accelerator, model), state, path)
    for name, opt in method.optimizers.items():
        tree = card.get("optimizers", {}).get(name)
        if tree is None:
            raise checkpoints.CheckpointMismatchError(f"{path} has no state for optimizer {name!r}.")
        try:
            opt.load_state_dict(checkpoints.unflatten_state(tree, tensors))
        except (ValueError, KeyError) as e:
            raise checkpoints.CheckpointMismatchError(
                f"Optimizer {name!r} does not match the one saved in {path} ({e}). "
                f"Fix: delete {path} to start afresh.") from e
    for name, sched in method.schedulers.items():
        tree = card.get("schedulers", {}).get(name)
        if tree is not None:
            sched.load_state_dict(checkpoints.unflatten_state(tree, tensors))
    for name, ema in (emas or {}).items():
        shadow = [tensors[f"ema.{name}.{i}"] for i in range(len(ema.shadow_params))
                  if f"ema.{name}.{i}" in tensors]
        if len(shadow) != len(ema.shadow_params):
            raise checkpoints.CheckpointMismatchError(f"{path} has no complete EMA for {name!r}.")
        for p, s in zip(ema.shadow_params, shadow):
            p.data.copy_(s.to(p.device))
        ema.optimization_step = card.get("ema_steps", {}).get(name, 0)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    for name, value in vars(method).items():
        if isinstance(value, torch.Generator) and f"rng.method.{name}" in tensors:
            value.set_state(tensors[f"rng.method.{name}"].to(torch.uint8))
    return History.from_dict(card["history"])


# ----------------------------------------------------------------------------- the loop


def _loss_values(out, method_name: str) -> dict[str, float]:
    """What ``training_step`` returned, as name -> float; a clear error for anything else."""
    if out is None:
        return {}
    if not isinstance(out, Mapping):
        raise TypeError(f"{method_name}.training_step returned a {type(out).__name__}; it must "
                        "return a dict of the losses to log, e.g. return {'loss': loss}.")
    values = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise TypeError(f"{method_name}.training_step returned {key!r} with shape "
                                f"{tuple(value.shape)}; each logged loss must be one number: "
                                "reduce it first, e.g. loss.mean().")
            value = value.detach().float().item()
        elif isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"{method_name}.training_step returned {key!r} = {value!r} (a "
                            f"{type(value).__name__}); each logged loss must be a number or a "
                            "one-element tensor.")
        values[str(key)] = float(value)
    return values


def _to_device(batch, device):
    from accelerate.utils import send_to_device
    return send_to_device(batch, device)


def _batch_len(batch) -> int | None:
    """The number of examples in a batch (the first dimension of its first tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _batch_len(item)
            if n:
                return n
        return len(batch) or None
    return None


def _cycle(data: Iterable):
    """Yield batches forever, starting a new epoch (a fresh shuffle) when one ends."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("The training data yielded no batch. Is the dataset smaller than "
                             "the batch size with drop_last=True?")


def _progress(total: int, initial: int, desc: str):
    mode = os.environ.get("COURSE_PROGRESS", "auto").lower()
    if mode == "none":
        return None
    if mode == "text":
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, mininterval=10.0, ascii=True)
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc)


def _close_bar(bar, stopped_by: str) -> None:
    """Close a progress bar. tqdm's notebook bar turns red ("danger") when it closes short of
    its total, which reads as a failure; a run its time budget ended is not one: it gets the
    neutral "info" style instead (an interrupted or diverged run stays red)."""
    bar.close()
    if stopped_by == "time" and hasattr(bar, "container"):     # tqdm.notebook's widget
        bar.disp(bar_style="info", check_delay=False)


#: Seconds between a run's resumable checkpoints when ``fit`` is not told otherwise.
CHECKPOINT_EVERY_S = 120.0


def fit(method: Method, data: Iterable, *, steps: int | None, max_seconds: float | None = None,
        resume_path: str | Path | None = None, resume: bool = True,
        checkpoint_every_s: float | None = None, checkpoint_every: int | None = None,
        log_every: int = 10, max_grad_norm: float | None = None, copy_ema: bool = True,
        plot: bool | float = True, desc: str = "training", seed: int = 0,
        card: Mapping | None = None) -> History:
    """Train ``method`` on ``data`` for ``steps`` steps (or ``max_seconds``, whichever first).

    Args:
        method: a :class:`Method` (models, optimizers, ``training_step``).
        data: an iterable of batches, e.g. a ``DataLoader``; it is cycled.
        steps: total optimisation steps (counted across resumes). ``None``: the time
            budget is the target, not a guard ("train for 4 minutes", e.g. to compare two
            methods at equal wall-clock time): the run is finished when ``max_seconds`` is spent.
        max_seconds: wall-clock budget (counted across resumes of an interrupted run);
            ``None`` for none. A run that its time budget stopped, called again with
            more ``steps`` to go, continues toward them with a fresh budget (one line
            says so).
        resume_path: where resumable state is saved; ``None`` disables checkpoints.
        resume: continue from ``resume_path`` if it exists (otherwise start afresh).
        checkpoint_every_s / checkpoint_every: save every this many seconds (default
            :data:`CHECKPOINT_EVERY_S`) / steps.
        log_every: record losses every this many steps (the last step is always logged).
        max_grad_norm: clip gradients to this norm in every ``ctx.optimize``.
        copy_ema: at the end, copy EMA weights into the models (what you then sample from).
        plot: draw a live loss plot in a notebook (``True``, or seconds between redraws).
        desc: progress-bar label. seed: seeds torch/NumPy/Python (offset by the start step).
        card: extra JSON-able facts stored in the resume checkpoint.

    Returns:
        a :class:`History` of the logged losses, with ``step``, ``seconds`` and ``stopped_by``.

    Raises:
        TrainingDiverged: a loss, a weight or the optimizer state became NaN/inf; the
            last good checkpoint stays at ``resume_path`` and is loaded back into the
            models (without one, the message says the models hold non-finite weights).
    """
    from diffusers.training_utils import EMAModel

    from .viz import LivePlot

    if steps is None and max_seconds is None:
        raise ValueError("fit(steps=None) trains for max_seconds: give max_seconds too.")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    target = math.inf if steps is None else steps
    if checkpoint_every_s is None:
        checkpoint_every_s = CHECKPOINT_EVERY_S
    accelerator = get_accelerator()
    resume_path = Path(resume_path) if resume_path is not None else None
    original_optimizers = dict(method.optimizers)
    names, opt_names = list(method.models), list(method.optimizers)
    prepared = accelerator.prepare(*method.models.values(), *method.optimizers.values())
    if not isinstance(prepared, (list, tuple)):
        prepared = [prepared]
    method.models = dict(zip(names, prepared[:len(names)]))
    method.optimizers = dict(zip(opt_names, prepared[len(names):]))
    if accelerator.num_processes > 1 and isinstance(data, torch.utils.data.DataLoader):
        data = accelerator.prepare(data)       # several GPUs: each process gets its shard
    emas = {name: EMAModel(_unwrap(accelerator, method.models[name]).parameters(), decay=decay)
            for name, decay in method.ema_decay.items()}

    history = History()
    resumed_rng = None
    if resume and resume_path is not None and resume_path.exists():
        history = load_resume_state(resume_path, method, emas, accelerator)
        resumed_rng = torch.get_rng_state()      # (a method's own generators are restored already)
        history.resumed_from = history.step
        if history.stopped_by == "time" and history.step < target and steps is not None:
            history.budget_start = history.seconds       # asked again: a fresh time budget
            more = "" if max_seconds is None else f" for up to {max_seconds / 60:.3g} min more"
            print(f"Continuing '{desc}' from step {history.step} toward {steps}: its last run was "
                  f"stopped by its time budget; training goes on{more} ({resume_path.name}).")
        else:
            print(f"Resuming '{desc}' from step {history.step} ({resume_path.name}).")
    start_step, seconds_before = history.step, history.seconds
    seed_everything(seed + start_step)

    live = None
    if plot:
        live = LivePlot(every_s=5.0 if plot is True else float(plot))
    main = accelerator.is_main_process           # only one process draws and saves
    # Several processes must agree on when to save, and clocks differ: count steps instead.
    single = accelerator.num_processes == 1
    if not single and not checkpoint_every:
        checkpoint_every = 500
    bar = _progress(steps, start_step, desc) if main else None
    if not main:
        live = None
    ctx = StepContext(step=start_step, accelerator=accelerator, method=method,
                      max_grad_norm=max_grad_norm)
    t0 = time.perf_counter()
    last_save_t, last_save_step = t0, start_step
    batches = _cycle(data)
    if resumed_rng is not None and start_step < target:
        # Continue the uninterrupted run's data order and random stream: the batches already
        # trained on are drawn and dropped (their draws happen before the saved state is put
        # back), then the torch RNG is the one saved at that step. On a CPU in one process a
        # resumed run then takes the steps the uninterrupted one takes.
        for _ in range(start_step):
            next(batches)
        torch.set_rng_state(resumed_rng)
    history.stopped_by = "already done" if start_step >= target else ""

    good_on_disk = history.resumed_from is not None     # the file at resume_path is a good state

    def diverged(what: str):
        """Stop: restore the last good checkpoint into the models (or say there is none)."""
        if resume_path is not None and good_on_disk and resume_path.exists():
            good = load_resume_state(resume_path, method, emas, accelerator)
            where = (f"The last good checkpoint (step {good.step}) is kept at {resume_path}, and "
                     "the models in memory were restored to it.")
        else:
            where = ("No checkpoint was written before it, so the models in memory hold "
                     "non-finite weights: build them again before using them.")
        raise TrainingDiverged(
            f"Training diverged at step {history.step}: {what}. {where} "
            "Fix: lower the learning rate, clip gradients (max_grad_norm=1.0) or "
            "use mixed_precision 'no', then run again (it resumes from that checkpoint).")

    def save(rng: torch.Tensor | None = None):
        nonlocal last_save_t, last_save_step, good_on_disk
        if resume_path is None or (history.step == last_save_step and resume_path.exists()):
            return
        history.seconds = seconds_before + time.perf_counter() - t0
        accelerator.wait_for_everyone()
        if main:
            tensors, state_card = _resume_state(method, emas, history, accelerator,
                                                {"steps": steps, **(card or {})}, rng)
            bad = nonfinite((k, v) for k, v in tensors.items() if not k.startswith("rng."))
            if bad:     # never let a diverged state become "the last good checkpoint"
                diverged(f"non-finite values in {_describe_names(bad)} (found before saving)")
            checkpoints.save_checkpoint(resume_path, tensors, state_card)
        last_save_t, last_save_step, good_on_disk = time.perf_counter(), history.step, True

    batch = step_rng = None
    try:
        for m in method.models.values():
            m.train()
        while history.step < target:
            spent = seconds_before + time.perf_counter() - t0 - history.budget_start
            out_of_time = max_seconds is not None and spent >= max_seconds
            if max_seconds is not None and not single:
                # clocks differ between processes: all stop at the same step, or the
                # ones still training would wait for the others for ever
                flag = torch.tensor([float(out_of_time)], device=accelerator.device)
                out_of_time = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
            if out_of_time:
                history.stopped_by = "time"
                break
            step_rng = _rng_states(method)            # what a save in this step stores
            batch = _to_device(next(batches), accelerator.device)
            ctx.step = history.step
            with accelerator.autocast():
                out = method.training_step(batch, ctx)
            values = _loss_values(out, type(method).__name__)
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                diverged(", ".join(f"{k} = {v}" for k, v in bad.items()))
            # a finite loss can come with an infinite gradient: look at the weights it left
            bad_weights = nonfinite((f"{name}.{k}", p) for name, m in method.models.items()
                                    for k, p in _unwrap(accelerator, m).named_parameters())
            if bad_weights:
                diverged(f"the loss was finite, but the step left non-finite weights in "
                         f"{_describe_names(bad_weights)} (an infinite or NaN gradient)")
            for name, ema in emas.items():
                ema.step(_unwrap(accelerator, method.models[name]).parameters())
            history.step += 1
            step_rng = None                            # the step is done: save the RNG as it is now
            if history.step % log_every == 0 or history.step == steps or history.step == 1:
                history.log(history.step, values)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                if live is not None:
                    live.update(history.losses)
            if bar is not None:
                bar.update(1)
            now = time.perf_counter()
            if (checkpoint_every and history.step % checkpoint_every == 0) or (
                    single and now - last_save_t >= checkpoint_every_s):
                save()
        else:
            history.stopped_by = history.stopped_by or "steps"
        history.seconds = seconds_before + time.perf_counter() - t0
        save()
    except torch.OutOfMemoryError as e:
        size = _batch_len(batch)
        half = max(1, size // 2) if size else 32
        smaller = f"batch_size {half}" if size else "a smaller batch_size"
        raise torch.OutOfMemoryError(
            f"'{desc}' ran out of {accelerator.device.type.upper()} memory at step {history.step}"
            + (f" with batches of {size}" if size else "") + f". Fix: set {smaller} in its profile "
            f"section (e.g. profile.replace(<section>={{'batch_size': {half}}})); "
            "the README's GPU memory table gives each model's need and the largest batch for a 16 GB "
            "card. The last checkpoint is kept: training resumes from it."
            + (f" ({e})" if str(e) else "")) from e
    except KeyboardInterrupt:
        history.seconds = seconds_before + time.perf_counter() - t0
        save(step_rng)          # the interrupted step is taken again: the RNG from before it
        if resume_path is not None:
            print(f"Interrupted at step {history.step}; state saved to {resume_path}. "
                  "Run the same cell again to continue.")
        raise
    finally:
        if bar is not None:
            _close_bar(bar, history.stopped_by)
        if live is not None:
            live.close(history.losses)
        # hand back plain modules (no accelerate autocast wrapper) and the original optimizers
        method.models = {n: accelerator.unwrap_model(m, keep_fp32_wrapper=False)
                         for n, m in method.models.items()}
        method.optimizers = original_optimizers
    if history.stopped_by == "time" and main and steps is not None:   # None: time was the plan
        left = steps - history.step
        how = ("Run it again to continue toward its steps (it resumes), or give it more time "
               "(the profile's max_minutes)." if resume_path is not None else
               "To train it fully, give it more time (max_minutes) or fewer steps.")
        print(f"'{desc}' stopped by its time budget ({max_seconds / 60:.3g} min) at step {history.step} "
              f"of {steps}: the model is usable but trained {left} steps less than planned. {how}")
    if copy_ema:
        for name, ema in emas.items():
            ema.copy_to(method.models[name].parameters())
    for m in method.models.values():
        m.eval()
    return history
