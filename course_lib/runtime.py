"""Runtime: which device, repeatable seeds, mixed precision, timers.

Device placement and mixed precision during training go through Hugging Face
``accelerate`` (see :func:`get_accelerator`), so that the same training code
runs on a CPU, one GPU, Apple MPS, or several GPUs under ``accelerate launch``.
This module only decides *what* to ask accelerate for.

Explained in notebook 00, section "Profiles and devices".
"""
from __future__ import annotations

import os
import platform
import random
import time
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["renamed", "get_device", "seed_everything", "seeded_generator", "seeded_noise", "mixed_precision_for",
           "get_accelerator",
           "num_processes", "is_main_process", "wait_for_everyone",
           "Timer", "timed", "synchronize", "default_num_workers", "describe_runtime"]


def renamed(function, old_name: str):
    """``function`` under the ``old_name`` it once had: calls it, with a DeprecationWarning that
    names the new one (kept only where a notebook or the README used the old name)."""
    import functools
    import warnings

    @functools.wraps(function)
    def old(*args, **kwargs):
        warnings.warn(f"{old_name} is now {function.__module__.removeprefix('course_lib.')}."
                      f"{function.__name__}; the old name will go.", DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    old.__name__ = old.__qualname__ = old_name.rpartition(".")[2]
    return old


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """The best device here: CUDA, else Apple MPS, else CPU.

    ``preferred`` (a name or a ``torch.device``; every ``device=`` argument of the
    course goes through here) or else ``COURSE_DEVICE`` (e.g. ``cpu``) overrides
    the choice. Asking for a device that is not available, or that the course does
    not know, is a clear error.
    """
    if preferred is not None and not isinstance(preferred, (str, torch.device)):
        raise TypeError(f"device must be a name such as 'cpu' or 'cuda', or a torch.device, "
                        f"not a {type(preferred).__name__} ({preferred!r}).")
    source = "device=" if preferred else "COURSE_DEVICE="
    fix = "use device='cpu'" if preferred else "unset COURSE_DEVICE or set it to 'cpu'"
    want = str(preferred or os.environ.get("COURSE_DEVICE", "")).strip().lower()
    if want:
        try:
            device = torch.device(want)
        except (RuntimeError, ValueError):
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            hint = " (did you mean 'cuda'?)" if want.split(":")[0] in ("gpu", "nvidia") else ""
            raise ValueError(f"{source}{want!r} is not a device the course runs on{hint}. "
                             "Use 'cpu', 'cuda' (or 'cuda:1' for a second GPU) or 'mps'.")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"Device {want!r} was asked for ({source}{want}) but CUDA is not "
                               f"available here: {fix}.")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise RuntimeError(f"Device {want!r} was asked for but this machine has "
                               f"{torch.cuda.device_count()} GPU(s): use 'cuda' or 'cuda:0'.")
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(f"Device 'mps' was asked for ({source}{want}) but Apple MPS is not "
                               f"available here: {fix}.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def seed_everything(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices).

    On a CPU this makes a run repeatable: the same seed gives the same numbers.
    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


#: Every seed a sampler accepts: a whole number in [0, SEED_LIMIT). A seed a sampler derives
#: (``seed + 1`` for a scheduler's own noise) wraps around inside the same range.
SEED_LIMIT = 2 ** 63


def check_seed(seed, what: str = "seed") -> int:
    """The course's one seed check: a Python, numpy or 0-d torch integer in [0, 2**63) -> int.

    Raises:
        TypeError: not a whole number (a float such as 1.5 would silently become another
            seed; None; a bool), with the fix.
        ValueError: a whole number outside [0, 2**63).
    """
    import numbers

    value = plain_number(seed)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}={seed!r}: a seed must be a whole number in [0, 2**63), e.g. {what}=0 "
                        "(a float or None is not a seed: the same seed must always give the same images).")
    value = int(value)
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{what}={value}: a seed must lie in [0, 2**63); use e.g. {what}={value % SEED_LIMIT}.")
    return value


def plain_number(value):
    """A numpy number or a 0-d torch tensor as the Python number it holds (anything else as it
    is): wherever the course accepts ``steps=8`` or ``guidance=3.0`` it accepts
    ``np.int64(8)`` and ``torch.tensor(3.0)`` too, checked by the same rules."""
    import numpy as np

    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return value.item()
    return value


def check_count(value, what: str, minimum: int = 1) -> int:
    """A whole number of things (steps, images, a batch size) of at least ``minimum``, Python,
    numpy or 0-d torch, as an int; anything else a clear error naming the option and its range."""
    import numbers

    value = plain_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}={value!r}: a whole number >= {minimum} is needed.")
    if value < minimum:
        raise ValueError(f"{what}={value}: must be at least {minimum}.")
    return int(value)


def seeded_generator(seed: int, offset: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (checked by :func:`check_seed`; ``offset``
    derives another stream, wrapping inside the same range): every sampler draws its noise from
    one, on the CPU, so the same seed gives the same images on any device."""
    return torch.Generator().manual_seed((check_seed(seed) + int(offset)) % SEED_LIMIT)


def seeded_noise(*shape: int, seed: int, device=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` from :func:`seeded_generator` (drawn on the CPU,
    then moved to ``device``): the course's one way to turn a seed into noise."""
    noise = torch.randn(*shape, generator=seeded_generator(seed))
    return noise if device is None else noise.to(device)


def mixed_precision_for(device: torch.device | str) -> str:
    """The mixed-precision mode accelerate should use on ``device``.

    ``"bf16"`` on a CUDA GPU that supports it, ``"fp16"`` on an older CUDA GPU,
    ``"no"`` on CPU and MPS (where it rarely speeds small models up).
    ``COURSE_MIXED_PRECISION`` overrides it (no / fp16 / bf16). A mode the device
    cannot run is refused here rather than reported as active: accelerate silently
    trains in fp32 when asked for fp16 on a CPU.
    """
    override = os.environ.get("COURSE_MIXED_PRECISION", "").strip().lower()
    device = torch.device(device)
    if override:
        if override not in ("no", "fp16", "bf16"):
            raise ValueError(f"COURSE_MIXED_PRECISION={override!r}: use one of no, fp16, bf16.")
        if override == "fp16" and device.type == "cpu":
            raise ValueError("COURSE_MIXED_PRECISION=fp16 needs a GPU (CUDA or Apple MPS), but this "
                             "run is on the CPU, where it would silently train in fp32. Use "
                             "COURSE_MIXED_PRECISION=bf16 (CPU autocast) or no, or unset it.")
        if override == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("COURSE_MIXED_PRECISION=bf16: this GPU does not support bfloat16. "
                             "Use fp16 or no, or unset it (the course then picks fp16 here).")
        return override
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


_ACCELERATOR = None


def get_accelerator(device: torch.device | str | None = None):
    """One ``accelerate.Accelerator`` per process, made on first use.

    accelerate keeps its settings in a process-wide state that cannot change once
    made, so the course creates it once here and every training run shares it.
    Under ``accelerate launch`` / ``torchrun`` it picks up the launcher's
    settings and several GPUs work with no change to the notebooks.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator
        device = get_device(device)
        _ACCELERATOR = Accelerator(mixed_precision=mixed_precision_for(device),
                                   cpu=device.type == "cpu")
    return _ACCELERATOR


def num_processes() -> int:
    """How many processes train together (``accelerate launch`` / ``torchrun`` set
    ``WORLD_SIZE``); 1 in a notebook or a plain ``python`` run."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True in the one process that writes files and prints summaries."""
    if num_processes() == 1:
        return True
    return get_accelerator().is_main_process


def wait_for_everyone() -> None:
    """A barrier across the training processes (nothing to wait for in one process)."""
    if num_processes() > 1:
        get_accelerator().wait_for_everyone()


def default_num_workers(requested: int | None = None) -> int:
    """DataLoader workers that work here.

    Worker processes need the dataset to be picklable and a ``__main__`` guard;
    in notebooks on Windows and macOS (spawn start method) they often fail, so
    the course uses 0 there whatever is asked.
    """
    n = 0 if requested is None else int(requested)
    if platform.system() in ("Windows", "Darwin"):
        return 0
    return max(0, min(n, os.cpu_count() or 1))


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for work queued on ``device`` (CUDA or MPS), so a clock measures the work
    and not its queueing. ``None``: the current CUDA device, if any. No-op on CPU."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type == "cuda":
        if torch.cuda.is_available():
            torch.cuda.synchronize(device)
    elif device.type == "mps" and _mps_available():
        torch.mps.synchronize()


class Timer:
    """Wall-clock timer, usable as a context manager.

    >>> with Timer() as t:
    ...     pass
    >>> t.seconds >= 0
    True

    On a GPU, pass ``sync=True`` (and the ``device``, for Apple MPS) to wait for
    queued work before reading the clock (:func:`synchronize`).
    """

    def __init__(self, sync: bool = False, device: torch.device | str | None = None):
        self.sync = sync
        self.device = device
        self.start: float | None = None
        self.seconds: float = 0.0

    def _now(self) -> float:
        if self.sync:
            synchronize(self.device)
        return time.perf_counter()

    def __enter__(self) -> Timer:
        self.start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self._now() - self.start

    @property
    def elapsed(self) -> float:
        """Seconds since start (while running) or the measured duration (after)."""
        if self.start is None:
            return 0.0
        return self._now() - self.start if self.seconds == 0.0 else self.seconds

    def __repr__(self) -> str:
        return f"Timer({self.elapsed:.2f} s)"


@contextmanager
def timed(label: str):
    """Print how long a block took: ``with timed("render 50k images"): ...``."""
    t = Timer()
    with t:
        yield t
    print(f"{label}: {t.seconds:.1f} s")


def describe_runtime() -> str:
    """One line: torch version, device, threads, mixed precision."""
    device = get_device()
    extra = ""
    if device.type == "cuda":
        extra = f" ({torch.cuda.get_device_name(0)})"
    return (f"torch {torch.__version__} | device {device.type}{extra} | "
            f"{torch.get_num_threads()} CPU threads | mixed precision {mixed_precision_for(device)}")
